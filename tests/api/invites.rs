//! Invite options, invite ids, multi-use and fixed-name invites, revocation,
//! purging, the account quota and the races around them (issue 9).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// `GET /invites_api` with the key and extra query text.
fn mint_with(app: &TestApp, key: &str, query: &str) -> reqwest::blocking::Response {
    client()
        .get(format!("{}/invites_api?key={key}{query}", app.url))
        .send()
        .unwrap()
}

/// Mints through `/invites_api`; the page URL and the invite id.
fn minted(app: &TestApp, key: &str, query: &str) -> (String, String) {
    let res = mint_with(app, key, query);
    assert_eq!(res.status(), 201, "{query}");
    let url = header(&res, "location").unwrap();
    (url, header(&res, "invite-id").expect("no Invite-Id header"))
}

/// `invites list HOST --json --status S` as JSON.
fn list(app: &TestApp, status: &str) -> Vec<Value> {
    let out = app.cli(&["invites", "list", "localhost", "--json", "--status", status]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&stdout_of(&out)).unwrap()
}

fn post_invite(app: &TestApp, auth: (&str, &str), body: &Value) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/api/invite", app.url))
        .header(auth.0, auth.1)
        .json(body)
        .send()
        .unwrap()
}

#[test]
fn invites_api_mints_with_options_and_names_the_invite_id() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let res = mint_with(&app, &key, "&ttl=12h&uses=3&note=team%20lunch");
    assert_eq!(res.status(), 201);
    let id = header(&res, "invite-id").expect("no Invite-Id header");
    assert_eq!(id.len(), 13);
    let listed = list(&app, "pending");
    assert_eq!(listed.len(), 1);
    let inv = &listed[0];
    assert_eq!(inv["invite_id"], id.as_str());
    assert_eq!(inv["uses_allowed"], 3);
    assert_eq!(inv["uses_spent"], 0);
    assert_eq!(inv["note"], "team lunch");
    assert_eq!(inv["kind"], "account");
    assert_eq!(inv["status"], "pending");
    assert_eq!(
        inv["source"],
        format!("api/token/{}", key.split('/').next().unwrap())
    );
    // The token is not the id: the page link does not contain it.
    assert!(!header(&res, "location").unwrap().contains(&id));
}

#[test]
fn a_bad_option_is_refused_on_every_surface_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for query in [
        "&uses=0",
        "&uses=101",
        "&ttl=31d",
        "&ttl=soon",
        "&name=Bad%20Name",
        "&uses",
    ] {
        let res = mint_with(&app, &key, query);
        assert_eq!(res.status(), 400, "{query}");
        let text = res.text().unwrap();
        assert!(text.starts_with("Bad request: "), "{query}: {text}");
    }
    let bearer = format!("Bearer {key}");
    for body in [
        json!({"uses": 0}),
        json!({"ttl": "31d"}),
        json!({"note": "x".repeat(201)}),
    ] {
        let res = post_invite(&app, ("authorization", &bearer), &body);
        assert_eq!(res.status(), 400, "{body}");
        let v: Value = res.json().unwrap();
        assert_eq!(v["error"], "invalid_option", "{body}");
    }
    for args in [["--uses", "101"], ["--ttl", "31d"], ["--name", "NO NAME"]] {
        let out = app.cli(&["invites", "create", "localhost", args[0], args[1]]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr_of(&out).starts_with("Error: "), "{args:?}");
        assert_eq!(stdout_of(&out), "");
    }
    assert!(list(&app, "all").is_empty());
}

#[test]
fn an_empty_json_body_mints_as_before_and_answers_the_invite_id() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let res = post_invite(
        &app,
        ("authorization", &format!("Bearer {key}")),
        &json!({}),
    );
    assert_eq!(res.status(), 200);
    let v: Value = res.json().unwrap();
    assert_eq!(v["uses"], 1);
    let listed = list(&app, "pending");
    assert_eq!(listed[0]["invite_id"], v["invite_id"]);
    assert_eq!(listed[0]["expires_at"], v["expires_at"]);
}

