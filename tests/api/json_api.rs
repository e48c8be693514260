//! The JSON invitation API (`/api/invite`, `/api/invite/{id}`) and sign-in
//! (`/api/auth/login`, `/logout`, `/check`), as programs use them.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::blocking::Response;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    accept_invite, accept_invite_on, auth_check, auth_check_on, client, describe_invite, header,
    login, login_on, mint_for, raw_request, register_account, set_cookie_line, set_cookie_value,
    stored_form, token_of, TestApp, GOOD_PASSWORD,
};
use crate::probe;

/// A host whose invites run out one second after they are made.
const SHORT_INVITES: &str = r#"
[hosts."localhost"]
public_url = "http://127.0.0.1:{port}"
invite_expiry = "1s"
"#;

/// Sessions that end after two idle seconds.
const SHORT_SESSIONS: &str = r#"
session_idle_expiry = "2s"
[hosts."localhost"]
public_url = "http://127.0.0.1:{port}"
"#;

fn url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.url)
}

/// Checks the answer is a JSON API error with `status` and `code`; returns
/// its message.
fn assert_api_error(res: Response, status: u16, code: &str) -> String {
    assert_eq!(res.status(), status, "expected {status} {code}");
    let ct = header(&res, "content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let body: Value = res.json().expect("an error body that is not JSON");
    let obj = body
        .as_object()
        .expect("an error body that is not an object");
    let keys: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["error", "message"]), "{body}");
    assert_eq!(obj["error"], code, "{body}");
    let message = obj["message"].as_str().expect("message is not a string");
    assert!(!message.is_empty(), "{body}");
    message.to_owned()
}

/// `2026-01-02T03:04:05.123456Z`: RFC 3339, UTC, exactly six fractional digits.
fn assert_micros_utc(text: &str) -> DateTime<Utc> {
    let b = text.as_bytes();
    assert_eq!(b.len(), 27, "{text}");
    assert_eq!(b[19], b'.', "{text}");
    assert!(b[20..26].iter().all(u8::is_ascii_digit), "{text}");
    assert_eq!(b[26], b'Z', "{text}");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn mint_with_bearer(app: &TestApp, key: &str) -> Response {
    client()
        .post(url(app, "/api/invite"))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .json(&json!({}))
        .send()
        .unwrap()
}

fn mint_with_cookie(app: &TestApp, identity: &str) -> Response {
    client()
        .post(url(app, "/api/invite"))
        .header(COOKIE, format!("identity={identity}"))
        .json(&json!({}))
        .send()
        .unwrap()
}

/// The field names of a JSON object body.
fn object_keys(body: &Value) -> BTreeSet<&str> {
    body.as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// Posts raw bytes with an optional content type.
fn post_raw(url: &str, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Response {
    let mut req = client().post(url).body(body.into());
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.send().unwrap()
}

/// `(used_at, used_by, source, issuer_name, created_at, expires_at)`.
type InviteRow = (Option<i64>, Option<i64>, String, Option<String>, i64, i64);

fn invite_row(app: &TestApp, token: &str) -> InviteRow {
    let invite = probe::invite(app, token).expect("invite row");
    let (used_at, used_by) = probe::used_up(app, token);
    (
        used_at,
        used_by,
        invite.source,
        invite.issuer_name,
        invite.created_at.timestamp_micros(),
        invite.expires_at.timestamp_micros(),
    )
}

fn assert_unused(app: &TestApp, token: &str) {
    let (used_at, used_by, ..) = invite_row(app, token);
    assert_eq!((used_at, used_by), (None, None), "the invite was consumed");
}

fn account_id(app: &TestApp, name: &str) -> i64 {
    probe::account(app, name)
        .unwrap_or_else(|| panic!("no account {name}"))
        .id
}

/// Checks the sign-in cookie a response sets: `__Host-identity` and Secure on
/// an https host, `identity` on an http one; returns its value.
fn assert_identity_cookie(res: &Response, secure: bool) -> String {
    let (name, other) = if secure {
        ("__Host-identity", "identity")
    } else {
        ("identity", "__Host-identity")
    };
    assert!(set_cookie_line(res, other).is_none(), "{other} was set");
    let line = set_cookie_line(res, name).expect("no identity cookie");
    let attrs: Vec<&str> = line.split(';').map(str::trim).collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing: {line}");
    }
    assert_eq!(attrs.contains(&"Secure"), secure, "{line}");
    let value = set_cookie_value(res, name).unwrap();
    assert!(value.len() >= 43, "short identity token {value}");
    value
}

// ------------------------------------------------------- POST /api/invite

#[test]
fn minting_with_a_bearer_key_answers_200_with_id_issuer_times_and_url() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let key_id = key.split('/').next().unwrap();
    let before = Utc::now();
    let res = mint_with_bearer(&app, &key);
    assert_eq!(res.status(), 200);
    assert!(header(&res, "content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
    let body: Value = res.json().unwrap();
    let keys = object_keys(&body);
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "issuer",
            "issued_at",
            "expires_at",
            "url",
            "invite_id",
            "uses"
        ]),
        "{body}"
    );
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["issuer"], format!("api/token/{key_id}"));
    let issued = assert_micros_utc(body["issued_at"].as_str().unwrap());
    let expires = assert_micros_utc(body["expires_at"].as_str().unwrap());
    assert!(issued >= before - chrono::Duration::seconds(1), "{issued}");
    assert!(
        issued <= Utc::now() + chrono::Duration::seconds(1),
        "{issued}"
    );
    assert_eq!(expires - issued, chrono::Duration::days(7));
    assert_eq!(body["url"], format!("{}/invite?{id}", app.url));

    let (used_at, _, source, issuer_name, created_at, expires_at) = invite_row(&app, id);
    assert_eq!(used_at, None);
    assert_eq!(source, format!("api/token/{key_id}"));
    // The key's name is the operator's label: not recorded for invitees.
    assert_eq!(issuer_name, None);
    assert_eq!(created_at, issued.timestamp_micros());
    assert_eq!(expires_at, expires.timestamp_micros());

    let page = client().get(body["url"].as_str().unwrap()).send().unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().unwrap();
    assert!(!page.contains("test key"), "the key's name is shown");
    assert!(page.contains("The administrators of"), "no inviter line");

    // `{}` is optional: an empty body mints too, and each mint is new.
    let bare = client()
        .post(url(&app, "/api/invite"))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .unwrap();
    assert_eq!(bare.status(), 200);
    let second: Value = bare.json().unwrap();
    assert_ne!(second["id"], body["id"]);
    assert_eq!(probe::invites(&app), 2);
}

