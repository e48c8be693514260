//! Mapping between rows and records: errors, timestamps, host names,
//! digests, the column lists and the row readers every entity shares.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, Row};

use crate::crypto::SecretDigest;
use crate::domain::{AccountName, HostName};
use crate::store::{AccountRecord, InviteKind, InviteRecord, StoreError};

/// A SQLite failure as a store failure: transient when another connection
/// held a lock past the busy timeout (it will let go), permanent otherwise.
pub(super) fn backend(e: rusqlite::Error) -> StoreError {
    let busy = matches!(&e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked));
    if busy {
        StoreError::transient(e)
    } else {
        StoreError::permanent(e)
    }
}

/// Any constraint failure: UNIQUE on names, or a foreign key to a deleted row.
pub(super) fn is_constraint_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// An insert whose rowid is taken.
pub(super) fn is_primary_key_clash(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let v: i64 = row.get(idx)?;
    DateTime::from_timestamp_micros(v).ok_or_else(|| corrupt(idx, "timestamp out of range"))
}

pub(super) fn optional_time_at(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        Some(_) => time_at(row, idx).map(Some),
        None => Ok(None),
    }
}

pub(super) fn corrupt(idx: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        what.to_owned().into(),
    )
}

pub(super) fn host_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<HostName> {
    HostName::parse(&row.get::<_, String>(idx)?).map_err(|_| corrupt(idx, "bad host name"))
}

pub(super) fn digest_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<SecretDigest> {
    SecretDigest::from_slice(&row.get::<_, Vec<u8>>(idx)?).ok_or_else(|| corrupt(idx, "bad digest"))
}

pub(super) const INVITE_COLUMNS: &str =
    "id, host, source, issuer_name, created_at, expires_at, kind, \
     uses_allowed, uses_spent, note, fixed_name, revoked_at, reset_account_id";

pub(super) fn invite_row(row: &Row<'_>) -> rusqlite::Result<InviteRecord> {
    Ok(InviteRecord {
        id: row.get(0)?,
        host: host_at(row, 1)?,
        source: row.get(2)?,
        issuer_name: row.get(3)?,
        created_at: time_at(row, 4)?,
        expires_at: time_at(row, 5)?,
        kind: match row.get::<_, String>(6)?.as_str() {
            "reset" => InviteKind::Reset,
            "account" => InviteKind::Account,
            _ => return Err(corrupt(6, "bad invite kind")),
        },
        uses_allowed: row.get(7)?,
        uses_spent: row.get(8)?,
        note: row.get(9)?,
        fixed_name: row.get(10)?,
        revoked_at: match row.get::<_, Option<i64>>(11)? {
            Some(_) => Some(time_at(row, 11)?),
            None => None,
        },
        reset_account_id: row.get(12)?,
    })
}

pub(super) const ACCOUNT_COLUMNS: &str =
    "a.id, a.host, a.name, a.password_hash, a.created_at, a.invited_by, a.invite_id, a.disabled_at";

pub(super) fn account_row(row: &Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        id: row.get(0)?,
        host: host_at(row, 1)?,
        name: AccountName::parse(&row.get::<_, String>(2)?)
            .map_err(|_| corrupt(2, "bad account name"))?,
        password_hash: row.get(3)?,
        created_at: time_at(row, 4)?,
        invited_by: row.get(5)?,
        invite_id: row.get(6)?,
        disabled_at: optional_time_at(row, 7)?,
    })
}

/// Every row `sql` (with the host as `?1`) selects, mapped by `row`.
pub(super) fn all_rows<T>(
    conn: &Connection,
    sql: &str,
    host: &HostName,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut st| {
            st.query_map([host.as_str()], row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(backend)
}

/// Maps "no row" to `NotFound` and everything else to `Backend`.
pub(super) fn one<T>(r: rusqlite::Result<Option<T>>) -> Result<T, StoreError> {
    r.map_err(backend)?.ok_or(StoreError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    fn transient(e: StoreError) -> bool {
        match e {
            StoreError::Backend(b) => b.is_transient(),
            other => panic!("not a backend failure: {other:?}"),
        }
    }

    #[test]
    fn a_lock_held_past_the_busy_timeout_is_transient_and_other_failures_are_not() {
        assert!(transient(backend(sqlite_error(rusqlite::ffi::SQLITE_BUSY))));
        assert!(transient(backend(sqlite_error(
            rusqlite::ffi::SQLITE_LOCKED
        ))));
        for code in [
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_CORRUPT,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_ERROR,
        ] {
            assert!(!transient(backend(sqlite_error(code))), "{code}");
        }
        assert!(!transient(backend(rusqlite::Error::InvalidQuery)));
    }
}
