//! The `synapse` kind: a Matrix homeserver (Synapse), through its admin API.
//!
//! Accounts are made with shared-secret registration (`GET` then `POST
//! /_synapse/admin/v1/register`): a nonce, then an HMAC-SHA1 keyed with the
//! homeserver's `registration_shared_secret` over
//! `nonce \0 user \0 password \0 notadmin`. Synapse hashes the password
//! itself. Changing a password, deactivating (`delete`) and locking
//! (`disable`/`enable`) need a server admin's access token
//! (`admin_token_file`); without one they are [`ProvisionError::Unsupported`].

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use data_encoding::HEXLOWER;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::Sha1;

use super::{ProvisionError, Provisioner};
use crate::domain::{AccountName, Password};

/// Stop reading an answer past this: Synapse's answers are small objects.
const MAX_ANSWER: usize = 64 * 1024;

/// A secret read from a file when the configuration is loaded (surrounding
/// whitespace, such as the file's final newline, dropped). Its `Debug`
/// prints nothing of it, and its error names the file, never its content.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "PathBuf")]
pub struct SecretFile(String);

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretFile(<redacted>)")
    }
}

impl TryFrom<PathBuf> for SecretFile {
    type Error = String;
    fn try_from(path: PathBuf) -> Result<Self, String> {
        let file = path.display();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the secret file {file}: {e}"))?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(format!("the secret file {file} is empty"));
        }
        Ok(Self(secret.to_owned()))
    }
}

#[derive(Debug)]
pub(super) struct Synapse {
    /// The homeserver's base URL, without a final `/`.
    pub(super) url: String,
    /// The homeserver's `server_name`: the part of user IDs after `:`.
    pub(super) server_name: String,
    pub(super) shared_secret: SecretFile,
    pub(super) admin_token: Option<SecretFile>,
    pub(super) timeout: Duration,
}

/// The shared-secret registration MAC, as Synapse checks it (hex).
fn registration_mac(secret: &str, nonce: &str, user: &str, password: &str) -> String {
    // HMAC takes a key of any length, so this never fails; the fallback
    // (a MAC Synapse refuses) is never used.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    for (i, part) in [nonce, user, password, "notadmin"].into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part.as_bytes());
    }
    HEXLOWER.encode(&mac.finalize().into_bytes())
}

/// Synapse's answer to one request: its status and JSON body (`Null` when
/// the body is not JSON).
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// A failure naming what Synapse said; its message never holds the
    /// password (Synapse does not repeat it).
    fn failure(&self, what: &str) -> ProvisionError {
        let error = self.body["error"].as_str().unwrap_or("");
        ProvisionError::Unavailable(format!(
            "Synapse refused to {what}: {} {} {error}",
            self.status.as_u16(),
            self.errcode()
        ))
    }
}

impl Synapse {
    fn client(&self) -> Result<reqwest::Client, ProvisionError> {
        reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProvisionError::Unavailable(format!("cannot make an HTTP client: {e}")))
    }

    /// One request to `path`; network failures, timeouts and 5xx are
    /// `Unavailable`, any other answer is returned.
    async fn call(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        token: Option<&SecretFile>,
        body: Option<&Value>,
    ) -> Result<Answer, ProvisionError> {
        let mut request = client.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(&token.0);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        // without_url: the error must not carry a URL with a user ID in it
        // into logs any more than needed; the reason is enough.
        let unreachable = |e: reqwest::Error| {
            ProvisionError::Unavailable(format!("Synapse at {}: {}", self.url, e.without_url()))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let body =
            serde_json::from_slice(&bytes[..bytes.len().min(MAX_ANSWER)]).unwrap_or(Value::Null);
        let answer = Answer { status, body };
        if status.is_server_error() {
            return Err(answer.failure("answer"));
        }
        Ok(answer)
    }

    /// The user ID of `name`, percent-encoded for a URL path.
    fn user_path(&self, name: &AccountName) -> String {
        let id = format!("@{}:{}", name.as_str(), self.server_name);
        utf8_percent_encode(&id, NON_ALPHANUMERIC).to_string()
    }

    /// A call with the admin token; `Unsupported` without one.
    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Answer, ProvisionError> {
        let token = self
            .admin_token
            .as_ref()
            .ok_or(ProvisionError::Unsupported)?;
        let client = self.client()?;
        self.call(&client, method, path, Some(token), Some(body))
            .await
    }
}

