//! Configuration: the raw TOML shape (what a file may say) kept apart from the
//! validated [`Config`] the rest of the program uses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::domain::{HostName, Invalid};
use crate::store::DatabaseLocation;
use crate::webhooks::{EventKind, Webhook, WebhookSecret, DEFAULT_RETRY};

/// The defaults, embedded so `invite-server serve` runs with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// A configuration that could not be used; the message names file, line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file named by --config or INVITE_SERVER_CONFIG.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file was read but says something invalid.
    #[error("invalid configuration in {origin}{line}: {message}")]
    Invalid {
        /// The file name, or "built-in defaults".
        origin: String,
        /// ", line N, key `k`" when known.
        line: String,
        /// What is wrong.
        message: String,
    },
}

/// A span of time written as a number and one of `s`, `m`, `h`, `d`, `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parses `"7d"`, `"12h"`, `"90s"`, ...
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "invalid duration `{s}`: write a whole number followed by s, m, h, d or w, e.g. \"7d\""
            ))
        };
        let s = s.trim();
        let unit = s.chars().last().ok_or_else(bad)?;
        let secs_per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = s[..s.len() - 1].parse().map_err(|_| bad())?;
        // Past a hundred years the number is a typo, and chrono's date range is finite.
        let secs = n
            .checked_mul(secs_per)
            .filter(|&v| v > 0 && v <= 100 * 366 * 86_400)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "invalid duration `{s}`: must be more than 0 and at most 100 years"
                ))
            })?;
        Ok(Self(Duration::from_secs(secs)))
    }
}

impl TryFrom<String> for ConfigDuration {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

/// The base URL of a host's links: absolute http(s), no query, no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl {
    url: String,
    /// The host alone, without a trailing dot, computed once: what two hosts
    /// must not share, and what every request's `Host` is matched against.
    host: String,
    /// The port when it is not the scheme's default.
    port: Option<u16>,
}

impl PublicUrl {
    /// Parses and normalises a public URL.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        // A URL with user info may carry a password: error messages name it
        // only when it cannot.
        let shown = if s.contains('@') {
            "(not repeated here: it contains `@`)"
        } else {
            s
        };
        let url = Url::parse(s).map_err(|e| {
            Invalid::new(format!(
                "invalid URL `{shown}`: {e} (write it in full, e.g. \"https://example.com\")"
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new(
                "invalid public URL: it must not contain a user name or password \
                 (they would be copied into every link handed out)",
            ));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Invalid::new(format!(
                "invalid URL `{s}`: it must start with http:// or https:// and name a host"
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Invalid::new(format!(
                "invalid URL `{s}`: a public URL has no query or fragment"
            )));
        }
        // host_str is lowercase, and the port is there only when it is not
        // the scheme's default, as in a Host header.
        let host = url.host_str().unwrap_or_default();
        Ok(Self {
            url: url.as_str().trim_end_matches('/').to_owned(),
            host: host.trim_end_matches('.').to_owned(),
            port: url.port(),
        })
    }

    /// The URL of a server listening on `addr`: `http://localhost:PORT` for an
    /// unspecified address (0.0.0.0 or ::), which names no one interface,
    /// otherwise the IP itself (IPv6 in brackets).
    pub fn for_listen(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_canonical();
        let host = match ip {
            _ if ip.is_unspecified() => "localhost".to_owned(),
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Self::parse(&format!("http://{host}:{}", addr.port()))
            // An IP literal or `localhost` and a port always make a valid http URL.
            .expect("a listen address makes a valid URL")
    }

    /// True when a request or a browser could not tell which of the two it
    /// is for: the same host name, whatever the scheme, port and path.
    /// Browsers keep cookies per host name, not per port, and a proxy
    /// passing nginx's `$host` sends no port at all.
    fn shares_host_with(&self, other: &Self) -> bool {
        self.host == other.host
    }

    /// The host name alone, lower case, without port or trailing dot: what
    /// a request's `Host` is matched against.
    pub fn host_name(&self) -> &str {
        &self.host
    }

    /// The URL text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// True for https, where cookies must be marked Secure.
    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

/// The template of an invite link, e.g. `{public_url}/invite?{token}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct InvitePageTemplate(String);

impl InvitePageTemplate {
    /// The default: the page this server renders itself.
    pub const DEFAULT: &'static str = "{public_url}/invite?{token}";

    /// Parses a template; it must contain `{token}` and yield an absolute URL.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        // The link is sent as a Location header and printed one per line:
        // whitespace or control characters would break both (and URL parsing
        // would silently drop them, so the check below would not see them).
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::new(format!(
                "invalid invite_page `{}`: it must not contain spaces or control characters",
                s.escape_default()
            )));
        }
        if !s.contains("{token}") {
            return Err(Invalid::new(format!(
                "invalid invite_page `{s}`: it must contain {{token}}"
            )));
        }
        let sample = Self(s.to_owned()).render("https://example.com", "example.com", "TOKEN");
        match Url::parse(&sample) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Self(s.to_owned())),
            _ => Err(Invalid::new(format!(
                "invalid invite_page `{s}`: it must give an http:// or https:// URL"
            ))),
        }
    }

    /// The template as written, e.g. `{public_url}/invite?{token}`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Fills in the template.
    pub fn render(&self, public_url: &str, host: &str, token: &str) -> String {
        self.0
            .replace("{public_url}", public_url)
            .replace("{host}", host)
            .replace("{token}", token)
    }
}

