//! A key's life after `keys create`: its scope, expiry and mint rate, what
//! `keys list --json` says of its use, and what `keys delete` does to the
//! invites it left pending.

use reqwest::header::AUTHORIZATION;

use crate::helpers::{
    accept_invite, client, header, stderr_of, stdout_of, token_of, TestApp, GOOD_PASSWORD,
};

/// `keys create` with `extra` arguments; checks it prints exactly one
/// `<id>/<secret>` line and returns the key.
fn create(app: &TestApp, extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", "localhost"];
    args.extend(extra);
    let out = app.cli(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stderr_of(&out), "");
    let text = stdout_of(&out);
    let line = text.strip_suffix('\n').expect("a newline at the end");
    assert!(!line.contains('\n'), "more than one line: {text:?}");
    assert!(line.split_once('/').is_some(), "not <id>/<secret>: {line}");
    line.to_owned()
}

fn id_of(key: &str) -> &str {
    key.split_once('/').expect("<id>/<secret>").0
}

/// `keys list localhost --json`, the entry of key `id`.
fn listed(app: &TestApp, id: &str) -> serde_json::Value {
    let out = app.cli(&["keys", "list", "localhost", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {v}"))
        .clone()
}

fn time(v: &serde_json::Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
        .expect("RFC 3339")
        .to_utc()
}

fn mint_prosody(app: &TestApp, key: &str) -> reqwest::blocking::Response {
    client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap()
}

fn mint_json(app: &TestApp, key: &str) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/api/invite", app.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .unwrap()
}

#[test]
fn keys_create_takes_a_scope_an_expiry_and_a_rate_and_still_prints_one_line() {
    let app = TestApp::spawn();
    let plain = create(&app, &[]);
    let admin = create(
        &app,
        &[
            "bot",
            "--scope",
            "admin",
            "--expires-in",
            "7d",
            "--rate",
            "60/h",
        ],
    );
    let p = listed(&app, id_of(&plain));
    assert_eq!(p["scope"], "mint", "the default scope: {p}");
    assert!(p["expires_at"].is_null() && p["rate"].is_null(), "{p}");
    let a = listed(&app, id_of(&admin));
    assert_eq!(
        (&a["scope"], &a["name"], &a["rate"]),
        (&"admin".into(), &"bot".into(), &"60/h".into())
    );
    let in_a_week = chrono::Utc::now() + chrono::Duration::days(7);
    assert!(
        (time(&a["expires_at"]) - in_a_week).num_seconds().abs() < 60,
        "{a}"
    );
    // The Prosody-compatible list is unchanged: <id>\t<name>.
    let out = app.cli(&["keys", "list", "localhost"]);
    let lines: Vec<String> = stdout_of(&out).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            format!("{}\t<unknown>", id_of(&plain)),
            format!("{}\tbot", id_of(&admin))
        ]
    );
    // Both keys mint.
    assert_eq!(mint_prosody(&app, &plain).status(), 201);
    assert_eq!(mint_prosody(&app, &admin).status(), 201);
}

#[test]
fn bad_key_options_are_refused_with_a_clear_error_and_create_nothing() {
    let app = TestApp::spawn();
    for (args, says) in [
        (vec!["--scope", "root"], "scope"),
        (vec!["--rate", "60"], "N/PERIOD"),
        (vec!["--rate", "0/h"], "number of mints"),
        (vec!["--rate", "60/w"], "N/PERIOD"),
        (vec!["--expires-in", "soon"], "duration"),
        (vec!["--expires-in", "0d"], "more than 0"),
    ] {
        let mut all = vec!["keys", "create", "localhost"];
        all.extend(&args);
        let out = app.cli(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            stderr_of(&out).contains(says),
            "{args:?}: {}",
            stderr_of(&out)
        );
        assert_eq!(stdout_of(&out), "", "{args:?}");
    }
    let out = app.cli(&["keys", "list", "localhost"]);
    assert_eq!(stdout_of(&out), "", "no key was created");
}

