//! The account lifecycle, shared by the command line and the HTTP surfaces:
//! what operators see of an account, disabling, password changes, deletion,
//! and password-reset invites.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::{new_session, HashedWriteError, MintedInvite};
use crate::config::HostConfig;
use crate::crypto::InviteIds;
use crate::domain::{
    AccountName, IdentityToken, Invalid, InviteOptions, InviteSecret, InviteToken, Password,
};
use crate::passwords::Hasher;
use crate::store::{
    AccountOrigin, AccountRecord, InviteSource, NewAccount, NewResetInvite, Store, StoreError,
};

/// The actor the audit log records for the operator's commands.
pub const CLI_ACTOR: &str = "cli";

/// How long a reset invite is valid unless the operator says otherwise.
pub const DEFAULT_RESET_TTL: Duration = Duration::from_secs(86_400);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An account as `accounts list --json` and the admin API show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: String,
    /// When it was made (RFC 3339, microseconds).
    pub created_at: String,
    /// The public id of the invite it registered with; `null` for an account
    /// made with `accounts create`.
    pub invite_id: Option<String>,
    /// `key <id>`, `account <name>` or `cli`.
    pub invited_by: String,
    /// Whether it is disabled.
    pub disabled: bool,
}

impl AccountView {
    /// The view of `account`; `ids` turns invite row ids into public ids.
    pub fn of(account: &AccountRecord, ids: &InviteIds) -> Self {
        Self {
            name: account.name.to_string(),
            host: account.host.to_string(),
            created_at: rfc3339(account.created_at),
            invite_id: account
                .invite_id
                .map(|id| ids.public(id).as_str().to_owned()),
            invited_by: account.invited_by.clone(),
            disabled: account.disabled_at.is_some(),
        }
    }
}

/// A half-done registration, as `accounts list --pending` shows it.
#[derive(Debug, Serialize)]
pub struct PendingView {
    /// The name it held.
    pub name: String,
    /// The public id of its invite; `null` for `accounts create`.
    pub invite_id: Option<String>,
    /// When it began (RFC 3339, microseconds).
    pub since: String,
}

impl PendingView {
    /// The view of `p`; `ids` turns invite row ids into public ids.
    pub fn of(p: &crate::store::PendingReservation, ids: &InviteIds) -> Self {
        Self {
            name: p.name.to_string(),
            invite_id: p.invite_id.map(|id| ids.public(id).as_str().to_owned()),
            since: rfc3339(p.since),
        }
    }
}

/// Where an account came from, as `accounts show` prints it.
#[derive(Debug, Serialize)]
pub struct AccountChain {
    /// The account itself.
    #[serde(flatten)]
    pub account: AccountView,
    /// When its invite was minted, if it came with one and that is known.
    pub invite_minted_at: Option<String>,
    /// When it registered (the same as `created_at`).
    pub registered_at: String,
    /// When it was disabled, if it is.
    pub disabled_at: Option<String>,
}

impl AccountChain {
    /// The chain of `origin`.
    pub fn of(origin: &AccountOrigin, ids: &InviteIds) -> Self {
        let a = &origin.account;
        Self {
            account: AccountView::of(a, ids),
            invite_minted_at: origin.invite_minted_at.map(rfc3339),
            registered_at: rfc3339(a.created_at),
            disabled_at: a.disabled_at.map(rfc3339),
        }
    }
}

/// Creates an account without an invite (`invited_by` `cli`, no invite id).
pub async fn create(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    name: AccountName,
    password: Password,
) -> Result<AccountRecord, HashedWriteError> {
    if let Some(config) = &host.provision {
        let account = super::provisioned::unhashed(host, name, CLI_ACTOR);
        return super::provisioned::create_account(store, hasher, host, config, account, password)
            .await;
    }
    let password_hash = hasher.hash(password).await?;
    Ok(store
        .create_account(NewAccount {
            host: host.name.clone(),
            name,
            password_hash,
            created_at: Utc::now(),
            invited_by: CLI_ACTOR.into(),
            invite_id: None,
        })
        .await?)
}

/// Sets `account`'s password (it must already have passed the policy): in
/// the service it is provisioned into first, then here, ending every
/// session of it but `keep` (whoever signed in with the old password is
/// signed out). The one way a password changes: `accounts passwd`, the
/// account page.
pub async fn set_password(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    account: &AccountRecord,
    password: Password,
    keep: Option<crate::crypto::SecretDigest>,
    actor: &str,
) -> Result<(), HashedWriteError> {
    super::provisioned::set_password(host, &account.name, &password).await?;
    let password_hash = hasher.hash(password).await?;
    Ok(store
        .set_password(account.id, password_hash, keep, actor)
        .await?)
}

/// How long a reset invite is to stay valid: `ttl` if it is within the
/// host's `max_invite_expiry` (as for every invite), else refused; without
/// one, [`DEFAULT_RESET_TTL`] or the host's maximum if that is shorter.
pub fn reset_ttl(ttl: Option<Duration>, host: &HostConfig) -> Result<Duration, Invalid> {
    match ttl {
        Some(ttl) => InviteOptions::cap_ttl(ttl, host),
        None => Ok(DEFAULT_RESET_TTL.min(host.max_invite_expiry)),
    }
}

/// Mints a password-reset invite for the existing account `name`, recorded
/// as from `source` and audited as `actor`'s.
pub async fn mint_reset(
    store: &dyn Store,
    host: &HostConfig,
    name: &AccountName,
    ttl: Duration,
    source: InviteSource,
    actor: &str,
) -> Result<MintedInvite, StoreError> {
    let secret = InviteSecret::generate()?;
    let now = Utc::now();
    // The CLI bounds the duration to what the config syntax takes, well
    // inside chrono's range; a day is the fallback that cannot be reached.
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
    let id = store
        .create_reset_invite(NewResetInvite {
            token_digest: secret.digest(),
            host: host.name.clone(),
            account: name.clone(),
            created_at: now,
            expires_at,
            actor: actor.to_owned(),
            source,
        })
        .await?;
    let token = secret.into_token(id);
    Ok(MintedInvite {
        url: host.invite_url(token.expose()),
        token,
        created_at: now,
        expires_at,
        row_id: id,
        uses: 1,
    })
}

/// Redeems a reset invite: sets the password, ends every other session of
/// the account, uses the invite up and signs in, all in one store write.
///
/// With a provisioner, the service's password is set first (the invite was
/// checked usable by the caller); a refusal changes nothing here.
pub async fn redeem_reset(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    name: &AccountName,
    token: &InviteToken,
    password: Password,
) -> Result<(AccountRecord, IdentityToken), HashedWriteError> {
    super::provisioned::set_password(host, name, &password).await?;
    let password_hash = hasher.hash(password).await?;
    let (identity, session) = new_session()?;
    let account = store
        .redeem_reset_invite(token.lookup(), password_hash, session, Utc::now())
        .await?;
    Ok((account, identity))
}