impl TryFrom<String> for InvitePageTemplate {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

/// A listen address such as `127.0.0.1:5280` or `[::1]:5280`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddr(pub SocketAddr);

impl ListenAddr {
    /// Parses `IP:PORT`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        s.parse().map(Self).map_err(|_| {
            Invalid::new(format!(
                "invalid listen address `{s}`: write IP:PORT, e.g. \"127.0.0.1:5280\""
            ))
        })
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

/// One `trusted_proxies` entry: an IP address or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
struct ProxyNet(IpNet);

impl ProxyNet {
    fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| Invalid::new(format!("invalid trusted proxy `{s}`: {why}"));
        let unreadable =
            || bad("write an IP address or a network, e.g. \"10.0.0.1\" or \"10.0.0.0/8\"");
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| unreadable())?;
            // `10.0.0.1/8` could mean the host or the network: say which.
            if net.trunc() != net {
                return Err(bad(&format!(
                    "bits are set past the prefix length: write \"{}\" for the network",
                    net.trunc()
                )));
            }
            Ok(Self(net))
        } else {
            let ip: IpAddr = s.parse().map_err(|_| unreadable())?;
            Ok(Self(IpNet::from(ip.to_canonical())))
        }
    }
}

impl TryFrom<String> for ProxyNet {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s)
    }
}

/// The one header trusted proxies name the client in (`trusted_proxy_header`).
/// Only one is read: a proxy appends to the header it writes and passes the
/// other on as the client sent it, so believing both would let a client pick
/// the address its requests count against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum ForwardingHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx's `$proxy_add_x_forwarded_for`).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The peers whose forwarding header is believed when finding a client's
/// address (see `http::client_ip`), and which header that is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// The header they write.
    pub header: ForwardingHeader,
}

impl TrustedProxies {
    /// Parses IP addresses and CIDR networks, e.g. `["10.0.0.0/8", "::1"]`,
    /// whose `X-Forwarded-For` is read (see [`Self::reading`]).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Invalid> {
        entries
            .iter()
            .map(|e| ProxyNet::parse(e.as_ref()).map(|p| p.0))
            .collect::<Result<_, _>>()
            .map(|nets| Self {
                nets,
                header: ForwardingHeader::default(),
            })
    }

    /// The same proxies, read through `header` instead.
    pub fn reading(self, header: ForwardingHeader) -> Self {
        Self { header, ..self }
    }

    /// True when `ip` is a trusted proxy. An IPv4-mapped IPv6 address (how a
    /// dual-stack socket shows an IPv4 peer) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The trusted addresses and networks, as configured.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    /// True when no peer is trusted: every client is its TCP peer.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// `max_connections`: at least one, and past a million surely a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
struct MaxConnections(usize);

impl TryFrom<i64> for MaxConnections {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        bounded_count(n, "max_connections", 1_000_000).map(Self)
    }
}

/// A whole number from 1 to `max`, for the setting `key`.
fn bounded_count(n: i64, key: &str, max: usize) -> Result<usize, Invalid> {
    usize::try_from(n)
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| Invalid::new(format!("invalid {key} `{n}`: it must be from 1 to {max}")))
}

/// Connections each server keeps to a PostgreSQL database at most: 1 to
/// [`PoolSize::MAX`] (ignored for SQLite, which has its own writer and readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct PoolSize(pub usize);

impl PoolSize {
    /// The largest pool accepted, far past what one PostgreSQL serves well.
    pub const MAX: usize = 1000;
}

impl TryFrom<i64> for PoolSize {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        bounded_count(n, "database_pool_size", Self::MAX).map(Self)
    }
}

/// How many sign-ins and registrations may wait for a hashing thread: 1 to
/// [`HashQueue::MAX`]. Unbounded is not offered: that is the queue a flood of
/// wrong sign-ins filled with minutes of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct HashQueue(pub usize);

impl HashQueue {
    /// The largest queue accepted: past it, the last in line would wait
    /// minutes, and the channel reserves a slot for each up front.
    pub const MAX: usize = 10_000;
}

