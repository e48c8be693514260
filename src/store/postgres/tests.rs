//! Tests against a real PostgreSQL: they run when `INVITE_SERVER_TEST_POSTGRES`
//! names a base URL (a role that may CREATE DATABASE) and pass trivially
//! otherwise, each on a database of its own.

use chrono::Utc;

use super::*;
use crate::domain::InviteLookup;
use crate::store::{Dump, ImportError, InviteSource, NewAccount, Table};

/// A database made for one test, dropped with it.
struct Scratch {
    store: Option<PostgresStore>,
    base: String,
    name: String,
}

impl std::ops::Deref for Scratch {
    type Target = PostgresStore;
    fn deref(&self) -> &PostgresStore {
        self.store.as_ref().expect("taken only on drop")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        drop(self.store.take());
        let (base, name) = (self.base.clone(), self.name.clone());
        // Its own thread and runtime: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

impl Scratch {
    /// Runs `sql` as the administrator, `{db}` standing for this database,
    /// then closes every connection to it (the pool must open new ones).
    async fn admin(&self, sql: &str) {
        let (admin, conn) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let name = &self.name;
        admin
            .batch_execute(&format!(
                "{};
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';",
                sql.replace("{db}", name)
            ))
            .await
            .unwrap();
    }
}

/// A new, empty database: the administrator's URL, its name and its URL;
/// `None` without a PostgreSQL to test on.
async fn scratch_database() -> Option<(String, String, url::Url)> {
    let base = std::env::var("INVITE_SERVER_TEST_POSTGRES").ok()?;
    let name = format!("u_{:016x}", rand::random::<u64>());
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(&name);
    Some((base, name, url))
}

/// A store over a new database, or `None` without a PostgreSQL to test on.
async fn scratch() -> Option<Scratch> {
    let (base, name, url) = scratch_database().await?;
    let url = PostgresUrl::parse(url.as_str()).unwrap();
    let store = PostgresStore::open(&url, 8).await.unwrap();
    Some(Scratch {
        store: Some(store),
        base,
        name,
    })
}

fn host() -> HostName {
    HostName::parse("example.com").unwrap()
}

fn account(name: &str) -> NewAccount {
    NewAccount {
        host: host(),
        name: AccountName::parse(name).unwrap(),
        password_hash: "$argon2id$x".into(),
        created_at: Utc::now(),
        invited_by: "cli".into(),
        invite_id: None,
    }
}

fn invite(source: InviteSource, secret: &str, uses: u32, limit: Option<u32>) -> NewInvite {
    let now = Utc::now();
    NewInvite {
        token_digest: SecretDigest::of(secret),
        host: host(),
        source,
        issuer_name: None,
        created_at: now,
        expires_at: now + chrono::Duration::days(1),
        uses_allowed: uses,
        note: None,
        fixed_name: None,
        pending_limit: limit,
    }
}

fn session(s: &str) -> NewSession {
    NewSession {
        token_digest: SecretDigest::of(s),
        created_at: Utc::now(),
    }
}

#[tokio::test]
async fn migrating_again_changes_nothing_and_a_newer_schema_is_refused() {
    let Some(store) = scratch().await else { return };
    assert_eq!(store.migrate().await.unwrap(), (7, 7));
    store
        .client()
        .await
        .unwrap()
        .execute("UPDATE invite_server_schema SET version = 99", &[])
        .await
        .unwrap();
    match store.migrate().await {
        Err(OpenError::TooNew {
            found: 99,
            known: 7,
            ..
        }) => {}
        other => panic!("a newer schema was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_schema_6_database_migrates_to_7_and_keeps_serving_its_invites() {
    // A database as schema 6 left it: the first migration alone, and an
    // invite minted under it (its CHECKs in place).
    let Some((base, name, url)) = scratch_database().await else {
        return;
    };
    let (old, conn) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    old.batch_execute(super::migrations::MIGRATIONS[0])
        .await
        .unwrap();
    old.batch_execute(
        "CREATE TABLE invite_server_schema (id INTEGER PRIMARY KEY CHECK (id = 1),
                                            version BIGINT NOT NULL);
         INSERT INTO invite_server_schema VALUES (1, 6);",
    )
    .await
    .unwrap();
    let minted = Utc::now();
    let row_id = crate::store::new_invite_id(minted);
    old.execute(
        "INSERT INTO invites (id, token_digest, host, source, created_at, expires_at,
                              token_format, uses_allowed)
         VALUES ($1, $2, 'example.com', 'cli', $3, $4, 2, 2)",
        &[
            &row_id,
            &SecretDigest::of("from schema 6").as_bytes().as_slice(),
            &minted,
            &(minted + chrono::Duration::days(1)),
        ],
    )
    .await
    .unwrap();
    drop(old);
    let _ = conn.await;

    let url = PostgresUrl::parse(url.as_str()).unwrap();
    assert_eq!(PostgresStore::migrate_only(&url).await.unwrap(), (6, 7));
    let store = Scratch {
        store: Some(PostgresStore::open(&url, 2).await.unwrap()),
        base,
        name,
    };
    assert_eq!(store.migrate().await.unwrap(), (7, 7));
    // The old invite is found and spends its two uses, and no more.
    let lookup = InviteLookup::ById {
        id: row_id,
        digest: SecretDigest::of("from schema 6"),
    };
    for (n, name) in ["first", "second"].into_iter().enumerate() {
        let found = store.find_invite(lookup).await.unwrap();
        assert_eq!(found.uses_spent as usize, n, "{found:?}");
        store
            .redeem_invite(lookup, account(name), session(name), Utc::now())
            .await
            .unwrap_or_else(|e| panic!("use {n} of the schema 6 invite: {e:?}"));
    }
    match store
        .redeem_invite(lookup, account("third"), session("third"), Utc::now())
        .await
    {
        Err(StoreError::InviteUsed) => {}
        other => panic!("a third use of a two-use invite: {other:?}"),
    }
    // And the schema 7 mint path writes beside it.
    store
        .create_invite(invite(InviteSource::Cli, "after", 1, None))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_racing_redemptions_of_a_single_use_invite_create_one_account() {
    let Some(store) = scratch().await else { return };
    let store = Arc::new(store);
    let id = store
        .create_invite(invite(InviteSource::Cli, "once", 1, None))
        .await
        .unwrap();
    let lookup = InviteLookup::ById {
        id,
        digest: SecretDigest::of("once"),
    };
    let racers: Vec<_> = (0..24)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .redeem_invite(
                        lookup,
                        account(&format!("racer{i}")),
                        session(&format!("s{i}")),
                        Utc::now(),
                    )
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::InviteUsed) => {}
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.list_accounts(&host()).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_mints_for_an_accounts_last_free_slot_land_once() {
    let Some(store) = scratch().await else { return };
    let store = Arc::new(store);
    let alice = store.create_account(account("alice")).await.unwrap();
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create_invite(invite(
                        InviteSource::Account(alice.id),
                        &format!("q{i}"),
                        1,
                        Some(3),
                    ))
                    .await
            })
        })
        .collect();
    let mut minted = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => minted += 1,
            Err(StoreError::InviteQuota) => {}
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(minted, 3);
}

