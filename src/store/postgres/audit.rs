//! The audit log: one row per operator action, written in the transaction
//! of the change it records (see the SQLite backend's `audit` for the
//! meaning of each field).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::rows::backend;
use crate::domain::HostName;
use crate::store::StoreError;

/// Appends one audit row. `actor` is `cli`, `key <id>`, `account <name>` or
/// `server`; `subject` names the record.
pub(super) async fn audit(
    db: &impl GenericClient,
    at: DateTime<Utc>,
    host: &HostName,
    actor: &str,
    action: &str,
    subject: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached(
            "INSERT INTO audit_log (at, host, actor, action, subject, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(backend)?;
    db.execute(
        &st,
        &[&at, &host.as_str(), &actor, &action, &subject, &detail],
    )
    .await
    .map_err(backend)?;
    Ok(())
}
