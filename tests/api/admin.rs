//! The admin API (`/api/admin/*`) with an admin-scope key: listing, minting,
//! showing and revoking invites and listing accounts, for the key's host
//! only; and the cap every reset invite's ttl is held to.

use std::collections::HashSet;

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    accept_invite, client, header, register_account, stderr_of, stdout_of, token_of, TestApp,
    GOOD_PASSWORD,
};
use crate::probe;

/// A new key of `scope` for `host`, as `<id>/<secret>`.
fn key(app: &TestApp, host: &str, scope: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", host, "--scope", scope];
    args.extend(extra);
    let out = app.cli(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    stdout_of(&out).trim().to_owned()
}

fn id_of(key: &str) -> &str {
    key.split_once('/').expect("<id>/<secret>").0
}

/// A request to `path` with `key` as Bearer, if any.
fn call(app: &TestApp, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
    let req = client().request(method, format!("{}{path}", app.url));
    match key {
        Some(k) => req.header(AUTHORIZATION, format!("Bearer {k}")),
        None => req,
    }
}

fn get(app: &TestApp, path: &str, key: &str) -> Response {
    call(app, Method::GET, path, Some(key)).send().unwrap()
}

fn post(app: &TestApp, key: &str, body: Value) -> Response {
    call(app, Method::POST, "/api/admin/invites", Some(key))
        .json(&body)
        .send()
        .unwrap()
}

fn delete(app: &TestApp, key: &str, id: &str) -> Response {
    let path = format!("/api/admin/invites/{id}");
    call(app, Method::DELETE, &path, Some(key)).send().unwrap()
}

/// The JSON of an answer with `status`; every answer is never cached.
fn json_of(res: Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "{res:?}");
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
    res.json().expect("a JSON body")
}

/// Asserts an error answer: `status`, the `{"error", "message"}` shape with
/// `code`, and returns the message.
fn error_of(res: Response, status: u16, code: &str) -> String {
    let v = json_of(res, status);
    assert_eq!(v["error"], code, "{v}");
    v["message"].as_str().expect("a message").to_owned()
}

/// `GET /api/admin/invites/{id}`: the invite object (200).
fn show(app: &TestApp, key: &str, id: &str) -> Value {
    json_of(get(app, &format!("/api/admin/invites/{id}"), key), 200)
}

/// Mints with the admin API; the 201's invite object.
fn mint(app: &TestApp, key: &str, body: Value) -> Value {
    json_of(post(app, key, body), 201)
}

/// Mints with `{}`; the new invite's id.
fn mint_id(app: &TestApp, key: &str) -> String {
    let v = mint(app, key, json!({}));
    v["invite_id"].as_str().expect("an invite id").to_owned()
}

fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    let out = app.cli(args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn invites_count(app: &TestApp) -> u64 {
    probe::invites(app)
}

/// Every endpoint, with a placeholder invite id where one is needed.
fn endpoints(id: &str) -> Vec<(Method, String)> {
    vec![
        (Method::GET, "/api/admin/invites".into()),
        (Method::POST, "/api/admin/invites".into()),
        (Method::GET, format!("/api/admin/invites/{id}")),
        (Method::DELETE, format!("/api/admin/invites/{id}")),
        (Method::GET, "/api/admin/accounts".into()),
    ]
}

#[test]
fn without_a_key_every_admin_endpoint_answers_401_asking_for_a_bearer_key() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    let id = mint_id(&app, &admin);
    let wrong = format!("{}/{}", id_of(&admin), "A".repeat(36));
    for (method, path) in endpoints(&id) {
        for key in [None, Some(wrong.as_str()), Some("not a key")] {
            let res = call(&app, method.clone(), &path, key)
                .header(CONTENT_TYPE, "application/json")
                .body("{}")
                .send()
                .unwrap();
            assert_eq!(
                header(&res, "www-authenticate").as_deref(),
                Some("Bearer"),
                "{method} {path}"
            );
            error_of(res, 401, "unauthorized");
        }
        // A key in the query string is not taken: it would end up in logs.
        let res = call(&app, method.clone(), &format!("{path}?key={admin}"), None)
            .send()
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
    }
    assert_eq!(invites_count(&app), 1);
    let v = show(&app, &admin, &id);
    assert_eq!(v["status"], "pending");
}

