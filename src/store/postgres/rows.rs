//! Mapping between rows and records, and the one place PostgreSQL's errors
//! become [`StoreError`]s.
//!
//! Times are `timestamptz` (microseconds, as SQLite's integers keep them);
//! every count and id is `bigint`, read back as the record's type with a
//! range check, so a damaged row is an error, never a wrapped number.

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use crate::domain::{AccountName, HostName};
use crate::store::{AccountRecord, InviteKind, InviteRecord, StoreError};

/// Whether a failure may go away by itself, so that the request may be
/// retried (503 with `Retry-After`) rather than reported as a fault:
/// - 40001 serialization_failure and 40P01 deadlock_detected: another
///   transaction won a race; running again succeeds.
/// - 55P03 lock_not_available (a `lock_timeout`), 57014 query_canceled (a
///   `statement_timeout`): the database was busy.
/// - 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now:
///   the server is restarting or failing over.
/// - class 08 (connection exceptions) and a closed connection: the network
///   or the server went away mid-request.
/// - 53300 too_many_connections: other clients hold every slot.
///
/// A TLS handshake that our `sslmode` refuses (an untrusted certificate,
/// one for another name) is permanent: it fails the same way until the
/// configuration or the certificate changes.
///
/// Everything else (a constraint this code did not expect, a syntax error,
/// a missing table, a full disk: 53100) is permanent.
pub(super) fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::LOCK_NOT_AVAILABLE,
                SqlState::QUERY_CANCELED,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
            ]
            .contains(code)
                || code.code().starts_with("08")
        }
        // No SQLSTATE: the error happened on our side of the wire (I/O, a
        // connection that never opened), except that a certificate the
        // TLS settings refuse stays refused until someone changes them.
        None => !is_tls_refusal(e),
    }
}

/// Whether rustls refused the connection (a certificate not trusted or
/// not for this host, no common protocol): anywhere in the error's causes,
/// as itself or inside the I/O error that carries it.
fn is_tls_refusal(e: &tokio_postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        let tls = c.downcast_ref::<rustls::Error>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if tls {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The one adapter from a driver error to a [`StoreError`]; the message
/// names the server's own words and SQLSTATE, never a parameter (so never a
/// secret or a digest).
pub(super) fn backend(e: tokio_postgres::Error) -> StoreError {
    let what = match e.as_db_error() {
        Some(db) => format!(
            "postgresql: {} (SQLSTATE {})",
            db.message(),
            db.code().code()
        ),
        None => format!("postgresql: {}", chain(&e)),
    };
    if is_transient(&e) {
        StoreError::transient(what)
    } else {
        StoreError::permanent(what)
    }
}

/// The one adapter from a pool error. A pool that waited its whole timeout
/// for a free connection, or could not open one, is transient; a pool that
/// was closed (the server is stopping) or misconfigured is permanent.
pub(super) fn pool(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => backend(e),
        PoolError::Timeout(_) => StoreError::transient("postgresql: no free database connection"),
        PoolError::PostCreateHook(e) => StoreError::transient(format!("postgresql: {}", chain(&e))),
        PoolError::Closed | PoolError::NoRuntimeSpecified => {
            StoreError::permanent(format!("postgresql: {e}"))
        }
    }
}

/// An error and its causes, as one line.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// A row whose value cannot be what the schema allows.
pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::permanent(format!("postgresql: corrupt row: {what}"))
}

/// Reads column `idx` as `T`.
pub(super) fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(backend)
}

/// Reads a `bigint` column as a `u32` count.
pub(super) fn count_at(row: &Row, idx: usize) -> Result<u32, StoreError> {
    u32::try_from(get::<i64>(row, idx)?).map_err(|_| corrupt("count out of range"))
}

/// Reads a `bigint` column as a `u64` count.
pub(super) fn total_at(row: &Row, idx: usize) -> Result<u64, StoreError> {
    u64::try_from(get::<i64>(row, idx)?).map_err(|_| corrupt("count out of range"))
}

pub(super) fn host_at(row: &Row, idx: usize) -> Result<HostName, StoreError> {
    HostName::parse(get::<&str>(row, idx)?).map_err(|_| corrupt("bad host name"))
}

pub(super) fn time_at(row: &Row, idx: usize) -> Result<DateTime<Utc>, StoreError> {
    get(row, idx)
}

pub(super) const INVITE_COLUMNS: &str =
    "i.id, i.host, i.source, i.issuer_name, i.created_at, i.expires_at, i.kind, \
     i.uses_allowed, i.uses_spent, i.note, i.fixed_name, i.revoked_at, i.reset_account_id";

pub(super) fn invite_row(row: &Row) -> Result<InviteRecord, StoreError> {
    Ok(InviteRecord {
        id: get(row, 0)?,
        host: host_at(row, 1)?,
        source: get(row, 2)?,
        issuer_name: get(row, 3)?,
        created_at: time_at(row, 4)?,
        expires_at: time_at(row, 5)?,
        kind: match get::<&str>(row, 6)? {
            "reset" => InviteKind::Reset,
            "account" => InviteKind::Account,
            _ => return Err(corrupt("bad invite kind")),
        },
        uses_allowed: count_at(row, 7)?,
        uses_spent: count_at(row, 8)?,
        note: get(row, 9)?,
        fixed_name: get(row, 10)?,
        revoked_at: get(row, 11)?,
        reset_account_id: get(row, 12)?,
    })
}

pub(super) const ACCOUNT_COLUMNS: &str =
    "a.id, a.host, a.name, a.password_hash, a.created_at, a.invited_by, a.invite_id, a.disabled_at";

pub(super) fn account_row(row: &Row) -> Result<AccountRecord, StoreError> {
    Ok(AccountRecord {
        id: get(row, 0)?,
        host: host_at(row, 1)?,
        name: AccountName::parse(get::<&str>(row, 2)?).map_err(|_| corrupt("bad account name"))?,
        password_hash: get(row, 3)?,
        created_at: time_at(row, 4)?,
        invited_by: get(row, 5)?,
        invite_id: get(row, 6)?,
        disabled_at: get(row, 7)?,
    })
}

/// Maps "no row" to `NotFound`.
pub(super) fn one<T>(
    row: Option<Row>,
    map: impl FnOnce(&Row) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    match row {
        Some(row) => map(&row),
        None => Err(StoreError::NotFound),
    }
}

/// Maps every row.
pub(super) fn all<T>(
    rows: Vec<Row>,
    map: impl FnMut(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(map).collect()
}

/// A UNIQUE constraint refused the write (23505).
pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}