impl TryFrom<i64> for HashQueue {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        bounded_count(n, "password_hash_queue", Self::MAX).map(Self)
    }
}

/// What a configuration file may say. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<ListenAddr>,
    database: Option<DatabaseLocation>,
    database_pool_size: Option<PoolSize>,
    invite_expiry: Option<ConfigDuration>,
    session_idle_expiry: Option<ConfigDuration>,
    login_attempts_per_minute: Option<u32>,
    trusted_proxies: Option<Vec<ProxyNet>>,
    trusted_proxy_header: Option<ForwardingHeader>,
    max_connections: Option<MaxConnections>,
    /// Spanned, so that errors found after parsing (no host, ambiguous hosts)
    /// can name their line too.
    hosts: Option<Spanned<BTreeMap<HostName, RawHost>>>,
    login_attempts_per_account_per_minute: Option<u32>,
    password_hash_queue: Option<HashQueue>,
    max_invite_expiry: Option<ConfigDuration>,
    max_invite_uses: Option<MaxInviteUses>,
    account_invites: Option<u32>,
    retention: Option<ConfigDuration>,
    purge_interval: Option<ConfigDuration>,
    metrics_listen: Option<ListenAddr>,
    log_format: Option<LogFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    public_url: Spanned<PublicUrl>,
    invite_page: Option<InvitePageTemplate>,
    invite_expiry: Option<ConfigDuration>,
    site_name: Option<String>,
    after_registration_url: Option<AbsoluteUrl>,
    after_registration_text: Option<String>,
    allowed_redirects: Option<Vec<RedirectOrigin>>,
    max_invite_expiry: Option<ConfigDuration>,
    max_invite_uses: Option<MaxInviteUses>,
    account_invites: Option<u32>,
    webhooks: Option<Vec<RawWebhook>>,
    provision: Option<crate::provision::ProvisionConfig>,
}

/// One `[[hosts."x".webhooks]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_file: PathBuf,
    events: Vec<String>,
    retry: Option<Vec<ConfigDuration>>,
}

impl RawWebhook {
    /// Checks the URL and events and reads the secret file. No message
    /// repeats the secret.
    fn load(self) -> Result<Webhook, String> {
        let url = Url::parse(&self.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| format!("webhook url `{}` is not an http or https URL", self.url))?;
        let mut events = Vec::new();
        for name in &self.events {
            let event = EventKind::parse(name).ok_or_else(|| {
                let known: Vec<_> = EventKind::ALL.iter().map(|e| e.as_str()).collect();
                format!(
                    "webhook {url}: unknown event `{name}` (known: {})",
                    known.join(", ")
                )
            })?;
            if !events.contains(&event) {
                events.push(event);
            }
        }
        if events.is_empty() {
            return Err(format!("webhook {url}: `events` names no event"));
        }
        let file = self.secret_file.display();
        let text = std::fs::read_to_string(&self.secret_file)
            .map_err(|e| format!("webhook {url}: cannot read secret_file {file}: {e}"))?;
        let secret = WebhookSecret::parse(&text).map_err(|why| {
            format!("webhook {url}: secret_file {file} holds no Standard Webhooks secret: {why}")
        })?;
        Ok(Webhook {
            url: url.to_string(),
            secret,
            events,
            retry: self.retry.map_or_else(
                || {
                    DEFAULT_RETRY
                        .iter()
                        .map(|s| Duration::from_secs(*s))
                        .collect()
                },
                |r| r.into_iter().map(|d| d.0).collect(),
            ),
        })
    }
}

/// An origin the sign-in page may send people on to: `scheme://host[:port]`,
/// http or https, with nothing else (no user name, path, query or fragment),
/// so that a listed origin grants exactly that site and no more.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RedirectOrigin(String);

impl TryFrom<String> for RedirectOrigin {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        let refused = |why: &str| {
            // A password in the entry must not reach a log: `@` is never repeated.
            let shown = if s.contains('@') {
                "(not repeated: it contains `@`)".to_owned()
            } else {
                s.escape_default().to_string()
            };
            Invalid::new(format!(
                "invalid allowed_redirects entry `{shown}`: {why}; write an origin such as \
                 \"https://chat.example.org\""
            ))
        };
        let url = Url::parse(&s).map_err(|_| refused("it is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused("it must start with http:// or https://"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused("it must not contain a user name or password"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(refused(
                "it must be an origin alone, without a path, query or fragment",
            ));
        }
        // The serialisation browsers compare: lower case, default port dropped.
        Ok(Self(url.origin().ascii_serialization()))
    }
}

/// The most accounts one invite may create: 1 to [`MaxInviteUses::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct MaxInviteUses(pub u32);

