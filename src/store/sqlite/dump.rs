//! Reading a whole SQLite store into a [`Dump`] and writing one into an
//! empty SQLite store, for `copy-db`. Every column of every table is copied
//! as stored, ids included (see `store::dump` for the tables and their
//! references); timestamps are microseconds here and `DateTime` in the dump.

use rusqlite::{params, Connection, Row};

use super::rows::{backend, digest_at, micros, optional_time_at, time_at};
use crate::store::dump::{
    AccountRow, ApiKeyRow, AuditRow, Dump, ImportError, InviteRow, InviteUseRow, OutboxRow,
    ReservationRow, SessionRow, StoredFormKey, Table, TableCounts,
};
use crate::store::StoreError;

/// Every row `sql` selects, mapped by `row`.
fn all<T>(
    conn: &Connection,
    sql: &str,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    conn.prepare(sql)
        .and_then(|mut st| st.query_map([], row)?.collect())
        .map_err(backend)
}

fn schema_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)
}

/// Reads every table in one read transaction, so the dump is one moment of
/// the store even while a server writes to it.
pub(super) fn export(conn: &Connection) -> Result<Dump, StoreError> {
    // Read-only: dropping it rolls back, which for reads is the same as a commit.
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let form_key = all(
        &tx,
        "SELECT form_key FROM server_secrets WHERE id = 1",
        |r| r.get::<_, Vec<u8>>(0),
    )?
    .into_iter()
    .next()
    .map(|bytes| {
        <[u8; crate::crypto::FormKey::LEN]>::try_from(bytes.as_slice())
            .map(StoredFormKey)
            .map_err(|_| StoreError::permanent("the stored form key has the wrong length"))
    })
    .transpose()?;
    let dump = Dump {
        schema_version: schema_version(&tx)?,
        form_key,
        api_keys: all(
            &tx,
            "SELECT id, host, name, secret_digest, created_at, scope, expires_at, rate_limit,
                rate_period_secs, last_used_at, invites_purged
             FROM api_keys ORDER BY created_at, id",
            |r| {
                Ok(ApiKeyRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    name: r.get(2)?,
                    secret_digest: digest_at(r, 3)?,
                    created_at: time_at(r, 4)?,
                    scope: r.get(5)?,
                    expires_at: optional_time_at(r, 6)?,
                    rate_limit: r.get(7)?,
                    rate_period_secs: r.get(8)?,
                    last_used_at: optional_time_at(r, 9)?,
                    invites_purged: r.get(10)?,
                })
            },
        )?,
        accounts: all(
            &tx,
            "SELECT id, host, name, password_hash, created_at, invited_by, invite_id, disabled_at
             FROM accounts ORDER BY id",
            |r| {
                Ok(AccountRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    name: r.get(2)?,
                    password_hash: r.get(3)?,
                    created_at: time_at(r, 4)?,
                    invited_by: r.get(5)?,
                    invite_id: r.get(6)?,
                    disabled_at: optional_time_at(r, 7)?,
                })
            },
        )?,
        invites: all(
            &tx,
            "SELECT id, token_digest, token_format, host, source, issuer_name, created_at,
                expires_at, kind, uses_allowed, uses_spent, note, fixed_name, reset_account_id,
                revoked_at, ended_at, used_at, used_by
             FROM invites ORDER BY id",
            |r| {
                Ok(InviteRow {
                    id: r.get(0)?,
                    token_digest: digest_at(r, 1)?,
                    token_format: r.get(2)?,
                    host: r.get(3)?,
                    source: r.get(4)?,
                    issuer_name: r.get(5)?,
                    created_at: time_at(r, 6)?,
                    expires_at: time_at(r, 7)?,
                    kind: r.get(8)?,
                    uses_allowed: r.get(9)?,
                    uses_spent: r.get(10)?,
                    note: r.get(11)?,
                    fixed_name: r.get(12)?,
                    reset_account_id: r.get(13)?,
                    revoked_at: optional_time_at(r, 14)?,
                    ended_at: optional_time_at(r, 15)?,
                    used_at: optional_time_at(r, 16)?,
                    used_by: r.get(17)?,
                })
            },
        )?,
        invite_uses: all(
            &tx,
            "SELECT invite_id, account_id, name, used_at FROM invite_uses ORDER BY rowid",
            |r| {
                Ok(InviteUseRow {
                    invite_id: r.get(0)?,
                    account_id: r.get(1)?,
                    name: r.get(2)?,
                    used_at: time_at(r, 3)?,
                })
            },
        )?,
        sessions: all(
            &tx,
            "SELECT token_digest, account_id, created_at, last_used_at
             FROM sessions ORDER BY account_id, created_at",
            |r| {
                Ok(SessionRow {
                    token_digest: digest_at(r, 0)?,
                    account_id: r.get(1)?,
                    created_at: time_at(r, 2)?,
                    last_used_at: time_at(r, 3)?,
                })
            },
        )?,
        audit_log: all(
            &tx,
            "SELECT id, at, host, actor, action, subject, detail FROM audit_log ORDER BY id",
            |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: time_at(r, 1)?,
                    host: r.get(2)?,
                    actor: r.get(3)?,
                    action: r.get(4)?,
                    subject: r.get(5)?,
                    detail: r.get(6)?,
                })
            },
        )?,
        webhook_outbox: all(
            &tx,
            "SELECT id, event_id, host, url, event, created_at, invite_row, source, account,
                attempts, last_status, next_attempt_at, claimed_until, delivered_at, failed_at
             FROM webhook_outbox ORDER BY id",
            |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    event_id: r.get(1)?,
                    host: r.get(2)?,
                    url: r.get(3)?,
                    event: r.get(4)?,
                    created_at: time_at(r, 5)?,
                    invite_row: r.get(6)?,
                    source: r.get(7)?,
                    account: r.get(8)?,
                    attempts: r.get(9)?,
                    last_status: r.get(10)?,
                    next_attempt_at: optional_time_at(r, 11)?,
                    claimed_until: optional_time_at(r, 12)?,
                    delivered_at: optional_time_at(r, 13)?,
                    failed_at: optional_time_at(r, 14)?,
                })
            },
        )?,
        provision_reservations: all(
            &tx,
            "SELECT id, host, name, invite_id, reserved_at, lease_until
             FROM provision_reservations ORDER BY id",
            |r| {
                Ok(ReservationRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    name: r.get(2)?,
                    invite_id: r.get(3)?,
                    reserved_at: time_at(r, 4)?,
                    lease_until: time_at(r, 5)?,
                })
            },
        )?,
    };
    tx.finish().map_err(backend)?;
    Ok(dump)
}