#[test]
fn a_mint_scope_key_can_use_none_of_the_admin_api() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    let mint_key = key(&app, "localhost", "mint", &[]);
    let id = mint_id(&app, &admin);
    register_account(&app, "alice");
    for (method, path) in endpoints(&id) {
        let res = call(&app, method.clone(), &path, Some(&mint_key))
            .json(&json!({ "reset": "alice" }))
            .send()
            .unwrap();
        let message = error_of(res, 403, "forbidden");
        assert!(
            message.contains("admin-scope"),
            "{method} {path}: {message}"
        );
    }
    // Nothing was minted (the registration's invite and the admin's only),
    // and nothing revoked.
    assert_eq!(invites_count(&app), 2);
    let v = show(&app, &admin, &id);
    assert_eq!(v["status"], "pending");
}

#[test]
fn an_expired_admin_key_is_refused_with_403_saying_it_expired() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &["--expires-in", "1s"]);
    // Bounded: the key expires after one second; wait until it has.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    for (method, path) in endpoints("aaaaaaaaaaaaa") {
        let res = call(&app, method.clone(), &path, Some(&admin))
            .json(&json!({}))
            .send()
            .unwrap();
        let message = error_of(res, 403, "forbidden");
        assert!(message.contains("expired"), "{method} {path}: {message}");
    }
    assert_eq!(invites_count(&app), 0);
}

#[test]
fn post_mints_with_the_invite_options_and_answers_201_with_the_listed_object_and_its_url() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    let res = post(
        &app,
        &admin,
        json!({ "ttl": "2h", "uses": 1, "note": "for the team", "name": "carol" }),
    );
    let location = header(&res, "location").expect("a Location");
    let mut v = json_of(res, 201);
    let id = v["invite_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/admin/invites/{id}"));
    assert_eq!(v["host"], "localhost");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["kind"], "account");
    assert_eq!(v["source"], format!("api/token/{}", id_of(&admin)));
    assert_eq!(v["note"], "for the team");
    assert_eq!(v["name"], "carol");
    assert_eq!(v["uses_allowed"], 1);
    assert_eq!(v["uses_spent"], 0);
    assert_eq!(v["accounts"], json!([]));
    let created = chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::hours(2));

    // The URL is a working invite for carol only.
    let url = v["url"].as_str().expect("a url").to_owned();
    let res = accept_invite(&app, &token_of(&url), "carol", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);

    // The object is the one `invites list --json` prints (once used).
    v.as_object_mut().unwrap().remove("url");
    let listed = cli_json(
        &app,
        &["invites", "list", "localhost", "--status", "all", "--json"],
    );
    let listed = &listed.as_array().unwrap()[0];
    assert_eq!(listed["invite_id"], v["invite_id"]);
    assert_eq!(listed["accounts"], json!(["carol"]));
    for field in [
        "source",
        "note",
        "name",
        "uses_allowed",
        "created_at",
        "expires_at",
    ] {
        assert_eq!(listed[field], v[field], "{field}");
    }
    let shown = json_of(get(&app, &location, &admin), 200);
    assert_eq!(&shown["invite_id"], &v["invite_id"]);
    assert_eq!(shown["uses_spent"], 1);
    assert_eq!(shown["registrations"][0]["name"], "carol");

    // `{}` and no body at all mint with the host's defaults.
    let v = mint(&app, &admin, json!({}));
    assert_eq!(
        (v["uses_allowed"].clone(), v["note"].clone()),
        (json!(1), Value::Null)
    );
    let res = call(&app, Method::POST, "/api/admin/invites", Some(&admin))
        .send()
        .unwrap();
    assert_eq!(json_of(res, 201)["name"], Value::Null);
}

