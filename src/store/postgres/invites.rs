//! SQL for invites: minting (with the minter's re-check), finding,
//! redeeming with uses, listing, revoking and purging.
//!
//! Every guard that must hold at commit is a condition of the statement that
//! writes, or a row lock taken before it; each function says which, and why
//! that is race-free under READ COMMITTED with many nodes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::accounts::insert_account;
use super::audit::audit;
use super::outbox::{self, Subject};
use super::rows::{all, backend, corrupt, get, invite_row, one, time_at, INVITE_COLUMNS};
use super::sessions::insert_session;
use crate::crypto::SecretDigest;
use crate::domain::{AccountName, HostName, InviteLookup};
use crate::store::{
    new_invite_id, AccountRecord, InviteDetails, InviteRecord, InviteSource, InviteStatus,
    InviteUse, NewAccount, NewInvite, NewSession, Purged, StatusFilter, StoreError, ID_ATTEMPTS,
};
use crate::webhooks::{EventKind, Routes};

/// Whether minting `inv` must run in a transaction: an account's mint takes
/// a lock in one statement and inserts in the next (see [`insert`]).
pub(super) fn needs_transaction(inv: &NewInvite) -> bool {
    matches!(inv.source, InviteSource::Account(_))
}

/// Inserts an invite and its `invite.created` event; its id.
pub(super) async fn minted(
    db: &impl GenericClient,
    routes: &Routes,
    inv: &NewInvite,
) -> Result<i64, StoreError> {
    let id = insert(db, inv, Run::InTransaction).await?;
    let source = inv.source.to_text();
    outbox::record(
        db,
        routes,
        &inv.host,
        EventKind::InviteCreated,
        inv.created_at,
        Subject {
            invite: Some(id),
            source: Some(&source),
            account: None,
        },
    )
    .await?;
    Ok(id)
}

/// The columns a mint writes, in the order both INSERTs below feed them.
const MINTED_COLUMNS: &str = "id, token_digest, host, source, issuer_name, created_at, \
    expires_at, token_format, uses_allowed, note, fixed_name";

/// How a mint's INSERT runs, which decides how it meets an id another
/// invite already holds (ids are drawn, see [`new_invite_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Run {
    /// In autocommit: a taken id fails the statement alone, as a unique
    /// violation of the primary key, and the id is drawn again. Without ON
    /// CONFLICT, PostgreSQL inserts directly instead of speculatively (an
    /// index probe first, a speculative-insertion lock, a confirmation
    /// record after), which measured 3 to 4 µs of the 100 to 110 µs of
    /// database CPU a key's mint costs, on the path taken by every mint
    /// that is not batched.
    Alone,
    /// In a transaction, which an error would abort: the INSERT skips a
    /// taken id (ON CONFLICT DO NOTHING), and the id is drawn again.
    InTransaction,
}

/// The INSERT every mint runs, its values selected under `guard` (which
/// yields one row when the minter may mint), in both of its forms (see
/// [`Run`]), `Run::Alone`'s first.
fn insert_sql(guard: &str) -> [String; 2] {
    let alone = format!(
        "INSERT INTO invites ({MINTED_COLUMNS})
         SELECT $1::bigint, $2::bytea, $3::text, $4::text, $5::text, $6::timestamptz,
                $7::timestamptz, 2, $8::bigint, $9::text, $10::text
         {guard}"
    );
    let in_transaction = format!("{alone}\n         ON CONFLICT (id) DO NOTHING");
    [alone, in_transaction]
}

/// Whether `e` is an INSERT's collision with another invite's id.
fn id_collision(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("invites_pkey")
    })
}