#[test]
fn cli_create_json_lists_each_invite_and_plain_output_stays_one_url_per_line() {
    let app = TestApp::spawn();
    let out = app.cli(&[
        "invites",
        "create",
        "localhost",
        "--count",
        "2",
        "--uses",
        "4",
        "--ttl",
        "1h",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let minted: Vec<Value> = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(minted.len(), 2);
    for m in &minted {
        assert_eq!(m["uses"], 4);
        assert!(m["url"].as_str().unwrap().contains("/invite?"));
        assert_eq!(m["invite_id"].as_str().unwrap().len(), 13);
    }
    let plain = app.cli(&["invites", "create", "localhost", "--note", "plain"]);
    let text = stdout_of(&plain);
    assert_eq!(text.lines().count(), 1);
    assert!(text.trim().starts_with("http://127.0.0.1:"));
    let lines = stdout_of(&app.cli(&["invites", "list", "localhost"]));
    assert_eq!(lines.lines().count(), 3);
    let newest: Vec<&str> = lines.lines().next().unwrap().split('\t').collect();
    assert_eq!(newest.len(), 7, "{newest:?}");
    assert_eq!(
        (newest[1], newest[2], newest[5], newest[6]),
        ("pending", "0/1", "cli", "plain")
    );
}

#[test]
fn a_multi_use_invite_says_what_remains_and_ends_after_its_last_use() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let url = minted(&app, &key, "&uses=2").0;
    let token = token_of(&url);
    assert_eq!(describe_invite(&app, &token)["uses_remaining"], 2);
    let page = client().get(&url).send().unwrap().text().unwrap();
    assert!(page.contains("can create 2 more accounts"), "{page}");
    assert_eq!(
        accept_invite(&app, &token, "ann", GOOD_PASSWORD).status(),
        204
    );
    assert_eq!(describe_invite(&app, &token)["uses_remaining"], 1);
    assert_eq!(
        accept_invite(&app, &token, "bob", GOOD_PASSWORD).status(),
        204
    );
    assert_eq!(
        accept_invite(&app, &token, "cat", GOOD_PASSWORD).status(),
        404
    );
    let used = list(&app, "used");
    assert_eq!(used[0]["accounts"], json!(["ann", "bob"]));
    assert_eq!(used[0]["uses_spent"], 2);
    let accounts = stdout_of(&app.cli(&["accounts", "list", "localhost"]));
    let key_id = key.split('/').next().unwrap();
    assert!(accounts.contains("ann\t"), "{accounts}");
    assert!(accounts.contains(&format!("key {key_id}")), "{accounts}");
}

#[test]
fn a_fixed_name_invite_refuses_other_names_and_stays_usable() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let url = minted(&app, &key, "&name=alice").0;
    let token = token_of(&url);
    let page = client().get(&url).send().unwrap().text().unwrap();
    assert!(page.contains("value=\"alice\" readonly"), "{page}");
    let res = accept_invite(&app, &token, "mallory", GOOD_PASSWORD);
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().unwrap()["error"], "name_not_allowed");
    assert_eq!(describe_invite(&app, &token)["name"], "alice");
    assert_eq!(
        accept_invite(&app, &token, "alice", GOOD_PASSWORD).status(),
        204
    );
}

#[test]
fn a_revoked_invite_is_withdrawn_on_the_page_and_unknown_to_the_api() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (url, id) = minted(&app, &key, "");
    let out = app.cli(&["invites", "revoke", "localhost", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        (stdout_of(&out), stderr_of(&out)),
        (String::new(), String::new())
    );
    let page = client().get(&url).send().unwrap();
    assert_eq!(page.status(), 410);
    assert!(page.text().unwrap().contains("withdrawn"));
    let token = token_of(&url);
    assert_eq!(
        accept_invite(&app, &token, "eve", GOOD_PASSWORD).status(),
        404
    );
    assert_eq!(list(&app, "revoked")[0]["invite_id"], id.as_str());
    assert!(list(&app, "revoked")[0]["revoked_at"].is_string());
    // Again: already revoked is fine.
    assert!(app
        .cli(&["invites", "revoke", "localhost", &id])
        .status
        .success());
    // Unknown ids, and ids of another host, are not found.
    for (host, bad) in [
        ("localhost", "aaaaaaaaaaaaa"),
        ("localhost", "nope"),
        ("example.com", &id),
    ] {
        let out = app.cli(&["invites", "revoke", host, bad]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr_of(&out).trim(), "Error: invite not found");
    }
}