#[test]
fn minting_with_a_key_for_an_https_host_gives_that_hosts_url() {
    let app = TestApp::spawn();
    let key = app.create_key("example.com");
    let res = mint_with_bearer(&app, &key);
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["url"], format!("https://example.com/invite?{id}"));
    assert_eq!(probe::census_of(&app, "example.com").invites, 1);
}

#[test]
fn minting_while_signed_in_answers_200_with_the_account_as_issuer() {
    let app = TestApp::spawn();
    let identity = register_account(&app, "alice");
    let alice = account_id(&app, "alice");
    let res = mint_with_cookie(&app, &identity);
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    assert_eq!(body["issuer"], format!("account/{alice}"));
    assert_micros_utc(body["issued_at"].as_str().unwrap());
    assert_micros_utc(body["expires_at"].as_str().unwrap());
    let id = body["id"].as_str().unwrap().to_owned();
    let (_, _, source, issuer_name, ..) = invite_row(&app, &id);
    assert_eq!(source, format!("account/{alice}"));
    assert_eq!(issuer_name.as_deref(), Some("alice"));

    // The page names alice, and whoever accepts is recorded as her invitee.
    let page = client()
        .get(body["url"].as_str().unwrap())
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("<strong>alice</strong> invited you"));
    let described = describe_invite(&app, &id);
    assert_eq!(
        described["issuer"],
        json!({ "id": "account", "name": "alice" })
    );
    assert_eq!(accept_invite(&app, &id, "bob", GOOD_PASSWORD).status(), 204);
    let invited_by = probe::account(&app, "bob").expect("bob").invited_by;
    // Readable without a lookup (issue 9).
    assert_eq!(invited_by, "account alice");
}

#[test]
fn minting_without_valid_credentials_answers_401_json_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let key_id = key.split('/').next().unwrap().to_owned();
    let wrong_secret = format!("{key_id}/{}", "A".repeat(43));
    let cases: Vec<(&str, Option<String>, Option<String>)> = vec![
        ("nothing", None, None),
        ("garbage bearer", Some("Bearer nonsense".into()), None),
        ("wrong secret", Some(format!("Bearer {wrong_secret}")), None),
        ("empty bearer", Some("Bearer ".into()), None),
        ("basic auth", Some("Basic YWxpY2U6cHc=".into()), None),
        (
            "unknown cookie",
            None,
            Some(format!("identity={}", "A".repeat(43))),
        ),
        ("garbage cookie", None, Some("identity=%%%".into())),
    ];
    for (what, auth, cookie) in cases {
        let mut req = client().post(url(&app, "/api/invite")).json(&json!({}));
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        let res = req.send().unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert_api_error(res, 401, "unauthorized");
    }
    // A deleted key stops working at once.
    assert_eq!(mint_with_bearer(&app, &key).status(), 200);
    let out = app.cli(&["keys", "delete", "localhost", &key_id]);
    assert!(out.status.success(), "{out:?}");
    assert_api_error(mint_with_bearer(&app, &key), 401, "unauthorized");
    assert_eq!(probe::invites(&app), 1);
}