/// Inserts an invite under a fresh id, guarded by its minter:
/// - A key must exist on the host and not be expired at the statement's
///   time. The statement locks the key row `FOR KEY SHARE` as it reads it,
///   so a `keys delete` on another node either waits for this mint to
///   commit (and its revocation then sees the new invite) or has committed
///   first (and the lock finds no row: nothing is minted). One statement,
///   one round trip, no transaction needed.
/// - An account must exist on the host and not be disabled, and its
///   pending uses, this invite's included, must stay within `pending_limit`.
///   Its row is locked `FOR UPDATE` by a first statement; the INSERT is a
///   second one, so under READ COMMITTED its snapshot is taken after the
///   lock and counts every invite that a racing mint for the same account
///   committed before it (two mints cannot both take the last slot), and a
///   delete or disable of the account waits for, then sees, the invite.
///   Must run in a transaction ([`needs_transaction`]).
/// - The CLI mints without limit.
pub(super) async fn insert(
    db: &impl GenericClient,
    inv: &NewInvite,
    run: Run,
) -> Result<i64, StoreError> {
    let ids = std::iter::repeat_with(|| new_invite_id(inv.created_at)).take(ID_ATTEMPTS);
    insert_with_ids(db, inv, run, ids).await
}

/// [`insert`] under the first of `ids` not yet taken.
pub(super) async fn insert_with_ids(
    db: &impl GenericClient,
    inv: &NewInvite,
    run: Run,
    ids: impl IntoIterator<Item = i64>,
) -> Result<i64, StoreError> {
    static KEY_SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        // The key's row is read and locked by the SELECT that feeds the
        // INSERT, not in a CTE: a CTE with a locking clause is materialised
        // (a tuplestore per execution), which measured 5 to 7 µs of
        // PostgreSQL's CPU per mint; the lock and its re-check of a row
        // changed meanwhile are the same.
        insert_sql(
            "FROM api_keys
             WHERE id = $11 AND host = $3
               AND (expires_at IS NULL OR expires_at > statement_timestamp())
               AND $12::bigint IS NULL
             FOR KEY SHARE",
        )
    });
    static ACCOUNT_SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        insert_sql(
            "WHERE $11::text IS NULL AND ($12::bigint IS NULL
                OR (SELECT coalesce(sum(uses_allowed - uses_spent), 0) FROM invites
                    WHERE source = $4 AND revoked_at IS NULL
                      AND uses_spent < uses_allowed AND expires_at > $6)
                   + $8 <= $12::bigint)",
        )
    });
    static CLI_SQL: std::sync::LazyLock<[String; 2]> =
        std::sync::LazyLock::new(|| insert_sql("WHERE $11::text IS NULL AND $12::bigint IS NULL"));

    let source = inv.source.to_text();
    let (sql, minter): (&[String; 2], Option<String>) = match &inv.source {
        InviteSource::Key(id) => (&KEY_SQL, Some(id.to_string())),
        InviteSource::Account(id) => {
            let st = db
                .prepare_cached(
                    "SELECT 1 FROM accounts WHERE id = $1 AND host = $2 AND disabled_at IS NULL
                     FOR UPDATE",
                )
                .await
                .map_err(backend)?;
            if db
                .query_opt(&st, &[id, &inv.host.as_str()])
                .await
                .map_err(backend)?
                .is_none()
            {
                // A disabled account is refused as a deleted one is.
                return Err(StoreError::NotFound);
            }
            (&ACCOUNT_SQL, None)
        }
        InviteSource::Cli => (&CLI_SQL, None),
    };
    let st = db
        .prepare_cached(match run {
            Run::Alone => &sql[0],
            Run::InTransaction => &sql[1],
        })
        .await
        .map_err(backend)?;
    let uses = i64::from(inv.uses_allowed);
    let limit = inv.pending_limit.map(i64::from);
    let fixed = inv.fixed_name.as_ref().map(AccountName::as_str);
    for id in ids {
        let inserted = db
            .execute(
                &st,
                &[
                    &id,
                    &inv.token_digest.as_bytes().as_slice(),
                    &inv.host.as_str(),
                    &source,
                    &inv.issuer_name,
                    &inv.created_at,
                    &inv.expires_at,
                    &uses,
                    &inv.note,
                    &fixed,
                    &minter,
                    &limit,
                ],
            )
            .await;
        match inserted {
            Ok(1) => return Ok(id),
            Ok(_) => {}
            // Only alone: in a transaction ON CONFLICT meets a taken id,
            // and any error has aborted the transaction.
            Err(e) if run == Run::Alone && id_collision(&e) => continue,
            Err(e) => return Err(backend(e)),
        }
        if !id_taken(db, id).await? {
            // The guard said no.
            return Err(match inv.source {
                InviteSource::Account(_) => StoreError::InviteQuota,
                InviteSource::Key(_) | InviteSource::Cli => StoreError::NotFound,
            });
        }
    }
    Err(StoreError::permanent("no free invite id in as many draws"))
}