#[test]
fn show_prints_an_invite_with_the_accounts_registered_with_it() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (url, id) = minted(&app, &key, "&uses=2&note=n1");
    assert_eq!(
        accept_invite(&app, &token_of(&url), "dora", GOOD_PASSWORD).status(),
        204
    );
    let out = app.cli(&["invites", "show", "localhost", &id, "--json"]);
    let v: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(v["accounts"], json!(["dora"]));
    assert_eq!(v["registrations"][0]["name"], "dora");
    assert!(v["registrations"][0]["registered_at"].is_string());
    let plain = stdout_of(&app.cli(&["invites", "show", "localhost", &id]));
    assert!(plain.contains("note\tn1"), "{plain}");
    assert!(plain.contains("account\tdora\t"), "{plain}");
    let missing = app.cli(&["invites", "show", "localhost", "aaaaaaaaaaaaa"]);
    assert_eq!(stderr_of(&missing).trim(), "Error: invite not found");
}

#[test]
fn purge_deletes_invites_that_ended_and_keeps_pending_ones_and_accounts() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let used = minted(&app, &key, "").0;
    assert_eq!(
        accept_invite(&app, &token_of(&used), "fay", GOOD_PASSWORD).status(),
        204
    );
    let revoked = minted(&app, &key, "").1;
    assert!(app
        .cli(&["invites", "revoke", "localhost", &revoked])
        .status
        .success());
    let pending = minted(&app, &key, "").1;
    // Ended less than 30 days ago: kept.
    let out = app.cli(&["invites", "purge", "localhost"]);
    assert_eq!(stdout_of(&out), "purged 0 invites, 0 sessions\n");
    let out = app.cli(&[
        "invites",
        "purge",
        "localhost",
        "--older-than",
        "0",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(v, json!({"invites": 2, "sessions": 0}));
    let all = list(&app, "all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["invite_id"], pending.as_str());
    assert!(stdout_of(&app.cli(&["accounts", "list", "localhost"])).contains("fay\t"));
    let bad = app.cli(&["invites", "purge", "localhost", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn serve_purges_ended_invites_on_its_own() {
    let app = TestApp::spawn_with(&DEFAULT_CONFIG.replace(
        "invite_expiry = \"7d\"",
        "invite_expiry = \"7d\"\nretention = \"1s\"\npurge_interval = \"1s\"",
    ));
    let key = app.create_key("localhost");
    let id = minted(&app, &key, "").1;
    assert!(app
        .cli(&["invites", "revoke", "localhost", &id])
        .status
        .success());
    let start = Instant::now();
    while !list(&app, "all").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "never purged");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_account_mints_only_within_its_quota() {
    let app = TestApp::spawn_with(&DEFAULT_CONFIG.replace(
        "[hosts.\"localhost\"]",
        "[hosts.\"localhost\"]\naccount_invites = 2",
    ));
    let identity = register_account(&app, "gus");
    let cookie = format!("identity={identity}");
    for _ in 0..2 {
        assert_eq!(
            post_invite(&app, ("cookie", &cookie), &json!({})).status(),
            200
        );
    }
    let res = post_invite(&app, ("cookie", &cookie), &json!({}));
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().unwrap()["error"], "invite_quota");
    // Revoking one frees a slot.
    let id = list(&app, "pending")
        .into_iter()
        .find(|i| i["source"].as_str().unwrap().starts_with("account/"))
        .unwrap()["invite_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(app
        .cli(&["invites", "revoke", "localhost", &id])
        .status
        .success());
    assert_eq!(
        post_invite(&app, ("cookie", &cookie), &json!({})).status(),
        200
    );
}

#[test]
fn an_accounts_quota_counts_sign_ups_so_one_multi_use_invite_cannot_stretch_it() {
    let app = TestApp::spawn_with(&DEFAULT_CONFIG.replace(
        "[hosts.\"localhost\"]",
        "[hosts.\"localhost\"]\naccount_invites = 3",
    ));
    let identity = register_account(&app, "ida");
    let cookie = format!("identity={identity}");
    let res = post_invite(&app, ("cookie", &cookie), &json!({ "uses": 4 }));
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().unwrap()["error"], "invite_quota");
    let res = post_invite(&app, ("cookie", &cookie), &json!({ "uses": 3 }));
    assert_eq!(res.status(), 200);
    let res = post_invite(&app, ("cookie", &cookie), &json!({}));
    assert_eq!(res.status(), 403, "3 sign-ups are open already");
    // A disabled account mints nothing at all.
    assert!(app
        .cli(&["accounts", "disable", "localhost", "ida"])
        .status
        .success());
    let res = post_invite(&app, ("cookie", &cookie), &json!({}));
    assert_eq!(res.status(), 401);
}

#[test]
fn an_account_may_not_mint_when_account_invites_is_zero() {
    let app = TestApp::spawn_with(&DEFAULT_CONFIG.replace(
        "[hosts.\"localhost\"]",
        "[hosts.\"localhost\"]\naccount_invites = 0",
    ));
    let identity = register_account(&app, "hal");
    let res = post_invite(
        &app,
        ("cookie", &format!("identity={identity}")),
        &json!({}),
    );
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().unwrap()["error"], "invite_quota");
}

/// Sends `n` registrations for `token` at once; the statuses.
fn register_all_at_once(app: &TestApp, token: &str, n: usize) -> Vec<u16> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, url, token) = (Arc::clone(&barrier), app.url.clone(), token.to_owned());
            std::thread::spawn(move || {
                let c = client();
                barrier.wait();
                c.post(format!("{url}/api/invite/{token}"))
                    .json(&json!({"name": format!("racer{i}"), "password": GOOD_PASSWORD}))
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn fifty_simultaneous_registrations_on_a_five_use_invite_create_exactly_five_accounts() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let token = token_of(&minted(&app, &key, "&uses=5").0);
    let statuses = register_all_at_once(&app, &token, 50);
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        5,
        "{statuses:?}"
    );
    // The rest were told the invite is gone, or to come back (a full hashing queue).
    assert!(
        statuses.iter().all(|s| [204, 404, 503].contains(s)),
        "{statuses:?}"
    );
    let accounts = stdout_of(&app.cli(&["accounts", "list", "localhost"]));
    assert_eq!(accounts.lines().count(), 5, "{accounts}");
    assert_eq!(list(&app, "used")[0]["uses_spent"], 5);
}

#[test]
fn no_account_registers_with_an_invite_after_its_revocation_returned() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (url, id) = minted(&app, &key, "&uses=100");
    let token = token_of(&url);
    let racers = {
        let (url, token) = (app.url.clone(), token.clone());
        std::thread::spawn(move || {
            let c = client();
            (0..40)
                .map(|i| {
                    c.post(format!("{url}/api/invite/{token}"))
                        .json(&json!({"name": format!("r{i}"), "password": GOOD_PASSWORD}))
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
                .collect::<Vec<_>>()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(app
        .cli(&["invites", "revoke", "localhost", &id])
        .status
        .success());
    let after_revoke = stdout_of(&app.cli(&["invites", "show", "localhost", &id, "--json"]));
    let at_revoke: Value = serde_json::from_str(&after_revoke).unwrap();
    racers.join().unwrap();
    let now: Value = serde_json::from_str(&stdout_of(&app.cli(&[
        "invites",
        "show",
        "localhost",
        &id,
        "--json",
    ])))
    .unwrap();
    assert_eq!(now["status"], "revoked");
    assert_eq!(now["accounts"], at_revoke["accounts"]);
    let accounts = stdout_of(&app.cli(&["accounts", "list", "localhost"]));
    assert_eq!(
        accounts.lines().count(),
        now["accounts"].as_array().unwrap().len()
    );
}
