//! Operations shared by the HTTP handlers and the admin commands, so both make
//! keys, invites and sessions the same way.

pub mod accounts;
pub mod admin;
pub mod invites;
pub mod keys;
pub mod login_limits;
pub mod provisioned;
pub mod sessions;
pub mod signin;

use chrono::{DateTime, Utc};

use crate::config::{Config, HostConfig};
use crate::crypto::{self, FormKey, RngError};
use crate::domain::{
    AccountName, HostName, IdentityToken, InviteOptions, InviteSecret, InviteToken, Password,
};
use crate::passwords::{HashError, Hasher};
use crate::store::{
    AccountRecord, InviteRecord, InviteSource, KeyRecord, NewAccount, NewInvite, NewSession, Store,
    StoreError,
};

impl From<RngError> for StoreError {
    fn from(e: RngError) -> Self {
        // The OS's random source failing is nothing a retry mends.
        StoreError::permanent(e)
    }
}

/// A failure no client can mend, as every surface answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// May pass by itself (a lock held past the busy timeout, a full
    /// hashing queue, a store shutting down): 503 with `Retry-After`.
    Transient,
    /// Will not (a bug, damaged data): 500 with a generic body.
    Permanent,
}

impl Outage {
    /// How to answer store error `e`, met while `doing` something that
    /// expected none of the answers it could be: logs it once, a transient
    /// failure as a warning and anything else as an error with its whole
    /// chain of causes. An answer such as `NotFound` reaching here is a path
    /// that forgot a case, so it is permanent too.
    pub fn of_store(e: &StoreError, doing: &'static str) -> Self {
        match e {
            StoreError::Backend(b) if b.is_transient() => {
                tracing::warn!(error = %e.chain(), doing, "store temporarily unavailable");
                Self::Transient
            }
            StoreError::Backend(_) => {
                tracing::error!(error = %e.chain(), doing, "store failure");
                Self::Permanent
            }
            StoreError::NotFound
            | StoreError::InviteUsed
            | StoreError::InviteExpired
            | StoreError::InviteRevoked
            | StoreError::NameNotAllowed
            | StoreError::InviteQuota
            | StoreError::NameTaken
            | StoreError::InviteReserved
            | StoreError::Provision(_) => {
                tracing::error!(answer = %e.chain(), doing, "a store answer this request has no answer for");
                Self::Permanent
            }
        }
    }

    /// How to answer hashing error `e`. A full queue is load, not a fault:
    /// the request log shows the 503, and nothing is logged here.
    pub fn of_hash(e: &HashError, doing: &'static str) -> Self {
        match e {
            HashError::Busy => Self::Transient,
            HashError::Failed(_) => {
                tracing::error!(error = %e, doing, "password hashing failed");
                Self::Permanent
            }
        }
    }
}

/// Why a use case that hashes a password before it writes did not finish:
/// the hasher's answer (busy or failed), kept apart from the store's so a
/// full hashing queue is never taken for a store failure.
#[derive(Debug, thiserror::Error)]
pub enum HashedWriteError {
    /// The hasher was busy or failed; nothing was written.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The store's answer, or its failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RngError> for HashedWriteError {
    fn from(e: RngError) -> Self {
        Self::Store(e.into())
    }
}

impl HashedWriteError {
    /// How to answer it when it is none of the answers the caller expects.
    pub fn outage(&self, doing: &'static str) -> Outage {
        match self {
            Self::Hash(e) => Outage::of_hash(e, doing),
            Self::Store(e) => Outage::of_store(e, doing),
        }
    }
}

/// A freshly minted invite: the token is shown to its requester this once.
#[derive(Debug)]
pub struct MintedInvite {
    /// The secret token.
    pub token: InviteToken,
    /// The page URL built from the host's template.
    pub url: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// The store's row id, whose public form is the invite id.
    pub row_id: i64,
    /// How many accounts may register with it.
    pub uses: u32,
}

/// An invite built but not yet stored: its token is finished by the id the
/// store gives it.
#[derive(Debug)]
pub struct UnsavedInvite {
    secret: InviteSecret,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    uses: u32,
}

impl UnsavedInvite {
    /// The invite as its requester sees it, once the store has saved it as `id`.
    pub fn saved_as(self, id: i64, host: &HostConfig) -> MintedInvite {
        let token = self.secret.into_token(id);
        MintedInvite {
            url: host.invite_url(token.expose()),
            token,
            created_at: self.created_at,
            expires_at: self.expires_at,
            row_id: id,
            uses: self.uses,
        }
    }
}

/// Builds (but does not store) a new invite for `host` with `options`
/// (validated against the host's limits by [`InviteOptions::validate`]).
pub fn new_invite(
    host: &HostConfig,
    source: InviteSource,
    issuer_name: Option<String>,
    options: &InviteOptions,
    now: DateTime<Utc>,
) -> Result<(UnsavedInvite, NewInvite), RngError> {
    let secret = InviteSecret::generate()?;
    // Durations are bounded to 100 years, well inside chrono's range.
    let expires_at =
        now + chrono::Duration::from_std(options.ttl).unwrap_or(chrono::Duration::days(7));
    let record = NewInvite {
        token_digest: secret.digest(),
        host: host.name.clone(),
        source,
        issuer_name,
        created_at: now,
        expires_at,
        uses_allowed: options.uses,
        note: options.note.clone(),
        fixed_name: options.name.clone(),
        pending_limit: None,
    };
    let unsaved = UnsavedInvite {
        secret,
        created_at: now,
        expires_at,
        uses: options.uses,
    };
    Ok((unsaved, record))
}

