//! Crash safety: the server is SIGKILLed at random moments while clients mint
//! and redeem and the CLI writes beside it; after every restart, everything a
//! client was told had succeeded must still be there, exactly once, intact.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::blocking::Client;

use crate::helpers::{cli_at, is_postgres, token_of, TestApp, DEFAULT_CONFIG};
use crate::probe;

/// Kill-and-restart rounds.
const ROUNDS: usize = 30;
/// Client threads minting as fast as they can in each round.
const MINTERS: usize = 3;
/// A password the policy accepts.
const PASSWORD: &str = "lantern quarry tulip 92";

/// Sets the stop flag when dropped, so a failed assertion inside a thread
/// scope stops the load threads instead of waiting on them for ever.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A client for the load: no redirects, no cookies, short timeouts so a
/// request caught by the kill fails fast instead of waiting.
fn load_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The `identity` cookie value a response sets.
fn identity_cookie(res: &reqwest::blocking::Response) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("identity="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// What the clients of one round saw.
#[derive(Default)]
struct Seen {
    /// Tokens whose mint answered 201 (or whose URL the CLI printed).
    minted: Vec<String>,
    /// Redemptions answered 204: token, account name, identity cookie.
    redeemed: Vec<(String, String, String)>,
    /// Redemptions sent but not answered before the kill: token, name.
    unanswered: Vec<(String, String)>,
    /// Tokens handed to the redeemer and never tried: back to the pool.
    untried: Vec<String>,
    /// Keys `keys create` printed (exit status 0).
    keys: Vec<String>,
    /// Anything answered that should not have been, for the final report.
    unexpected: Vec<String>,
}

fn mint_until_stopped(base: &str, key: &str, stop: &AtomicBool) -> Seen {
    let client = load_client();
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        match client.get(format!("{base}/invites_api?key={key}")).send() {
            Ok(res) if res.status() == 201 => {
                let location = res.headers()["location"].to_str().unwrap().to_owned();
                seen.minted.push(token_of(&location));
            }
            Ok(res) => seen.unexpected.push(format!(
                "mint with {key} answered {}: {}",
                res.status(),
                res.text().unwrap_or_default()
            )),
            // The kill: connection reset or refused. Nothing was promised.
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
    seen
}

fn redeem_until_stopped(
    base: &str,
    round: usize,
    mut tokens: Vec<String>,
    stop: &AtomicBool,
) -> Seen {
    let client = load_client();
    let mut seen = Seen::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(token) = tokens.pop() else { break };
        let name = format!("crash-{round}-{n}");
        n += 1;
        let res = client
            .post(format!("{base}/api/invite/{token}"))
            .json(&serde_json::json!({ "name": name, "password": PASSWORD }))
            .send();
        match res {
            Ok(res) if res.status() == 204 => {
                let cookie = identity_cookie(&res).expect("a 204 sets the identity cookie");
                seen.redeemed.push((token, name, cookie));
            }
            Ok(res) => seen.unexpected.push(format!(
                "redeeming an invite minted before a restart answered {}: {}",
                res.status(),
                res.text().unwrap_or_default()
            )),
            Err(_) => seen.unanswered.push((token, name)),
        }
    }
    seen.untried = tokens;
    seen
}

/// The CLI writing beside the server: a key, then a small batch of invites,
/// until the round ends. Only what a successful run printed is recorded.
fn cli_until_stopped(config: &Path, db: &Path, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let out = cli_at(config, db, &["keys", "create", "localhost", "crash"], None);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            seen.keys.push(stdout.trim().to_owned());
        } else {
            seen.unexpected.push(format!("keys create failed: {out:?}"));
        }
        let out = cli_at(
            config,
            db,
            &["invites", "create", "localhost", "--count", "25"],
            None,
        );
        if out.status.success() {
            let urls: Vec<_> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(token_of)
                .collect();
            if urls.len() != 25 {
                seen.unexpected
                    .push(format!("invites create printed {} URLs", urls.len()));
            }
            seen.minted.extend(urls);
        } else {
            seen.unexpected
                .push(format!("invites create failed: {out:?}"));
        }
    }
    seen
}

