use std::time::Duration;

use super::{AccountName, Invalid};
use crate::config::{ConfigDuration, HostConfig};

/// The longest operator's note kept with an invite, in characters.
pub const MAX_NOTE_CHARS: usize = 200;

/// Invite options as a client typed them, before validation: every minting
/// surface (`/invites_api`, `POST /api/invite`, `invites create`, the admin
/// API) fills one of these and hands it to [`InviteOptions::validate`], so all
/// of them accept and refuse exactly the same values.
#[derive(Debug, Clone, Default)]
pub struct RawInviteOptions {
    /// How long the invite stays valid, in the configuration's duration
    /// syntax (`30m`, `12h`, `7d`).
    pub ttl: Option<String>,
    /// How many accounts may register with it, as text.
    pub uses: Option<String>,
    /// The operator's note.
    pub note: Option<String>,
    /// The only account name that may register with it.
    pub name: Option<String>,
}

/// Validated invite options, within a host's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteOptions {
    /// How long the invite stays valid.
    pub ttl: Duration,
    /// How many accounts may register with it.
    pub uses: u32,
    /// The operator's note, never shown to invitees.
    pub note: Option<String>,
    /// The only account name that may register with it.
    pub name: Option<AccountName>,
}

impl InviteOptions {
    /// The options of an invite minted with none given: the host's expiry,
    /// one use, no note, any name.
    pub fn defaults(host: &HostConfig) -> Self {
        Self {
            ttl: host.invite_expiry,
            uses: 1,
            note: None,
            name: None,
        }
    }

    /// Checks `raw` against `host`'s limits. The message names the option
    /// and the accepted range, for the person who typed it.
    pub fn validate(raw: &RawInviteOptions, host: &HostConfig) -> Result<Self, Invalid> {
        let mut options = Self::defaults(host);
        if let Some(ttl) = &raw.ttl {
            options.ttl = Self::parse_ttl(ttl, host)?;
        }
        if let Some(uses) = &raw.uses {
            let out_of_range = || {
                Invalid::new(format!(
                    "uses: `{}` is not a whole number from 1 to {} (the max_invite_uses of {})",
                    uses.escape_default(),
                    host.max_invite_uses,
                    host.name
                ))
            };
            let n: u32 = uses.trim().parse().map_err(|_| out_of_range())?;
            if n == 0 || n > host.max_invite_uses {
                return Err(out_of_range());
            }
            options.uses = n;
        }
        if let Some(note) = &raw.note {
            if note.chars().count() > MAX_NOTE_CHARS || note.chars().any(char::is_control) {
                return Err(Invalid::new(format!(
                    "note: one line of at most {MAX_NOTE_CHARS} characters"
                )));
            }
            options.note = Some(note.clone()).filter(|n| !n.trim().is_empty());
        }
        if let Some(name) = &raw.name {
            options.name =
                Some(AccountName::parse(name).map_err(|e| Invalid::new(format!("name: {e}")))?);
        }
        // One name makes one account: every use after the first could
        // never be spent.
        if options.name.is_some() && options.uses > 1 {
            return Err(Invalid::new(
                "name and uses: an invite for one fixed name creates one account, so uses must be 1",
            ));
        }
        Ok(options)
    }
}

impl InviteOptions {
    /// A `ttl` as typed (the configuration's duration syntax), within
    /// `host`'s `max_invite_expiry`.
    pub fn parse_ttl(text: &str, host: &HostConfig) -> Result<Duration, Invalid> {
        let ttl = ConfigDuration::parse(text)
            .map_err(|e| Invalid::new(format!("ttl: {e}")))?
            .0;
        Self::cap_ttl(ttl, host)
    }

    /// `ttl` if it is within `host`'s `max_invite_expiry`: every invite,
    /// reset invites included, is bound by it.
    pub fn cap_ttl(ttl: Duration, host: &HostConfig) -> Result<Duration, Invalid> {
        if ttl > host.max_invite_expiry {
            return Err(Invalid::new(format!(
                "ttl: at most {} on {} (its max_invite_expiry)",
                describe(host.max_invite_expiry),
                host.name
            )));
        }
        Ok(ttl)
    }
}

/// A duration as the configuration would write it: the largest whole unit.
fn describe(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, per) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs % per == 0 {
            return format!("{}{unit}", secs / per);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn host() -> HostConfig {
        let config = Config::load(None).unwrap();
        config.hosts.values().next().unwrap().clone()
    }

    fn raw(
        ttl: Option<&str>,
        uses: Option<&str>,
        note: Option<&str>,
        name: Option<&str>,
    ) -> RawInviteOptions {
        RawInviteOptions {
            ttl: ttl.map(str::to_owned),
            uses: uses.map(str::to_owned),
            note: note.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    #[test]
    fn no_options_mean_the_hosts_expiry_and_one_use() {
        let h = host();
        let o = InviteOptions::validate(&RawInviteOptions::default(), &h).unwrap();
        assert_eq!(o, InviteOptions::defaults(&h));
        assert_eq!((o.ttl, o.uses), (h.invite_expiry, 1));
    }

    #[test]
    fn values_within_the_limits_are_taken() {
        let o = InviteOptions::validate(
            &raw(Some("12h"), Some("100"), Some("for the team"), None),
            &host(),
        )
        .unwrap();
        assert_eq!(o.ttl, Duration::from_secs(12 * 3600));
        assert_eq!(o.uses, 100);
        assert_eq!(o.note.as_deref(), Some("for the team"));
        let o =
            InviteOptions::validate(&raw(None, Some("1"), None, Some("alice")), &host()).unwrap();
        assert_eq!(o.name.unwrap().as_str(), "alice");
    }

    #[test]
    fn values_outside_the_limits_are_refused_with_the_option_named() {
        let long = "x".repeat(201);
        for (bad, option) in [
            (raw(Some("31d"), None, None, None), "ttl"),
            (raw(Some("7x"), None, None, None), "ttl"),
            (raw(None, Some("0"), None, None), "uses"),
            (raw(None, Some("101"), None, None), "uses"),
            (raw(None, Some("-1"), None, None), "uses"),
            (raw(None, Some("two"), None, None), "uses"),
            (raw(None, None, Some(&long), None), "note"),
            (raw(None, None, Some("a\nb"), None), "note"),
            (raw(None, None, None, Some("Not A Name")), "name"),
            (raw(None, Some("2"), None, Some("alice")), "name and uses"),
        ] {
            let e = InviteOptions::validate(&bad, &host()).unwrap_err();
            assert!(e.0.starts_with(option), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_are_described_in_their_largest_unit() {
        assert_eq!(describe(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(describe(Duration::from_secs(14 * 86_400)), "2w");
        assert_eq!(describe(Duration::from_secs(90)), "90s");
    }
}
