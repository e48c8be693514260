//! Reading a whole PostgreSQL store into a [`Dump`] and writing one into an
//! empty PostgreSQL store, for `copy-db`: the mirror of SQLite's `dump.rs`.
//! Every column of every table is copied as stored, ids included (see
//! `store::dump` for the tables and their references). The types map one to
//! one: `timestamptz` and `DateTime` both hold microseconds, `bytea` digests
//! are the dump's 32 bytes, and `bigint` the dump's `i64` (only
//! `invites.token_format` is an `integer`, written from a `bigint`
//! parameter whose range PostgreSQL's assignment cast checks).

use deadpool_postgres::GenericClient;
use tokio_postgres::{IsolationLevel, Row};

use super::rows::{backend, corrupt, get, time_at, total_at};
use crate::crypto::{FormKey, SecretDigest};
use crate::store::dump::{
    AccountRow, ApiKeyRow, AuditRow, Dump, ImportError, InviteRow, InviteUseRow, OutboxRow,
    ReservationRow, SessionRow, StoredFormKey, Table, TableCounts,
};
use crate::store::StoreError;

/// Every row `sql` selects, mapped by `row`.
async fn all<T>(
    db: &impl GenericClient,
    sql: &str,
    row: impl FnMut(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    super::rows::all(db.query(sql, &[]).await.map_err(backend)?, row)
}

/// Reads a `bytea` digest column.
fn digest_at(row: &Row, idx: usize) -> Result<SecretDigest, StoreError> {
    SecretDigest::from_slice(get(row, idx)?).ok_or_else(|| corrupt("digest"))
}

/// The version the schema table records (0 for a database never migrated,
/// as a new SQLite file reports).
async fn schema_version(db: &impl GenericClient) -> Result<i64, StoreError> {
    let row = db
        .query_opt("SELECT version FROM invite_server_schema WHERE id = 1", &[])
        .await
        .map_err(backend)?;
    row.map_or(Ok(0), |r| get(&r, 0))
}

/// A REPEATABLE READ READ ONLY transaction: every statement in it sees the
/// one snapshot taken at its first, whatever other nodes commit meanwhile.
async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(backend)
}

