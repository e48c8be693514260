//! Provisioning: creating, changing and removing accounts in the real
//! service a host's invites are for (an XMPP server, a Matrix homeserver, a
//! program the operator names), so that the account a person registers
//! here is one they can log into there.
//!
//! Every call is async I/O with a timeout, so it never blocks a worker. The
//! password is passed by reference for the one call and is never stored,
//! queued or logged here.

mod command;
mod metered;
mod prosody;
mod synapse;

pub use synapse::SecretFile;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::config::ConfigDuration;
use crate::domain::{AccountName, HostName, Password};

/// How long a provisioner call may take unless the host says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a provisioner call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The service has an account of that name already.
    #[error("the name is taken in the service")]
    Taken,
    /// The service refused, failed, timed out or could not be reached; the
    /// reason never contains the password.
    #[error("the account service is unavailable: {0}")]
    Unavailable(String),
    /// The service (or this kind) cannot do that at all.
    #[error("the account service does not support this")]
    Unsupported,
    /// The service refuses this password for good (e.g. characters it cannot
    /// hold); trying again later will not help, another password will. The
    /// reason, for the person, never contains the password.
    #[error("{0}")]
    PasswordRefused(String),
}

/// A service accounts are created in. Implementations must not block the
/// calling thread and must finish (or fail) within their timeout.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Creates `name` with `password`; `Taken` if it exists there already.
    async fn create(&self, name: &AccountName, password: &Password) -> Result<(), ProvisionError>;
    /// Sets the password of the existing account `name`.
    async fn set_password(
        &self,
        name: &AccountName,
        password: &Password,
    ) -> Result<(), ProvisionError>;
    /// Deletes `name`; an account already gone there counts as deleted.
    async fn delete(&self, name: &AccountName) -> Result<(), ProvisionError>;
    /// Stops `name` from logging in, keeping its data.
    async fn disable(&self, name: &AccountName) -> Result<(), ProvisionError>;
    /// Lets a disabled `name` log in again.
    async fn enable(&self, name: &AccountName) -> Result<(), ProvisionError>;
}

/// `[hosts."x".provision]`: which service a host's accounts are created in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProvisionConfig {
    /// Prosody, through its admin socket (mod_admin_shell over
    /// mod_admin_socket, Prosody 0.12 or later).
    Prosody {
        /// The path of Prosody's `admin_socket`.
        admin_socket: PathBuf,
        /// The Prosody VirtualHost accounts are made on; the host's own name
        /// when not given.
        domain: Option<HostName>,
        /// How long one call may take (default 10s).
        timeout: Option<ConfigDuration>,
    },
    /// A program run once per change, with one JSON object on its stdin.
    Command {
        /// The program and its arguments; no shell is involved.
        command: Argv,
        /// How long it may run before it is killed (default 10s).
        timeout: Option<ConfigDuration>,
    },
    /// Synapse (a Matrix homeserver), through its admin API: shared-secret
    /// registration, and with an admin token password changes, deactivation
    /// and locking.
    Synapse {
        /// The homeserver's base URL, e.g. `http://127.0.0.1:8008`.
        url: HttpUrl,
        /// A file holding Synapse's `registration_shared_secret`, read when
        /// the configuration is loaded.
        shared_secret_file: SecretFile,
        /// A file holding a Synapse server admin's access token; without it
        /// password changes, `accounts delete` and `disable`/`enable` are
        /// refused as unsupported.
        admin_token_file: Option<SecretFile>,
        /// The homeserver's `server_name` (the part of user IDs after `:`);
        /// the host's own name when not given.
        server_name: Option<String>,
        /// How long one call may take (default 10s).
        timeout: Option<ConfigDuration>,
    },
}

/// An http or https URL with a host, kept without a final `/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HttpUrl(String);

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        url::Url::parse(&s)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .map(|_| Self(s.trim_end_matches('/').to_owned()))
            .ok_or_else(|| format!("`{s}` is not an http or https URL"))
    }
}

/// A program and its arguments, never empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Argv(pub Vec<String>);

impl TryFrom<Vec<String>> for Argv {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        if v.first().is_some_and(|p| !p.is_empty()) {
            Ok(Self(v))
        } else {
            Err("provision.command must name a program first, e.g. \
                 command = [\"/usr/local/bin/provision\", \"--flag\"]"
                .into())
        }
    }
}

impl ProvisionConfig {
    /// How long one call may take.
    pub fn timeout(&self) -> Duration {
        let t = match self {
            Self::Prosody { timeout, .. }
            | Self::Command { timeout, .. }
            | Self::Synapse { timeout, .. } => timeout,
        };
        t.map_or(DEFAULT_TIMEOUT, |d| d.0)
    }

    /// The kind's name, as configured (and as the metrics label it).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Prosody { .. } => "prosody",
            Self::Command { .. } => "command",
            Self::Synapse { .. } => "synapse",
        }
    }

    /// The provisioner for `host`, each call counted in the metrics.
    pub fn provisioner(&self, host: &HostName) -> Box<dyn Provisioner> {
        Box::new(metered::Metered {
            kind: self.kind(),
            inner: self.unmetered(host),
        })
    }

    fn unmetered(&self, host: &HostName) -> Box<dyn Provisioner> {
        let timeout = self.timeout();
        match self {
            Self::Prosody {
                admin_socket,
                domain,
                ..
            } => Box::new(prosody::Prosody {
                socket: admin_socket.clone(),
                domain: domain.clone().unwrap_or_else(|| host.clone()),
                timeout,
            }),
            Self::Command { command, .. } => Box::new(command::Command {
                argv: command.0.clone(),
                host: host.clone(),
                timeout,
            }),
            Self::Synapse {
                url,
                shared_secret_file,
                admin_token_file,
                server_name,
                ..
            } => Box::new(synapse::Synapse {
                url: url.0.clone(),
                server_name: server_name
                    .clone()
                    .unwrap_or_else(|| host.as_str().to_owned()),
                shared_secret: shared_secret_file.clone(),
                admin_token: admin_token_file.clone(),
                timeout,
            }),
        }
    }
}