/// Inserts a batch of key mints in one statement (see
/// [`super::mint_batch`]); for each, in order, its id, or `None` if it was
/// not inserted because its key is gone (or expired, or of another host) or
/// its id was taken by another node's invite.
///
/// The guard is [`insert`]'s for a key, row by row: the statement locks
/// every key it names `FOR KEY SHARE` as it reads them, so a `keys delete`
/// either waits for the batch to commit (and revokes its invites) or has
/// committed first (and that key's rows join no key). Shared locks do not
/// wait for each other, so batches of several keys cannot deadlock among
/// themselves, and a delete takes one key's lock only.
pub(super) async fn insert_batch(
    db: &impl GenericClient,
    batch: &[&NewInvite],
) -> Result<Vec<Option<i64>>, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH minter AS (SELECT id, host FROM api_keys
                WHERE id = ANY($11::text[])
                  AND (expires_at IS NULL OR expires_at > statement_timestamp())
                FOR KEY SHARE)
             INSERT INTO invites ({MINTED_COLUMNS})
             SELECT v.id, v.digest, v.host, v.source, v.issuer, v.created, v.expires,
                    2, v.uses, v.note, v.fixed
             FROM unnest($1::bigint[], $2::bytea[], $3::text[], $4::text[], $5::text[],
                         $6::timestamptz[], $7::timestamptz[], $8::bigint[], $9::text[],
                         $10::text[], $11::text[])
                  AS v(id, digest, host, source, issuer, created, expires, uses, note,
                       fixed, key)
             JOIN minter m ON m.id = v.key AND m.host = v.host
             ON CONFLICT (id) DO NOTHING
             RETURNING id"
        )
    });
    let st = db.prepare_cached(&SQL).await.map_err(backend)?;
    // Ids distinct within the batch, so each id returned names one row.
    let mut ids: Vec<i64> = Vec::with_capacity(batch.len());
    for inv in batch {
        let mut id = new_invite_id(inv.created_at);
        while ids.contains(&id) {
            id = new_invite_id(inv.created_at);
        }
        ids.push(id);
    }
    let column = |f: fn(&NewInvite) -> Option<&str>| batch.iter().map(|i| f(i)).collect::<Vec<_>>();
    let keys: Vec<Option<String>> = batch
        .iter()
        .map(|i| match &i.source {
            InviteSource::Key(id) => Some(id.to_string()),
            InviteSource::Account(_) | InviteSource::Cli => None,
        })
        .collect();
    let inserted = db
        .query(
            &st,
            &[
                &ids,
                &batch
                    .iter()
                    .map(|i| i.token_digest.as_bytes().as_slice())
                    .collect::<Vec<_>>(),
                &column(|i| Some(i.host.as_str())),
                &batch.iter().map(|i| i.source.to_text()).collect::<Vec<_>>(),
                &column(|i| i.issuer_name.as_deref()),
                &batch.iter().map(|i| i.created_at).collect::<Vec<_>>(),
                &batch.iter().map(|i| i.expires_at).collect::<Vec<_>>(),
                &batch
                    .iter()
                    .map(|i| i64::from(i.uses_allowed))
                    .collect::<Vec<_>>(),
                &column(|i| i.note.as_deref()),
                &column(|i| i.fixed_name.as_ref().map(AccountName::as_str)),
                &keys,
            ],
        )
        .await
        .map_err(backend)?;
    let inserted: Vec<i64> = inserted
        .iter()
        .map(|row| get(row, 0))
        .collect::<Result<_, _>>()?;
    Ok(ids
        .into_iter()
        .map(|id| inserted.contains(&id).then_some(id))
        .collect())
}

pub(super) async fn id_taken(db: &impl GenericClient, id: i64) -> Result<bool, StoreError> {
    let st = db
        .prepare_cached("SELECT 1 FROM invites WHERE id = $1")
        .await
        .map_err(backend)?;
    Ok(db.query_opt(&st, &[&id]).await.map_err(backend)?.is_some())
}