impl MaxInviteUses {
    /// The largest accepted: an invite for more people than this is a public
    /// sign-up page, better served by one.
    pub const MAX: usize = 1_000_000;
}

impl TryFrom<i64> for MaxInviteUses {
    type Error = Invalid;
    fn try_from(n: i64) -> Result<Self, Invalid> {
        // Bounded to a million, which fits u32.
        bounded_count(n, "max_invite_uses", Self::MAX).map(|n| Self(n as u32))
    }
}

/// Where to send someone after registration: an absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AbsoluteUrl(String);

impl TryFrom<String> for AbsoluteUrl {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        match Url::parse(&s) {
            // Shown to every new account: a password in it would be shown too.
            Ok(u) if !u.username().is_empty() || u.password().is_some() => Err(Invalid::new(
                "invalid URL: it must not contain a user name or password \
                 (it is shown to everyone who registers)",
            )),
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Self(s)),
            _ => Err(Invalid::new(format!(
                "invalid URL `{}`: it must start with http:// or https://",
                if s.contains('@') {
                    "(not repeated: it contains `@`)"
                } else {
                    &s
                }
            ))),
        }
    }
}

/// One virtual host, validated.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The host's name, as keys and accounts are filed under.
    pub name: HostName,
    /// The base of every link handed out.
    pub public_url: PublicUrl,
    /// The invite link template.
    pub invite_page: InvitePageTemplate,
    /// How long new invites stay valid.
    pub invite_expiry: Duration,
    /// The friendly name on pages.
    pub site_name: String,
    /// Where to go after registering, if anywhere.
    pub after_registration_url: Option<String>,
    /// What to do after registering, in words.
    pub after_registration_text: Option<String>,
    /// Origins other than this host's own that `/login?next=` may lead to,
    /// as `scheme://host[:port]`.
    pub allowed_redirects: Vec<String>,
    /// The longest an invite may be minted to stay valid (never below
    /// `invite_expiry`, the default).
    pub max_invite_expiry: Duration,
    /// The most accounts one invite may be minted to create.
    pub max_invite_uses: u32,
    /// The most pending invites one account may hold; 0 forbids accounts to mint.
    pub account_invites: u32,
    /// Where the host's events are sent, signed.
    pub webhooks: Vec<Webhook>,
    /// The service its accounts are also created in, if any.
    pub provision: Option<crate::provision::ProvisionConfig>,
}

