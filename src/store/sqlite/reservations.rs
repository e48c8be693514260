//! SQL for provisioning reservations: a registration holds a name (and, with
//! an invite, one of its uses) under a lease while the account is created in
//! the real service, then turns it into the account in one write, or gives
//! it back. A reservation left behind by a crash outlives its lease and is
//! listed for the operator (`accounts list --pending`).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::accounts::create_account_audited;
use super::invites::{self, find_invite};
use super::rows::{backend, corrupt, micros, time_at};
use crate::domain::{AccountName, InviteLookup};
use crate::store::{
    AccountRecord, NewAccount, NewReservation, NewSession, PendingReservation, StoreError,
};

/// Holds `r.name` (and a use of `r.invite`, if any) until `r.lease_until`.
/// `NameTaken` when an account or a live reservation has the name;
/// `InviteReserved` when every remaining use of the invite is held by a live
/// reservation.
pub(super) fn reserve(conn: &Connection, r: &NewReservation) -> Result<i64, StoreError> {
    let now = micros(r.at);
    let invite_id = match &r.invite {
        None => None,
        Some(lookup) => {
            let invite = find_invite(conn, lookup)?;
            invite.admits(&r.host, &r.name, r.at)?;
            let live: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM provision_reservations
                     WHERE invite_id = ?1 AND lease_until > ?2",
                )
                .and_then(|mut st| st.query_row(params![invite.id, now], |row| row.get(0)))
                .map_err(backend)?;
            if i64::from(invite.uses_spent) + live >= i64::from(invite.uses_allowed) {
                return Err(StoreError::InviteReserved);
            }
            Some(invite.id)
        }
    };
    let taken = conn
        .prepare_cached(
            "SELECT 1 FROM accounts WHERE host = ?1 AND name = ?2
             UNION ALL
             SELECT 1 FROM provision_reservations
             WHERE host = ?1 AND name = ?2 AND lease_until > ?3",
        )
        .and_then(|mut st| {
            st.query_row(params![r.host.as_str(), r.name.as_str(), now], |_| Ok(()))
                .optional()
        })
        .map_err(backend)?;
    if taken.is_some() {
        return Err(StoreError::NameTaken);
    }
    conn.prepare_cached(
        "INSERT INTO provision_reservations (host, name, invite_id, reserved_at, lease_until)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            r.host.as_str(),
            r.name.as_str(),
            invite_id,
            now,
            micros(r.lease_until)
        ])
    })
    .map_err(backend)?;
    Ok(conn.last_insert_rowid())
}

/// Turns reservation `id` into the account: with an invite, as
/// [`invites::redeem`] does (spending the use at `reserved_at`, the time the
/// use was taken); without, as the operator's `accounts create`. The
/// reservation must still exist (`NotFound` otherwise).
pub(super) fn finalize(
    conn: &Connection,
    routes: &crate::webhooks::Routes,
    id: i64,
    invite: Option<&InviteLookup>,
    account: NewAccount,
    session: Option<&NewSession>,
    reserved_at: DateTime<Utc>,
) -> Result<AccountRecord, StoreError> {
    let gone = conn
        .prepare_cached("DELETE FROM provision_reservations WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id]))
        .map_err(backend)?;
    if gone != 1 {
        return Err(StoreError::NotFound);
    }
    match (invite, session) {
        (Some(lookup), Some(session)) => {
            invites::redeem(conn, routes, lookup, account, session, reserved_at)
        }
        _ => create_account_audited(conn, routes, &account),
    }
}

/// Gives reservation `id` back (the service refused); gone already is fine.
pub(super) fn release(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM provision_reservations WHERE id = ?1")
        .and_then(|mut st| st.execute(params![id]))
        .map_err(backend)?;
    Ok(())
}

/// A host's reservations whose lease ended before `now` without finishing.
pub(super) fn pending(
    conn: &Connection,
    host: &str,
    now: DateTime<Utc>,
) -> Result<Vec<PendingReservation>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT name, invite_id, reserved_at FROM provision_reservations
             WHERE host = ?1 AND lease_until <= ?2 ORDER BY id",
        )
        .map_err(backend)?;
    let rows = st
        .query_map(params![host, micros(now)], |row| {
            let name: String = row.get(0)?;
            Ok(PendingReservation {
                name: AccountName::parse(&name).map_err(|_| corrupt(0, "account name"))?,
                invite_id: row.get(1)?,
                since: time_at(row, 2)?,
            })
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}
