//! Configuration: the raw TOML shape (what a file may say) kept apart from the
//! validated [`Config`] the rest of the program uses.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::domain::{HostName, Invalid};

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
    /// `host[:port]`, computed once: `/api/auth/check` compares it with the
    /// `Host` of every request.
    authority: String,
}

impl PublicUrl {
    /// Parses and normalises a public URL.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let url = Url::parse(s).map_err(|e| {
            Invalid::new(format!(
                "invalid URL `{s}`: {e} (write it in full, e.g. \"https://example.com\")"
            ))
        })?;
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
        let authority = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        Ok(Self {
            url: url.as_str().trim_end_matches('/').to_owned(),
            authority,
        })
    }

    /// The URL text, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// `host[:port]` as a `Host` header names it (the port only when not the
    /// scheme's default), in lowercase.
    pub fn authority(&self) -> &str {
        &self.authority
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
        usize::try_from(n)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "invalid password_hash_queue {n}: it must be 1 to {}",
                    Self::MAX
                ))
            })
    }
}

/// What a configuration file may say. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<ListenAddr>,
    database: Option<PathBuf>,
    invite_expiry: Option<ConfigDuration>,
    session_idle_expiry: Option<ConfigDuration>,
    login_attempts_per_minute: Option<u32>,
    login_attempts_per_account_per_minute: Option<u32>,
    password_hash_queue: Option<HashQueue>,
    hosts: Option<BTreeMap<HostName, RawHost>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    public_url: PublicUrl,
    invite_page: Option<InvitePageTemplate>,
    invite_expiry: Option<ConfigDuration>,
    site_name: Option<String>,
    after_registration_url: Option<AbsoluteUrl>,
    after_registration_text: Option<String>,
}

/// Where to send someone after registration: an absolute http(s) URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AbsoluteUrl(String);

impl TryFrom<String> for AbsoluteUrl {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        match Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Self(s)),
            _ => Err(Invalid::new(format!(
                "invalid URL `{s}`: it must start with http:// or https://"
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
    /// The SQLite database file.
    pub database: PathBuf,
    /// A sign-in unused this long stops working.
    pub session_idle_expiry: Duration,
    /// Sign-in attempts allowed per client address per minute; 0 for no limit.
    pub login_attempts_per_minute: u32,
    /// Sign-in attempts allowed per account name (on one host) per minute,
    /// from all addresses together; 0 for no limit.
    pub login_attempts_per_account_per_minute: u32,
    /// Sign-ins and registrations that may wait for a hashing thread; more get 503.
    pub password_hash_queue: usize,
    /// The virtual hosts, by name.
    pub hosts: BTreeMap<HostName, HostConfig>,
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
            raw.invite_expiry = user.invite_expiry.or(raw.invite_expiry);
            raw.session_idle_expiry = user.session_idle_expiry.or(raw.session_idle_expiry);
            raw.login_attempts_per_minute = user
                .login_attempts_per_minute
                .or(raw.login_attempts_per_minute);
            raw.login_attempts_per_account_per_minute = user
                .login_attempts_per_account_per_minute
                .or(raw.login_attempts_per_account_per_minute);
            raw.password_hash_queue = user.password_hash_queue.or(raw.password_hash_queue);
            if user.hosts.is_some() {
                raw.hosts = user.hosts;
            }
        }
        Ok(Self::from_raw(raw))
    }

    fn from_raw(raw: RawConfig) -> Self {
        // The embedded defaults set every top-level key, so these fallbacks only
        // matter if someone edits config/default.toml carelessly.
        let default_expiry = raw
            .invite_expiry
            .map_or(Duration::from_secs(7 * 86_400), |d| d.0);
        let hosts = raw
            .hosts
            .unwrap_or_default()
            .into_iter()
            .map(|(name, h)| {
                let host = HostConfig {
                    site_name: h
                        .site_name
                        .filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| name.to_string()),
                    name: name.clone(),
                    public_url: h.public_url,
                    invite_page: h.invite_page.unwrap_or_else(|| {
                        InvitePageTemplate(InvitePageTemplate::DEFAULT.to_owned())
                    }),
                    invite_expiry: h.invite_expiry.map_or(default_expiry, |d| d.0),
                    after_registration_url: h.after_registration_url.map(|u| u.0),
                    after_registration_text: h.after_registration_text,
                };
                (name, host)
            })
            .collect();
        Self {
            listen: raw
                .listen
                .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5280)), |l| l.0),
            database: raw
                .database
                .unwrap_or_else(|| PathBuf::from("invite-server.db")),
            session_idle_expiry: raw
                .session_idle_expiry
                .map_or(Duration::from_secs(30 * 86_400), |d| d.0),
            login_attempts_per_minute: raw.login_attempts_per_minute.unwrap_or(20),
            login_attempts_per_account_per_minute: raw
                .login_attempts_per_account_per_minute
                .unwrap_or(10),
            password_hash_queue: raw
                .password_hash_queue
                .map_or(crate::passwords::DEFAULT_QUEUE, |q| q.0),
            hosts,
        }
    }

    /// The configuration of a host, if this server serves it.
    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        let name = HostName::parse(name).ok()?;
        self.hosts.get(&name)
    }
}

fn parse_raw(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|span| locate(text, span.start))
            .map(|loc| loc.to_string())
            .unwrap_or_default();
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line,
            message: e.message().trim().to_owned(),
        }
    })
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
    fn a_public_url_names_its_authority_as_a_host_header_would() {
        for (url, authority) in [
            ("https://Chat.Example.org/", "chat.example.org"),
            ("https://example.org:443", "example.org"),
            ("http://127.0.0.1:5280/base", "127.0.0.1:5280"),
            ("https://[::1]:8443", "[::1]:8443"),
        ] {
            let parsed = PublicUrl::parse(url).unwrap();
            assert_eq!(parsed.authority(), authority, "{url}");
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
        assert_eq!(h.invite_url("T"), "http://localhost:5280/invite?T");
        assert_eq!(h.invite_expiry, Duration::from_secs(7 * 86_400));
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