pub(super) async fn find_invite(
    db: &impl GenericClient,
    lookup: &InviteLookup,
) -> Result<InviteRecord, StoreError> {
    match lookup {
        InviteLookup::ById { id, digest } => {
            let st = db
                .prepare_cached(&format!(
                    "SELECT {INVITE_COLUMNS}, i.token_digest FROM invites i
                     WHERE i.id = $1 AND i.token_format = 2"
                ))
                .await
                .map_err(backend)?;
            let (invite, stored) = one(db.query_opt(&st, &[id]).await.map_err(backend)?, |row| {
                let stored =
                    SecretDigest::from_slice(get(row, 13)?).ok_or_else(|| corrupt("digest"))?;
                Ok((invite_row(row)?, stored))
            })?;
            // A right id with a wrong secret is no invite at all.
            if stored.matches(digest) {
                Ok(invite)
            } else {
                Err(StoreError::NotFound)
            }
        }
        InviteLookup::Legacy(digest) => {
            let st = db
                .prepare_cached(&format!(
                    "SELECT {INVITE_COLUMNS} FROM invites i
                     WHERE i.token_digest = $1 AND i.token_format = 1"
                ))
                .await
                .map_err(backend)?;
            one(
                db.query_opt(&st, &[&digest.as_bytes().as_slice()])
                    .await
                    .map_err(backend)?,
                invite_row,
            )
        }
    }
}

/// Spends one use of invite `id` at `now`: the one conditional write that
/// decides who gets the last use. Under READ COMMITTED a racing UPDATE of
/// the same row waits for the first to commit, then re-checks the WHERE
/// clause against the row as committed, so uses never exceed those allowed,
/// nor is a use spent after a revocation committed. False when none was left.
pub(super) async fn spend_use(
    db: &impl GenericClient,
    id: i64,
    account_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let st = db
        .prepare_cached(
            "UPDATE invites SET uses_spent = uses_spent + 1,
                used_at = CASE WHEN uses_spent + 1 >= uses_allowed THEN $1 ELSE used_at END,
                used_by = CASE WHEN uses_spent + 1 >= uses_allowed THEN $2 ELSE used_by END,
                ended_at = CASE WHEN uses_spent + 1 >= uses_allowed THEN $1 ELSE ended_at END
             WHERE id = $3 AND revoked_at IS NULL AND uses_spent < uses_allowed
               AND expires_at > $1",
        )
        .await
        .map_err(backend)?;
    Ok(db
        .execute(&st, &[&now, &account_id, &id])
        .await
        .map_err(backend)?
        == 1)
}