impl HostConfig {
    /// The link for an invite token.
    pub fn invite_url(&self, token: &str) -> String {
        self.invite_page
            .render(self.public_url.as_str(), self.name.as_str(), token)
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server listens.
    pub listen: SocketAddr,
    /// Where the store lives: a SQLite file, or a PostgreSQL URL.
    pub database: DatabaseLocation,
    /// Connections to PostgreSQL each server keeps at most.
    pub database_pool_size: usize,
    /// A sign-in unused this long stops working.
    pub session_idle_expiry: Duration,
    /// Sign-in attempts allowed per client address per minute; 0 for no limit.
    pub login_attempts_per_minute: u32,
    /// The peers whose forwarding headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// Open connections the server holds at most, over all its workers.
    pub max_connections: usize,
    /// Sign-in attempts allowed per account name (on one host) per minute,
    /// from all addresses together; 0 for no limit.
    pub login_attempts_per_account_per_minute: u32,
    /// Sign-ins and registrations that may wait for a hashing thread; more get 503.
    pub password_hash_queue: usize,
    /// The virtual hosts, by name.
    pub hosts: BTreeMap<HostName, HostConfig>,
    /// No `[hosts]` was configured: the one host is the built-in `localhost`,
    /// whose links follow the listen address.
    builtin_host: bool,
    /// `serve` purges invites that ended longer ago than this.
    pub retention: Duration,
    /// How often `serve` purges.
    pub purge_interval: Duration,
    /// Where `serve` answers Prometheus scrapes (`GET /metrics`); `None`
    /// (the default) for no metrics listener at all.
    pub metrics_listen: Option<SocketAddr>,
    /// How `serve` writes its log lines.
    pub log_format: LogFormat,
}

/// `log_format`: how log lines are written on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Config {
    /// Loads the built-in defaults, overlaid by `file` when given.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut raw = parse_raw(DEFAULT_CONFIG, "built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let user = parse_raw(&text, &path.display().to_string())?;
            raw.listen = user.listen.or(raw.listen);
            raw.database = user.database.or(raw.database);
            raw.database_pool_size = user.database_pool_size.or(raw.database_pool_size);
            raw.invite_expiry = user.invite_expiry.or(raw.invite_expiry);
            raw.session_idle_expiry = user.session_idle_expiry.or(raw.session_idle_expiry);
            raw.login_attempts_per_minute = user
                .login_attempts_per_minute
                .or(raw.login_attempts_per_minute);
            raw.trusted_proxies = user.trusted_proxies.or(raw.trusted_proxies);
            raw.trusted_proxy_header = user.trusted_proxy_header.or(raw.trusted_proxy_header);
            raw.max_connections = user.max_connections.or(raw.max_connections);
            raw.login_attempts_per_account_per_minute = user
                .login_attempts_per_account_per_minute
                .or(raw.login_attempts_per_account_per_minute);
            raw.password_hash_queue = user.password_hash_queue.or(raw.password_hash_queue);
            raw.max_invite_expiry = user.max_invite_expiry.or(raw.max_invite_expiry);
            raw.max_invite_uses = user.max_invite_uses.or(raw.max_invite_uses);
            raw.account_invites = user.account_invites.or(raw.account_invites);
            raw.retention = user.retention.or(raw.retention);
            raw.purge_interval = user.purge_interval.or(raw.purge_interval);
            raw.metrics_listen = user.metrics_listen.or(raw.metrics_listen);
            raw.log_format = user.log_format.or(raw.log_format);
            if user.hosts.is_some() {
                raw.hosts = user.hosts;
            }
        }
        // Read here, not in from_raw: a secret file can fail to load.
        let mut webhooks = BTreeMap::new();
        for (name, host) in raw.hosts.iter().flat_map(|h| h.get_ref()) {
            let hooks = host
                .webhooks
                .iter()
                .flatten()
                .map(|w| w.clone().load())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|message| ConfigError::Invalid {
                    origin: file.map_or_else(
                        || "built-in defaults".to_owned(),
                        |p| p.display().to_string(),
                    ),
                    line: format!(", host `{name}`"),
                    message,
                })?;
            webhooks.insert(name.clone(), hooks);
        }
        let mut config = Self::from_raw(raw);
        for (name, hooks) in webhooks {
            if let Some(host) = config.hosts.get_mut(&name) {
                host.webhooks = hooks;
            }
        }
        Ok(config)
    }

    fn from_raw(raw: RawConfig) -> Self {
        // The embedded defaults set every top-level key, so these fallbacks only
        // matter if someone edits config/default.toml carelessly.
        let default_expiry = raw
            .invite_expiry
            .map_or(Duration::from_secs(7 * 86_400), |d| d.0);
        let listen = raw
            .listen
            .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5280)), |l| l.0);
        let max_expiry = raw
            .max_invite_expiry
            .map_or(Duration::from_secs(30 * 86_400), |d| d.0);
        let max_uses = raw.max_invite_uses.map_or(100, |m| m.0);
        let account_invites = raw.account_invites.unwrap_or(10);
        let builtin_host = raw.hosts.is_none();
        let hosts = raw
            .hosts
            .map_or_else(|| builtin_hosts(listen), Spanned::into_inner)
            .into_iter()
            .map(|(name, h)| {
                let host = HostConfig {
                    site_name: h
                        .site_name
                        .filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| name.to_string()),
                    name: name.clone(),
                    public_url: h.public_url.into_inner(),
                    invite_page: h.invite_page.unwrap_or_else(|| {
                        InvitePageTemplate(InvitePageTemplate::DEFAULT.to_owned())
                    }),
                    invite_expiry: h.invite_expiry.map_or(default_expiry, |d| d.0),
                    // The default must be mintable: the limit never falls below it.
                    max_invite_expiry: h
                        .max_invite_expiry
                        .map_or(max_expiry, |d| d.0)
                        .max(h.invite_expiry.map_or(default_expiry, |d| d.0)),
                    max_invite_uses: h.max_invite_uses.map_or(max_uses, |m| m.0),
                    account_invites: h.account_invites.unwrap_or(account_invites),
                    after_registration_url: h.after_registration_url.map(|u| u.0),
                    after_registration_text: h.after_registration_text,
                    allowed_redirects: h
                        .allowed_redirects
                        .unwrap_or_default()
                        .into_iter()
                        .map(|o| o.0)
                        .collect(),
                    webhooks: Vec::new(),
                    provision: h.provision,
                };
                (name, host)
            })
            .collect();
        Self {
            listen,
            database: raw
                .database
                .unwrap_or_else(|| DatabaseLocation::Sqlite(PathBuf::from("invite-server.db"))),
            database_pool_size: raw
                .database_pool_size
                .map_or(crate::store::DEFAULT_POOL_SIZE, |p| p.0),
            session_idle_expiry: raw
                .session_idle_expiry
                .map_or(Duration::from_secs(30 * 86_400), |d| d.0),
            login_attempts_per_minute: raw.login_attempts_per_minute.unwrap_or(20),
            trusted_proxies: TrustedProxies {
                nets: raw
                    .trusted_proxies
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.0)
                    .collect(),
                header: raw.trusted_proxy_header.unwrap_or_default(),
            },
            max_connections: raw.max_connections.map_or(1024, |m| m.0),
            login_attempts_per_account_per_minute: raw
                .login_attempts_per_account_per_minute
                .unwrap_or(10),
            password_hash_queue: raw
                .password_hash_queue
                .map_or(crate::passwords::DEFAULT_QUEUE, |q| q.0),
            hosts,
            builtin_host,
            retention: raw
                .retention
                .map_or(Duration::from_secs(90 * 86_400), |d| d.0),
            purge_interval: raw
                .purge_interval
                .map_or(Duration::from_secs(3600), |d| d.0),
            metrics_listen: raw.metrics_listen.map(|l| l.0),
            log_format: raw.log_format.unwrap_or_default(),
        }
    }

    /// With no `[hosts]` configured, points the built-in host's links at
    /// `addr`, the address the server actually bound (the real port when 0
    /// was asked for). Configured hosts keep their `public_url`.
    pub fn follow_listen_address(&mut self, addr: SocketAddr) {
        if self.builtin_host {
            for host in self.hosts.values_mut() {
                host.public_url = PublicUrl::for_listen(addr);
            }
        }
    }

    /// True when no `[hosts]` was configured and the built-in `localhost`
    /// is served, its links following the listen address.
    pub fn serves_builtin_host(&self) -> bool {
        self.builtin_host
    }

    /// The configuration of a host, if this server serves it.
    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        let name = HostName::parse(name).ok()?;
        self.hosts.get(&name)
    }
}