/// Reads every table in one REPEATABLE READ READ ONLY transaction, so the
/// dump is one snapshot of the database even while other nodes write to it.
pub(super) async fn export(client: &mut deadpool_postgres::Client) -> Result<Dump, StoreError> {
    let tx = snapshot(client).await?;
    let form_key = all(
        &tx,
        "SELECT form_key FROM server_secrets WHERE id = 1",
        |r| {
            <[u8; FormKey::LEN]>::try_from(get::<&[u8]>(r, 0)?)
                .map(StoredFormKey)
                .map_err(|_| corrupt("the stored form key has the wrong length"))
        },
    )
    .await?
    .into_iter()
    .next();
    let dump = Dump {
        schema_version: schema_version(&tx).await?,
        form_key,
        // Ids compared bytewise ("C"), as SQLite compares text, so both
        // backends list keys made in the same microsecond alike.
        api_keys: all(
            &tx,
            "SELECT id, host, name, secret_digest, created_at, scope, expires_at, rate_limit,
                rate_period_secs, last_used_at, invites_purged
             FROM api_keys ORDER BY created_at, id COLLATE \"C\"",
            |r| {
                Ok(ApiKeyRow {
                    id: get(r, 0)?,
                    host: get(r, 1)?,
                    name: get(r, 2)?,
                    secret_digest: digest_at(r, 3)?,
                    created_at: time_at(r, 4)?,
                    scope: get(r, 5)?,
                    expires_at: get(r, 6)?,
                    rate_limit: get(r, 7)?,
                    rate_period_secs: get(r, 8)?,
                    last_used_at: get(r, 9)?,
                    invites_purged: get(r, 10)?,
                })
            },
        )
        .await?,
        accounts: all(
            &tx,
            "SELECT id, host, name, password_hash, created_at, invited_by, invite_id, disabled_at
             FROM accounts ORDER BY id",
            |r| {
                Ok(AccountRow {
                    id: get(r, 0)?,
                    host: get(r, 1)?,
                    name: get(r, 2)?,
                    password_hash: get(r, 3)?,
                    created_at: time_at(r, 4)?,
                    invited_by: get(r, 5)?,
                    invite_id: get(r, 6)?,
                    disabled_at: get(r, 7)?,
                })
            },
        )
        .await?,
        invites: all(
            &tx,
            "SELECT id, token_digest, token_format, host, source, issuer_name, created_at,
                expires_at, kind, uses_allowed, uses_spent, note, fixed_name, reset_account_id,
                revoked_at, ended_at, used_at, used_by
             FROM invites ORDER BY id",
            |r| {
                Ok(InviteRow {
                    id: get(r, 0)?,
                    token_digest: digest_at(r, 1)?,
                    token_format: i64::from(get::<i32>(r, 2)?),
                    host: get(r, 3)?,
                    source: get(r, 4)?,
                    issuer_name: get(r, 5)?,
                    created_at: time_at(r, 6)?,
                    expires_at: time_at(r, 7)?,
                    kind: get(r, 8)?,
                    uses_allowed: get(r, 9)?,
                    uses_spent: get(r, 10)?,
                    note: get(r, 11)?,
                    fixed_name: get(r, 12)?,
                    reset_account_id: get(r, 13)?,
                    revoked_at: get(r, 14)?,
                    ended_at: get(r, 15)?,
                    used_at: get(r, 16)?,
                    used_by: get(r, 17)?,
                })
            },
        )
        .await?,
        // Their identity ids are their insertion order (SQLite's rowid).
        invite_uses: all(
            &tx,
            "SELECT invite_id, account_id, name, used_at FROM invite_uses ORDER BY id",
            |r| {
                Ok(InviteUseRow {
                    invite_id: get(r, 0)?,
                    account_id: get(r, 1)?,
                    name: get(r, 2)?,
                    used_at: time_at(r, 3)?,
                })
            },
        )
        .await?,
        sessions: all(
            &tx,
            "SELECT token_digest, account_id, created_at, last_used_at
             FROM sessions ORDER BY account_id, created_at, token_digest",
            |r| {
                Ok(SessionRow {
                    token_digest: digest_at(r, 0)?,
                    account_id: get(r, 1)?,
                    created_at: time_at(r, 2)?,
                    last_used_at: time_at(r, 3)?,
                })
            },
        )
        .await?,
        audit_log: all(
            &tx,
            "SELECT id, at, host, actor, action, subject, detail FROM audit_log ORDER BY id",
            |r| {
                Ok(AuditRow {
                    id: get(r, 0)?,
                    at: time_at(r, 1)?,
                    host: get(r, 2)?,
                    actor: get(r, 3)?,
                    action: get(r, 4)?,
                    subject: get(r, 5)?,
                    detail: get(r, 6)?,
                })
            },
        )
        .await?,
        webhook_outbox: all(
            &tx,
            "SELECT id, event_id, host, url, event, created_at, invite_row, source, account,
                attempts, last_status, next_attempt_at, claimed_until, delivered_at, failed_at
             FROM webhook_outbox ORDER BY id",
            |r| {
                Ok(OutboxRow {
                    id: get(r, 0)?,
                    event_id: get(r, 1)?,
                    host: get(r, 2)?,
                    url: get(r, 3)?,
                    event: get(r, 4)?,
                    created_at: time_at(r, 5)?,
                    invite_row: get(r, 6)?,
                    source: get(r, 7)?,
                    account: get(r, 8)?,
                    attempts: get(r, 9)?,
                    last_status: get(r, 10)?,
                    next_attempt_at: get(r, 11)?,
                    claimed_until: get(r, 12)?,
                    delivered_at: get(r, 13)?,
                    failed_at: get(r, 14)?,
                })
            },
        )
        .await?,
        provision_reservations: all(
            &tx,
            "SELECT id, host, name, invite_id, reserved_at, lease_until
             FROM provision_reservations ORDER BY id",
            |r| {
                Ok(ReservationRow {
                    id: get(r, 0)?,
                    host: get(r, 1)?,
                    name: get(r, 2)?,
                    invite_id: get(r, 3)?,
                    reserved_at: time_at(r, 4)?,
                    lease_until: time_at(r, 5)?,
                })
            },
        )
        .await?,
    };
    tx.commit().await.map_err(backend)?;
    Ok(dump)
}