#[tokio::test]
async fn a_deleted_key_mints_nothing_and_its_pending_invites_are_revoked() {
    let Some(store) = scratch().await else { return };
    let key = KeyRecord {
        id: KeyId::parse("PgKeyDelete1").unwrap(),
        host: host(),
        name: None,
        created_at: Utc::now(),
        secret_digest: SecretDigest::of("k"),
        scope: crate::domain::KeyScope::Mint,
        expires_at: None,
        rate: None,
        last_used_at: None,
    };
    store.create_key(key.clone(), "cli").await.unwrap();
    let minted = store
        .create_invite(invite(InviteSource::Key(key.id.clone()), "a", 1, None))
        .await
        .unwrap();
    assert_eq!(store.list_keys(&host()).await.unwrap()[0].invites_minted, 1);
    assert_eq!(store.delete_key(&host(), &key.id, true, "cli").await, Ok(1));
    let revoked = store.invite_details(&host(), minted).await.unwrap();
    assert!(revoked.invite.revoked_at.is_some());
    assert_eq!(
        store
            .create_invite(invite(InviteSource::Key(key.id.clone()), "b", 1, None))
            .await,
        Err(StoreError::NotFound)
    );
}

fn key(id: &str, host: HostName, expires_at: Option<chrono::DateTime<Utc>>) -> KeyRecord {
    KeyRecord {
        id: KeyId::parse(id).unwrap(),
        host,
        name: None,
        created_at: Utc::now() - chrono::Duration::hours(2),
        secret_digest: SecretDigest::of(id),
        scope: crate::domain::KeyScope::Mint,
        expires_at,
        rate: None,
        last_used_at: None,
    }
}