/// The one host served when no `[hosts]` is configured: `localhost`, its
/// links on the configured listen address (what the admin commands print);
/// `serve` then points them at the address it bound.
fn builtin_hosts(listen: SocketAddr) -> BTreeMap<HostName, RawHost> {
    // A fixed, valid host name: letters only.
    let name = HostName::parse("localhost").expect("`localhost` is a valid host name");
    let host = RawHost {
        public_url: Spanned::new(0..0, PublicUrl::for_listen(listen)),
        invite_page: None,
        invite_expiry: None,
        site_name: None,
        after_registration_url: None,
        after_registration_text: None,
        allowed_redirects: None,
        max_invite_expiry: None,
        max_invite_uses: None,
        account_invites: None,
        webhooks: None,
        provision: None,
    };
    BTreeMap::from([(name, host)])
}

fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let invalid = |offset: Option<usize>, message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        line: offset
            .map(|o| locate(text, o).to_string())
            .unwrap_or_default(),
        message,
    };
    let raw: RawConfig = toml::from_str(text)
        .map_err(|e| invalid(e.span().map(|s| s.start), e.message().trim().to_owned()))?;
    if let Some(hosts) = &raw.hosts {
        check_hosts(hosts).map_err(|(offset, message)| invalid(Some(offset), message))?;
    }
    Ok(raw)
}