#[test]
fn minting_with_a_body_that_is_not_a_json_object_answers_400() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let mint = |ct: Option<&str>, body: &str| {
        let mut req = client()
            .post(url(&app, "/api/invite"))
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .body(body.to_owned());
        if let Some(ct) = ct {
            req = req.header(CONTENT_TYPE, ct);
        }
        req.send().unwrap()
    };
    assert_api_error(mint(Some("application/json"), "[]"), 400, "bad_json");
    assert_api_error(mint(Some("application/json"), "{"), 400, "bad_json");
    assert_api_error(mint(Some("text/plain"), "{}"), 400, "wrong_content_type");
    assert_api_error(mint(None, "{}"), 400, "wrong_content_type");
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(17 * 1024));
    assert_api_error(mint(Some("application/json"), &big), 413, "body_too_large");
    assert_eq!(probe::invites(&app), 0);
}

// -------------------------------------------------- GET /api/invite/{id}

#[test]
fn a_real_invite_id_with_a_wrong_secret_is_not_found_and_the_invite_stays_usable() {
    use base64::Engine;
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut bytes = b64.decode(&token).unwrap();
    // Keep the 8 id bytes, change one secret byte.
    bytes[23] ^= 1;
    let forged = b64.encode(&bytes);
    assert_eq!(stored_form(&forged).0, stored_form(&token).0, "same id");
    let res = client()
        .get(url(&app, &format!("/api/invite/{forged}")))
        .send()
        .unwrap();
    assert_api_error(res, 404, "not_found");
    let res = accept_invite(&app, &forged, "mallory", GOOD_PASSWORD);
    assert_api_error(res, 404, "not_found");
    assert_eq!(probe::accounts(&app), 0);
    assert_unused(&app, &token);
    let res = accept_invite(&app, &token, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
}

#[test]
fn an_outstanding_invite_is_described_without_authentication_and_nothing_changes() {
    let app = TestApp::spawn();
    let (key, page) = mint_for(&app, "localhost");
    let key_id = key.split('/').next().unwrap();
    let token = token_of(&page);
    let before = invite_row(&app, &token);
    let res = client()
        .get(url(&app, &format!("/api/invite/{token}")))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(header(&res, "content-type")
        .unwrap()
        .starts_with("application/json"));
    let body: Value = res.json().unwrap();
    let keys = object_keys(&body);
    assert_eq!(
        keys,
        BTreeSet::from([
            "issuer",
            "issued_at",
            "expires_at",
            "uses_remaining",
            "name"
        ]),
        "{body}"
    );
    // The key's name ("test key") is the operator's label and its id half
    // of the operator's credential: neither is shown.
    assert_eq!(body["issuer"], json!({ "id": "api", "name": null }));
    assert!(!body.to_string().contains(key_id), "{body}");
    let issued = assert_micros_utc(body["issued_at"].as_str().unwrap());
    let expires = assert_micros_utc(body["expires_at"].as_str().unwrap());
    assert_eq!(issued.timestamp_micros(), before.4);
    assert_eq!(expires.timestamp_micros(), before.5);
    assert_eq!(invite_row(&app, &token), before);
    assert_eq!(probe::accounts(&app), 0);
}

#[test]
fn describing_an_unknown_malformed_or_accepted_invite_answers_404_json() {
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    assert_eq!(
        accept_invite(&app, &token, "taker", GOOD_PASSWORD).status(),
        204
    );
    for id in [
        "AAAAAAAAAAAAAAAAAAAAAAAA",
        "x",
        "not%20a%20token",
        &"A".repeat(200),
        &token,
    ] {
        let res = client()
            .get(url(&app, &format!("/api/invite/{id}")))
            .send()
            .unwrap();
        assert_api_error(res, 404, "not_found");
    }
}

#[test]
fn an_expired_invite_can_be_neither_described_nor_accepted() {
    let app = TestApp::spawn_with(SHORT_INVITES);
    let token = token_of(&app.mint());
    let described = client()
        .get(url(&app, &format!("/api/invite/{token}")))
        .send()
        .unwrap();
    assert_eq!(described.status(), 200, "not yet expired");
    std::thread::sleep(Duration::from_millis(1200));
    let res = client()
        .get(url(&app, &format!("/api/invite/{token}")))
        .send()
        .unwrap();
    assert_api_error(res, 404, "not_found");
    let res = accept_invite(&app, &token, "late", GOOD_PASSWORD);
    assert!(set_cookie_line(&res, "identity").is_none());
    assert_api_error(res, 404, "not_found");
    assert_eq!(probe::accounts(&app), 0);
    assert_unused(&app, &token);
}

// ------------------------------------------------- POST /api/invite/{id}

#[test]
fn accepting_an_invite_answers_204_with_a_cookie_for_the_new_account() {
    let app = TestApp::spawn();
    let (key, page) = mint_for(&app, "localhost");
    let key_id = key.split('/').next().unwrap();
    let token = token_of(&page);
    let res = accept_invite(&app, &token, "Alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let identity = assert_identity_cookie(&res, false);
    assert!(res.bytes().unwrap().is_empty(), "a 204 with a body");

    assert_eq!(probe::accounts(&app), 1);
    let account = probe::account(&app, "alice").expect("alice");
    let (hash, invited_by, id) = (account.password_hash, account.invited_by, account.id);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(invited_by, format!("key {key_id}"));
    let (used_at, used_by, ..) = invite_row(&app, &token);
    assert!(used_at.is_some());
    assert_eq!(used_by, Some(id));
    assert_eq!(probe::sessions(&app), 1);

    let check = auth_check(&app, Some(&identity));
    assert_eq!(check.status(), 200);
    assert_eq!(
        header(&check, "x-invite-server-user").as_deref(),
        Some("alice@localhost")
    );
    let who: Value = check.json().unwrap();
    assert_eq!(who["name"], "alice");

    // Accepted once: gone for everyone else.
    let again = accept_invite(&app, &token, "mallory", GOOD_PASSWORD);
    assert_api_error(again, 404, "not_found");
    assert_eq!(probe::accounts(&app), 1);
}

#[test]
fn accepting_an_unknown_invite_answers_404_json() {
    let app = TestApp::spawn();
    for id in ["AAAAAAAAAAAAAAAAAAAAAAAA", "short"] {
        let res = accept_invite(&app, id, "nobody", GOOD_PASSWORD);
        assert_api_error(res, 404, "not_found");
    }
    assert_eq!(probe::accounts(&app), 0);
}

#[test]
fn accepting_with_a_taken_name_answers_409_and_the_invite_can_then_be_used_by_another_name() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let token = token_of(&app.mint());
    for name in ["alice", "ALICE", " Alice "] {
        let res = accept_invite(&app, &token, name, GOOD_PASSWORD);
        assert!(set_cookie_line(&res, "identity").is_none());
        let message = assert_api_error(res, 409, "name_taken");
        assert!(message.contains("taken"), "{message}");
        assert_unused(&app, &token);
    }
    assert_eq!(
        accept_invite(&app, &token, "alice2", GOOD_PASSWORD).status(),
        204
    );
    assert_eq!(probe::accounts(&app), 2);
}

#[test]
fn a_name_on_another_host_is_not_taken() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let (_, page) = mint_for(&app, "example.com");
    let res = accept_invite_on(
        &app,
        "example.com",
        &token_of(&page),
        "alice",
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 204);
    assert_identity_cookie(&res, true);
    // One alice on each host.
    for host in ["localhost", "example.com"] {
        assert!(probe::account_on(&app, host, "alice").is_some(), "{host}");
    }
}

