//! SQL for [`Store::census`](crate::store::Store::census): counts of what the
//! database holds, for tests and checks that must not read the tables.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::rows::backend;
use crate::domain::HostName;
use crate::store::{Census, StoreError};

/// Counts everything of `host` (every host with `None`) in one read
/// transaction, so the counts are of one snapshot even while the server writes.
pub(super) fn census(conn: &Connection, host: Option<&HostName>) -> Result<Census, StoreError> {
    // Deferred: a read transaction, which is all a query_only reader may open.
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let mut census = totals(&tx, host)?;
    census.audit = audit_counts(&tx, host)?;
    tx.finish().map_err(backend)?;
    Ok(census)
}

/// The audit log's entries by action and actor.
fn audit_counts(
    conn: &Connection,
    host: Option<&HostName>,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT action, actor, count(*) FROM audit_log WHERE ?1 IS NULL OR host = ?1
             GROUP BY action, actor",
        )
        .map_err(backend)?;
    let rows = st
        .query_map(params![host.map(HostName::as_str)], |r| {
            let (action, actor): (String, String) = (r.get(0)?, r.get(1)?);
            let n: i64 = r.get(2)?;
            // A count is never negative.
            Ok((format!("{action} by {actor}"), n.unsigned_abs()))
        })
        .map_err(backend)?;
    rows.collect::<Result<_, _>>().map_err(backend)
}

/// Every count but the audit log's, in one statement.
fn totals(conn: &Connection, host: Option<&HostName>) -> Result<Census, StoreError> {
    // `?1 IS NULL` is the every-host case; each subquery filters the same way.
    const SQL: &str = "SELECT
        (SELECT count(*) FROM api_keys WHERE ?1 IS NULL OR host = ?1),
        (SELECT count(*) FROM invites WHERE ?1 IS NULL OR host = ?1),
        (SELECT count(*) FROM invites WHERE (?1 IS NULL OR host = ?1) AND used_at IS NOT NULL),
        (SELECT count(*) FROM invites WHERE (?1 IS NULL OR host = ?1) AND kind = 'reset'),
        (SELECT coalesce(sum(uses_spent), 0) FROM invites WHERE ?1 IS NULL OR host = ?1),
        (SELECT count(*) FROM accounts WHERE ?1 IS NULL OR host = ?1),
        (SELECT count(*) FROM accounts
            WHERE (?1 IS NULL OR host = ?1) AND disabled_at IS NOT NULL),
        (SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id
            WHERE ?1 IS NULL OR a.host = ?1),
        (SELECT count(*) FROM provision_reservations WHERE ?1 IS NULL OR host = ?1),
        (SELECT count(*) FROM webhook_outbox WHERE ?1 IS NULL OR host = ?1),
        (SELECT count(*) FROM webhook_outbox
            WHERE (?1 IS NULL OR host = ?1) AND delivered_at IS NOT NULL),
        (SELECT count(*) FROM audit_log WHERE ?1 IS NULL OR host = ?1)";
    // Counts are never negative; a negative one would be a corrupt database.
    let count = |row: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<u64> {
        let n: i64 = row.get(i)?;
        u64::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, n))
    };
    conn.prepare_cached(SQL)
        .and_then(|mut st| {
            st.query_row(params![host.map(HostName::as_str)], |r| {
                Ok(Census {
                    keys: count(r, 0)?,
                    invites: count(r, 1)?,
                    invites_used_up: count(r, 2)?,
                    reset_invites: count(r, 3)?,
                    uses_spent: count(r, 4)?,
                    accounts: count(r, 5)?,
                    disabled_accounts: count(r, 6)?,
                    sessions: count(r, 7)?,
                    reservations: count(r, 8)?,
                    deliveries: count(r, 9)?,
                    delivered: count(r, 10)?,
                    audit_entries: count(r, 11)?,
                    audit: BTreeMap::new(),
                })
            })
        })
        .map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{account, cli_invite};
    use crate::crypto::SecretDigest;
    use crate::domain::HostName;
    use crate::store::{Census, SqliteStore, Store};

    #[tokio::test]
    async fn census_counts_what_was_stored_on_its_host_and_nothing_of_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let now = chrono::Utc::now();
        store.create_account(account("alice")).await.unwrap();
        for byte in [1u8, 2] {
            let digest = SecretDigest::of_bytes(&[byte; 16]);
            store.create_invite(cli_invite(digest, now)).await.unwrap();
        }

        let example = HostName::parse("example.com").unwrap();
        let counted = store.census(Some(&example)).await.unwrap();
        assert_eq!((counted.accounts, counted.invites), (1, 2));
        assert_eq!((counted.uses_spent, counted.invites_used_up), (0, 0));
        assert_eq!(
            counted.audit.get("account.create by cli"),
            Some(&1),
            "{counted:?}"
        );
        assert_eq!(store.census(None).await.unwrap(), counted);
        let other = HostName::parse("other.example").unwrap();
        assert_eq!(store.census(Some(&other)).await.unwrap(), Census::default());
    }
}
