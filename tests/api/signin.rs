//! Sign-in abuse: the per-address and per-account limits answer 429 with
//! `Retry-After`, a full hashing queue answers 503 with `Retry-After` while
//! minting goes on, and sign-ins whose clients have gone cost no hash.
//!
//! Client sockets are bound to addresses across 127.0.0.0/8 (all of it is
//! loopback) so that one test can be several clients.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::time::Duration;

use reqwest::blocking::Response;
use serde_json::json;

use crate::helpers::{
    accept_invite, cli_at, client, fresh_db, register_account, stderr_of, token_of, TestApp,
    DEFAULT_CONFIG, GOOD_PASSWORD,
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

/// Checks a 429 answer: `Retry-After` in `expected` seconds, and the same
/// number of seconds, in words, in the JSON message.
fn assert_limited(res: Response, expected: std::ops::RangeInclusive<u64>) {
    assert_eq!(res.status(), 429);
    let secs = retry_after(&res);
    assert!(expected.contains(&secs), "Retry-After: {secs}");
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["error"], "too_many_requests");
    let unit = if secs == 1 { "second" } else { "seconds" };
    assert_eq!(
        body["message"],
        format!("too many sign-in attempts; try again in {secs} {unit}")
    );
}

#[test]
fn too_many_sign_ins_from_one_address_get_429_with_retry_after_and_other_addresses_still_get_in() {
    let app = TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 3\nlogin_attempts_per_account_per_minute = 0",
    ));
    register_account(&app, "alice");
    let attacker = loopback(2);
    for _ in 0..3 {
        assert_eq!(
            login_from(&app, attacker, "alice", "wrong password").status(),
            401
        );
    }
    // Three a minute come back one every 20 s: the wait is stated in seconds.
    assert_limited(login_from(&app, attacker, "alice", GOOD_PASSWORD), 2..=20);
    // The limit is the attacker's address, not the account.
    assert_eq!(
        login_from(&app, loopback(3), "alice", GOOD_PASSWORD).status(),
        204
    );
}

#[test]
fn a_wait_of_one_second_is_worded_in_the_singular() {
    // 60 a minute come back one a second, so any refusal waits 1 second.
    let app = TestApp::spawn_with(&config_with("login_attempts_per_minute = 60"));
    let from = loopback(4);
    let http = reqwest::blocking::Client::builder()
        .local_address(from)
        .build()
        .unwrap();
    // Bodies without a password are refused before any hash, after the
    // limiter has counted them; bounded, as the limit refills as we go.
    let limited = (0..300).find_map(|_| {
        let res = http
            .post(format!("{}/api/auth/login", app.url))
            .json(&json!({}))
            .send()
            .unwrap();
        (res.status() == 429).then_some(res)
    });
    let res = limited.expect("300 attempts in a row were never limited");
    assert_limited(res, 1..=1);
}

#[test]
fn sign_ins_at_one_account_from_many_addresses_are_limited_and_other_accounts_are_not() {
    // As behind a proxy that hides the clients' addresses, or a botnet: no
    // single address is over its limit, the account is.
    let app = TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 100\nlogin_attempts_per_account_per_minute = 3",
    ));
    register_account(&app, "alice");
    register_account(&app, "bob");
    // The name is counted as the server reads it: in any case, with or
    // without the host.
    for (n, name) in [(10, "alice"), (11, "ALICE"), (12, "alice@localhost")] {
        assert_eq!(
            login_from(&app, loopback(n), name, "wrong password").status(),
            401,
            "{name}"
        );
    }
    assert_limited(
        login_from(&app, loopback(13), "alice", GOOD_PASSWORD),
        2..=20,
    );
    // Everyone else still gets in, from the same address as the attacker.
    assert_eq!(
        login_from(&app, loopback(13), "bob", GOOD_PASSWORD).status(),
        204
    );
}

#[test]
fn ipv6_clients_are_limited_and_ipv4_clients_of_a_dual_stack_listener_each_count_alone() {
    if std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1] cannot be bound)");
        return;
    }
    // One host, so a sign-in needs no `@host` whatever address it is sent to.
    let config = r#"