#[test]
fn accepting_with_a_malformed_request_answers_400_with_a_code_and_the_invite_stays_usable() {
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    let target = url(&app, &format!("/api/invite/{token}"));
    let good = json!({ "name": "bob", "password": GOOD_PASSWORD }).to_string();
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        ("broken JSON", json_ct, "{\"name\": ".into(), "bad_json"),
        ("empty body", json_ct, String::new(), "bad_json"),
        ("trailing junk", json_ct, format!("{good}x"), "bad_json"),
        ("an array", json_ct, "[]".into(), "bad_json"),
        ("a string", json_ct, "\"bob\"".into(), "bad_json"),
        ("null", json_ct, "null".into(), "bad_json"),
        ("a number", json_ct, "42".into(), "bad_json"),
        (
            "text/plain",
            Some("text/plain"),
            good.clone(),
            "wrong_content_type",
        ),
        (
            "a form",
            Some("application/x-www-form-urlencoded"),
            "name=bob&password=x".into(),
            "wrong_content_type",
        ),
        ("no content type", None, good.clone(), "wrong_content_type"),
        (
            "no password",
            json_ct,
            r#"{"name":"bob"}"#.into(),
            "bad_fields",
        ),
        (
            "no name",
            json_ct,
            json!({ "password": GOOD_PASSWORD }).to_string(),
            "bad_fields",
        ),
        ("no fields", json_ct, "{}".into(), "bad_fields"),
        (
            "a number for a name",
            json_ct,
            json!({ "name": 5, "password": GOOD_PASSWORD }).to_string(),
            "bad_fields",
        ),
        (
            "null password",
            json_ct,
            json!({ "name": "bob", "password": null }).to_string(),
            "bad_fields",
        ),
    ];
    for (what, ct, body, code) in cases {
        let res = post_raw(&target, ct, body);
        assert!(set_cookie_line(&res, "identity").is_none(), "{what}");
        assert_eq!(res.status(), 400, "{what}");
        assert_api_error(res, 400, code);
        assert_unused(&app, &token);
    }
    assert_eq!(probe::accounts(&app), 0);
    // A charset parameter is fine.
    let res = post_raw(&target, Some("Application/JSON; charset=utf-8"), good);
    assert_eq!(res.status(), 204);
}

