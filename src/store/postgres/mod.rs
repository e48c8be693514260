//! The PostgreSQL backend, in the SQLite backend's shape: this file is the
//! thin [`Store`] implementation, the SQL lives in one file per entity.
//!
//! Many nodes may serve one database. Each write is one transaction (or one
//! statement) under READ COMMITTED, PostgreSQL's default; where a check and
//! a write must not interleave with another node's transaction, the entity
//! file takes a row lock or an advisory lock and says why it is enough.
//! Every connection runs with `synchronous_commit = on` (see
//! [`connect::PostgresUrl`]), so an answered write is on the database's disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};

use super::{
    AccountOrigin, AccountRecord, Delivery, DeliveryResult, InviteDetails, InviteRecord, KeyRecord,
    ListedKey, NewAccount, NewInvite, NewReservation, NewResetInvite, NewSession,
    PendingReservation, Purged, SessionRecord, StatusFilter, Store, StoreError, Unhealthy,
};
use crate::crypto::{FormKey, SecretDigest};
use crate::domain::{AccountName, HostName, InviteLookup, KeyId};
use crate::webhooks::{EventKind, Routes};
use rows::{backend, pool};

mod accounts;
mod audit;
mod census;
mod connect;
mod dump;
mod invites;
mod keys;
mod migrations;
mod mint_batch;
mod outbox;
mod reservations;
mod rows;
mod secrets;
mod sessions;
#[cfg(test)]
mod tests;

pub use connect::{BadUrl, PostgresUrl, SslMode};

/// Connections each node keeps to the database at most.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The pool could not be set up (a TLS setting or root file is wrong).
    #[error("cannot use database {url}: {reason}")]
    Setup {
        /// The database, without its password.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The database could not be reached or refused us.
    #[error("cannot connect to database {url}: {reason}")]
    Connect {
        /// The database, without its password.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The schema was written by a newer invite-server.
    #[error("database {url} has schema version {found}, newer than this invite-server knows ({known}); refusing to downgrade it")]
    TooNew {
        /// The database, without its password.
        url: String,
        /// Its schema version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// The schema version is one no invite-server writes.
    #[error("database {url} has schema version {found}, which no invite-server writes: it is damaged or not an invite-server database; refusing to open it")]
    BadVersion {
        /// The database, without its password.
        url: String,
        /// Its schema version.
        found: i64,
    },
    /// The database opened but a write to it failed.
    #[error("database {url} cannot be written: {reason}")]
    NotWritable {
        /// The database, without its password.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// The PostgreSQL implementation of [`Store`]. Like SQLite's it keeps no
/// cache of its own; [`super::KeyCache`] adds one over any store. A clone
/// is the same store (its parts are shared).
#[derive(Clone)]
pub struct PostgresStore {
    /// This thread's pool (see [`ThreadPools`]).
    pools: Arc<ThreadPools>,
    url: PostgresUrl,
    /// Whether the last connection asked for could be had (see
    /// [`Store::health`]).
    reachable: Arc<Reachable>,
    /// Which events of which host go to a webhook.
    routes: Arc<Routes>,
    /// Key mints waiting to be written together (see [`mint_batch`]).
    mints: Arc<mint_batch::MintQueue>,
}

/// One pool of connections per thread that asks for one.
///
/// tokio-postgres drives each connection with a task spawned on the runtime
/// that opened it. With one pool for the process, connections opened at
/// startup live on the main thread's runtime, and every query from an HTTP
/// worker crosses threads twice (the request to the connection's task, the
/// answer back), each a wake-up of an idle thread: measured at one
/// connection, that was about a quarter of a mint's time. Each actix worker
/// is a runtime on its own thread, so a pool per thread keeps a query and its
/// connection on the same thread. The pools share the store's bound:
/// `database_pool_size` is split over the threads a server runs (one worker
/// per core and the main thread), at least two connections each.
struct ThreadPools {
    /// Tells this store's pools from another store's on the same thread.
    id: u64,
    url: PostgresUrl,
    per_thread: usize,
}

thread_local! {
    /// The pools this thread opened, by store id; few (one per store).
    static POOLS: std::cell::RefCell<Vec<(u64, Pool)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ThreadPools {
    fn new(url: &PostgresUrl, pool_size: usize) -> Result<Self, String> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let threads = std::thread::available_parallelism().map_or(1, usize::from) + 1;
        let pools = Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            url: url.clone(),
            per_thread: pool_size.div_ceil(threads).max(2).min(pool_size.max(1)),
        };
        // Proves the TLS settings now, at open, not at the first query.
        pools.url.pool(1)?;
        Ok(pools)
    }

    /// This thread's pool, made on first use.
    fn local(&self) -> Result<Pool, StoreError> {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            if let Some((_, pool)) = pools.iter().find(|(id, _)| *id == self.id) {
                return Ok(pool.clone());
            }
            let pool = self
                .url
                .pool(self.per_thread)
                .map_err(StoreError::permanent)?;
            pools.push((self.id, pool.clone()));
            Ok(pool)
        })
    }
}

impl Drop for ThreadPools {
    fn drop(&mut self) {
        // The dropping thread's pool goes with the store; other threads'
        // pools close when those threads end (their connections' tasks end
        // with their runtimes).
        let _ = POOLS.try_with(|pools| pools.borrow_mut().retain(|(id, _)| *id != self.id));
    }
}

/// Whether connections to the database can be had, as last seen.
struct Reachable {
    up: AtomicBool,
    /// A probe is running (see [`PostgresStore::probe`]).
    probing: AtomicBool,
}

impl Default for Reachable {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            probing: AtomicBool::new(false),
        }
    }
}