login_attempts_per_minute = 2
login_attempts_per_account_per_minute = 0
[hosts."localhost"]
public_url = "http://localhost:{port}"
"#;
    let dir = tempfile::tempdir().unwrap();
    let db = fresh_db(dir.path());
    let app = TestApp::spawn_listening(dir, db, config, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    for _ in 0..2 {
        assert_eq!(
            login_from(&app, v6, "alice", "wrong password").status(),
            401
        );
    }
    // Two a minute come back one every 30 s.
    assert_limited(login_from(&app, v6, "alice", "wrong password"), 2..=30);
    // The same listener sees IPv4 clients as ::ffff:127.0.0.n, all inside
    // one /64: each must still have its own limit.
    let v4_url = app.url.replace("[::1]", "127.0.0.1");
    for n in [20, 21] {
        for _ in 0..2 {
            let res = login_via(&v4_url, loopback(n), "alice", "wrong password");
            assert_eq!(res.status(), 401, "from 127.0.0.{n}");
        }
    }
}

#[test]
fn a_full_hashing_queue_answers_503_with_retry_after_while_minting_goes_on() {
    let app = TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 0\nlogin_attempts_per_account_per_minute = 0\npassword_hash_queue = 1",
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
    // A full queue is load, not a failure of the store or of the hasher:
    // the request log shows the 503s, and nothing is logged as an error.
    let log = app.log();
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "a full hashing queue was logged as an error: {log}"
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
        "login_attempts_per_minute = 0\nlogin_attempts_per_account_per_minute = 0\npassword_hash_queue = 1000",
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
                && err.contains("it must be from 1 to 10000"),
            "{bad}: {err}"
        );
    }
}

/// `POST /api/auth/login` from the local address `from`, claiming to forward
/// for `forwarded_for` with `X-Forwarded-For`.
fn login_forwarded(app: &TestApp, from: IpAddr, forwarded_for: &str) -> Response {
    reqwest::blocking::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{}/api/auth/login", app.url))
        .header("X-Forwarded-For", forwarded_for)
        .json(&json!({ "name": "nobody", "password": "wrong password 1" }))
        .send()
        .unwrap()
}

/// A server that trusts 127.0.0.1 as its proxy, with a per-address limit of
/// 3 and no per-account limit (so only the address decides).
fn behind_a_proxy() -> TestApp {
    TestApp::spawn_with(&config_with(
        "trusted_proxies = [\"127.0.0.1\"]\nlogin_attempts_per_minute = 3\n\
         login_attempts_per_account_per_minute = 0",
    ))
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_sign_in_limit() {
    let app = behind_a_proxy();
    for _ in 0..3 {
        let res = login_forwarded(&app, loopback(1), "203.0.113.5");
        assert_eq!(res.status(), 401);
    }
    assert_limited(login_forwarded(&app, loopback(1), "203.0.113.5"), 1..=60);
    // Another client behind the same proxy is not locked out by the first.
    let res = login_forwarded(&app, loopback(1), "203.0.113.6");
    assert_eq!(res.status(), 401, "{res:?}");
    // A client cannot pick its address by writing the header's left side:
    // the proxy appended the real one on the right.
    assert_limited(
        login_forwarded(&app, loopback(1), "198.51.100.9, 203.0.113.5"),
        1..=60,
    );
    let log = app.log();
    assert!(
        log.contains("client=203.0.113.5") && log.contains("client=203.0.113.6"),
        "the request lines name the forwarded clients: {log}"
    );
}

#[test]
fn an_untrusted_peer_cannot_escape_its_limit_with_forwarding_headers() {
    let app = behind_a_proxy();
    for n in 0..3 {
        let res = login_forwarded(&app, loopback(2), &format!("203.0.113.{n}"));
        assert_eq!(res.status(), 401);
    }
    // Every attempt counted against 127.0.0.2, whatever it claimed.
    assert_limited(login_forwarded(&app, loopback(2), "203.0.113.77"), 1..=60);
    let log = app.log();
    assert!(log.contains("client=127.0.0.2"), "{log}");
    assert!(!log.contains("client=203.0.113."), "{log}");
}

#[test]
fn a_clients_own_forwarded_header_does_not_move_it_off_its_forwarded_address() {
    // nginx appends to X-Forwarded-For and passes Forwarded on as sent.
    let app = behind_a_proxy();
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/api/auth/login", app.url))
        .header("X-Forwarded-For", "203.0.113.5")
        .header("Forwarded", "for=_x")
        .json(&json!({ "name": "nobody", "password": "wrong password 1" }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 401);
    let log = app.log();
    assert!(log.contains("client=203.0.113.5"), "{log}");
}