/// Records who registered with an invite, and when.
pub(super) async fn record_use(
    db: &impl GenericClient,
    invite_id: i64,
    account: &AccountRecord,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached(
            "INSERT INTO invite_uses (invite_id, account_id, name, used_at)
             VALUES ($1, $2, $3, $4)",
        )
        .await
        .map_err(backend)?;
    db.execute(
        &st,
        &[&invite_id, &account.id, &account.name.as_str(), &now],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

/// In the caller's transaction: checks the invite, creates the account (its
/// `invited_by` as given), spends one use, records who registered with it,
/// and opens a session.
pub(super) async fn redeem(
    db: &impl GenericClient,
    routes: &Routes,
    lookup: &InviteLookup,
    account: NewAccount,
    session: &NewSession,
    now: DateTime<Utc>,
) -> Result<AccountRecord, StoreError> {
    let invite = find_invite(db, lookup).await?;
    invite.admits(&account.host, &account.name, now)?;
    let account = insert_account(
        db,
        &NewAccount {
            invite_id: Some(invite.id),
            ..account
        },
    )
    .await?;
    if !spend_use(db, invite.id, account.id, now).await? {
        return Err(StoreError::InviteUsed);
    }
    record_use(db, invite.id, &account, now).await?;
    insert_session(db, account.id, session).await?;
    let subject = Subject {
        invite: Some(invite.id),
        source: Some(&invite.source),
        account: Some(account.name.as_str()),
    };
    for event in [EventKind::InviteRedeemed, EventKind::AccountCreated] {
        outbox::record(db, routes, &account.host, event, now, subject).await?;
    }
    Ok(account)
}

/// The SQL condition for a status at `$4` (now).
fn status_condition(status: StatusFilter) -> &'static str {
    match status {
        StatusFilter::Only(InviteStatus::Pending) => {
            "i.revoked_at IS NULL AND i.uses_spent < i.uses_allowed AND i.expires_at > $4"
        }
        StatusFilter::Only(InviteStatus::Used) => {
            "i.revoked_at IS NULL AND i.uses_spent >= i.uses_allowed \
             AND $4::timestamptz IS NOT NULL"
        }
        StatusFilter::Only(InviteStatus::Expired) => {
            "i.revoked_at IS NULL AND i.uses_spent < i.uses_allowed AND i.expires_at <= $4"
        }
        StatusFilter::Only(InviteStatus::Revoked) => {
            "i.revoked_at IS NOT NULL AND $4::timestamptz IS NOT NULL"
        }
        StatusFilter::All => "$4::timestamptz IS NOT NULL",
    }
}

/// The invites with the accounts registered with each, oldest use first,
/// read in one query for the whole page.
async fn with_uses(
    db: &impl GenericClient,
    invites: Vec<InviteRecord>,
) -> Result<Vec<InviteDetails>, StoreError> {
    let ids: Vec<i64> = invites.iter().map(|i| i.id).collect();
    let st = db
        .prepare_cached(
            "SELECT invite_id, name, used_at FROM invite_uses WHERE invite_id = ANY($1)
             ORDER BY used_at, id",
        )
        .await
        .map_err(backend)?;
    let rows = db.query(&st, &[&ids]).await.map_err(backend)?;
    let mut uses: HashMap<i64, Vec<InviteUse>> = HashMap::new();
    for row in &rows {
        uses.entry(get(row, 0)?).or_default().push(InviteUse {
            name: get(row, 1)?,
            used_at: time_at(row, 2)?,
        });
    }
    Ok(invites
        .into_iter()
        .map(|invite| InviteDetails {
            uses: uses.remove(&invite.id).unwrap_or_default(),
            invite,
        })
        .collect())
}

/// A page of a host's invites, newest first (ids grow with time).
pub(super) async fn list(
    db: &impl GenericClient,
    host: &HostName,
    status: StatusFilter,
    after: Option<i64>,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Vec<InviteDetails>, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites i
             WHERE i.host = $1 AND i.id < $2 AND {}
             ORDER BY i.id DESC LIMIT $3",
            status_condition(status)
        ))
        .await
        .map_err(backend)?;
    let rows = db
        .query(
            &st,
            &[
                &host.as_str(),
                &after.unwrap_or(i64::MAX),
                &i64::from(limit),
                &now,
            ],
        )
        .await
        .map_err(backend)?;
    with_uses(db, all(rows, invite_row)?).await
}

/// One invite of `host` by row id.
pub(super) async fn details(
    db: &impl GenericClient,
    host: &HostName,
    id: i64,
) -> Result<InviteDetails, StoreError> {
    let st = db
        .prepare_cached(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites i WHERE i.id = $1 AND i.host = $2"
        ))
        .await
        .map_err(backend)?;
    let invite = one(
        db.query_opt(&st, &[&id, &host.as_str()])
            .await
            .map_err(backend)?,
        invite_row,
    )?;
    let mut found = with_uses(db, vec![invite]).await?;
    found.pop().ok_or(StoreError::NotFound)
}