/// Whether a pool error means the database cannot be reached (a connection
/// could not be opened, or not in time), rather than that every connection
/// is busy.
fn unreachable(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(_) | PoolError::Timeout(TimeoutType::Create) => true,
        PoolError::Timeout(_)
        | PoolError::PostCreateHook(_)
        | PoolError::Closed
        | PoolError::NoRuntimeSpecified => false,
    }
}

/// Runs `$body` (which uses `$tx`) in one transaction on a pooled
/// connection, committing when it returns `Ok`. On `Err` the transaction is
/// dropped, which rolls it back before the connection serves anyone else.
/// Each commit is measured as the SQLite writer's are
/// (`invite_server_write_batch_size`, `invite_server_commit_duration_seconds`),
/// as a batch of one: PostgreSQL commits each transaction on its own.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let started = std::time::Instant::now();
        let mut client = $store.client().await?;
        let $tx = client.transaction().await.map_err(backend)?;
        let out = $body;
        match out {
            Ok(v) => {
                $tx.commit().await.map_err(backend)?;
                crate::metrics::commit(1, started.elapsed());
                Ok(v)
            }
            Err(e) => Err(e),
        }
    }};
}

/// Runs `$body`, one write statement in autocommit, measured as a commit of
/// one write (see [`in_transaction`]).
macro_rules! autocommit {
    ($body:expr) => {{
        let started = std::time::Instant::now();
        let out = $body;
        if out.is_ok() {
            crate::metrics::commit(1, started.elapsed());
        }
        out
    }};
}