#[async_trait]
impl Provisioner for Synapse {
    async fn create(&self, name: &AccountName, password: &Password) -> Result<(), ProvisionError> {
        const PATH: &str = "/_synapse/admin/v1/register";
        let client = self.client()?;
        let answer = self.call(&client, Method::GET, PATH, None, None).await?;
        let Some(nonce) = answer.body["nonce"]
            .as_str()
            .filter(|_| answer.status.is_success())
        else {
            return Err(answer.failure("give a registration nonce"));
        };
        let mac = registration_mac(
            &self.shared_secret.0,
            nonce,
            name.as_str(),
            password.expose(),
        );
        let mut body = json!({
            "nonce": nonce,
            "username": name.as_str(),
            "password": password.expose(),
            "admin": false,
            "mac": mac,
        });
        let sent = self
            .call(&client, Method::POST, PATH, None, Some(&body))
            .await;
        // The request body held the password: not kept past the call.
        body["password"] = Value::Null;
        let answer = sent?;
        match (answer.status.is_success(), answer.errcode()) {
            (true, _) => Ok(()),
            (false, "M_USER_IN_USE") => Err(ProvisionError::Taken),
            (false, _) => Err(answer.failure("register the account")),
        }
    }

    async fn set_password(
        &self,
        name: &AccountName,
        password: &Password,
    ) -> Result<(), ProvisionError> {
        let path = format!("/_synapse/admin/v1/reset_password/{}", self.user_path(name));
        let body = json!({"new_password": password.expose(), "logout_devices": true});
        let answer = self.admin(Method::POST, &path, &body).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.failure("change the password"))
        }
    }

    async fn delete(&self, name: &AccountName) -> Result<(), ProvisionError> {
        // Synapse never frees a user ID; deactivating (and erasing) is the
        // nearest it has to deleting.
        let path = format!("/_synapse/admin/v1/deactivate/{}", self.user_path(name));
        let answer = self
            .admin(Method::POST, &path, &json!({"erase": true}))
            .await?;
        // An account already gone there counts as deleted.
        if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(answer.failure("deactivate the account"))
        }
    }

    async fn disable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.lock(name, true).await
    }

    async fn enable(&self, name: &AccountName) -> Result<(), ProvisionError> {
        self.lock(name, false).await
    }
}

impl Synapse {
    /// Locks or unlocks `name` (Synapse 1.93 or later): a locked account
    /// keeps its data but cannot be used.
    async fn lock(&self, name: &AccountName, locked: bool) -> Result<(), ProvisionError> {
        let path = format!("/_synapse/admin/v2/users/{}", self.user_path(name));
        let answer = self
            .admin(Method::PUT, &path, &json!({"locked": locked}))
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(answer.failure(if locked {
                "lock the account"
            } else {
                "unlock the account"
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registration_mac_matches_synapses_own_algorithm() {
        // From Python: hmac.new(b"secret", b"abc\0alice\0pw\0notadmin", sha1).hexdigest()
        assert_eq!(
            registration_mac("secret", "abc", "alice", "pw"),
            "42e32623fe124933c326f9d2d67ff7c617915a10"
        );
    }

    #[test]
    fn a_secret_file_is_read_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "t0ps3cret\n").unwrap();
        let s = SecretFile::try_from(path.clone()).unwrap();
        assert_eq!(s.0, "t0ps3cret");
        assert_eq!(format!("{s:?}"), "SecretFile(<redacted>)");
        std::fs::write(&path, "\n").unwrap();
        assert!(SecretFile::try_from(path).unwrap_err().contains("empty"));
        let e = SecretFile::try_from(dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn user_ids_in_paths_are_percent_encoded() {
        let s = Synapse {
            url: "http://127.0.0.1:1".into(),
            server_name: "example.org".into(),
            shared_secret: SecretFile("x".into()),
            admin_token: None,
            timeout: Duration::from_secs(1),
        };
        let name = AccountName::parse("a.b").unwrap();
        assert_eq!(s.user_path(&name), "%40a%2Eb%3Aexample%2Eorg");
    }
}