#[test]
fn accepting_with_a_name_or_password_that_breaks_the_rules_answers_400_saying_why() {
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    let long_ascii = "x".repeat(1025);
    // 342 characters, 1026 bytes: the limit is in bytes.
    let long_bytes = "€".repeat(342);
    let long_name = "b".repeat(65);
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (
            "bad name",
            GOOD_PASSWORD,
            "invalid_name",
            "1 to 64 characters",
        ),
        ("", GOOD_PASSWORD, "invalid_name", "1 to 64 characters"),
        (
            ".bob",
            GOOD_PASSWORD,
            "invalid_name",
            "does not start or end",
        ),
        ("bob@localhost", GOOD_PASSWORD, "invalid_name", "a-z, 0-9"),
        (&long_name, GOOD_PASSWORD, "invalid_name", "1 to 64"),
        ("bob", "short", "invalid_password", "too short"),
        ("bob", "password1", "invalid_password", "too easy to guess"),
        ("bob", "qwertyuiop", "invalid_password", "too easy to guess"),
        ("bob", &long_ascii, "invalid_password", "too long"),
        ("bob", &long_bytes, "invalid_password", "too long"),
        (
            "zebraquasarvolt",
            "zebraquasarvolt",
            "invalid_password",
            "must not be the account name",
        ),
        (
            "zebraquasarvolt",
            "ZebraQuasarVolt",
            "invalid_password",
            "must not be the account name",
        ),
    ];
    for (name, password, code, why) in cases {
        let res = accept_invite(&app, &token, name, password);
        assert!(set_cookie_line(&res, "identity").is_none(), "{name}");
        let message = assert_api_error(res, 400, code);
        assert!(message.contains(why), "{name:?}: {message}");
        assert_unused(&app, &token);
    }
    assert_eq!(probe::accounts(&app), 0);
    // Exactly 1024 bytes of a strong password is allowed.
    let max = format!(
        "{GOOD_PASSWORD} {}",
        "q".repeat(1024 - GOOD_PASSWORD.len() - 1)
    );
    assert_eq!(max.len(), 1024);
    assert_eq!(accept_invite(&app, &token, "bob", &max).status(), 204);
    assert_eq!(login(&app, "bob", &max).status(), 204);
}

#[test]
fn a_body_over_16_kib_answers_413_json_and_changes_nothing() {
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    let target = url(&app, &format!("/api/invite/{token}"));
    let big = json!({ "name": "bob", "password": GOOD_PASSWORD, "pad": "x".repeat(17 * 1024) })
        .to_string();
    let res = post_raw(&target, Some("application/json"), big.clone());
    assert_api_error(res, 413, "body_too_large");

    // Without a Content-Length the limit holds while reading, too.
    let mut chunked = format!(
        "POST /api/invite/{token} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for piece in big.as_bytes().chunks(1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = raw_request(app.port, &chunked);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"body_too_large\""), "{text}");

    let login = post_raw(&url(&app, "/api/auth/login"), Some("application/json"), big);
    assert_api_error(login, 413, "body_too_large");
    assert_eq!(probe::accounts(&app), 0);
    assert_unused(&app, &token);
    // Just under the limit is read (and refused only for its content).
    let under = json!({ "name": "bob", "password": GOOD_PASSWORD, "pad": "x".repeat(15 * 1024) })
        .to_string();
    let res = post_raw(&target, Some("application/json"), under);
    assert_eq!(
        res.status(),
        204,
        "an extra field under the limit is ignored"
    );
}

