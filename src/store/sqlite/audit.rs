//! The audit log: who did what to which record. Every operator action that
//! changes something writes its row here through [`audit`], inside the same
//! write as the change, so the log never claims what did not commit nor
//! misses what did.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::rows::{backend, micros};
use crate::domain::HostName;
use crate::store::StoreError;

/// Appends one audit row. `actor` is `cli`, `key <id>`, `account <name>` or
/// `server` (the server's own housekeeping); `subject` names the record.
pub(super) fn audit(
    conn: &Connection,
    at: DateTime<Utc>,
    host: &HostName,
    actor: &str,
    action: &str,
    subject: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, host, actor, action, subject, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            micros(at),
            host.as_str(),
            actor,
            action,
            subject,
            detail
        ])
    })
    .map_err(backend)?;
    Ok(())
}
