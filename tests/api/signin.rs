//! Sign-in abuse: a full hashing queue answers 503 with `Retry-After` while
//! minting goes on, and sign-ins whose clients have gone cost no hash.
//!
//! Client sockets are bound to addresses across 127.0.0.0/8 (all of it is
//! loopback) so that one test can be several clients.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use reqwest::blocking::Response;
use serde_json::json;

use crate::helpers::{
    accept_invite, cli_at, client, register_account, stderr_of, token_of, TestApp, DEFAULT_CONFIG,
    GOOD_PASSWORD,
};

/// The default test configuration with `settings` added at the top level.
fn config_with(settings: &str) -> String {
    format!("{settings}\n{DEFAULT_CONFIG}")
}

/// `127.0.0.n`, a loopback address of its own for each `n`.
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// `POST /api/auth/login` sent from the local address `from`.
fn login_from(app: &TestApp, from: IpAddr, name: &str, password: &str) -> Response {
    login_via(&app.url, from, name, password)
}

/// `POST /api/auth/login` to the server at `base` from the local address `from`.
fn login_via(base: &str, from: IpAddr, name: &str, password: &str) -> Response {
    reqwest::blocking::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({ "name": name, "password": password }))
        .send()
        .unwrap()
}

/// The `Retry-After` of an answer, in seconds; fails the test without one.
fn retry_after(res: &Response) -> u64 {
    let value = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .unwrap_or_else(|| panic!("{} without Retry-After: {res:?}", res.status()));
    value.to_str().unwrap().parse().unwrap()
}

#[test]
fn a_full_hashing_queue_answers_503_with_retry_after_while_minting_goes_on() {
    let app = TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 0\npassword_hash_queue = 1",
    ));
    register_account(&app, "alice");
    let key = app.create_key("localhost");
    // More sign-ins and registrations at once than the hashing threads and
    // the queue of one can hold; bounded rounds, as a slow client side might
    // spread one round out enough to never fill the queue.
    let mut refused_sign_in = false;
    let mut refused_registration = None;
    for round in 0..10 {
        let invites: Vec<String> = (0..4).map(|_| token_of(&app.mint())).collect();
        std::thread::scope(|s| {
            let sign_ins: Vec<_> = (0..24)
                .map(|_| s.spawn(|| login_from(&app, loopback(1), "alice", "wrong password")))
                .collect();
            let registrations: Vec<_> = invites
                .iter()
                .enumerate()
                .map(|(i, token)| {
                    let app = &app;
                    s.spawn(move || {
                        let name = format!("newcomer{round}x{i}");
                        (token, accept_invite(app, token, &name, GOOD_PASSWORD))
                    })
                })
                .collect();
            // Minting hashes nothing and must not wait for the hashes.
            for _ in 0..3 {
                let res = client()
                    .get(format!("{}/invites_api?key={key}", app.url))
                    .send()
                    .unwrap();
                assert_eq!(res.status(), 201, "minting during the flood");
            }
            for t in sign_ins {
                let res = t.join().unwrap();
                match res.status().as_u16() {
                    401 => {}
                    503 => {
                        assert_eq!(retry_after(&res), 1);
                        let body: serde_json::Value = res.json().unwrap();
                        assert_eq!(body["error"], "unavailable");
                        refused_sign_in = true;
                    }
                    other => panic!("sign-in during the flood: {other}"),
                }
            }
            for t in registrations {
                let (token, res) = t.join().unwrap();
                match res.status().as_u16() {
                    204 => {}
                    503 => {
                        assert_eq!(retry_after(&res), 1);
                        refused_registration = Some(token.clone());
                    }
                    other => panic!("registration during the flood: {other}"),
                }
            }
        });
        if refused_sign_in && refused_registration.is_some() {
            break;
        }
    }
    assert!(
        refused_sign_in,
        "no sign-in was refused: the queue is unbounded"
    );
    let token = refused_registration.expect("no registration was refused");
    // A refused registration lost nothing: its invite still works.
    assert_eq!(
        accept_invite(&app, &token, "latecomer", GOOD_PASSWORD).status(),
        204
    );
    assert_eq!(
        login_from(&app, loopback(1), "alice", GOOD_PASSWORD).status(),
        204
    );
}

/// The request log lines of sign-ins answered 401 so far.
fn sign_ins_answered_401(app: &TestApp) -> usize {
    app.log()
        .lines()
        .filter(|l| l.contains("route=/api/auth/login") && l.contains("status=401"))
        .count()
}

#[test]
fn sign_ins_whose_clients_closed_the_connection_are_not_hashed() {
    let app = TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 0\npassword_hash_queue = 1000",
    ));
    register_account(&app, "alice");
    // Many more than the hashing threads (at most one per core) can start at
    // once, so most of them wait in the queue.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let abandoned = 8 * cores + 16;
    let body = json!({ "name": "alice", "password": "wrong password" }).to_string();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        app.port,
        body.len()
    );
    assert_eq!(
        login_from(&app, loopback(1), "alice", "wrong password").status(),
        401
    );
    let before = sign_ins_answered_401(&app);
    let clients: Vec<TcpStream> = (0..abandoned)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", app.port)).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // The clients give up: each closes its connection (FIN) unanswered.
    drop(clients);
    // A sign-in sent now is queued behind whatever is still queued; the
    // queue is first in, first out, so once it is answered every abandoned
    // sign-in has either been hashed and answered, or skipped.
    assert_eq!(
        login_from(&app, loopback(1), "alice", GOOD_PASSWORD).status(),
        204
    );
    let hashed = sign_ins_answered_401(&app) - before;
    // Only those already on a hashing thread when their client left finish.
    assert!(
        hashed < abandoned / 2,
        "{hashed} of {abandoned} abandoned sign-ins were hashed and answered"
    );
}

#[test]
fn a_hash_queue_outside_1_to_10000_is_refused_naming_the_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "-1", "10001"] {
        let config = dir.path().join("bad.toml");
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:1\"\npassword_hash_queue = {bad}\n"),
        )
        .unwrap();
        let out = cli_at(
            &config,
            &dir.path().join("db"),
            &["keys", "list", "localhost"],
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{bad}: {out:?}");
        let err = stderr_of(&out);
        assert!(
            err.contains("line 2, key `password_hash_queue`")
                && err.contains("it must be 1 to 10000"),
            "{bad}: {err}"
        );
    }
}