#[test]
fn post_refuses_bad_options_and_bodies_with_a_clear_400_and_mints_nothing() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let before = invites_count(&app);
    let admin = key(&app, "localhost", "admin", &[]);
    for (body, code, says) in [
        (json!({ "uses": 0 }), "invalid_option", "uses"),
        (json!({ "uses": 101 }), "invalid_option", "uses"),
        (
            json!({ "ttl": "31d" }),
            "invalid_option",
            "max_invite_expiry",
        ),
        (json!({ "ttl": "soon" }), "invalid_option", "ttl"),
        (json!({ "note": "x".repeat(201) }), "invalid_option", "note"),
        (json!({ "name": "no spaces" }), "invalid_option", "name"),
        (json!({ "usses": 2 }), "bad_fields", "usses"),
        (
            json!({ "reset": "alice", "uses": 2 }),
            "invalid_option",
            "only",
        ),
        (
            json!({ "reset": "alice", "ttl": "31d" }),
            "invalid_option",
            "max_invite_expiry",
        ),
        (json!([1]), "bad_json", "object"),
    ] {
        let message = error_of(post(&app, &admin, body.clone()), 400, code);
        assert!(message.contains(says), "{body}: {message}");
    }
    let res = call(&app, Method::POST, "/api/admin/invites", Some(&admin))
        .header(CONTENT_TYPE, "text/plain")
        .body("{}")
        .send()
        .unwrap();
    error_of(res, 400, "wrong_content_type");
    let res = call(&app, Method::POST, "/api/admin/invites", Some(&admin))
        .header(CONTENT_TYPE, "application/json")
        .body("{")
        .send()
        .unwrap();
    error_of(res, 400, "bad_json");
    assert_eq!(invites_count(&app), before);
}

#[test]
fn a_reset_invite_from_the_admin_api_is_the_keys_and_resets_the_password() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let admin = key(&app, "localhost", "admin", &[]);
    let v = mint(&app, &admin, json!({ "reset": "alice", "ttl": "2h" }));
    assert_eq!(v["kind"], "reset");
    assert_eq!(v["source"], format!("api/token/{}", id_of(&admin)));
    assert_eq!(v["uses_allowed"], 1);
    let actor = format!("key {}", id_of(&admin));
    // alice is the only account: the reset audited is hers.
    let audit = probe::census(&app).audit;
    assert_eq!(audit.get(&format!("invite.reset by {actor}")), Some(&1));
    // Without a ttl, a day.
    let d = mint(&app, &admin, json!({ "reset": "alice" }));
    let day =
        |v: &Value, k: &str| chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap()).unwrap();
    assert_eq!(
        day(&d, "expires_at") - day(&d, "created_at"),
        chrono::Duration::days(1)
    );

    let token = token_of(v["url"].as_str().unwrap());
    let new_password = "marble harbour violin 47";
    let res = client()
        .post(format!("{}/api/invite/{token}", app.url))
        .json(&json!({ "password": new_password }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        crate::helpers::login(&app, "alice", new_password).status(),
        204
    );

    // An account that does not exist (or cannot) is 404, and nothing minted.
    let before = invites_count(&app);
    for name in ["nobody", "no spaces"] {
        let message = error_of(
            post(&app, &admin, json!({ "reset": name })),
            404,
            "not_found",
        );
        assert!(message.contains("account"), "{message}");
    }
    assert_eq!(invites_count(&app), before);
}