#[tokio::test]
async fn one_batch_statement_inserts_the_rows_of_live_keys_and_refuses_each_other_row() {
    let Some(store) = scratch().await else { return };
    let other_host = HostName::parse("other.example").unwrap();
    let live = key("BatchLive001", host(), None);
    let deleted = key("BatchGone001", host(), None);
    let expired = key(
        "BatchOld0001",
        host(),
        Some(Utc::now() - chrono::Duration::hours(1)),
    );
    let elsewhere = key("BatchElse001", other_host, None);
    for k in [&live, &deleted, &expired, &elsewhere] {
        store.create_key(k.clone(), "cli").await.unwrap();
    }
    store
        .delete_key(&host(), &deleted.id, false, "cli")
        .await
        .unwrap();
    let mut noted = invite(InviteSource::Key(live.id.clone()), "n", 3, None);
    noted.note = Some("for the choir".into());
    noted.fixed_name = Some(AccountName::parse("carol").unwrap());
    let batch = [
        invite(InviteSource::Key(live.id.clone()), "l1", 1, None),
        invite(InviteSource::Key(deleted.id.clone()), "d", 1, None),
        noted,
        invite(InviteSource::Key(expired.id.clone()), "e", 1, None),
        // A key of another host names this host's invite: not its minter.
        invite(InviteSource::Key(elsewhere.id.clone()), "o", 1, None),
        invite(InviteSource::Key(live.id.clone()), "l2", 1, None),
    ];
    let client = store.client().await.unwrap();
    let ids = invites::insert_batch(&client, &batch.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    let inserted: Vec<bool> = ids.iter().map(Option::is_some).collect();
    assert_eq!(inserted, [true, false, true, false, false, true]);
    let noted = store
        .find_invite(InviteLookup::ById {
            id: ids[2].unwrap(),
            digest: SecretDigest::of("n"),
        })
        .await
        .unwrap();
    assert_eq!(noted.uses_allowed, 3);
    assert_eq!(noted.note.as_deref(), Some("for the choir"));
    assert_eq!(noted.fixed_name.as_deref(), Some("carol"));
    let listed = store.list_keys(&host()).await.unwrap();
    let minted: u64 = listed.iter().map(|k| k.invites_minted).sum();
    assert_eq!(minted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_mints_of_a_live_and_a_deleted_key_each_get_their_own_answer() {
    let Some(store) = scratch().await else { return };
    let store = Arc::new(store);
    let live = key("RaceLive0001", host(), None);
    let gone = key("RaceGone0001", host(), None);
    store.create_key(live.clone(), "cli").await.unwrap();
    store.create_key(gone.clone(), "cli").await.unwrap();
    store
        .delete_key(&host(), &gone.id, false, "cli")
        .await
        .unwrap();
    let racers: Vec<_> = (0..80)
        .map(|i| {
            let store = Arc::clone(&store);
            let id = if i % 4 == 0 { &gone.id } else { &live.id }.clone();
            tokio::spawn(async move {
                let secret = format!("r{i}");
                let id = store
                    .create_invite(invite(InviteSource::Key(id), &secret, 1, None))
                    .await;
                (i, secret, id)
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for racer in racers {
        let (i, secret, id) = racer.await.unwrap();
        if i % 4 == 0 {
            assert_eq!(id, Err(StoreError::NotFound), "mint {i} of the deleted key");
            continue;
        }
        let id = id.unwrap();
        assert!(ids.insert(id), "id {id} answered twice");
        // Each answer names the row holding that mint's own token.
        store
            .find_invite(InviteLookup::ById {
                id,
                digest: SecretDigest::of(&secret),
            })
            .await
            .unwrap();
    }
    assert_eq!(ids.len(), 60);
    assert_eq!(
        store.census(None).await.unwrap().invites,
        60,
        "nothing but the answered mints was written"
    );
    let [statements, mints] = written(&store);
    assert!(
        mints > statements,
        "mints that raced were written together ({mints} in {statements} statements)"
    );
}

/// A store holding one live key of [`host`], shared by the tasks of a test.
async fn keyed(id: &str) -> Option<(Arc<Scratch>, KeyId)> {
    let store = scratch().await?;
    let live = key(id, host(), None);
    store.create_key(live.clone(), "cli").await.unwrap();
    Some((Arc::new(store), live.id))
}

#[tokio::test]
async fn an_invite_id_already_taken_is_drawn_again_alone_and_in_a_transaction() {
    use super::invites::{insert_with_ids, Run};
    let Some((store, key)) = keyed("kTakenId0001").await else {
        return;
    };
    let mut client = store.client().await.unwrap();
    let inv = invite(InviteSource::Key(key.clone()), "a", 1, None);
    let taken = crate::store::new_invite_id(inv.created_at);
    assert_eq!(
        insert_with_ids(&client, &inv, Run::Alone, [taken]).await,
        Ok(taken)
    );
    // Alone, the collision fails the statement (no ON CONFLICT), and the
    // next id is tried on the same connection.
    assert_eq!(
        insert_with_ids(&client, &inv, Run::Alone, [taken, taken + 1]).await,
        Ok(taken + 1)
    );
    // In a transaction the INSERT skips the taken ids, and the transaction
    // is still whole: it commits what it wrote.
    let tx = client.transaction().await.unwrap();
    assert_eq!(
        insert_with_ids(&tx, &inv, Run::InTransaction, [taken, taken + 1, taken + 2]).await,
        Ok(taken + 2)
    );
    tx.commit().await.unwrap();
    // Every id drawn taken: an error, and nothing more written.
    assert!(
        insert_with_ids(&client, &inv, Run::Alone, [taken, taken + 2])
            .await
            .is_err()
    );
    assert_eq!(
        store.delete_key(&host(), &key, true, "cli").await,
        Ok(3),
        "its three invites revoked"
    );
    // A deleted key's mint is refused as such, not taken for a collision.
    assert_eq!(
        insert_with_ids(&client, &inv, Run::Alone, [taken + 3]).await,
        Err(StoreError::NotFound)
    );
    let all = store
        .list_invites(&host(), StatusFilter::All, None, 10, Utc::now())
        .await
        .unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
}

/// Statements the store's mint queue wrote, and the mints they carried.
fn written(store: &PostgresStore) -> [usize; 2] {
    store
        .mints
        .written
        .each_ref()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_few_clients_minting_as_fast_as_they_are_answered_are_written_a_round_at_a_time() {
    let Some((store, live)) = keyed("Rounds000001").await else {
        return;
    };
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let store = Arc::clone(&store);
            let id = live.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let secret = format!("c{c}m{i}");
                    store
                        .create_invite(invite(InviteSource::Key(id.clone()), &secret, 1, None))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let [statements, mints] = written(&store);
    assert_eq!(mints, 160);
    // Taking turns (one alone, then the other three) writes about 2 a
    // statement (2.3 measured without the wait for a round); rounds of all
    // four write nearly 4 (3.9 measured).
    assert!(
        mints as f64 / statements as f64 > 3.0,
        "{mints} mints in {statements} statements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mints_queued_behind_one_whose_client_went_away_are_still_written() {
    let Some((store, live)) = keyed("GoneAway0001").await else {
        return;
    };
    let racers: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&store);
            let id = live.clone();
            tokio::spawn(async move {
                store
                    .create_invite(invite(InviteSource::Key(id), &format!("g{i}"), 1, None))
                    .await
            })
        })
        .collect();
    // Half the clients go away, the one at the database among them or not.
    tokio::task::yield_now().await;
    for racer in racers.iter().step_by(2) {
        racer.abort();
    }
    for racer in racers.into_iter().skip(1).step_by(2) {
        let answered = tokio::time::timeout(std::time::Duration::from_secs(20), racer)
            .await
            .expect("a queued mint is answered");
        answered.unwrap().unwrap();
    }
    // The queue is free again: the next mint goes straight through.
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        store.create_invite(invite(InviteSource::Key(live.clone()), "after", 1, None)),
    )
    .await
    .expect("the queue is not left busy")
    .unwrap();
}

#[tokio::test]
async fn every_node_reads_back_the_first_form_key_stored() {
    let Some(store) = scratch().await else { return };
    let first = store.form_key([1; FormKey::LEN]).await.unwrap();
    let second = store.form_key([2; FormKey::LEN]).await.unwrap();
    assert_eq!(
        first.invite_ids().public(1 << 40),
        second.invite_ids().public(1 << 40)
    );
    let ours = FormKey::from_bytes([1; FormKey::LEN]);
    assert_eq!(
        first.invite_ids().public(1 << 40),
        ours.invite_ids().public(1 << 40)
    );
}

#[tokio::test]
async fn a_delivery_leased_by_a_node_is_not_claimed_again_until_its_lease_ends() {
    let Some(store) = scratch().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[hosts.\"example.com\"]\npublic_url = \"https://example.com\"\n\
             [[hosts.\"example.com\".webhooks]]\nurl = \"http://127.0.0.1:9/h\"\n\
             secret_file = {:?}\nevents = [\"account.created\"]\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let config = crate::config::Config::load(Some(&file)).unwrap();
    let routes = Routes::of(&config);
    let mut store = store;
    store.store = store.store.take().map(|s| s.with_webhooks(routes));
    store.create_account(account("bob")).await.unwrap();
    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(30);
    let claimed = store.claim_deliveries(now, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(store
        .claim_deliveries(now, lease, 10)
        .await
        .unwrap()
        .is_empty());
    // The claiming node died: once its lease is over, another takes it.
    let later = lease + chrono::Duration::seconds(1);
    let taken = store
        .claim_deliveries(later, later + chrono::Duration::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, claimed[0].id);
}

#[tokio::test]
async fn health_says_the_database_cannot_be_reached_until_a_connection_can_be_had_again() {
    let Some(store) = scratch().await else { return };
    assert_eq!(store.health(), Ok(()));
    store
        .admin("ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        .await;
    // The pool's connections were closed under it: it must open new ones.
    // A query may first fail on a connection whose end the pool has not
    // noticed yet (a plain failed query); asking again makes it open one.
    let mut refused = false;
    for _ in 0..50 {
        let answer = store.find_key(&KeyId::parse("NoSuchKey001").unwrap()).await;
        if answer.is_err() && store.health().is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the store still answered, or /health never said why not"
    );
    assert_eq!(
        store.health(),
        Err(Unhealthy("the database cannot be reached"))
    );
    store
        .admin("ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        .await;
    // No request comes: the probe finds the database again by itself.
    let mut healthy = false;
    for _ in 0..100 {
        if store.health().is_ok() {
            healthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(healthy, "the store did not notice the database was back");
}

#[tokio::test]
async fn every_connection_commits_synchronously_whatever_the_database_default() {
    let Some(store) = scratch().await else { return };
    store
        .admin("ALTER DATABASE {db} SET synchronous_commit = off")
        .await;
    // The pool opens a new connection, which the database default would
    // start with synchronous_commit off.
    let mut setting = None;
    for _ in 0..50 {
        if let Ok(client) = store.client().await {
            if let Ok(row) = client.query_one("SHOW synchronous_commit", &[]).await {
                setting = Some(row.get::<_, String>(0));
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(setting.as_deref(), Some("on"));
}

/// Gives every table of `store` rows, with columns of every kind set: the
/// form key, an admin key with a rate (touched), a used invite, a revoked
/// one, a reset invite, an account with a session, a disabled account and
/// a reservation. The outbox is written only with webhooks configured, so
/// each backend's test adds its row by hand.
async fn fill(store: &dyn Store) {
    store.form_key([9; FormKey::LEN]).await.unwrap();
    let key = KeyRecord {
        id: KeyId::parse("PgDumpKey001").unwrap(),
        host: host(),
        name: Some("bot".into()),
        created_at: Utc::now(),
        secret_digest: SecretDigest::of("key secret"),
        scope: crate::domain::KeyScope::Admin,
        expires_at: Some(Utc::now() + chrono::Duration::days(3)),
        rate: Some(crate::domain::MintRate::parse("60/h").unwrap()),
        last_used_at: None,
    };
    store.create_key(key.clone(), "cli").await.unwrap();
    store.touch_key(&key.id, Utc::now()).await.unwrap();
    let used = store
        .create_invite(invite(InviteSource::Key(key.id.clone()), "used", 2, None))
        .await
        .unwrap();
    let lookup = InviteLookup::ById {
        id: used,
        digest: SecretDigest::of("used"),
    };
    store
        .redeem_invite(lookup, account("alice"), session("alice"), Utc::now())
        .await
        .unwrap();
    let revoked = store
        .create_invite(invite(InviteSource::Cli, "revoked", 1, None))
        .await
        .unwrap();
    store
        .revoke_invite(&host(), revoked, "cli".into(), Utc::now())
        .await
        .unwrap();
    store
        .create_reset_invite(NewResetInvite {
            token_digest: SecretDigest::of("reset"),
            host: host(),
            account: AccountName::parse("alice").unwrap(),
            created_at: Utc::now(),
            expires_at: Utc::now() + chrono::Duration::hours(1),
            actor: "cli".into(),
            source: InviteSource::Cli,
        })
        .await
        .unwrap();
    store.create_account(account("dave")).await.unwrap();
    let dave = AccountName::parse("dave").unwrap();
    store
        .set_account_disabled(&host(), &dave, true, Utc::now(), "cli")
        .await
        .unwrap();
    store
        .reserve(NewReservation {
            host: host(),
            name: AccountName::parse("bob").unwrap(),
            invite: Some(InviteLookup::ById {
                id: used,
                digest: SecretDigest::of("used"),
            }),
            at: Utc::now(),
            lease_until: Utc::now() + chrono::Duration::minutes(1),
        })
        .await
        .unwrap();
}

/// The one outbox row [`fill`] leaves to each backend, as SQL both take.
const OUTBOX_ROW: &str = "INSERT INTO webhook_outbox (event_id, host, url, event, created_at,
        attempts, last_status)
     VALUES ('msg_1', 'example.com', 'http://127.0.0.1:9/', 'invite.created', CURRENT_TIMESTAMP,
        2, 'timeout')";

/// A SQLite store in `dir` with a row in every table.
async fn filled_sqlite(dir: &tempfile::TempDir) -> crate::store::SqliteStore {
    let path = dir.path().join("source.db");
    let store = crate::store::SqliteStore::open(&path).unwrap();
    fill(&store).await;
    // SQLite keeps times as integer microseconds.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            &OUTBOX_ROW.replace("CURRENT_TIMESTAMP", "1700000000000000"),
            [],
        )
        .unwrap();
    store
}

/// Fails unless every table of `dump` holds a row, so a round trip proves
/// every column of every table.
fn assert_every_table_filled(dump: &Dump) {
    for table in Table::ALL {
        assert!(dump.counts().get(table) > 0, "{table:?} is empty: {dump:?}");
    }
}

#[tokio::test]
async fn a_sqlite_store_imported_into_postgresql_exports_again_row_for_row_and_new_ids_follow_the_imported_ones(
) {
    let Some(target) = scratch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dump = filled_sqlite(&dir).await.export().await.unwrap();
    assert_every_table_filled(&dump);
    target.import_into_empty(dump.clone()).await.unwrap();
    assert_eq!(target.export().await.unwrap(), dump);
    assert_eq!(target.table_counts().await.unwrap(), dump.counts());
    // Every identity continues above the imported ids: an account and its
    // audit row, a reservation, a use of an invite.
    let carol = target.create_account(account("carol")).await.unwrap();
    assert!(dump.accounts.iter().all(|a| a.id < carol.id));
    let held = target
        .reserve(NewReservation {
            host: host(),
            name: AccountName::parse("erin").unwrap(),
            invite: None,
            at: Utc::now(),
            lease_until: Utc::now() + chrono::Duration::minutes(1),
        })
        .await
        .unwrap();
    assert!(dump.provision_reservations.iter().all(|r| r.id < held));
    let after = target.export().await.unwrap();
    let max_audit = dump.audit_log.iter().map(|a| a.id).max().unwrap();
    assert!(after.audit_log.iter().any(|a| a.id > max_audit));
    // The imported form key is the one the store hands out.
    let key = target.form_key([1; FormKey::LEN]).await.unwrap();
    assert_eq!(
        key.invite_ids().public(1 << 40),
        FormKey::from_bytes([9; FormKey::LEN])
            .invite_ids()
            .public(1 << 40)
    );
}

#[tokio::test]
async fn a_postgresql_store_imported_into_sqlite_exports_again_row_for_row() {
    let Some(source) = scratch().await else {
        return;
    };
    fill(&*source).await;
    source
        .client()
        .await
        .unwrap()
        .execute(OUTBOX_ROW, &[])
        .await
        .unwrap();
    let dump = source.export().await.unwrap();
    assert_every_table_filled(&dump);
    let dir = tempfile::tempdir().unwrap();
    let copy = crate::store::SqliteStore::open(&dir.path().join("copy.db")).unwrap();
    copy.import_into_empty(dump.clone()).await.unwrap();
    assert_eq!(copy.export().await.unwrap(), dump);
    // And back into a second PostgreSQL database, unchanged.
    let Some(again) = scratch().await else { return };
    again
        .import_into_empty(copy.export().await.unwrap())
        .await
        .unwrap();
    assert_eq!(again.export().await.unwrap(), dump);
}

#[tokio::test]
async fn a_postgresql_target_with_any_row_or_another_schema_version_is_refused_and_left_alone() {
    let Some(target) = scratch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dump = filled_sqlite(&dir).await.export().await.unwrap();
    target.create_account(account("zoe")).await.unwrap();
    let before = target.export().await.unwrap();
    match target.import_into_empty(dump.clone()).await {
        Err(ImportError::NotEmpty {
            table: Table::Accounts,
            rows: 1,
        }) => {}
        other => panic!("not refused as not empty: {other:?}"),
    }
    assert_eq!(target.export().await.unwrap(), before);

    let Some(empty) = scratch().await else { return };
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
async fn an_import_into_postgresql_that_fails_part_way_writes_nothing() {
    let Some(target) = scratch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut dump = filled_sqlite(&dir).await.export().await.unwrap();
    // A second alice: UNIQUE (host, name) fails after the keys were written.
    let mut twin = dump.accounts[0].clone();
    twin.id += 100;
    dump.accounts.push(twin);
    assert!(matches!(
        target.import_into_empty(dump).await,
        Err(ImportError::Store(StoreError::Backend(_)))
    ));
    assert_eq!(target.table_counts().await.unwrap().first_nonempty(), None);
}