/// Refuses host tables a request could not be matched against without
/// guessing: none at all, two hosts on one address, or a host whose links
/// point at another host's name. The error carries the offending offset.
fn check_hosts(hosts: &Spanned<BTreeMap<HostName, RawHost>>) -> Result<(), (usize, String)> {
    if hosts.get_ref().is_empty() {
        return Err((
            hosts.span().start,
            "[hosts] names no host: add a [hosts.\"NAME\"] table with a public_url, \
             or leave [hosts] out to serve the built-in `localhost`"
                .to_owned(),
        ));
    }
    let list: Vec<_> = hosts.get_ref().iter().collect();
    for (i, &(name, host)) in list.iter().enumerate() {
        let url = host.public_url.get_ref();
        if let Some(&(other, _)) = list
            .iter()
            .find(|(o, _)| *o != name && o.as_str() == url.host)
        {
            return Err((
                host.public_url.span().start,
                format!(
                    "the public_url of host `{name}` is on `{other}`, the name of another \
                     configured host: a request to `{other}` could not tell which host it is for"
                ),
            ));
        }
        for &(other, other_host) in &list[i + 1..] {
            if url.shares_host_with(other_host.public_url.get_ref()) {
                // Point at whichever of the two comes later in the file.
                let at = host
                    .public_url
                    .span()
                    .start
                    .max(other_host.public_url.span().start);
                return Err((
                    at,
                    format!(
                        "hosts `{name}` and `{other}` have public URLs on the same host name \
                         `{}`: a request to it could not tell which host it is for, and \
                         browsers would share their sign-in cookies (ports do not separate them)",
                        url.host
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Where in a TOML text an error is: its line, and the key written on that line.
struct Location {
    line: usize,
    key: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ", line {}", self.line)?;
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        Ok(())
    }
}

fn locate(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .or_else(|| {
            let t = line_text.trim();
            t.starts_with('[')
                .then(|| t.trim_matches(['[', ']']).to_owned())
        })
        .filter(|k| !k.is_empty());
    Location { line, key }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_url_names_its_host_as_a_host_header_would_without_the_port() {
        for (url, host) in [
            ("https://Chat.Example.org./", "chat.example.org"),
            ("https://example.org:443", "example.org"),
            ("http://127.0.0.1:5280/base", "127.0.0.1"),
            ("https://[::1]:8443", "[::1]"),
        ] {
            let parsed = PublicUrl::parse(url).unwrap();
            assert_eq!(parsed.host_name(), host, "{url}");
        }
    }

    #[test]
    fn durations_take_the_five_suffixes() {
        assert_eq!(
            ConfigDuration::parse("90s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            ConfigDuration::parse("2w").unwrap().0,
            Duration::from_secs(1_209_600)
        );
        for bad in ["", "7", "d", "7x", "-1d", "0s", "1.5h", "99999999999999w"] {
            assert!(ConfigDuration::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_load_without_a_file() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:5280");
        let h = c.host("localhost").unwrap();
        assert_eq!(h.invite_url("T"), "http://127.0.0.1:5280/invite?T");
        assert_eq!(h.invite_expiry, Duration::from_secs(7 * 86_400));
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.max_connections, 1024);
    }

    #[test]
    fn the_example_file_is_a_valid_configuration() {
        let c = from_text(include_str!("../config/example.toml")).unwrap();
        assert!(c.host("example.com").is_some());
    }

    /// A configuration from `text` alone (no built-in defaults under it).
    fn from_text(text: &str) -> Result<Config, String> {
        parse_raw(text, "f.toml")
            .map(Config::from_raw)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_built_in_host_links_to_the_listen_address() {
        for (listen, url) in [
            ("127.0.0.1:18914", "http://127.0.0.1:18914"),
            ("0.0.0.0:18914", "http://localhost:18914"),
            ("[::]:18914", "http://localhost:18914"),
            ("[::1]:18914", "http://[::1]:18914"),
            ("[::ffff:127.0.0.2]:18914", "http://127.0.0.2:18914"),
            ("10.1.2.3:80", "http://10.1.2.3"),
        ] {
            let c = from_text(&format!("listen = \"{listen}\"\n")).unwrap();
            let h = c.host("localhost").unwrap();
            assert_eq!(h.public_url.as_str(), url, "{listen}");
        }
    }

    #[test]
    fn only_the_built_in_host_follows_the_bound_address() {
        let bound: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let mut c = from_text("listen = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(
            c.host("localhost").unwrap().invite_url("T"),
            "http://127.0.0.1:0/invite?T"
        );
        c.follow_listen_address(bound);
        assert_eq!(
            c.host("localhost").unwrap().invite_url("T"),
            "http://127.0.0.1:40001/invite?T"
        );
        let mut c =
            from_text("[hosts.\"localhost\"]\npublic_url = \"https://chat.example\"\n").unwrap();
        c.follow_listen_address(bound);
        assert_eq!(
            c.host("localhost").unwrap().public_url.as_str(),
            "https://chat.example"
        );
    }

    #[test]
    fn an_empty_hosts_table_is_an_error_naming_its_line() {
        for text in [
            "listen = \"127.0.0.1:1\"\n[hosts]\n",
            "listen = \"127.0.0.1:1\"\nhosts = {}\n",
        ] {
            let e = from_text(text).unwrap_err();
            assert!(e.contains("f.toml, line 2, key `hosts`"), "{text:?}: {e}");
            assert!(e.contains("names no host"), "{e}");
        }
    }

    #[test]
    fn hosts_that_a_request_could_not_tell_apart_are_errors() {
        for (text, line, says) in [
            // Same host and port, whatever scheme and path.
            (
                "[hosts.\"a.test\"]\npublic_url = \"https://a.test/x\"\n[hosts.\"b.test\"]\npublic_url = \"http://A.test/y\"\n",
                4,
                "same host name `a.test`",
            ),
            (
                "[hosts.\"b.test\"]\npublic_url = \"https://a.test:8443\"\n[hosts.\"a.test\"]\npublic_url = \"https://a.test.:8443/\"\n",
                4,
                "same host name `a.test`",
            ),
            // Ports do not separate cookies.
            (
                "[hosts.\"d.test\"]\npublic_url = \"https://shared.test:8443\"\n[hosts.\"e.test\"]\npublic_url = \"https://shared.test:9443\"\n",
                4,
                "same host name `shared.test`",
            ),
            (
                "[hosts.\"a.test\"]\npublic_url = \"https://a.test:443\"\n\n[hosts.\"b.test\"]\npublic_url = \"https://a.test\"\n",
                5,
                "same host name `a.test`",
            ),
            // A link onto another configured host's name.
            (
                "[hosts.\"a.test\"]\npublic_url = \"https://web.a.test\"\n[hosts.\"x.test\"]\npublic_url = \"https://a.test:8443\"\n",
                4,
                "is on `a.test`, the name of another",
            ),
        ] {
            let e = from_text(text).unwrap_err();
            let want = format!("line {line}, key `public_url`");
            assert!(e.contains(&want), "{text:?}: {e} lacks {want}");
            assert!(e.contains(says), "{text:?}: {e} lacks {says}");
        }
        // A host's own name, on any port: fine.
        from_text(
            "[hosts.\"a.test\"]\npublic_url = \"https://a.test\"\n[hosts.\"b.test\"]\npublic_url = \"https://b.test:8443\"\n[hosts.\"c.test\"]\npublic_url = \"http://c.test:8443/c\"\n[hosts.\"d.test\"]\npublic_url = \"https://shared.test:8443\"\n",
        )
        .unwrap();
    }

    #[test]
    fn an_after_registration_url_with_user_info_is_refused_without_repeating_it() {
        let e = AbsoluteUrl::try_from("https://user:s3cret@chat.test/".to_owned())
            .unwrap_err()
            .0;
        assert!(e.contains("user name or password"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        assert!(AbsoluteUrl::try_from("https://chat.test/welcome".to_owned()).is_ok());
    }

    #[test]
    fn allowed_redirects_take_origins_alone_in_the_form_browsers_compare() {
        let ok = |s: &str| RedirectOrigin::try_from(s.to_owned()).map(|o| o.0);
        assert_eq!(ok("HTTPS://Chat.Test:443").unwrap(), "https://chat.test");
        assert_eq!(
            ok("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "chat.test",
            "ftp://chat.test",
            "https://chat.test/app",
            "https://chat.test/?a",
            "https://chat.test/#a",
            "javascript:alert(1)",
            "https:",
        ] {
            let e = ok(bad).unwrap_err().0;
            assert!(e.contains("allowed_redirects"), "{bad}: {e}");
        }
        let e = ok("https://user:s3cret@chat.test").unwrap_err().0;
        assert!(
            e.contains("user name or password") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn a_public_url_with_user_info_is_refused_without_repeating_it() {
        for url in [
            "https://user:s3cret@a.test",
            "https://user@a.test",
            "https://:s3cret@a.test",
        ] {
            let e = PublicUrl::parse(url).unwrap_err().0;
            assert!(e.contains("user name or password"), "{url}: {e}");
            assert!(!e.contains("s3cret") && !e.contains("user@"), "{url}: {e}");
        }
        let e = PublicUrl::parse("https://user:s3cret@a.test:99999")
            .unwrap_err()
            .0;
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"]).unwrap();
        for ip in [
            "10.1.2.3",
            "192.0.2.7",
            "2001:db8::5",
            "::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(t.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::2"] {
            assert!(!t.contains(ip.parse().unwrap()), "{ip}");
        }
        // A mapped address in the list counts as the IPv4 one.
        let t = TrustedProxies::parse(&["::ffff:192.0.2.1"]).unwrap();
        assert!(t.contains("192.0.2.1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.300",
            "10.0.0.0/33",
            "example.com",
            "[::1]",
            " 10.0.0.1",
            "10.0.0.1/8",
        ] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad:?}");
        }
        let e = from_text("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n").unwrap_err();
        assert!(e.contains("line 1, key `trusted_proxies`"), "{e}");
        assert!(e.contains("write \"10.0.0.0/8\""), "{e}");
    }

    #[test]
    fn max_connections_is_from_one_to_a_million() {
        assert_eq!(
            from_text("max_connections = 1\n").unwrap().max_connections,
            1
        );
        for bad in ["0", "-5", "1000001", "\"32\""] {
            let e = from_text(&format!("max_connections = {bad}\n")).unwrap_err();
            assert!(e.contains("line 1, key `max_connections`"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = parse_raw(
            "listen = \"127.0.0.1:1\"\ninvite_expiry = \"7x\"\n",
            "f.toml",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("f.toml, line 2, key `invite_expiry`"), "{msg}");
        let e = parse_raw("[hosts.\"a.com\"]\npublic_url = \"a.com\"\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("line 2, key `public_url`"), "{e}");
        let e = parse_raw("bogus = 1\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("line 1, key `bogus`"), "{e}");
        let e = parse_raw(
            "[hosts.\"a.com\"]\npublic_url = \"https://a.com\"\ninvite_page = \"https://a.com/x\\n?{token}\"\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 3, key `invite_page`"), "{e}");
    }
}