/// Fires `n` simultaneous acceptances of one invite; returns the statuses.
fn race(app: &TestApp, token: &str, names: Vec<String>) -> Vec<(String, u16, bool)> {
    let barrier = Arc::new(Barrier::new(names.len()));
    let target = url(app, &format!("/api/invite/{token}"));
    let handles: Vec<_> = names
        .into_iter()
        .map(|name| {
            let (target, barrier) = (target.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let req = client()
                    .post(&target)
                    .json(&json!({ "name": name, "password": GOOD_PASSWORD }));
                barrier.wait();
                let res = req.send().unwrap();
                let cookie = set_cookie_line(&res, "identity").is_some();
                (name, res.status().as_u16(), cookie)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn fifty_simultaneous_acceptances_of_one_invite_give_exactly_one_204_and_one_account() {
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    let results = race(&app, &token, (0..50).map(|i| format!("racer{i}")).collect());
    let winners: Vec<_> = results.iter().filter(|r| r.1 == 204).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(winners[0].2, "the winner got no cookie");
    for (name, status, cookie) in &results {
        if *status != 204 {
            assert_eq!(*status, 404, "{name}: {results:?}");
            assert!(!cookie, "{name} got a cookie");
        }
    }
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(probe::sessions(&app), 1);
    let (used_at, used_by, ..) = invite_row(&app, &token);
    assert!(used_at.is_some());
    assert_eq!(used_by, Some(account_id(&app, &winners[0].0)));
}

#[test]
fn fifty_simultaneous_acceptances_with_the_same_name_give_exactly_one_204_and_one_account() {
    let app = TestApp::spawn();
    let token = token_of(&app.mint());
    let results = race(&app, &token, vec!["same".to_owned(); 50]);
    let statuses: Vec<u16> = results.iter().map(|r| r.1).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [204, 404, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(probe::sessions(&app), 1);
}

#[test]
fn simultaneous_acceptances_of_different_invites_with_one_name_create_one_account() {
    let app = TestApp::spawn();
    let tokens: Vec<String> = (0..10).map(|_| token_of(&app.mint())).collect();
    let barrier = Arc::new(Barrier::new(tokens.len()));
    let handles: Vec<_> = tokens
        .iter()
        .map(|token| {
            let target = url(&app, &format!("/api/invite/{token}"));
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let req = client()
                    .post(&target)
                    .json(&json!({ "name": "popular", "password": GOOD_PASSWORD }));
                barrier.wait();
                req.send().unwrap().status().as_u16()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 204).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [204, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(probe::accounts(&app), 1);
    // The losers' invites were rolled back and stay usable.
    assert_eq!(probe::invites_not_used_up(&app), 9);
}

// ------------------------------------------------------------ error shape

#[test]
fn every_api_error_has_the_json_shape_including_405_and_unknown_paths() {
    let app = TestApp::spawn();
    let token = "AAAAAAAAAAAAAAAAAAAAAAAA";
    let wrong_methods = [
        (Method::GET, "/api/invite".to_owned(), "POST"),
        (Method::PUT, "/api/invite".to_owned(), "POST"),
        (Method::DELETE, format!("/api/invite/{token}"), "GET, POST"),
        (Method::PUT, format!("/api/invite/{token}"), "GET, POST"),
        (Method::GET, "/api/auth/login".to_owned(), "POST"),
        (Method::GET, "/api/auth/logout".to_owned(), "POST"),
        (Method::POST, "/api/auth/check".to_owned(), "GET"),
    ];
    for (method, path, allow) in wrong_methods {
        let res = client()
            .request(method.clone(), url(&app, &path))
            .send()
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            header(&res, "allow").as_deref(),
            Some(allow),
            "{method} {path}: a 405 must list the allowed methods"
        );
        assert_api_error(res, 405, "method_not_allowed");
    }
    for path in [
        "/api/",
        "/api/nope",
        "/api/invite/a/b",
        "/api/auth",
        "/api/auth/whoami",
    ] {
        for method in [Method::GET, Method::POST] {
            let res = client()
                .request(method.clone(), url(&app, path))
                .send()
                .unwrap();
            assert_eq!(res.status(), 404, "{method} {path}");
            assert_api_error(res, 404, "not_found");
        }
    }
}

// ---------------------------------------------------------------- sign-in

#[test]
fn signing_in_by_name_or_by_address_answers_204_with_a_working_cookie() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    for name in ["alice", "alice@localhost", "Alice", "ALICE@LOCALHOST"] {
        let res = login(&app, name, GOOD_PASSWORD);
        assert_eq!(res.status(), 204, "{name}");
        let identity = assert_identity_cookie(&res, false);
        let check = auth_check(&app, Some(&identity));
        assert_eq!(check.status(), 200, "{name}");
        assert_eq!(
            header(&check, "x-invite-server-user").as_deref(),
            Some("alice@localhost")
        );
    }
    // One session per sign-in, plus the one from registering.
    assert_eq!(probe::sessions(&app), 5);
}

#[test]
fn an_account_signs_in_only_through_the_host_it_belongs_to() {
    let app = TestApp::spawn();
    let (_, page) = mint_for(&app, "example.com");
    assert_eq!(
        accept_invite_on(
            &app,
            "example.com",
            &token_of(&page),
            "frank",
            GOOD_PASSWORD
        )
        .status(),
        204
    );
    // This request's Host is the localhost host's: neither a bare name nor
    // another host's address signs in there.
    assert_api_error(login(&app, "frank", GOOD_PASSWORD), 401, "unauthorized");
    assert_api_error(
        login(&app, "frank@example.com", GOOD_PASSWORD),
        401,
        "unauthorized",
    );
    // Addressed to example.com, both forms work.
    for name in ["frank", "frank@example.com"] {
        let res = login_on(&app, "example.com", name, GOOD_PASSWORD);
        assert_eq!(res.status(), 204, "{name}");
    }
    let res = login_on(&app, "example.com", "frank", GOOD_PASSWORD);
    let identity = assert_identity_cookie(&res, true);
    let check = auth_check_on(&app, "example.com", &identity);
    assert_eq!(check.status(), 200);
    assert_eq!(
        header(&check, "x-invite-server-user").as_deref(),
        Some("frank@example.com")
    );
    // The same cookie does not pass another host's check: a proxy guarding
    // localhost's app must not let example.com's accounts in.
    assert_eq!(auth_check(&app, Some(&identity)).status(), 401);
    assert_eq!(
        auth_check_on(&app, &format!("127.0.0.1:{}", app.port), &identity).status(),
        401
    );
    // Nor does a forwarded-host header a client adds change which host that is.
    let spoofed = client()
        .get(format!("{}/api/auth/check", app.url))
        .header("X-Forwarded-Host", "example.com")
        .header("Forwarded", "host=example.com")
        .header(
            reqwest::header::COOKIE,
            format!("identity={identity}; __Host-identity={identity}"),
        )
        .send()
        .unwrap();
    assert_eq!(spoofed.status(), 401);
}

#[test]
fn an_unknown_name_and_a_wrong_password_answer_401_with_identical_bodies() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let mut bodies = Vec::new();
    for (name, password) in [
        ("alice", "wrong password entirely"),
        ("alice", ""),
        ("nobody", GOOD_PASSWORD),
        ("bad name!", GOOD_PASSWORD),
        ("alice@example.com", GOOD_PASSWORD),
        ("alice@nowhere.invalid", GOOD_PASSWORD),
    ] {
        let res = login(&app, name, password);
        assert_eq!(res.status(), 401, "{name}/{password}");
        assert!(set_cookie_line(&res, "identity").is_none(), "{name}");
        assert!(header(&res, "content-type")
            .unwrap()
            .starts_with("application/json"));
        bodies.push((name, res.text().unwrap()));
    }
    for (name, body) in &bodies {
        assert_eq!(body, &bodies[0].1, "{name} answers differently");
    }
    let v: Value = serde_json::from_str(&bodies[0].1).unwrap();
    assert_eq!(v["error"], "unauthorized");
    assert_eq!(probe::sessions(&app), 1, "a failed sign-in made a session");
}

#[test]
fn an_unknown_name_costs_as_much_time_as_a_wrong_password() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let median = |name: &str| {
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(login(&app, name, "not the password at all").status(), 401);
                t.elapsed()
            })
            .collect();
        times.sort();
        times[2]
    };
    let _ = median("nobody"); // the dummy hash is made on first use
    let (wrong, unknown) = (median("alice"), median("nobody"));
    // Without a dummy verification an unknown name answers ~100x faster.
    assert!(
        unknown * 4 >= wrong,
        "unknown name {unknown:?} vs wrong password {wrong:?}"
    );
}

#[test]
fn signing_in_with_a_malformed_request_answers_400_json() {
    let app = TestApp::spawn();
    let target = url(&app, "/api/auth/login");
    let cases = [
        (
            Some("text/plain"),
            r#"{"name":"a","password":"b"}"#,
            "wrong_content_type",
        ),
        (None, r#"{"name":"a","password":"b"}"#, "wrong_content_type"),
        (Some("application/json"), "{", "bad_json"),
        (Some("application/json"), "", "bad_json"),
        (Some("application/json"), "[]", "bad_json"),
        (Some("application/json"), r#"{"name":"a"}"#, "bad_fields"),
    ];
    for (ct, body, code) in cases {
        assert_api_error(post_raw(&target, ct, body), 400, code);
    }
}

#[test]
fn signing_out_answers_204_and_the_old_cookie_is_refused_even_when_sent_again() {
    let app = TestApp::spawn();
    let first = register_account(&app, "alice");
    let second = set_cookie_value(&login(&app, "alice", GOOD_PASSWORD), "identity").unwrap();
    assert_eq!(probe::sessions(&app), 2);
    let res = client()
        .post(url(&app, "/api/auth/logout"))
        .header(COOKIE, format!("identity={first}"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 204);
    let clear = set_cookie_line(&res, "identity").expect("the cookie was not cleared");
    assert!(
        clear.contains("Max-Age=0") || clear.contains("1970"),
        "{clear}"
    );
    assert!(clear.contains("Path=/"), "{clear}");
    assert_eq!(probe::sessions(&app), 1);
    for _ in 0..2 {
        let check = auth_check(&app, Some(&first));
        assert!(header(&check, "x-invite-server-user").is_none());
        assert_api_error(check, 401, "unauthorized");
    }
    assert_api_error(mint_with_cookie(&app, &first), 401, "unauthorized");
    // Only that session ended.
    assert_eq!(auth_check(&app, Some(&second)).status(), 200);
    // Signing out again, or without a cookie, is harmless.
    for cookie in [Some(first.as_str()), None] {
        let mut req = client().post(url(&app, "/api/auth/logout"));
        if let Some(c) = cookie {
            req = req.header(COOKIE, format!("identity={c}"));
        }
        assert_eq!(req.send().unwrap().status(), 204);
    }
    assert_eq!(probe::sessions(&app), 1);
}

#[test]
fn the_check_without_a_valid_cookie_answers_401_json() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let cases = [
        None,
        Some(String::new()),
        Some("garbage".to_owned()),
        Some("A".repeat(43)),
        Some("%00%01".to_owned()),
    ];
    for cookie in cases {
        let res = auth_check(&app, cookie.as_deref());
        assert!(header(&res, "x-invite-server-user").is_none(), "{cookie:?}");
        assert_api_error(res, 401, "unauthorized");
    }
    // A cookie of the same name for another purpose does not count either.
    let res = client()
        .get(url(&app, "/api/auth/check"))
        .header(
            COOKIE,
            "invite_csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .send()
        .unwrap();
    assert_api_error(res, 401, "unauthorized");
}

#[test]
fn a_session_unused_for_longer_than_the_idle_expiry_stops_working() {
    let app = TestApp::spawn_with(SHORT_SESSIONS);
    register_account(&app, "alice");
    let res = login(&app, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let line = set_cookie_line(&res, "identity").unwrap();
    // The browser keeps the cookie (400 days); the server ends idle sessions.
    assert!(line.contains("Max-Age=34560000"), "{line}");
    let identity = set_cookie_value(&res, "identity").unwrap();
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_api_error(auth_check(&app, Some(&identity)), 401, "unauthorized");
    assert_api_error(mint_with_cookie(&app, &identity), 401, "unauthorized");
    // The account itself is fine: signing in again works.
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 204);
}

#[test]
fn a_session_in_use_keeps_working_past_the_idle_expiry() {
    let app = TestApp::spawn_with(SHORT_SESSIONS);
    let identity = register_account(&app, "alice");
    // Used every 0.8 s for 4 s: never idle for 2 s.
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(
            auth_check(&app, Some(&identity)).status(),
            200,
            "refused after {} ms of steady use",
            (i + 1) * 800
        );
    }
}

#[test]
fn minting_with_a_cookie_needs_a_json_request_so_a_form_cannot_do_it() {
    let app = TestApp::spawn();
    let identity = register_account(&app, "grace");
    let before = probe::invites(&app);
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let mut req = client()
            .post(url(&app, "/api/invite"))
            .header(COOKIE, format!("identity={identity}"));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        assert_api_error(req.send().unwrap(), 400, "wrong_content_type");
    }
    assert_eq!(probe::invites(&app), before);
    assert_eq!(mint_with_cookie(&app, &identity).status(), 200);
}