/// Counts the rows of every table, in one read transaction so that the
/// counts are of one moment.
pub(super) fn counts(conn: &Connection) -> Result<TableCounts, StoreError> {
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let counts = count_rows(&tx)?;
    tx.finish().map_err(backend)?;
    Ok(counts)
}

/// Counts the rows of every table in the caller's transaction.
fn count_rows(conn: &Connection) -> Result<TableCounts, StoreError> {
    let mut counts = TableCounts::default();
    for table in Table::ALL {
        // The name comes from the fixed list of tables, never from input.
        let sql = format!("SELECT count(*) FROM {}", table.as_str());
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0)).map_err(backend)?;
        counts.0.insert(table, n.max(0) as u64);
    }
    Ok(counts)
}

/// In the writer's transaction (under the caller's savepoint): refuses a
/// store at another schema version or holding any row, writing nothing;
/// otherwise writes every row of `dump`. An `Err` undoes every row written.
/// SQLite gives a new row the largest rowid plus one, so later rows never
/// take an imported id.
pub(super) fn import(
    conn: &Connection,
    dump: &Dump,
) -> Result<Result<(), ImportError>, StoreError> {
    let target_version = schema_version(conn)?;
    if target_version != dump.schema_version {
        return Ok(Err(ImportError::SchemaMismatch {
            source_version: dump.schema_version,
            target_version,
        }));
    }
    if let Some((table, rows)) = count_rows(conn)?.first_nonempty() {
        return Ok(Err(ImportError::NotEmpty { table, rows }));
    }
    let run = |sql: &str, rows: &mut dyn Iterator<Item = Vec<rusqlite::types::Value>>| {
        let mut st = conn.prepare(sql).map_err(backend)?;
        for values in rows {
            st.execute(rusqlite::params_from_iter(values))
                .map_err(backend)?;
        }
        Ok::<_, StoreError>(())
    };
    if let Some(key) = &dump.form_key {
        conn.execute(
            "INSERT INTO server_secrets (id, form_key) VALUES (1, ?1)",
            params![key.0.as_slice()],
        )
        .map_err(backend)?;
    }
    use rusqlite::types::Value;
    let text = |s: &str| Value::Text(s.to_owned());
    let opt_text = |s: &Option<String>| s.as_deref().map_or(Value::Null, text);
    let int = Value::Integer;
    let opt_int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
    let time = |t: chrono::DateTime<chrono::Utc>| Value::Integer(micros(t));
    let opt_time = |t: Option<chrono::DateTime<chrono::Utc>>| opt_int(t.map(micros));
    let blob = |d: &crate::crypto::SecretDigest| Value::Blob(d.as_bytes().to_vec());
    run(
        "INSERT INTO api_keys (id, host, name, secret_digest, created_at, scope, expires_at,
            rate_limit, rate_period_secs, last_used_at, invites_purged)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        &mut dump.api_keys.iter().map(|k| {
            vec![
                text(&k.id),
                text(&k.host),
                opt_text(&k.name),
                blob(&k.secret_digest),
                time(k.created_at),
                text(&k.scope),
                opt_time(k.expires_at),
                opt_int(k.rate_limit),
                opt_int(k.rate_period_secs),
                opt_time(k.last_used_at),
                int(k.invites_purged),
            ]
        }),
    )?;
    run(
        "INSERT INTO accounts (id, host, name, password_hash, created_at, invited_by, invite_id,
            disabled_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        &mut dump.accounts.iter().map(|a| {
            vec![
                int(a.id),
                text(&a.host),
                text(&a.name),
                text(&a.password_hash),
                time(a.created_at),
                text(&a.invited_by),
                opt_int(a.invite_id),
                opt_time(a.disabled_at),
            ]
        }),
    )?;
    run(
        "INSERT INTO invites (id, token_digest, token_format, host, source, issuer_name,
            created_at, expires_at, kind, uses_allowed, uses_spent, note, fixed_name,
            reset_account_id, revoked_at, ended_at, used_at, used_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        &mut dump.invites.iter().map(|i| {
            vec![
                int(i.id),
                blob(&i.token_digest),
                int(i.token_format),
                text(&i.host),
                text(&i.source),
                opt_text(&i.issuer_name),
                time(i.created_at),
                time(i.expires_at),
                text(&i.kind),
                int(i.uses_allowed),
                int(i.uses_spent),
                opt_text(&i.note),
                opt_text(&i.fixed_name),
                opt_int(i.reset_account_id),
                opt_time(i.revoked_at),
                opt_time(i.ended_at),
                opt_time(i.used_at),
                opt_int(i.used_by),
            ]
        }),
    )?;
    run(
        "INSERT INTO invite_uses (invite_id, account_id, name, used_at) VALUES (?1, ?2, ?3, ?4)",
        &mut dump.invite_uses.iter().map(|u| {
            vec![
                int(u.invite_id),
                opt_int(u.account_id),
                text(&u.name),
                time(u.used_at),
            ]
        }),
    )?;
    run(
        "INSERT INTO sessions (token_digest, account_id, created_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4)",
        &mut dump.sessions.iter().map(|s| {
            vec![
                blob(&s.token_digest),
                int(s.account_id),
                time(s.created_at),
                time(s.last_used_at),
            ]
        }),
    )?;
    run(
        "INSERT INTO audit_log (id, at, host, actor, action, subject, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &mut dump.audit_log.iter().map(|a| {
            vec![
                int(a.id),
                time(a.at),
                text(&a.host),
                text(&a.actor),
                text(&a.action),
                text(&a.subject),
                opt_text(&a.detail),
            ]
        }),
    )?;
    run(
        "INSERT INTO webhook_outbox (id, event_id, host, url, event, created_at, invite_row,
            source, account, attempts, last_status, next_attempt_at, claimed_until,
            delivered_at, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        &mut dump.webhook_outbox.iter().map(|o| {
            vec![
                int(o.id),
                text(&o.event_id),
                text(&o.host),
                text(&o.url),
                text(&o.event),
                time(o.created_at),
                opt_int(o.invite_row),
                opt_text(&o.source),
                opt_text(&o.account),
                int(o.attempts),
                opt_text(&o.last_status),
                opt_time(o.next_attempt_at),
                opt_time(o.claimed_until),
                opt_time(o.delivered_at),
                opt_time(o.failed_at),
            ]
        }),
    )?;
    run(
        "INSERT INTO provision_reservations (id, host, name, invite_id, reserved_at, lease_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        &mut dump.provision_reservations.iter().map(|r| {
            vec![
                int(r.id),
                text(&r.host),
                text(&r.name),
                opt_int(r.invite_id),
                time(r.reserved_at),
                time(r.lease_until),
            ]
        }),
    )?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rusqlite::Connection;

    use super::super::test_support::{account, cli_invite};
    use super::super::SqliteStore;
    use crate::crypto::SecretDigest;
    use crate::domain::{AccountName, HostName, InviteLookup, KeyId, KeyScope, MintRate};
    use crate::store::{
        Dump, ImportError, KeyRecord, NewReservation, NewSession, Store, StoreError, Table,
    };

    fn open(dir: &tempfile::TempDir, name: &str) -> SqliteStore {
        SqliteStore::open(&dir.path().join(name)).unwrap()
    }

    /// A store with a row in every table, columns of every kind set.
    async fn filled(dir: &tempfile::TempDir) -> SqliteStore {
        let store = open(dir, "source.db");
        let host = HostName::parse("example.com").unwrap();
        store.form_key([9; 32]).await.unwrap();
        let key = KeyRecord {
            id: KeyId::parse("abcdefghijkl").unwrap(),
            host: host.clone(),
            name: Some("bot".into()),
            created_at: Utc::now(),
            secret_digest: SecretDigest::of("key secret"),
            scope: KeyScope::Admin,
            expires_at: Some(Utc::now() + chrono::Duration::days(3)),
            rate: Some(MintRate::parse("60/h").unwrap()),
            last_used_at: None,
        };
        store.create_key(key.clone(), "cli").await.unwrap();
        store.touch_key(&key.id, Utc::now()).await.unwrap();
        let digest = SecretDigest::of("invite secret");
        let id = store
            .create_invite(cli_invite(digest, Utc::now()))
            .await
            .unwrap();
        let session = NewSession {
            token_digest: SecretDigest::of("session"),
            created_at: Utc::now(),
        };
        let lookup = InviteLookup::ById { id, digest };
        store
            .redeem_invite(lookup, account("alice"), session, Utc::now())
            .await
            .unwrap();
        store
            .reserve(NewReservation {
                host,
                name: AccountName::parse("bob").unwrap(),
                invite: None,
                at: Utc::now(),
                lease_until: Utc::now() + chrono::Duration::minutes(1),
            })
            .await
            .unwrap();
        // The outbox is written only with webhooks configured: one row by hand.
        Connection::open(dir.path().join("source.db"))
            .unwrap()
            .execute(
                "INSERT INTO webhook_outbox (event_id, host, url, event, created_at, attempts,
                    last_status, next_attempt_at)
                 VALUES ('msg_1', 'example.com', 'http://127.0.0.1:9/', 'invite.created', 1, 2,
                    'timeout', 5)",
                [],
            )
            .unwrap();
        store
    }

    #[tokio::test]
    async fn an_imported_dump_exports_again_row_for_row_and_new_ids_follow_the_imported_ones() {
        let dir = tempfile::tempdir().unwrap();
        let dump = filled(&dir).await.export().await.unwrap();
        for table in Table::ALL {
            assert!(dump.counts().get(table) > 0, "{table:?} is empty: {dump:?}");
        }
        let copy = open(&dir, "copy.db");
        copy.import_into_empty(dump.clone()).await.unwrap();
        assert_eq!(copy.export().await.unwrap(), dump);
        assert_eq!(copy.table_counts().await.unwrap(), dump.counts());
        let carol = copy.create_account(account("carol")).await.unwrap();
        assert!(dump.accounts.iter().all(|a| a.id < carol.id));
    }

    #[tokio::test]
    async fn a_target_with_any_row_or_another_schema_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dump = filled(&dir).await.export().await.unwrap();
        let target = open(&dir, "target.db");
        target.form_key([1; 32]).await.unwrap();
        let before = target.export().await.unwrap();
        match target.import_into_empty(dump.clone()).await {
            Err(ImportError::NotEmpty {
                table: Table::ServerSecrets,
                rows: 1,
            }) => {}
            other => panic!("not refused as not empty: {other:?}"),
        }
        assert_eq!(target.export().await.unwrap(), before);

        let empty = open(&dir, "empty.db");
        let older = Dump {
            schema_version: dump.schema_version - 1,
            ..dump
        };
        assert!(matches!(
            empty.import_into_empty(older).await,
            Err(ImportError::SchemaMismatch { .. })
        ));
        assert_eq!(empty.table_counts().await.unwrap().first_nonempty(), None);
    }

    #[tokio::test]
    async fn an_import_that_fails_part_way_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut dump = filled(&dir).await.export().await.unwrap();
        // A second alice: the UNIQUE (host, name) fails after keys were written.
        let mut twin = dump.accounts[0].clone();
        twin.id += 100;
        dump.accounts.push(twin);
        let target = open(&dir, "target.db");
        assert!(matches!(
            target.import_into_empty(dump).await,
            Err(ImportError::Store(StoreError::Backend(_)))
        ));
        assert_eq!(target.table_counts().await.unwrap().first_nonempty(), None);
    }
}
