//! Registration and account changes for a host whose accounts also live in
//! another service (`[hosts."x".provision]`).
//!
//! Creating is reserve -> provision -> finalize: the store first holds the
//! name and one use of the invite under a lease, so concurrent registrations
//! cannot spend a use twice while the service is called; the service then
//! creates the account with the person's password; the store finally makes
//! the local account, spends the use and opens the session in one write. A
//! refusal gives the reservation back, so the invite stays usable. A crash
//! between the service call and the final write leaves a reservation whose
//! lease runs out: `accounts list HOST --pending` shows it. It is not
//! completed by itself: the password (and so its local hash) was never
//! stored, on purpose.
//!
//! Changes to existing accounts ask the service first and change nothing
//! here when it says no.

use std::time::Duration;

use chrono::Utc;

use super::{new_session, HashedWriteError};
use crate::config::HostConfig;
use crate::domain::{AccountName, IdentityToken, InviteToken, Password};
use crate::passwords::Hasher;
use crate::provision::{ProvisionConfig, ProvisionError};
use crate::store::{AccountRecord, NewAccount, NewReservation, Store, StoreError};

/// How much longer than one service call a reservation holds: time for the
/// final write (which may queue behind others) after a call that took its
/// whole timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

fn failed(e: ProvisionError) -> StoreError {
    match e {
        ProvisionError::Taken => StoreError::NameTaken,
        e => {
            // The reason names the service's failure, never the password.
            tracing::warn!(error = %e, "the account service refused or failed");
            StoreError::Provision(e)
        }
    }
}

/// Creates `name` locally and in the service, with `invite` (then also
/// spending its use and opening a session) or without (`accounts create`).
async fn create(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    config: &ProvisionConfig,
    invite: Option<&InviteToken>,
    account: NewAccount,
    password: Password,
) -> Result<(AccountRecord, Option<IdentityToken>), HashedWriteError> {
    let provisioner = config.provisioner(&host.name);
    let name = account.name.clone();
    // Hashed first: a full hashing queue is answered before anything is held.
    let password_hash = hasher.hash(password.clone()).await?;
    let at = Utc::now();
    let lease = chrono::Duration::from_std(config.timeout() + LEASE_MARGIN)
        .unwrap_or(chrono::Duration::hours(1));
    let id = store
        .reserve(NewReservation {
            host: host.name.clone(),
            name: name.clone(),
            invite: invite.map(InviteToken::lookup),
            at,
            lease_until: at + lease,
        })
        .await?;
    if let Err(e) = provisioner.create(&name, &password).await {
        drop(password);
        // If giving it back fails, the lease ends it all the same.
        if let Err(release) = store.release_reservation(id).await {
            tracing::warn!(error = %release, "could not release a provisioning reservation");
        }
        return Err(failed(e).into());
    }
    drop(password);
    let session = match invite {
        Some(_) => Some(new_session()?),
        None => None,
    };
    let (identity, session) = match session {
        Some((identity, session)) => (Some(identity), Some(session)),
        None => (None, None),
    };
    let account = store
        .finalize_reservation(
            id,
            invite.map(InviteToken::lookup),
            NewAccount {
                password_hash,
                ..account
            },
            session,
            at,
        )
        .await
        .inspect_err(|e| {
            // The account exists in the service but not here: the
            // reservation stays and is listed once its lease ends.
            tracing::error!(error = %e.chain(), host = %host.name, name = %name,
                "created in the service but not recorded here; see accounts list --pending");
        })?;
    Ok((account, identity))
}

/// [`super::register`] for a host with a provisioner.
pub async fn register(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    config: &ProvisionConfig,
    token: &InviteToken,
    account: NewAccount,
    password: Password,
) -> Result<(AccountRecord, IdentityToken), HashedWriteError> {
    let (account, identity) =
        create(store, hasher, host, config, Some(token), account, password).await?;
    // A session is always made with an invite; `NotFound` cannot be reached.
    let identity = identity.ok_or(StoreError::NotFound)?;
    Ok((account, identity))
}

/// A new account of `host` whose hash is filled in once the service has it.
pub fn unhashed(host: &HostConfig, name: AccountName, invited_by: &str) -> NewAccount {
    NewAccount {
        host: host.name.clone(),
        name,
        password_hash: String::new(),
        created_at: Utc::now(),
        invited_by: invited_by.to_owned(),
        invite_id: None,
    }
}

/// `accounts create` for a host with a provisioner.
pub async fn create_account(
    store: &dyn Store,
    hasher: &Hasher,
    host: &HostConfig,
    config: &ProvisionConfig,
    account: NewAccount,
    password: Password,
) -> Result<AccountRecord, HashedWriteError> {
    create(store, hasher, host, config, None, account, password)
        .await
        .map(|(a, _)| a)
}

/// Sets the password in the service, before it is changed here.
pub async fn set_password(
    host: &HostConfig,
    name: &AccountName,
    password: &Password,
) -> Result<(), StoreError> {
    match &host.provision {
        Some(config) => config
            .provisioner(&host.name)
            .set_password(name, password)
            .await
            .map_err(failed),
        None => Ok(()),
    }
}

/// What the service did with a deletion, disabling or enabling.
#[derive(Debug, PartialEq, Eq)]
pub enum Passed {
    /// The host has no provisioner.
    NoService,
    /// The service did it too.
    Done,
    /// The service cannot do this; only the local account changes.
    Unsupported,
}

/// Passes a deletion (`Delete`), disabling or enabling on to the service,
/// before it is done here.
pub async fn pass_on(
    host: &HostConfig,
    name: &AccountName,
    change: Change,
) -> Result<Passed, StoreError> {
    let Some(config) = &host.provision else {
        return Ok(Passed::NoService);
    };
    let p = config.provisioner(&host.name);
    let done = match change {
        Change::Delete => p.delete(name).await,
        Change::Disable => p.disable(name).await,
        Change::Enable => p.enable(name).await,
    };
    match done {
        Ok(()) => Ok(Passed::Done),
        Err(ProvisionError::Unsupported) => Ok(Passed::Unsupported),
        Err(e) => Err(failed(e)),
    }
}

/// A change to pass on.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// `accounts delete`.
    Delete,
    /// `accounts disable`.
    Disable,
    /// `accounts enable`.
    Enable,
}