/// Who mints an invite over HTTP.
#[derive(Debug, Clone, Copy)]
pub enum Minter<'a> {
    /// An API key, by its record.
    Key(&'a KeyRecord),
    /// A signed-in account.
    Account(&'a AccountRecord),
}

impl Minter<'_> {
    /// The source its invites are recorded with.
    pub fn source(&self) -> InviteSource {
        match self {
            Self::Key(key) => InviteSource::Key(key.id.clone()),
            Self::Account(account) => InviteSource::Account(account.id),
        }
    }

    /// The kind of source, as the metrics count mints: `api` or `account`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Key(_) => "api",
            Self::Account(_) => "account",
        }
    }
}

/// Mints and stores one invite. `NotFound` when the minting key or account is
/// gone by the time the write commits; `InviteQuota` when an account holds
/// the host's `account_invites` pending invites already (checked in the
/// insert itself). Only an account's name is recorded as the inviter: a
/// key's name is the operator's private label, and invitees of a key are
/// shown the site's name instead.
pub async fn mint_invite(
    store: &dyn Store,
    host: &HostConfig,
    minter: Minter<'_>,
    options: &InviteOptions,
) -> Result<MintedInvite, StoreError> {
    let (issuer_name, pending_limit) = match minter {
        Minter::Key(_) => (None, None),
        Minter::Account(account) => (Some(account.name.to_string()), Some(host.account_invites)),
    };
    let (unsaved, mut record) =
        new_invite(host, minter.source(), issuer_name, options, Utc::now())?;
    record.pending_limit = pending_limit;
    let id = store.create_invite(record).await?;
    crate::metrics::invite_minted(host.name.as_str(), minter.kind());
    Ok(unsaved.saved_as(id, host))
}

/// The name invitees are shown as their inviter: the inviting account's, and
/// no other. Invites minted with a key before this rule recorded the key's
/// name, an operator's private label; it stays in the row but is never shown.
pub fn public_inviter(invite: &InviteRecord) -> Option<&str> {
    if invite.source.starts_with("account/") {
        invite.issuer_name.as_deref()
    } else {
        None
    }
}

/// The kind of source an invitee is told of: `api` (a key), `account` or
/// `cli`. Never the key's id, half of an operator's credential, nor an
/// account's row id, which would count accounts.
pub fn public_source(invite: &InviteRecord) -> &'static str {
    match invite.source.split('/').next() {
        Some("account") => "account",
        Some("cli") => "cli",
        _ => "api",
    }
}

/// The key that signs registration forms, made on the first start over a
/// database and read back on every later one.
pub async fn form_key(store: &dyn Store) -> Result<FormKey, StoreError> {
    let candidate = crypto::random_bytes::<{ FormKey::LEN }>()?;
    store.form_key(candidate).await
}

/// A new identity token and the session record to store for it.
pub fn new_session() -> Result<(IdentityToken, NewSession), RngError> {
    let token = IdentityToken::generate()?;
    let session = NewSession {
        token_digest: token.digest(),
        created_at: Utc::now(),
    };
    Ok((token, session))
}