/// Counts the rows of every table in one REPEATABLE READ READ ONLY
/// transaction, so that the counts are of one moment.
pub(super) async fn counts(
    client: &mut deadpool_postgres::Client,
) -> Result<TableCounts, StoreError> {
    let tx = snapshot(client).await?;
    let counts = count_rows(&tx).await?;
    tx.commit().await.map_err(backend)?;
    Ok(counts)
}

/// Counts the rows of every table in the caller's transaction.
async fn count_rows(db: &impl GenericClient) -> Result<TableCounts, StoreError> {
    let mut counts = TableCounts::default();
    for table in Table::ALL {
        // The name comes from the fixed list of tables, never from input.
        let sql = format!("SELECT count(*) FROM {}", table.as_str());
        let row = db.query_one(&sql, &[]).await.map_err(backend)?;
        counts.0.insert(table, total_at(&row, 0)?);
    }
    Ok(counts)
}

/// Every table of [`Table::ALL`], for the one `LOCK TABLE` of an import.
fn every_table() -> String {
    Table::ALL.map(Table::as_str).join(", ")
}

/// The tables whose `id` is an identity column, whose sequence an import
/// moves past the largest imported id.
const IDENTITY_TABLES: [Table; 5] = [
    Table::Accounts,
    Table::InviteUses,
    Table::AuditLog,
    Table::WebhookOutbox,
    Table::ProvisionReservations,
];

/// In the caller's transaction: refuses a database at another schema
/// version or holding any row, writing nothing; otherwise writes every row
/// of `dump` with its id, then sets each identity sequence past the largest
/// id so new rows never take an imported one. An `Err` leaves the
/// transaction to be rolled back, which undoes every row written.
pub(super) async fn import(db: &impl GenericClient, dump: &Dump) -> Result<(), ImportError> {
    // Other nodes may serve this database: the lock (which every write
    // conflicts with, reads do not) keeps them from writing between the
    // check that the tables are empty and our rows, until we commit.
    db.batch_execute(&format!(
        "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
        every_table()
    ))
    .await
    .map_err(backend)?;
    let target_version = schema_version(db).await?;
    if target_version != dump.schema_version {
        return Err(ImportError::SchemaMismatch {
            source_version: dump.schema_version,
            target_version,
        });
    }
    if let Some((table, rows)) = count_rows(db).await?.first_nonempty() {
        return Err(ImportError::NotEmpty { table, rows });
    }
    write_rows(db, dump).await?;
    for table in IDENTITY_TABLES {
        // The name comes from the fixed list above, never from input. With
        // `false`, the next id handed out is exactly the value set: one
        // above the largest imported id (1 for an empty table).
        let name = table.as_str();
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{name}', 'id'),
                greatest(coalesce(max(id), 0), 0) + 1, false) FROM {name}"
        );
        db.query_one(&sql, &[]).await.map_err(backend)?;
    }
    Ok(())
}

/// How many INSERTs an import sends before it waits for their answers.
const PIPELINE: usize = 256;

/// Prepares `$sql` once and runs it for each of `$rows` with the
/// parameters `|row| [..]` gives, [`PIPELINE`] statements at a time: the
/// driver sends them on the one connection without waiting for each answer,
/// so a large store is not copied at one round trip per row. A macro rather
/// than a function: the parameters borrow temporaries (a digest's bytes as a
/// slice) that must live until their statement has run.
macro_rules! insert_each {
    ($db:expr, $sql:expr, $rows:expr, |$row:ident| [$($param:expr),* $(,)?]) => {{
        let st = &$db.prepare($sql).await.map_err(backend)?;
        for chunk in $rows.chunks(PIPELINE) {
            futures_util::future::try_join_all(chunk.iter().map(|$row| async move {
                $db.execute(st, &[$($param),*]).await
            }))
            .await
            .map_err(backend)?;
        }
    }};
}