#[test]
fn everything_a_client_saw_succeed_survives_sigkill_at_random_moments() {
    let started = Instant::now();
    let mut rng = rand::rng();
    let mut app = TestApp::spawn();
    let mut keys = vec![app.create_key("localhost")];
    // Tokens seen minted and not (yet) sent for redemption.
    let mut fresh: Vec<String> = Vec::new();
    let mut all_minted: Vec<String> = Vec::new();
    let mut redeemed: Vec<(String, String, String)> = Vec::new();
    let mut unanswered: Vec<(String, String)> = Vec::new();
    let mut unexpected: Vec<String> = Vec::new();
    let mut kills_mid_load = 0;

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let base = app.url.clone();
        let (config, db) = (app.config.clone(), app.db.clone());
        let round_seen: Vec<Seen> = thread::scope(|s| {
            let _stop_on_panic = StopOnDrop(Arc::clone(&stop));
            let mut handles = Vec::new();
            for i in 0..MINTERS {
                // Keys made by the CLI in earlier rounds must still mint.
                let key = keys[(round * MINTERS + i) % keys.len()].clone();
                let (base, stop) = (base.clone(), Arc::clone(&stop));
                handles.push(s.spawn(move || mint_until_stopped(&base, &key, &stop)));
            }
            let batch: Vec<String> = fresh.split_off(fresh.len().saturating_sub(8));
            {
                let (base, stop) = (base.clone(), Arc::clone(&stop));
                handles.push(s.spawn(move || redeem_until_stopped(&base, round, batch, &stop)));
            }
            {
                let stop = Arc::clone(&stop);
                let (config, db) = (config.clone(), db.clone());
                handles.push(s.spawn(move || cli_until_stopped(&config, &db, &stop)));
            }
            thread::sleep(Duration::from_millis(rng.random_range(20..=300)));
            // SIGKILL: no shutdown, no flush; the threads see resets and
            // refused connections from here on.
            app.kill();
            stop.store(true, Ordering::Relaxed);
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let before = all_minted.len();
        for seen in round_seen {
            fresh.extend(seen.untried);
            fresh.extend(seen.minted.iter().cloned());
            all_minted.extend(seen.minted);
            redeemed.extend(seen.redeemed);
            unanswered.extend(seen.unanswered);
            keys.extend(seen.keys);
            unexpected.extend(seen.unexpected);
        }
        if all_minted.len() > before {
            kills_mid_load += 1;
        }
        let (dir, db) = app.into_parts();
        app = TestApp::spawn_in(dir, db, DEFAULT_CONFIG);
    }

    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    assert!(
        kills_mid_load >= ROUNDS / 2,
        "the load ran in only {kills_mid_load} of {ROUNDS} rounds"
    );
    assert!(!redeemed.is_empty(), "no redemption completed in any round");

    let client = load_client();
    let redeemed_tokens: HashSet<&str> = redeemed.iter().map(|(t, _, _)| t.as_str()).collect();
    let unanswered_tokens: HashSet<&str> = unanswered.iter().map(|(t, _)| t.as_str()).collect();

    // Every token seen is distinct.
    let distinct: HashSet<&str> = all_minted.iter().map(String::as_str).collect();
    assert_eq!(
        distinct.len(),
        all_minted.len(),
        "a token was handed out twice"
    );

    // Every invite seen minted and not redeemed since is still valid.
    let mut invalid = Vec::new();
    for token in &all_minted {
        if redeemed_tokens.contains(token.as_str()) || unanswered_tokens.contains(token.as_str()) {
            continue;
        }
        let res = client
            .get(format!("{}/api/invite/{token}", app.url))
            .send()
            .unwrap();
        if res.status() != 200 {
            invalid.push(format!("{token}: {}", res.status()));
        }
    }
    assert!(
        invalid.is_empty(),
        "{} of {} invites seen minted are not valid after the restarts: {:?}",
        invalid.len(),
        all_minted.len(),
        &invalid[..invalid.len().min(20)]
    );
    // A sample through the page itself.
    for token in all_minted
        .iter()
        .filter(|t| {
            !redeemed_tokens.contains(t.as_str()) && !unanswered_tokens.contains(t.as_str())
        })
        .step_by(97)
    {
        let res = client
            .get(format!("{}/invite?{token}", app.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "the page of {token}");
    }

    // Every redemption answered 204 made an account that is still signed in,
    // and used up its invite.
    let account_id = |name: &str| -> Option<i64> { probe::account(&app, name).map(|a| a.id) };
    let used_by = |token: &str| -> Option<i64> {
        assert!(
            probe::invite(&app, token).is_some(),
            "a seen invite has a row"
        );
        probe::used_up(&app, token).1
    };
    for (token, name, cookie) in &redeemed {
        let id = account_id(name).unwrap_or_else(|| panic!("account {name} answered 204 is gone"));
        assert_eq!(
            used_by(token),
            Some(id),
            "the invite {name} redeemed is not marked used by it"
        );
        let res = client
            .get(format!("{}/api/invite/{token}", app.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 404, "a redeemed invite is still offered");
        let res = client
            .get(format!("{}/api/auth/check", app.url))
            .header(reqwest::header::COOKIE, format!("identity={cookie}"))
            .send()
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "the session {name} got with its 204 is gone"
        );
    }
    // Redemptions cut off by the kill happened entirely or not at all.
    for (token, name) in &unanswered {
        assert_eq!(
            used_by(token),
            account_id(name),
            "redemption of {token} as {name} was half applied"
        );
    }

    // Every key the CLI printed still mints.
    for key in &keys {
        let res = client
            .get(format!("{}/invites_api?key={key}", app.url))
            .send()
            .unwrap();
        assert_eq!(
            res.status(),
            201,
            "key {key} printed by the CLI before a kill"
        );
    }

    // On SQLite the file is intact (SQLite's own checks: they are about the
    // file, which the killed server wrote itself). On PostgreSQL the killed
    // process is only a client: the database's files are the cluster's, and
    // its foreign keys are enforced at every commit.
    if !is_postgres(&app.db) {
        let db = rusqlite::Connection::open_with_flags(
            &app.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open the test db");
        let integrity: String = db
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let fk_violations = db
            .prepare("PRAGMA foreign_key_check")
            .unwrap()
            .query_map([], |_| Ok(()))
            .unwrap()
            .count();
        assert_eq!(fk_violations, 0, "rows point at rows that do not exist");
    }
    // And consistent, as any backend must be: tokens are told apart by their
    // digests (each acknowledged one is found by its own), and every account
    // came from exactly one invite, wholly spent, with its redemption's session.
    let census = probe::census(&app);
    assert!(census.invites >= all_minted.len() as u64);
    assert!(census.accounts >= redeemed.len() as u64);
    assert!(census.keys >= keys.len() as u64);
    assert_eq!(
        census.accounts, census.invites_used_up,
        "an account is not tied to exactly one used invite: {census:?}"
    );
    assert_eq!(
        census.uses_spent, census.invites_used_up,
        "an invite is half marked as used: {census:?}"
    );
    assert!(
        census.sessions >= census.accounts,
        "an account was stored without the session of its redemption: {census:?}"
    );
    // The last server was never killed mid-write: nothing it logged is a panic.
    assert!(!app.log().contains("panicked"), "{}", app.log());
    eprintln!(
        "crash: {ROUNDS} rounds, {} invites and {} redemptions seen, {} unanswered, {} CLI keys, {:?}",
        all_minted.len(),
        redeemed.len(),
        unanswered.len(),
        keys.len(),
        started.elapsed()
    );
}
