//! SQL for [`Store::census`](crate::store::Store::census): counts of what the
//! database holds, for tests and checks that must not read the tables. The
//! same counts as SQLite's `census.rs`, statement for statement.

use std::collections::BTreeMap;

use tokio_postgres::IsolationLevel;

use super::rows::backend;
use crate::domain::HostName;
use crate::store::{Census, StoreError};

/// Every count but the audit log's, in one statement. `$1 IS NULL` is the
/// every-host case; each subquery filters the same way.
const TOTALS: &str = "SELECT
    (SELECT count(*) FROM api_keys WHERE $1::text IS NULL OR host = $1),
    (SELECT count(*) FROM invites WHERE $1::text IS NULL OR host = $1),
    (SELECT count(*) FROM invites WHERE ($1::text IS NULL OR host = $1) AND used_at IS NOT NULL),
    (SELECT count(*) FROM invites WHERE ($1::text IS NULL OR host = $1) AND kind = 'reset'),
    (SELECT coalesce(sum(uses_spent), 0)::bigint FROM invites WHERE $1::text IS NULL OR host = $1),
    (SELECT count(*) FROM accounts WHERE $1::text IS NULL OR host = $1),
    (SELECT count(*) FROM accounts
        WHERE ($1::text IS NULL OR host = $1) AND disabled_at IS NOT NULL),
    (SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id
        WHERE $1::text IS NULL OR a.host = $1),
    (SELECT count(*) FROM provision_reservations WHERE $1::text IS NULL OR host = $1),
    (SELECT count(*) FROM webhook_outbox WHERE $1::text IS NULL OR host = $1),
    (SELECT count(*) FROM webhook_outbox
        WHERE ($1::text IS NULL OR host = $1) AND delivered_at IS NOT NULL),
    (SELECT count(*) FROM audit_log WHERE $1::text IS NULL OR host = $1)";

/// The audit log's entries by action and actor.
const AUDIT: &str = "SELECT action, actor, count(*) FROM audit_log
    WHERE $1::text IS NULL OR host = $1 GROUP BY action, actor";

/// Counts everything of `host` (every host with `None`) in one read-only
/// REPEATABLE READ transaction, so both statements see one snapshot even
/// while other nodes write.
pub(super) async fn census(
    client: &mut deadpool_postgres::Client,
    host: Option<&HostName>,
) -> Result<Census, StoreError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(backend)?;
    let host = host.map(HostName::as_str);
    let row = tx.query_one(TOTALS, &[&host]).await.map_err(backend)?;
    // Counts are never negative; a negative one would be a corrupt database.
    let count = |i: usize| -> Result<u64, StoreError> {
        let n: i64 = row.try_get(i).map_err(backend)?;
        u64::try_from(n).map_err(|_| StoreError::permanent(format!("a negative count: {n}")))
    };
    let mut census = Census {
        keys: count(0)?,
        invites: count(1)?,
        invites_used_up: count(2)?,
        reset_invites: count(3)?,
        uses_spent: count(4)?,
        accounts: count(5)?,
        disabled_accounts: count(6)?,
        sessions: count(7)?,
        reservations: count(8)?,
        deliveries: count(9)?,
        delivered: count(10)?,
        audit_entries: count(11)?,
        audit: BTreeMap::new(),
    };
    for r in tx.query(AUDIT, &[&host]).await.map_err(backend)? {
        let (action, actor): (String, String) = (
            r.try_get(0).map_err(backend)?,
            r.try_get(1).map_err(backend)?,
        );
        let n: i64 = r.try_get(2).map_err(backend)?;
        census
            .audit
            .insert(format!("{action} by {actor}"), n.unsigned_abs());
    }
    tx.commit().await.map_err(backend)?;
    Ok(census)
}