/// Registers `name` with an invite: hashes the password, then in one store
/// write checks the invite, creates the account, consumes the invite and opens
/// a session. `invite` is the record `token` named when it was checked
/// usable; the account records its inviter from it ([`invited_by`]). Errors
/// are the hasher's, or the store's: `NameTaken`, `InviteUsed`,
/// `InviteExpired`, `NotFound`, or `Backend`.
pub async fn register(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    token: &InviteToken,
    invite: &InviteRecord,
    name: AccountName,
    password: Password,
) -> Result<(AccountRecord, IdentityToken), HashedWriteError> {
    // A cheap early answer for a taken name, before spending a hash on it;
    // the transaction below decides.
    match store.find_account(&host.name, &name).await {
        Ok(_) => return Err(StoreError::NameTaken.into()),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    if let Some(config) = &host.provision {
        let account = provisioned::unhashed(host, name, &invited_by(invite));
        return provisioned::register(store, hasher, host, config, token, account, password).await;
    }
    let password_hash = hasher.hash(password).await?;
    let (identity, session) = new_session()?;
    let now = Utc::now();
    let account = NewAccount {
        host: host.name.clone(),
        name,
        password_hash,
        created_at: now,
        invited_by: invited_by(invite),
        invite_id: None,
    };
    let account = store
        .redeem_invite(token.lookup(), account, session, now)
        .await?;
    crate::metrics::registration();
    Ok((account, identity))
}

/// How an account registered with `invite` records who invited it, readable
/// without a lookup: `key <id>`, `account <name>` or `cli`. Derived here, not
/// in the store, so every backend records what it is given.
pub fn invited_by(invite: &InviteRecord) -> String {
    if let Some(id) = invite.source.strip_prefix("api/token/") {
        format!("key {id}")
    } else if let Some(row) = invite.source.strip_prefix("account/") {
        // issuer_name holds the inviting account's name; an invite minted
        // before names were kept falls back to its row id.
        match &invite.issuer_name {
            Some(name) => format!("account {name}"),
            None => format!("account #{row}"),
        }
    } else {
        "cli".to_owned()
    }
}

/// Why an invite named by a client cannot be used; each surface words it.
#[derive(Debug)]
pub enum Unusable<'c> {
    /// Not a token, unknown, for a host no longer served, or for another host
    /// than the one the request is addressed to.
    NotFound,
    /// Used already (the host, for the page that says so).
    Used(&'c HostConfig),
    /// Past its expiry.
    Expired(&'c HostConfig),
    /// Withdrawn by an operator.
    Revoked(&'c HostConfig),
    /// The store failed.
    Store(StoreError),
}

/// The invite a client named by its token text, with its host, if it can be
/// used now. `addressed` is the configured host the request is addressed to,
/// if any: another host's invite is not found there, so one site's pages and
/// API never serve, describe or redeem another site's invites.
pub async fn usable_invite<'c>(
    store: &dyn Store,
    config: &'c Config,
    addressed: Option<&HostName>,
    token_text: &str,
) -> Result<(InviteToken, InviteRecord, &'c HostConfig), Unusable<'c>> {
    let token = InviteToken::parse(token_text).map_err(|_| Unusable::NotFound)?;
    let invite = match store.find_invite(token.lookup()).await {
        Ok(i) => i,
        Err(StoreError::NotFound) => return Err(Unusable::NotFound),
        Err(e) => return Err(Unusable::Store(e)),
    };
    if addressed.is_some_and(|h| *h != invite.host) {
        return Err(Unusable::NotFound);
    }
    let host = config.hosts.get(&invite.host).ok_or(Unusable::NotFound)?;
    match invite.usable_at(Utc::now()) {
        Ok(()) => Ok((token, invite, host)),
        Err(StoreError::InviteExpired) => Err(Unusable::Expired(host)),
        Err(StoreError::InviteRevoked) => Err(Unusable::Revoked(host)),
        Err(StoreError::InviteUsed) => Err(Unusable::Used(host)),
        // `usable_at` answers none of these; a store error is the store's.
        Err(
            e @ (StoreError::NotFound
            | StoreError::NameNotAllowed
            | StoreError::InviteQuota
            | StoreError::NameTaken
            | StoreError::Backend(_)
            | StoreError::InviteReserved
            | StoreError::Provision(_)),
        ) => Err(Unusable::Store(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_store_failure_is_an_outage_that_may_pass_and_a_permanent_one_is_not() {
        assert_eq!(
            Outage::of_store(&StoreError::transient("locked"), "testing"),
            Outage::Transient
        );
        assert_eq!(
            Outage::of_store(&StoreError::permanent("no such table"), "testing"),
            Outage::Permanent
        );
    }

    #[test]
    fn a_store_answer_that_reaches_the_generic_mapping_is_a_permanent_outage() {
        for answer in [
            StoreError::NotFound,
            StoreError::NameTaken,
            StoreError::InviteUsed,
            StoreError::InviteReserved,
        ] {
            assert_eq!(Outage::of_store(&answer, "testing"), Outage::Permanent);
        }
    }

    fn invite_from(source: &str, issuer_name: Option<&str>) -> InviteRecord {
        InviteRecord {
            id: 1,
            host: HostName::parse("example.com").unwrap(),
            source: source.into(),
            issuer_name: issuer_name.map(Into::into),
            created_at: Utc::now(),
            expires_at: Utc::now(),
            kind: crate::store::InviteKind::Account,
            uses_allowed: 1,
            uses_spent: 0,
            note: None,
            fixed_name: None,
            reset_account_id: None,
            revoked_at: None,
        }
    }

    #[test]
    fn an_account_records_its_inviter_by_key_id_account_name_or_cli() {
        for (source, issuer, expected) in [
            (
                "api/token/AbCdEf123456",
                Some("a label"),
                "key AbCdEf123456",
            ),
            ("account/7", Some("alice"), "account alice"),
            ("account/7", None, "account #7"),
            ("cli", None, "cli"),
        ] {
            assert_eq!(invited_by(&invite_from(source, issuer)), expected);
        }
    }

    #[test]
    fn a_full_hashing_queue_is_a_transient_outage_and_not_a_store_failure() {
        let busy = HashedWriteError::from(HashError::Busy);
        assert!(matches!(busy, HashedWriteError::Hash(HashError::Busy)));
        assert_eq!(busy.outage("testing"), Outage::Transient);
        let failed = HashedWriteError::from(HashError::Failed("bad params".into()));
        assert_eq!(failed.outage("testing"), Outage::Permanent);
    }
}
