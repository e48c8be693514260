//! What an API key may do and how fast: its scope and its mint rate, each
//! validated once here for the command line, the store and the server.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use super::Invalid;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyScope {
    /// Mint invites, nothing else (every key made before scopes existed).
    #[default]
    Mint,
    /// Mint invites, and manage the invites and accounts of its host.
    Admin,
}

impl KeyScope {
    /// Parses `mint` or `admin`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "mint" => Ok(Self::Mint),
            "admin" => Ok(Self::Admin),
            _ => Err(Invalid::new(format!(
                "invalid scope `{s}`: a key's scope is `mint` or `admin`"
            ))),
        }
    }

    /// The stored and shown form: `mint` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mint => "mint",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most mints a rate may allow per period: past this it is no limit.
const MAX_LIMIT: u32 = 1_000_000;
/// The longest period: a month. A longer window would be forgotten by any
/// restart long before it ran out (the count lives in memory).
const MAX_PERIOD_SECS: u32 = 31 * 86_400;

/// How many invites a key may mint per period, e.g. `60/h`: a burst of the
/// whole number at once, refilled evenly over the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MintRate {
    limit: NonZeroU32,
    period_secs: NonZeroU32,
}

impl MintRate {
    /// Parses `N/PERIOD`: a whole number of mints, a slash, and a period
    /// written as a unit (`s`, `m`, `h`, `d`), optionally after a whole
    /// number of them: `60/h`, `1000/d`, `5/30s`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let bad = || {
            Invalid::new(format!(
                "invalid rate `{s}`: write N/PERIOD, a number of mints per s, m, h or d, e.g. \"60/h\" or \"5/30s\""
            ))
        };
        let (n, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let limit: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let unit = period.chars().last().ok_or_else(bad)?;
        let secs_per: u32 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let count = &period[..period.len() - 1];
        let count: u32 = if count.is_empty() {
            1
        } else {
            count.parse().map_err(|_| bad())?
        };
        // Saturated, an overlong period is refused as too long.
        let period_secs = count.saturating_mul(secs_per);
        Self::from_parts(limit, period_secs)
    }

    /// A rate from its stored parts; refuses what [`MintRate::parse`] would.
    pub fn from_parts(limit: u32, period_secs: u32) -> Result<Self, Invalid> {
        let limit = NonZeroU32::new(limit)
            .filter(|n| n.get() <= MAX_LIMIT)
            .ok_or_else(|| {
                Invalid::new(format!(
                    "invalid rate: the number of mints is 1 to {MAX_LIMIT}"
                ))
            })?;
        let period_secs = NonZeroU32::new(period_secs)
            .filter(|p| p.get() <= MAX_PERIOD_SECS)
            .ok_or_else(|| {
                Invalid::new("invalid rate: the period is 1 second to 31 days".to_owned())
            })?;
        Ok(Self { limit, period_secs })
    }

    /// Mints allowed per period (and at once).
    pub fn limit(self) -> NonZeroU32 {
        self.limit
    }

    /// The period, in seconds.
    pub fn period_secs(self) -> NonZeroU32 {
        self.period_secs
    }

    /// The period.
    pub fn period(self) -> Duration {
        Duration::from_secs(u64::from(self.period_secs.get()))
    }
}

impl fmt::Display for MintRate {
    /// `60/h`, `5/30s`: the largest unit that divides the period.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.period_secs.get();
        let (count, unit) = [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')]
            .into_iter()
            .find(|(per, _)| secs % per == 0)
            .map_or((secs, 's'), |(per, unit)| (secs / per, unit));
        if count == 1 {
            write!(f, "{}/{unit}", self.limit)
        } else {
            write!(f, "{}/{count}{unit}", self.limit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_mint_or_admin() {
        assert_eq!(KeyScope::parse("mint"), Ok(KeyScope::Mint));
        assert_eq!(KeyScope::parse("admin"), Ok(KeyScope::Admin));
        for bad in ["", "Admin", "root", " mint"] {
            assert!(KeyScope::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(KeyScope::default(), KeyScope::Mint);
    }

    #[test]
    fn rates_read_n_per_unit_and_print_back_the_same() {
        for (text, limit, secs) in [
            ("60/h", 60, 3600),
            ("1/s", 1, 1),
            ("1000/d", 1000, 86_400),
            ("5/30s", 5, 30),
            ("10/15m", 10, 900),
            ("3/2d", 3, 172_800),
        ] {
            let r = MintRate::parse(text).unwrap();
            assert_eq!((r.limit().get(), r.period_secs().get()), (limit, secs));
            assert_eq!(r.to_string(), text);
        }
        assert_eq!(MintRate::parse("60/60m").unwrap().to_string(), "60/h");
    }

    #[test]
    fn a_rate_that_is_not_n_per_period_is_refused() {
        for bad in [
            "",
            "60",
            "60/",
            "/h",
            "0/h",
            "-1/h",
            "60/w",
            "60/0h",
            "60/h/2",
            "x/h",
            "60/hh",
            "1000001/s",
            "1/32d",
            "1/99999999999d",
            "60 per hour",
        ] {
            assert!(MintRate::parse(bad).is_err(), "{bad:?}");
        }
    }
}