impl PostgresStore {
    /// Connects to `url` with a pool of at most `pool_size` connections and
    /// brings its schema up to date (see [`Self::migrate`]).
    pub async fn open(url: &PostgresUrl, pool_size: usize) -> Result<Self, OpenError> {
        let store = Self::connect(url, pool_size)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Brings the schema of `url` up to date without opening a store for
    /// use (`invite-server migrate`); the versions before and after.
    pub async fn migrate_only(url: &PostgresUrl) -> Result<(i64, i64), OpenError> {
        Self::connect(url, 1)?.migrate().await
    }

    /// A store over `url` whose schema is not checked yet.
    fn connect(url: &PostgresUrl, pool_size: usize) -> Result<Self, OpenError> {
        let pools = ThreadPools::new(url, pool_size).map_err(|reason| OpenError::Setup {
            url: url.to_string(),
            reason,
        })?;
        Ok(Self {
            pools: Arc::new(pools),
            url: url.clone(),
            reachable: Arc::new(Reachable::default()),
            routes: Arc::new(Routes::default()),
            mints: Arc::new(mint_batch::MintQueue::on(
                tokio::runtime::Handle::try_current().ok(),
            )),
        })
    }

    /// Applies the migrations this binary has and the database lacks, and
    /// returns the schema versions before and after. Safe to run from many
    /// nodes at once; refuses a database newer than this binary.
    pub async fn migrate(&self) -> Result<(i64, i64), OpenError> {
        let url = self.url.to_string();
        let local = self.pools.local().map_err(|e| OpenError::Connect {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let mut client = local.get().await.map_err(|e| OpenError::Connect {
            url: url.clone(),
            reason: match pool(e) {
                StoreError::Backend(why) => why.to_string(),
                other => other.to_string(),
            },
        })?;
        migrations::migrate(&mut client).await.map_err(|e| match e {
            migrations::MigrateError::TooNew(found) => OpenError::TooNew {
                url,
                found,
                known: migrations::known(),
            },
            migrations::MigrateError::BadVersion(found) => OpenError::BadVersion { url, found },
            migrations::MigrateError::Store(e) => OpenError::Connect {
                url,
                reason: e.to_string(),
            },
        })
    }

    /// Writes an outbox row, in the same transaction, for every change that
    /// a webhook in `routes` takes.
    pub fn with_webhooks(self, routes: Routes) -> Self {
        Self {
            routes: Arc::new(routes),
            ..self
        }
    }

    /// Proves the database takes writes: commits an UPDATE that changes
    /// nothing (the schema version, set to itself). `serve` calls it before
    /// it listens, so a read-only replica or a role without write rights
    /// fails at startup, not after the node reported itself healthy.
    pub async fn check_writable(&self) -> Result<(), OpenError> {
        let written = async {
            let client = self.client().await?;
            client
                .execute(
                    "UPDATE invite_server_schema SET version = version WHERE id = 1",
                    &[],
                )
                .await
                .map_err(backend)
        };
        written
            .await
            .map(|_| ())
            .map_err(|e| OpenError::NotWritable {
                url: self.url.to_string(),
                reason: match e {
                    StoreError::Backend(why) => why.to_string(),
                    other => other.to_string(),
                },
            })
    }

    /// A pooled connection. A failure to open one marks the database
    /// unreachable for `/health` until a connection can be had again, which
    /// a background probe tries once a second (a node that the load
    /// balancer stopped sending requests to would otherwise never learn).
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        let got = self.pools.local()?.get().await;
        self.pooled(got)
    }

    /// A pooled connection if one is free now (or can be opened), `None`
    /// if every one is in use: the caller does not wait for one.
    async fn free_client(&self) -> Result<Option<deadpool_postgres::Client>, StoreError> {
        let pool = self.pools.local()?;
        let mut now = pool.timeouts();
        now.wait = Some(std::time::Duration::ZERO);
        match pool.timeout_get(&now).await {
            Err(deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => {
                Ok(None)
            }
            got => self.pooled(got).map(Some),
        }
    }

    /// What [`Self::client`] answers for a pool's answer.
    fn pooled(
        &self,
        got: Result<deadpool_postgres::Client, deadpool_postgres::PoolError>,
    ) -> Result<deadpool_postgres::Client, StoreError> {
        match got {
            Ok(client) => {
                self.reachable.up.store(true, Ordering::Relaxed);
                Ok(client)
            }
            Err(e) => {
                if unreachable(&e) {
                    self.reachable.up.store(false, Ordering::Relaxed);
                    self.probe();
                }
                Err(pool(e))
            }
        }
    }

    /// Starts the probe that marks the database reachable again, unless
    /// one runs already.
    fn probe(&self) {
        if self.reachable.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(pool) = self.pools.local() else {
            // Cannot fail here: this thread's pool was just asked for.
            self.reachable.probing.store(false, Ordering::Release);
            return;
        };
        let reachable = Arc::clone(&self.reachable);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if pool.get().await.is_ok() {
                    reachable.up.store(true, Ordering::Relaxed);
                    break;
                }
            }
            reachable.probing.store(false, Ordering::Release);
        });
    }