/// Revokes, in one UPDATE, the pending invites of `host` minted by `source`
/// (and, with `reset_account`, the reset invites for that account), and
/// returns each one's id and source, oldest first.
pub(super) async fn revoke_pending(
    db: &impl GenericClient,
    host: &HostName,
    source: &str,
    reset_account: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Vec<(i64, String)>, StoreError> {
    // "Pending" as everywhere: not revoked, uses left, not expired.
    let st = db
        .prepare_cached(
            "UPDATE invites SET revoked_at = $3, ended_at = $3
             WHERE host = $1 AND (source = $2 OR reset_account_id = $4::bigint)
               AND revoked_at IS NULL AND uses_spent < uses_allowed AND expires_at > $3
             RETURNING id, source",
        )
        .await
        .map_err(backend)?;
    let rows = db
        .query(&st, &[&host.as_str(), &source, &now, &reset_account])
        .await
        .map_err(backend)?;
    let mut revoked = all(rows, |r| Ok((get(r, 0)?, get(r, 1)?)))?;
    revoked.sort();
    Ok(revoked)
}

/// Revokes a pending invite: one conditional UPDATE, and its audit row.
pub(super) async fn revoke(
    db: &impl GenericClient,
    routes: &Routes,
    host: &HostName,
    id: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let st = db
        .prepare_cached(
            "UPDATE invites SET revoked_at = $3, ended_at = $3
             WHERE id = $1 AND host = $2 AND revoked_at IS NULL
               AND uses_spent < uses_allowed AND expires_at > $3
             RETURNING source",
        )
        .await
        .map_err(backend)?;
    let revoked = db
        .query_opt(&st, &[&id, &host.as_str(), &now])
        .await
        .map_err(backend)?;
    if let Some(row) = revoked {
        let source: String = get(&row, 0)?;
        outbox::record(
            db,
            routes,
            host,
            EventKind::InviteRevoked,
            now,
            Subject {
                invite: Some(id),
                source: Some(&source),
                account: None,
            },
        )
        .await?;
        return audit(
            db,
            now,
            host,
            actor,
            "invite.revoke",
            &format!("invite #{id}"),
            None,
        )
        .await;
    }
    // Nothing pending: say why, or succeed on an invite revoked already.
    match details(db, host, id).await?.invite.usable_at(now) {
        Err(StoreError::InviteRevoked) => Ok(()),
        Err(e) => Err(e),
        Ok(()) => Err(StoreError::permanent("a pending invite was not revoked")),
    }
}

/// The invites of `$1` that ended before `$2`: spent or revoked then
/// (ended_at), or expired then unspent and unrevoked.
const ENDED: &str = "host = $1 AND ((ended_at IS NOT NULL AND ended_at < $2)
    OR (ended_at IS NULL AND revoked_at IS NULL AND expires_at < $2))";

/// Deletes ended invites (with their use records) and idle sessions of a
/// host, in the caller's transaction.
///
/// Nodes purge on their own timers, so two may purge one host at once. A
/// transaction-level advisory lock per host makes the second wait for the
/// first; its statements, each with a snapshot taken after the lock, then
/// find nothing left to count, so `invites_purged` never counts an invite
/// twice.
pub(super) async fn purge(
    db: &impl GenericClient,
    host: &HostName,
    ended_before: DateTime<Utc>,
    idle_before: DateTime<Utc>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Purged, StoreError> {
    let h = host.as_str();
    let run = |sql: String, idle: bool| async move {
        let st = db.prepare_cached(&sql).await.map_err(backend)?;
        let cutoff = if idle { idle_before } else { ended_before };
        db.execute(&st, &[&h, &cutoff]).await.map_err(backend)
    };
    db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('invite-server purge ' || $1, 0))",
        &[&h],
    )
    .await
    .map_err(backend)?;
    // Counted first, so a key's count of minted invites survives the purge.
    run(
        format!(
            "UPDATE api_keys SET invites_purged = invites_purged +
                (SELECT count(*) FROM invites WHERE source = 'api/token/' || api_keys.id AND {ENDED})
             WHERE host = $1"
        ),
        false,
    )
    .await?;
    run(
        format!(
            "DELETE FROM invite_uses WHERE invite_id IN (SELECT id FROM invites WHERE {ENDED})"
        ),
        false,
    )
    .await?;
    let invites = run(format!("DELETE FROM invites WHERE {ENDED}"), false).await?;
    let sessions = run(
        "DELETE FROM sessions WHERE last_used_at < $2
           AND account_id IN (SELECT id FROM accounts WHERE host = $1)"
            .to_owned(),
        true,
    )
    .await?;
    let purged = Purged { invites, sessions };
    // An hourly purge that found nothing leaves no trace.
    if purged.invites > 0 || purged.sessions > 0 {
        audit(
            db,
            now,
            host,
            actor,
            "invites.purge",
            host.as_str(),
            Some(&format!(
                "{} invites, {} sessions",
                purged.invites, purged.sessions
            )),
        )
        .await?;
    }
    Ok(purged)
}
