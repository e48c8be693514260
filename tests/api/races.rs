//! Races: simultaneous redemptions, key deletion in the middle of a stream of
//! mints, and the CLI writing to the database while the server is under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::blocking::{Client, Response};

use crate::helpers::{client, token_of, TestApp};
use crate::probe;

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

/// Mints `n` invites with the CLI; returns their tokens.
fn cli_invites(app: &TestApp, n: usize) -> Vec<String> {
    let out = app.cli(&["invites", "create", "localhost", "--count", &n.to_string()]);
    assert!(out.status.success(), "invites create: {out:?}");
    let tokens: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(token_of)
        .collect();
    assert_eq!(tokens.len(), n);
    tokens
}

/// The value of cookie `name` a response sets.
fn cookie(res: &Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

fn accept_json(client: &Client, app_url: &str, token: &str, name: &str) -> Response {
    client
        .post(format!("{app_url}/api/invite/{token}"))
        .json(&serde_json::json!({ "name": name, "password": PASSWORD }))
        .send()
        .unwrap()
}

/// Loads the registration page like a browser and returns its CSRF cookie
/// value and the signed hidden field.
fn load_form(client: &Client, app_url: &str, token: &str) -> (String, String) {
    let res = client
        .get(format!("{app_url}/invite?{token}"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let nonce = cookie(&res, "invite_csrf").expect("the page sets its CSRF cookie");
    let html = res.text().unwrap();
    let field = crate::helpers::csrf_field(&html);
    (nonce, field)
}

fn submit_form(
    client: &Client,
    app_url: &str,
    token: &str,
    (nonce, field): &(String, String),
    name: &str,
) -> Response {
    client
        .post(format!("{app_url}/invite?{token}"))
        .header(reqwest::header::COOKIE, format!("invite_csrf={nonce}"))
        .form(&[
            ("csrf", field.as_str()),
            ("name", name),
            ("password", PASSWORD),
            ("password2", PASSWORD),
        ])
        .send()
        .unwrap()
}

/// The row id of the account the invite a token names was spent on.
fn used_by(app: &TestApp, token: &str) -> Option<i64> {
    let name = probe::uses(app, token).into_iter().next()?;
    account_id(app, &name)
}

fn account_id(app: &TestApp, name: &str) -> Option<i64> {
    probe::account(app, name).map(|a| a.id)
}

// ------------------------------------------------------------ redemptions

#[test]
fn forty_browsers_and_api_clients_racing_for_one_invite_make_exactly_one_account() {
    const RACERS: usize = 40;
    let app = TestApp::spawn();
    let token = cli_invites(&app, 1).remove(0);
    let barrier = Arc::new(Barrier::new(RACERS));
    // Even racers use the web form (each loads the page first, for its own
    // CSRF cookie), odd ones the JSON API; all are released at once and each
    // picks its own name.
    let csrf: Vec<Option<(String, String)>> = (0..RACERS)
        .map(|i| (i % 2 == 0).then(|| load_form(&client(), &app.url, &token)))
        .collect();
    let results: Vec<(usize, u16, Option<String>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let (barrier, token, url) = (Arc::clone(&barrier), token.clone(), app.url.clone());
                let csrf = csrf[i].clone();
                s.spawn(move || {
                    let client = client();
                    let name = format!("racer{i}");
                    barrier.wait();
                    let res = match csrf {
                        Some(csrf) => submit_form(&client, &url, &token, &csrf, &name),
                        None => accept_json(&client, &url, &token, &name),
                    };
                    (i, res.status().as_u16(), cookie(&res, "identity"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let winners: Vec<_> = results
        .iter()
        .filter(|(i, status, _)| *status == if i % 2 == 0 { 200 } else { 204 })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one racer wins: {results:?}");
    let (winner, _, identity) = winners[0];
    for (i, status, _) in &results {
        if i == winner {
            continue;
        }
        // Losers are told the invite is used: 410 page, 404 JSON.
        let expected = if i % 2 == 0 { 410 } else { 404 };
        assert_eq!(*status, expected, "racer {i}: {results:?}");
    }
    let name = format!("racer{winner}");
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(probe::sessions(&app), 1);
    assert_eq!(used_by(&app, &token), account_id(&app, &name));
    assert!(account_id(&app, &name).is_some());
    // The winner is signed in as the account that was created.
    let res = client()
        .get(format!("{}/api/auth/check", app.url))
        .header(
            reqwest::header::COOKIE,
            format!(
                "identity={}",
                identity.as_deref().expect("the winner's cookie")
            ),
        )
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()[invite_server::http::USER_HEADER]
            .to_str()
            .unwrap(),
        format!("{name}@localhost")
    );
}

#[test]
fn eight_invites_each_raced_by_five_clients_make_exactly_one_account_each() {
    const INVITES: usize = 8;
    const PER_INVITE: usize = 5;
    let app = TestApp::spawn();
    let tokens = cli_invites(&app, INVITES);
    let barrier = Arc::new(Barrier::new(INVITES * PER_INVITE));
    let results: Vec<(usize, usize, u16)> = thread::scope(|s| {
        let mut handles = Vec::new();
        for (inv, token) in tokens.iter().enumerate() {
            for r in 0..PER_INVITE {
                let (barrier, url) = (Arc::clone(&barrier), app.url.clone());
                handles.push(s.spawn(move || {
                    let client = client();
                    barrier.wait();
                    let res = accept_json(&client, &url, token, &format!("inv{inv}-r{r}"));
                    (inv, r, res.status().as_u16())
                }));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (inv, token) in tokens.iter().enumerate() {
        let mine: Vec<_> = results.iter().filter(|(i, _, _)| *i == inv).collect();
        let won: Vec<_> = mine.iter().filter(|(_, _, s)| *s == 204).collect();
        assert_eq!(won.len(), 1, "invite {inv}: {mine:?}");
        assert!(
            mine.iter().all(|(_, _, s)| *s == 204 || *s == 404),
            "invite {inv}: {mine:?}"
        );
        let name = format!("inv{inv}-r{}", won[0].1);
        let id = account_id(&app, &name).expect("the winner's account");
        assert_eq!(used_by(&app, token), Some(id), "invite {inv}");
    }
    assert_eq!(probe::accounts(&app), INVITES as u64);
    assert_eq!(probe::census(&app).invites_used_up, INVITES as u64);
}

#[test]
fn one_name_raced_over_twelve_invites_is_taken_once_and_the_other_invites_stay_usable() {
    const INVITES: usize = 12;
    let app = TestApp::spawn();
    let tokens = cli_invites(&app, INVITES);
    let barrier = Arc::new(Barrier::new(INVITES));
    let statuses: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (barrier, url) = (Arc::clone(&barrier), app.url.clone());
                s.spawn(move || {
                    let client = client();
                    barrier.wait();
                    // Mixed case: the name is normalised, so all of these collide.
                    accept_json(&client, &url, token, "Contested")
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 204 || s == 409),
        "losers are told the name is taken: {statuses:?}"
    );
    assert_eq!(probe::accounts(&app), 1);
    // A name conflict inside a batch undoes only its own write.
    let id = account_id(&app, "contested").unwrap();
    let mut still_usable = 0;
    for token in &tokens {
        match used_by(&app, token) {
            Some(by) => assert_eq!(by, id),
            None => {
                let res = client()
                    .get(format!("{}/api/invite/{token}", app.url))
                    .send()
                    .unwrap();
                assert_eq!(res.status(), 200, "a losing invite must stay usable");
                still_usable += 1;
            }
        }
    }
    assert_eq!(still_usable, INVITES - 1);
}

// ------------------------------------------------------------ key deletion

/// One mint attempt: when it was sent, what came back.
struct Attempt {
    sent: Instant,
    status: u16,
}

#[test]
fn no_mint_sent_after_keys_delete_returned_succeeds() {
    const ROUNDS: usize = 5;
    const MINTERS: usize = 4;
    let app = TestApp::spawn();
    let mut rng = rand::rng();
    for round in 0..ROUNDS {
        let key = app.create_key("localhost");
        let id = key.split_once('/').unwrap().0.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let (attempts, deleted_at, deleted_time) = thread::scope(|s| {
            let _stop_on_panic = StopOnDrop(Arc::clone(&stop));
            let handles: Vec<_> = (0..MINTERS)
                .map(|_| {
                    let (stop, key, url) = (Arc::clone(&stop), key.clone(), app.url.clone());
                    s.spawn(move || {
                        let client = client();
                        let mut attempts = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let sent = Instant::now();
                            let res = client
                                .get(format!("{url}/invites_api?key={key}"))
                                .send()
                                .unwrap();
                            attempts.push(Attempt {
                                sent,
                                status: res.status().as_u16(),
                            });
                        }
                        attempts
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(rng.random_range(50..=250)));
            let out = app.cli(&["keys", "delete", "localhost", &id]);
            let deleted_at = Instant::now();
            let deleted_time = chrono::Utc::now();
            assert!(out.status.success(), "keys delete: {out:?}");
            // Keep minting with the deleted key for a while.
            thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
            let attempts: Vec<Attempt> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            (attempts, deleted_at, deleted_time)
        });

        let (before, after): (Vec<&Attempt>, Vec<&Attempt>) =
            attempts.iter().partition(|a| a.sent < deleted_at);
        assert!(
            before.iter().filter(|a| a.status == 201).count() > 0,
            "round {round}: nothing was minted before the delete"
        );
        assert!(
            after.len() >= 10,
            "round {round}: too few mints after the delete"
        );
        // Before or during the delete: minted or refused, nothing else.
        assert!(before.iter().all(|a| a.status == 201 || a.status == 403));
        let late: Vec<u16> = after
            .iter()
            .map(|a| a.status)
            .filter(|&s| s != 403)
            .collect();
        assert!(
            late.is_empty(),
            "round {round}: mints sent after `keys delete` returned got {late:?}"
        );
        // In the store: every 201 is a row, and no row is younger than the delete.
        let source = format!("api/token/{id}");
        let minted: Vec<_> = probe::invites_of(&app, "localhost")
            .into_iter()
            .filter(|i| i.source == source)
            .collect();
        let late = minted
            .iter()
            .filter(|i| i.created_at > deleted_time)
            .count();
        let rows = (minted.len() as i64, late as i64);
        let seen_201 = attempts.iter().filter(|a| a.status == 201).count() as i64;
        assert_eq!(rows.0, seen_201, "round {round}: rows vs 201s");
        assert_eq!(rows.1, 0, "round {round}: invites created after the delete");
    }
}

// ------------------------------------------------------------ CLI under load

/// What the load saw: answers other than 201, and any mention of locking.
#[derive(Default)]
struct LoadReport {
    minted: usize,
    bad: Vec<String>,
}

#[test]
fn the_cli_writing_while_the_server_is_under_load_never_reports_a_locked_database() {
    const MINTERS: usize = 3;
    const ITERATIONS: usize = 4;
    const BULK: usize = 20_000;
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let stop = Arc::new(AtomicBool::new(false));
    let mut cli_keys = Vec::new();
    let reports: Vec<LoadReport> = thread::scope(|s| {
        let _stop_on_panic = StopOnDrop(Arc::clone(&stop));
        let handles: Vec<_> = (0..MINTERS)
            .map(|_| {
                let (stop, key, url) = (Arc::clone(&stop), key.clone(), app.url.clone());
                s.spawn(move || {
                    let client = client();
                    let mut report = LoadReport::default();
                    while !stop.load(Ordering::Relaxed) {
                        let res = client
                            .get(format!("{url}/invites_api?key={key}"))
                            .send()
                            .unwrap();
                        let status = res.status().as_u16();
                        let body = res.text().unwrap_or_default();
                        if status == 201 {
                            report.minted += 1;
                        } else {
                            report.bad.push(format!("{status}: {body}"));
                        }
                    }
                    report
                })
            })
            .collect();
        // Let the load start, then write from the CLI over and over.
        thread::sleep(Duration::from_millis(100));
        for i in 0..ITERATIONS {
            let out = app.cli(&["keys", "create", "localhost", &format!("load {i}")]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "keys create #{i}: {out:?}");
            assert!(!stderr.contains("locked"), "keys create #{i}: {stderr}");
            cli_keys.push(String::from_utf8(out.stdout).unwrap().trim().to_owned());

            let count = BULK.to_string();
            let out = app.cli(&["invites", "create", "localhost", "--count", &count]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "invites create #{i}: {stderr}");
            assert!(!stderr.contains("locked"), "invites create #{i}: {stderr}");
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), BULK);

            let out = app.cli_with_stdin(
                &[
                    "accounts",
                    "create",
                    "localhost",
                    &format!("cli{i}"),
                    "--password-stdin",
                ],
                Some(&format!("{PASSWORD}\n")),
            );
            assert!(out.status.success(), "accounts create #{i}: {out:?}");
            assert!(!String::from_utf8_lossy(&out.stderr).contains("locked"));
        }
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let minted: usize = reports.iter().map(|r| r.minted).sum();
    let mut bad: HashMap<&str, usize> = HashMap::new();
    for line in reports.iter().flat_map(|r| &r.bad) {
        *bad.entry(line.as_str()).or_default() += 1;
    }
    assert!(bad.is_empty(), "answers under CLI writes: {bad:#?}");
    assert!(minted > 0, "the load minted nothing");
    // Every key the CLI made under load mints at once.
    for key in &cli_keys {
        let res = client()
            .get(format!("{}/invites_api?key={key}", app.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    // Exactly what was reported is stored: bulk + answered mints + the checks.
    assert_eq!(
        probe::invites(&app) as usize,
        ITERATIONS * BULK + minted + cli_keys.len()
    );
    assert_eq!(probe::accounts(&app) as usize, ITERATIONS);
    let log = app.log();
    assert!(
        !log.contains("locked"),
        "the server logged a lock failure: {log}"
    );
    assert!(!log.contains("commit failed"), "{log}");
    eprintln!("cli under load: {minted} mints beside {ITERATIONS} CLI rounds");
}
