//! SQL for provisioning reservations: a registration holds a name (and, with
//! an invite, one of its uses) under a lease while the account is created in
//! the real service, then turns it into the account in one transaction, or
//! gives it back (see the SQLite backend for the whole story).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::accounts::create_account_audited;
use super::invites::{find_invite, redeem};
use super::rows::{all, backend, corrupt, count_at, get, time_at};
use crate::domain::{AccountName, HostName, InviteLookup};
use crate::store::{
    AccountRecord, NewAccount, NewReservation, NewSession, PendingReservation, StoreError,
};
use crate::webhooks::Routes;

/// Holds `r.name` (and a use of `r.invite`, if any) until `r.lease_until`.
///
/// Two nodes reserving at once must not both take the last use or the same
/// name, yet each check is a read followed by an insert. So the invite row
/// is locked `FOR UPDATE` and re-read before its live reservations are
/// counted, and the name is held by a transaction-level advisory lock on
/// (host, name) before it is looked for: the second node waits, and its
/// next statement sees what the first committed.
pub(super) async fn reserve(
    db: &impl GenericClient,
    r: &NewReservation,
) -> Result<i64, StoreError> {
    let invite_id = match &r.invite {
        None => None,
        Some(lookup) => {
            let invite = find_invite(db, lookup).await?;
            invite.admits(&r.host, &r.name, r.at)?;
            let st = db
                .prepare_cached(
                    "SELECT uses_spent, uses_allowed FROM invites WHERE id = $1 FOR UPDATE",
                )
                .await
                .map_err(backend)?;
            let row = db.query_one(&st, &[&invite.id]).await.map_err(backend)?;
            let (spent, allowed) = (count_at(&row, 0)?, count_at(&row, 1)?);
            let st = db
                .prepare_cached(
                    "SELECT count(*) FROM provision_reservations
                     WHERE invite_id = $1 AND lease_until > $2",
                )
                .await
                .map_err(backend)?;
            let row = db
                .query_one(&st, &[&invite.id, &r.at])
                .await
                .map_err(backend)?;
            let live: i64 = get(&row, 0)?;
            if spent >= allowed {
                return Err(StoreError::InviteUsed);
            }
            if i64::from(spent) + live >= i64::from(allowed) {
                return Err(StoreError::InviteReserved);
            }
            Some(invite.id)
        }
    };
    db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('invite-server name ' || $1 || '/' || $2, 0))",
        &[&r.host.as_str(), &r.name.as_str()],
    )
    .await
    .map_err(backend)?;
    let st = db
        .prepare_cached(
            "SELECT 1 FROM accounts WHERE host = $1 AND name = $2
             UNION ALL
             SELECT 1 FROM provision_reservations
             WHERE host = $1 AND name = $2 AND lease_until > $3",
        )
        .await
        .map_err(backend)?;
    let taken = db
        .query(&st, &[&r.host.as_str(), &r.name.as_str(), &r.at])
        .await
        .map_err(backend)?;
    if !taken.is_empty() {
        return Err(StoreError::NameTaken);
    }
    let st = db
        .prepare_cached(
            "INSERT INTO provision_reservations (host, name, invite_id, reserved_at, lease_until)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .await
        .map_err(backend)?;
    let row = db
        .query_one(
            &st,
            &[
                &r.host.as_str(),
                &r.name.as_str(),
                &invite_id,
                &r.at,
                &r.lease_until,
            ],
        )
        .await
        .map_err(backend)?;
    get(&row, 0)
}

/// Turns reservation `id` into the account: with an invite, as
/// [`redeem`] does (spending the use at `reserved_at`); without, as the
/// operator's `accounts create`. `NotFound` when the reservation is gone.
pub(super) async fn finalize(
    db: &impl GenericClient,
    routes: &Routes,
    id: i64,
    invite: Option<&InviteLookup>,
    account: NewAccount,
    session: Option<&NewSession>,
    reserved_at: DateTime<Utc>,
) -> Result<AccountRecord, StoreError> {
    let st = db
        .prepare_cached("DELETE FROM provision_reservations WHERE id = $1")
        .await
        .map_err(backend)?;
    if db.execute(&st, &[&id]).await.map_err(backend)? != 1 {
        return Err(StoreError::NotFound);
    }
    match (invite, session) {
        (Some(lookup), Some(session)) => {
            redeem(db, routes, lookup, account, session, reserved_at).await
        }
        _ => create_account_audited(db, routes, &account).await,
    }
}

/// Gives reservation `id` back; gone already is fine.
pub(super) async fn release(db: &impl GenericClient, id: i64) -> Result<(), StoreError> {
    let st = db
        .prepare_cached("DELETE FROM provision_reservations WHERE id = $1")
        .await
        .map_err(backend)?;
    db.execute(&st, &[&id]).await.map_err(backend)?;
    Ok(())
}

/// A host's reservations whose lease ended before `now` without finishing.
pub(super) async fn pending(
    db: &impl GenericClient,
    host: &HostName,
    now: DateTime<Utc>,
) -> Result<Vec<PendingReservation>, StoreError> {
    let st = db
        .prepare_cached(
            "SELECT name, invite_id, reserved_at FROM provision_reservations
             WHERE host = $1 AND lease_until <= $2 ORDER BY id",
        )
        .await
        .map_err(backend)?;
    let rows = db
        .query(&st, &[&host.as_str(), &now])
        .await
        .map_err(backend)?;
    all(rows, |row| {
        Ok(PendingReservation {
            name: AccountName::parse(get(row, 0)?).map_err(|_| corrupt("account name"))?,
            invite_id: get(row, 1)?,
            since: time_at(row, 2)?,
        })
    })
}