    /// Whether an outbox row may be written for `event` on `host`: without
    /// one, a single-statement write needs no transaction.
    fn hooked(&self, host: &HostName, event: EventKind) -> bool {
        self.routes.targets(host, event).next().is_some()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_key(&self, key: KeyRecord, actor: &str) -> Result<(), StoreError> {
        in_transaction!(self, |tx| keys::insert_key(&tx, &key, actor).await)
    }

    async fn list_keys(&self, host: &HostName) -> Result<Vec<ListedKey>, StoreError> {
        keys::list_keys(&self.client().await?, host).await
    }

    async fn find_key(&self, id: &KeyId) -> Result<KeyRecord, StoreError> {
        keys::find_key(&self.client().await?, id).await
    }

    async fn delete_key(
        &self,
        host: &HostName,
        id: &KeyId,
        revoke_invites: bool,
        actor: &str,
    ) -> Result<u64, StoreError> {
        in_transaction!(self, |tx| keys::delete_key(
            &tx,
            &self.routes,
            host,
            id,
            revoke_invites,
            actor,
            Utc::now()
        )
        .await)
    }

    async fn touch_key(&self, id: &KeyId, now: DateTime<Utc>) -> Result<(), StoreError> {
        autocommit!(keys::touch_key(&self.client().await?, id, now).await)
    }

    async fn create_invite(&self, invite: NewInvite) -> Result<i64, StoreError> {
        // The hot path: a key's mint without webhooks is one statement in
        // autocommit, one round trip, written together with the mints that
        // queued behind another (see `mint_batch`).
        if invites::needs_transaction(&invite)
            || self.hooked(&invite.host, EventKind::InviteCreated)
        {
            in_transaction!(self, |tx| invites::minted(&tx, &self.routes, &invite).await)
        } else if mint_batch::batchable(&invite) {
            Arc::clone(&self.mints).mint(self, invite).await
        } else {
            mint_batch::write_alone(&self.client().await?, &invite).await
        }
    }

    async fn create_invites(&self, batch: Vec<NewInvite>) -> Result<Vec<i64>, StoreError> {
        in_transaction!(self, |tx| {
            let mut ids = Vec::with_capacity(batch.len());
            for inv in &batch {
                ids.push(invites::minted(&tx, &self.routes, inv).await?);
            }
            // An operator's bulk mint is one audit row per transaction.
            if let Some(first) = batch.first() {
                audit::audit(
                    &tx,
                    first.created_at,
                    &first.host,
                    "cli",
                    "invite.create",
                    &format!("{} invites", ids.len()),
                    Some(&super::bulk_mint_detail(first)),
                )
                .await?;
            }
            Ok(ids)
        })
    }

    async fn find_invite(&self, lookup: InviteLookup) -> Result<InviteRecord, StoreError> {
        invites::find_invite(&self.client().await?, &lookup).await
    }

    async fn list_invites(
        &self,
        host: &HostName,
        status: StatusFilter,
        after: Option<i64>,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<InviteDetails>, StoreError> {
        invites::list(&self.client().await?, host, status, after, limit, now).await
    }

    async fn invite_details(&self, host: &HostName, id: i64) -> Result<InviteDetails, StoreError> {
        invites::details(&self.client().await?, host, id).await
    }

    async fn revoke_invite(
        &self,
        host: &HostName,
        id: i64,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| invites::revoke(
            &tx,
            &self.routes,
            host,
            id,
            &actor,
            now
        )
        .await)
    }

    async fn purge(
        &self,
        host: &HostName,
        ended_before: DateTime<Utc>,
        idle_before: DateTime<Utc>,
        actor: String,
        now: DateTime<Utc>,
    ) -> Result<Purged, StoreError> {
        in_transaction!(self, |tx| invites::purge(
            &tx,
            host,
            ended_before,
            idle_before,
            &actor,
            now
        )
        .await)
    }

    async fn redeem_invite(
        &self,
        lookup: InviteLookup,
        account: NewAccount,
        session: NewSession,
        now: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError> {
        in_transaction!(self, |tx| invites::redeem(
            &tx,
            &self.routes,
            &lookup,
            account,
            &session,
            now
        )
        .await)
    }

    async fn create_account(&self, account: NewAccount) -> Result<AccountRecord, StoreError> {
        in_transaction!(self, |tx| accounts::create_account_audited(
            &tx,
            &self.routes,
            &account
        )
        .await)
    }

    async fn list_accounts(&self, host: &HostName) -> Result<Vec<AccountRecord>, StoreError> {
        accounts::list(&self.client().await?, host).await
    }

    async fn find_account(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountRecord, StoreError> {
        accounts::find(&self.client().await?, host, name).await
    }

    async fn set_password(
        &self,
        account_id: i64,
        password_hash: String,
        keep: Option<SecretDigest>,
        actor: &str,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| accounts::set_password(
            &tx,
            account_id,
            &password_hash,
            keep.as_ref(),
            actor
        )
        .await)
    }

    async fn delete_account(
        &self,
        host: &HostName,
        name: &AccountName,
        actor: &str,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| accounts::delete(
            &tx,
            &self.routes,
            host,
            name,
            actor,
            Utc::now()
        )
        .await)
    }

    async fn find_account_by_id(&self, id: i64) -> Result<AccountRecord, StoreError> {
        accounts::find_by_id(&self.client().await?, id).await
    }

    async fn account_origin(
        &self,
        host: &HostName,
        name: &AccountName,
    ) -> Result<AccountOrigin, StoreError> {
        accounts::origin(&self.client().await?, host, name).await
    }

    async fn set_account_disabled(
        &self,
        host: &HostName,
        name: &AccountName,
        disabled: bool,
        at: DateTime<Utc>,
        actor: &str,
    ) -> Result<(), StoreError> {
        in_transaction!(self, |tx| accounts::set_disabled(
            &tx, host, name, disabled, at, actor
        )
        .await)
    }

    async fn create_reset_invite(&self, invite: NewResetInvite) -> Result<i64, StoreError> {
        in_transaction!(self, |tx| accounts::insert_reset(&tx, &invite).await)
    }

    async fn redeem_reset_invite(
        &self,
        lookup: InviteLookup,
        password_hash: String,
        session: NewSession,
        now: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError> {
        in_transaction!(self, |tx| accounts::redeem_reset(
            &tx,
            &lookup,
            &password_hash,
            &session,
            now
        )
        .await)
    }

    async fn create_session(&self, account_id: i64, session: NewSession) -> Result<(), StoreError> {
        autocommit!(sessions::insert_session(&self.client().await?, account_id, &session).await)
    }

    async fn find_session(&self, token_digest: SecretDigest) -> Result<SessionRecord, StoreError> {
        sessions::find_session(&self.client().await?, &token_digest).await
    }

    async fn touch_session(
        &self,
        token_digest: SecretDigest,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        autocommit!(sessions::touch_session(&self.client().await?, &token_digest, now).await)
    }

    async fn delete_session(&self, token_digest: SecretDigest) -> Result<(), StoreError> {
        autocommit!(sessions::delete_session(&self.client().await?, &token_digest).await)
    }

    async fn end_other_sessions(
        &self,
        account_id: i64,
        keep: SecretDigest,
    ) -> Result<u64, StoreError> {
        autocommit!(sessions::end_sessions(&self.client().await?, account_id, Some(&keep)).await)
    }

    async fn form_key(&self, candidate: [u8; FormKey::LEN]) -> Result<FormKey, StoreError> {
        secrets::form_key(&self.client().await?, candidate).await
    }

    fn health(&self) -> Result<(), Unhealthy> {
        match self.reachable.up.load(Ordering::Relaxed) {
            true => Ok(()),
            false => Err(Unhealthy("the database cannot be reached")),
        }
    }

    async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        autocommit!(outbox::claim(&self.client().await?, now, until, limit).await)
    }

    async fn finish_delivery(
        &self,
        id: i64,
        result: DeliveryResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        autocommit!(outbox::finish(&self.client().await?, id, &result, now).await)
    }

    async fn list_deliveries(
        &self,
        host: &HostName,
        failed_only: bool,
    ) -> Result<Vec<Delivery>, StoreError> {
        outbox::list(&self.client().await?, host, failed_only).await
    }

    async fn retry_delivery(
        &self,
        host: &HostName,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        autocommit!(outbox::retry(&self.client().await?, host, id, now).await)
    }

    async fn reserve(&self, reservation: NewReservation) -> Result<i64, StoreError> {
        in_transaction!(self, |tx| reservations::reserve(&tx, &reservation).await)
    }

    async fn finalize_reservation(
        &self,
        id: i64,
        invite: Option<InviteLookup>,
        account: NewAccount,
        session: Option<NewSession>,
        reserved_at: DateTime<Utc>,
    ) -> Result<AccountRecord, StoreError> {
        in_transaction!(self, |tx| reservations::finalize(
            &tx,
            &self.routes,
            id,
            invite.as_ref(),
            account,
            session.as_ref(),
            reserved_at
        )
        .await)
    }

    async fn release_reservation(&self, id: i64) -> Result<(), StoreError> {
        autocommit!(reservations::release(&self.client().await?, id).await)
    }

    async fn pending_reservations(
        &self,
        host: &HostName,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingReservation>, StoreError> {
        reservations::pending(&self.client().await?, host, now).await
    }

    async fn census(&self, host: Option<&HostName>) -> Result<super::Census, StoreError> {
        census::census(&mut self.client().await?, host).await
    }

    async fn export(&self) -> Result<super::Dump, StoreError> {
        dump::export(&mut self.client().await?).await
    }

    async fn import_into_empty(&self, dump: super::Dump) -> Result<(), super::ImportError> {
        in_transaction!(self, |tx| dump::import(&tx, &dump).await)
    }

    async fn table_counts(&self) -> Result<super::TableCounts, StoreError> {
        dump::counts(&mut self.client().await?).await
    }
}