/// Inserts every row of `dump`, table by table in [`Table::ALL`]'s order
/// (accounts before sessions, for the foreign key), one prepared INSERT per
/// table, pipelined: 10^5 rows of each of four tables take seconds, which a
/// one-off copy can afford without hand-encoding COPY's binary format.
async fn write_rows(db: &impl GenericClient, dump: &Dump) -> Result<(), StoreError> {
    if let Some(key) = &dump.form_key {
        db.execute(
            "INSERT INTO server_secrets (id, form_key) VALUES (1, $1)",
            &[&key.0.as_slice()],
        )
        .await
        .map_err(backend)?;
    }
    insert_each!(
        db,
        "INSERT INTO api_keys (id, host, name, secret_digest, created_at, scope, expires_at,
                rate_limit, rate_period_secs, last_used_at, invites_purged)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &dump.api_keys,
        |k| [
            &k.id,
            &k.host,
            &k.name,
            &k.secret_digest.as_bytes().as_slice(),
            &k.created_at,
            &k.scope,
            &k.expires_at,
            &k.rate_limit,
            &k.rate_period_secs,
            &k.last_used_at,
            &k.invites_purged
        ]
    );
    insert_each!(
        db,
        "INSERT INTO accounts (id, host, name, password_hash, created_at, invited_by,
                invite_id, disabled_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &dump.accounts,
        |a| [
            &a.id,
            &a.host,
            &a.name,
            &a.password_hash,
            &a.created_at,
            &a.invited_by,
            &a.invite_id,
            &a.disabled_at
        ]
    );
    insert_each!(
        db,
        "INSERT INTO invites (id, token_digest, token_format, host, source, issuer_name,
                created_at, expires_at, kind, uses_allowed, uses_spent, note, fixed_name,
                reset_account_id, revoked_at, ended_at, used_at, used_by)
             VALUES ($1, $2, $3::bigint, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                $16, $17, $18)",
        &dump.invites,
        |i| [
            &i.id,
            &i.token_digest.as_bytes().as_slice(),
            &i.token_format,
            &i.host,
            &i.source,
            &i.issuer_name,
            &i.created_at,
            &i.expires_at,
            &i.kind,
            &i.uses_allowed,
            &i.uses_spent,
            &i.note,
            &i.fixed_name,
            &i.reset_account_id,
            &i.revoked_at,
            &i.ended_at,
            &i.used_at,
            &i.used_by
        ]
    );
    // Their ids are their places in the dump, which is the order they were
    // written in: the order an export reads them back.
    let uses: Vec<(i64, &InviteUseRow)> = (1..).zip(&dump.invite_uses).collect();
    insert_each!(
        db,
        "INSERT INTO invite_uses (id, invite_id, account_id, name, used_at)
             VALUES ($1, $2, $3, $4, $5)",
        uses,
        |u| [
            &u.0,
            &u.1.invite_id,
            &u.1.account_id,
            &u.1.name,
            &u.1.used_at
        ]
    );
    insert_each!(
        db,
        "INSERT INTO sessions (token_digest, account_id, created_at, last_used_at)
             VALUES ($1, $2, $3, $4)",
        &dump.sessions,
        |s| [
            &s.token_digest.as_bytes().as_slice(),
            &s.account_id,
            &s.created_at,
            &s.last_used_at
        ]
    );
    insert_each!(
        db,
        "INSERT INTO audit_log (id, at, host, actor, action, subject, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &dump.audit_log,
        |a| [&a.id, &a.at, &a.host, &a.actor, &a.action, &a.subject, &a.detail]
    );
    insert_each!(
        db,
        "INSERT INTO webhook_outbox (id, event_id, host, url, event, created_at, invite_row,
                source, account, attempts, last_status, next_attempt_at, claimed_until,
                delivered_at, failed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &dump.webhook_outbox,
        |o| [
            &o.id,
            &o.event_id,
            &o.host,
            &o.url,
            &o.event,
            &o.created_at,
            &o.invite_row,
            &o.source,
            &o.account,
            &o.attempts,
            &o.last_status,
            &o.next_attempt_at,
            &o.claimed_until,
            &o.delivered_at,
            &o.failed_at
        ]
    );
    insert_each!(
        db,
        "INSERT INTO provision_reservations (id, host, name, invite_id, reserved_at,
                lease_until)
             VALUES ($1, $2, $3, $4, $5, $6)",
        &dump.provision_reservations,
        |r| [
            &r.id,
            &r.host,
            &r.name,
            &r.invite_id,
            &r.reserved_at,
            &r.lease_until
        ]
    );
    Ok(())
}