#[test]
fn an_expired_key_is_refused_with_403_saying_it_expired_on_both_minting_endpoints() {
    let app = TestApp::spawn();
    let key = create(&app, &["--expires-in", "1s"]);
    // Bounded: the key expires after one second; wait until it has.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let res = mint_prosody(&app, &key);
    assert_eq!(res.status(), 403);
    assert!(header(&res, "location").is_none());
    let body = res.text().unwrap();
    assert!(body.contains("expired"), "{body}");

    let res = mint_json(&app, &key);
    assert_eq!(res.status(), 403);
    let v: serde_json::Value = res.json().unwrap();
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");

    // Without the right secret, an expired key is merely not valid: the
    // answer tells nothing about a key to those who do not hold it.
    let wrong = format!("{}/{}", id_of(&key), "A".repeat(36));
    let body = mint_prosody(&app, &wrong).text().unwrap();
    assert!(
        !body.contains("expired") && body.contains("not valid"),
        "{body}"
    );
    assert_eq!(listed(&app, id_of(&key))["invites_minted"], 0);
}

#[test]
fn a_key_past_its_rate_gets_429_with_retry_after_on_both_endpoints() {
    let app = TestApp::spawn();
    let key = create(&app, &["--rate", "2/h"]);
    let other = create(&app, &[]);
    assert_eq!(mint_prosody(&app, &key).status(), 201);
    assert_eq!(mint_json(&app, &key).status(), 200);
    for res in [mint_prosody(&app, &key), mint_json(&app, &key)] {
        assert_eq!(res.status(), 429);
        let wait: u64 = header(&res, "retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        // 2 an hour refill one every 30 minutes.
        assert!((1..=1_800).contains(&wait), "{wait}");
    }
    // The rate is the key's own: another key mints on.
    assert_eq!(mint_prosody(&app, &other).status(), 201);
    assert_eq!(listed(&app, id_of(&key))["invites_minted"], 2);
}

#[test]
fn keys_list_json_tells_when_a_key_was_last_used_and_how_many_invites_it_minted() {
    let app = TestApp::spawn();
    let key = create(&app, &[]);
    let before = listed(&app, id_of(&key));
    assert!(before["last_used_at"].is_null(), "{before}");
    assert_eq!(before["invites_minted"], 0);
    for _ in 0..3 {
        assert_eq!(mint_prosody(&app, &key).status(), 201);
    }
    let after = listed(&app, id_of(&key));
    let used = time(&after["last_used_at"]);
    assert!(
        (chrono::Utc::now() - used).num_seconds().abs() < 60,
        "{after}"
    );
    assert_eq!(after["invites_minted"], 3);
}

#[test]
fn deleting_a_key_revokes_the_invites_it_left_pending() {
    let app = TestApp::spawn();
    let key = create(&app, &[]);
    let res = mint_prosody(&app, &key);
    let url = header(&res, "location").expect("a page URL");
    let out = app.cli(&["keys", "delete", "--", "localhost", id_of(&key)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        (stdout_of(&out), stderr_of(&out)),
        (String::new(), String::new())
    );
    assert_eq!(client().get(&url).send().unwrap().status(), 410);
    let res = accept_invite(&app, &token_of(&url), "mallory", GOOD_PASSWORD);
    assert_eq!(res.status(), 404);
}

#[test]
fn with_keep_invites_the_invites_of_a_deleted_key_stay_usable() {
    let app = TestApp::spawn();
    let key = create(&app, &[]);
    let url = header(&mint_prosody(&app, &key), "location").expect("a page URL");
    let out = app.cli(&[
        "keys",
        "delete",
        "--keep-invites",
        "--",
        "localhost",
        id_of(&key),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(mint_prosody(&app, &key).status(), 403, "the key is gone");
    assert_eq!(client().get(&url).send().unwrap().status(), 200);
    let res = accept_invite(&app, &token_of(&url), "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
}