#[test]
fn the_listing_pages_newest_first_through_every_invite_without_duplicates_or_gaps() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    let out = app.cli(&["invites", "create", "localhost", "--count", "4"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for _ in 0..3 {
        mint(&app, &admin, json!({}));
    }
    // The CLI's order is the reference: newest first.
    let all: Vec<Value> = cli_json(&app, &["invites", "list", "localhost", "--json"])
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 7);

    let mut seen = Vec::new();
    let mut path = "/api/admin/invites?limit=3".to_owned();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 7, "the cursor does not end");
        let v = json_of(get(&app, &path, &admin), 200);
        let page = v["invites"].as_array().unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().cloned());
        match v["next"].as_str() {
            Some(cursor) => path = format!("/api/admin/invites?limit=3&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    // Same objects as `invites list --json`, same order, each once.
    assert_eq!(seen, all);
    let ids: HashSet<_> = seen.iter().map(|v| v["invite_id"].clone()).collect();
    assert_eq!(ids.len(), 7);

    // The default page holds them all and says there is no next one.
    let v = json_of(get(&app, "/api/admin/invites", &admin), 200);
    assert_eq!(v["invites"].as_array().unwrap().len(), 7);
    assert_eq!(v["next"], Value::Null);
}

#[test]
fn the_listing_filters_by_status_and_refuses_a_bad_status_limit_or_cursor() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    let kept = mint(&app, &admin, json!({}));
    let gone = mint(&app, &admin, json!({}));
    let gone_id = gone["invite_id"].as_str().unwrap();
    assert_eq!(delete(&app, &admin, gone_id).status(), 204);
    let ids = |query: &str| -> Vec<Value> {
        let v = json_of(
            get(&app, &format!("/api/admin/invites{query}"), &admin),
            200,
        );
        v["invites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["invite_id"].clone())
            .collect()
    };
    assert_eq!(ids(""), [kept["invite_id"].clone()]);
    assert_eq!(ids("?status=pending"), [kept["invite_id"].clone()]);
    assert_eq!(ids("?status=revoked"), [json!(gone_id)]);
    assert_eq!(ids("?status=used"), Vec::<Value>::new());
    assert_eq!(ids("?status=all").len(), 2);
    for (query, code) in [
        ("?status=bogus", "invalid_status"),
        ("?limit=0", "invalid_limit"),
        ("?limit=1001", "invalid_limit"),
        ("?limit=ten", "invalid_limit"),
        ("?after=not-a-cursor", "invalid_cursor"),
        ("?after=", "invalid_cursor"),
        ("?status=all&status=used", "bad_query"),
        ("?status=%zz", "bad_query"),
    ] {
        let res = get(&app, &format!("/api/admin/invites{query}"), &admin);
        error_of(res, 400, code);
    }
    assert_eq!(ids("?limit=1000").len(), 1);
}

#[test]
fn delete_revokes_a_pending_invite_as_the_key_and_refuses_unknown_or_ended_ones() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    let v = mint(&app, &admin, json!({}));
    let id = v["invite_id"].as_str().unwrap();
    let token = token_of(v["url"].as_str().unwrap());
    let res = delete(&app, &admin, id);
    assert_eq!(res.status(), 204);
    // Revoking again changes nothing and succeeds.
    assert_eq!(delete(&app, &admin, id).status(), 204);
    let actor = format!("key {}", id_of(&admin));
    let audit = probe::census(&app).audit;
    assert_eq!(audit.get(&format!("invite.revoke by {actor}")), Some(&1));
    let shown = show(&app, &admin, id);
    assert_eq!(shown["status"], "revoked");
    assert!(shown["revoked_at"].is_string());
    // Its page says it was withdrawn; the JSON API does not know it.
    let page = client()
        .get(format!("{}/invite?{token}", app.url))
        .send()
        .unwrap();
    assert_eq!(page.status(), 410);
    let res = accept_invite(&app, &token, "dave", GOOD_PASSWORD);
    assert_eq!(res.status(), 404);

    for unknown in ["aaaaaaaaaaaaa", "not-an-id", "%20"] {
        error_of(delete(&app, &admin, unknown), 404, "not_found");
        let path = format!("/api/admin/invites/{unknown}");
        error_of(get(&app, &path, &admin), 404, "not_found");
    }

    // A used-up invite cannot be revoked: 409, and it stays used.
    let used = mint(&app, &admin, json!({}));
    let res = accept_invite(
        &app,
        &token_of(used["url"].as_str().unwrap()),
        "erin",
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 204);
    let used_id = used["invite_id"].as_str().unwrap();
    let message = error_of(delete(&app, &admin, used_id), 409, "invite_ended");
    assert!(message.contains("used"), "{message}");
    let shown = json_of(
        get(&app, &format!("/api/admin/invites/{used_id}"), &admin),
        200,
    );
    assert_eq!(shown["status"], "used");
}

#[test]
fn an_admin_key_sees_and_changes_only_its_own_hosts_invites_and_accounts() {
    let app = TestApp::spawn();
    let local = key(&app, "localhost", "admin", &[]);
    let other = key(&app, "example.com", "admin", &[]);
    register_account(&app, "alice");
    let local_invite = mint(&app, &local, json!({}));
    let local_id = local_invite["invite_id"].as_str().unwrap();

    let path = format!("/api/admin/invites/{local_id}");
    error_of(get(&app, &path, &other), 404, "not_found");
    error_of(delete(&app, &other, local_id), 404, "not_found");
    let still = json_of(get(&app, &path, &local), 200);
    assert_eq!(still["status"], "pending");
    let listed = json_of(get(&app, "/api/admin/invites?status=all", &other), 200);
    assert_eq!(listed["invites"], json!([]));
    // A cursor taken from another host's listing only pages this one.
    let listed = json_of(
        get(
            &app,
            &format!("/api/admin/invites?after={local_id}"),
            &other,
        ),
        200,
    );
    assert_eq!(listed["invites"], json!([]));
    let accounts = json_of(get(&app, "/api/admin/accounts", &other), 200);
    assert_eq!(accounts["accounts"], json!([]));
    // A reset for an account of another host is an unknown account.
    error_of(
        post(&app, &other, json!({ "reset": "alice" })),
        404,
        "not_found",
    );

    // What the other key mints is its own host's, whichever host is addressed.
    let minted = call(&app, Method::POST, "/api/admin/invites", Some(&other))
        .header(reqwest::header::HOST, "localhost")
        .json(&json!({}))
        .send()
        .unwrap();
    let minted = json_of(minted, 201);
    assert_eq!(minted["host"], "example.com");
    assert!(minted["url"]
        .as_str()
        .unwrap()
        .starts_with("https://example.com/"));
    // This host's listing is unchanged: its one pending invite.
    let listed = json_of(get(&app, "/api/admin/invites", &local), 200);
    assert_eq!(listed["invites"][0]["invite_id"], local_invite["invite_id"]);
    assert_eq!(listed["invites"].as_array().unwrap().len(), 1);
}

#[test]
fn get_accounts_lists_the_hosts_accounts_as_accounts_list_json_does() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    register_account(&app, "alice");
    let invite = mint(&app, &admin, json!({}));
    let res = accept_invite(
        &app,
        &token_of(invite["url"].as_str().unwrap()),
        "bob",
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 204);
    let out = app.cli_with_stdin(
        &[
            "accounts",
            "create",
            "localhost",
            "carol",
            "--password-stdin",
        ],
        Some(GOOD_PASSWORD),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let v = json_of(get(&app, "/api/admin/accounts", &admin), 200);
    let cli = cli_json(&app, &["accounts", "list", "localhost", "--json"]);
    assert_eq!(v["accounts"], cli);
    let by = |name: &str| {
        v["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))["invited_by"]
            .clone()
    };
    assert_eq!(by("bob"), format!("key {}", id_of(&admin)));
    assert_eq!(by("carol"), "cli");
}

#[test]
fn admin_mints_count_against_the_keys_rate() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &["--rate", "1/h"]);
    mint(&app, &admin, json!({}));
    let res = post(&app, &admin, json!({}));
    assert!(header(&res, "retry-after").is_some());
    error_of(res, 429, "too_many_requests");
    assert_eq!(invites_count(&app), 1);
    // Reading is not minting: the listing still answers.
    assert_eq!(get(&app, "/api/admin/invites", &admin).status(), 200);
}

#[test]
fn an_unknown_admin_path_or_method_answers_json() {
    let app = TestApp::spawn();
    let admin = key(&app, "localhost", "admin", &[]);
    error_of(get(&app, "/api/admin/keys", &admin), 404, "not_found");
    let res = call(&app, Method::PUT, "/api/admin/invites", Some(&admin))
        .send()
        .unwrap();
    assert_eq!(header(&res, "allow").as_deref(), Some("GET, POST"));
    error_of(res, 405, "method_not_allowed");
}

#[test]
fn invites_reset_refuses_a_ttl_beyond_the_hosts_max_invite_expiry_and_mints_nothing() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let out = app.cli(&["invites", "reset", "localhost", "alice", "--ttl", "31d"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout_of(&out), "");
    assert!(stderr_of(&out).contains("max_invite_expiry"), "{out:?}");
    assert_eq!(probe::census(&app).reset_invites, 0);
    // The maximum itself is allowed.
    let out = app.cli(&["invites", "reset", "localhost", "alice", "--ttl", "30d"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(probe::census(&app).reset_invites, 1);
}
