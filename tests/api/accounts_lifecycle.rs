//! The account lifecycle (issue 9): who invited an account, `accounts show`,
//! `disable`/`enable`, `passwd`, `delete` revoking what the account minted,
//! and password-reset invites, all through the CLI and HTTP.

use std::process::Output;

use serde_json::Value;

use crate::helpers::{
    accept_invite, auth_check, client, login, mint_for, register_account, token_of, TestApp,
    GOOD_PASSWORD,
};
use crate::helpers::{stderr_of as stderr, stdout_of as stdout};
use crate::probe;

const NEW_PASSWORD: &str = "marble orchid vessel 58";

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    stdout(out)
}

fn fails_with(out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr(out).contains(message), "{message:?} not in {out:?}");
    assert_eq!(stdout(out), "", "output on failure");
}

fn accounts_json(app: &TestApp) -> Vec<Value> {
    let out = app.cli(&["accounts", "list", "localhost", "--json"]);
    let list: Value = serde_json::from_str(&ok(&out)).expect("JSON");
    list.as_array().expect("an array").clone()
}

fn by_name<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list:?}"))
}

/// Mints an invite as the signed-in account; returns its token.
fn mint_as(app: &TestApp, identity: &str) -> String {
    let res = client()
        .post(format!("{}/api/invite", app.url))
        .header("cookie", format!("identity={identity}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().unwrap();
    body["id"].as_str().unwrap().to_owned()
}

fn cli_invite(app: &TestApp) -> String {
    let out = app.cli(&["invites", "create", "localhost"]);
    token_of(ok(&out).trim())
}

fn create_account(app: &TestApp, name: &str) {
    let out = app.cli_with_stdin(
        &["accounts", "create", "localhost", name, "--password-stdin"],
        Some(&format!("{GOOD_PASSWORD}\n")),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

// ------------------------------------------------------- list --json and show

#[test]
fn accounts_list_json_tells_who_invited_each_account_and_with_which_invite() {
    let app = TestApp::spawn();
    create_account(&app, "carol");
    let (key, url) = mint_for(&app, "localhost");
    let key_id = key.split('/').next().unwrap();
    assert_eq!(
        accept_invite(&app, &token_of(&url), "alice", GOOD_PASSWORD).status(),
        204
    );
    let alice = login(&app, "alice", GOOD_PASSWORD);
    let alice = crate::helpers::set_cookie_value(&alice, "identity").unwrap();
    let from_alice = mint_as(&app, &alice);
    assert_eq!(
        accept_invite(&app, &from_alice, "bob", GOOD_PASSWORD).status(),
        204
    );
    assert_eq!(
        accept_invite(&app, &cli_invite(&app), "dave", GOOD_PASSWORD).status(),
        204
    );

    let list = accounts_json(&app);
    assert_eq!(
        by_name(&list, "alice")["invited_by"],
        format!("key {key_id}")
    );
    assert_eq!(by_name(&list, "bob")["invited_by"], "account alice");
    // `cli` twice: with an invite id from `invites create`, without one
    // from `accounts create`.
    assert_eq!(by_name(&list, "carol")["invited_by"], "cli");
    assert_eq!(by_name(&list, "carol")["invite_id"], Value::Null);
    assert_eq!(by_name(&list, "dave")["invited_by"], "cli");
    for name in ["alice", "bob", "dave"] {
        let id = by_name(&list, name)["invite_id"]
            .as_str()
            .expect("an invite id");
        assert_eq!(id.len(), 13, "{id}");
        // Not part of the token: the id does not let anyone register.
        assert!(!url.contains(id) && !from_alice.contains(id), "{id}");
    }
    for a in &list {
        assert_eq!(a["disabled"], false, "{a}");
        assert_eq!(a["host"], "localhost");
        assert!(a["created_at"].as_str().unwrap().ends_with('Z'), "{a}");
    }
    // The plain lines keep their three fields.
    let lines = ok(&app.cli(&["accounts", "list", "localhost"]));
    assert!(lines.contains("bob\t"), "{lines}");
    assert!(lines.lines().all(|l| l.split('\t').count() == 3), "{lines}");
}

#[test]
fn accounts_show_prints_the_chain_and_keeps_it_after_the_invite_is_gone() {
    let app = TestApp::spawn();
    let (key, url) = mint_for(&app, "localhost");
    let key_id = key.split('/').next().unwrap();
    assert_eq!(
        accept_invite(&app, &token_of(&url), "alice", GOOD_PASSWORD).status(),
        204
    );
    let show = |json: bool| {
        let mut args = vec!["accounts", "show", "localhost", "alice"];
        if json {
            args.push("--json");
        }
        ok(&app.cli(&args))
    };
    let before: Value = serde_json::from_str(&show(true)).unwrap();
    assert_eq!(before["invited_by"], format!("key {key_id}"));
    let invite_id = before["invite_id"].as_str().unwrap().to_owned();
    let minted = before["invite_minted_at"].as_str().expect("minted at");
    let registered = before["registered_at"].as_str().unwrap();
    assert!(minted <= registered, "{before}");
    let text = show(false);
    for line in [
        "account\talice@localhost".to_owned(),
        format!("invite\t{invite_id}"),
        format!("invited by\tkey {key_id}"),
        format!("invite minted\t{minted}"),
        format!("registered\t{registered}"),
        "disabled\t-".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in {text}");
    }

    // Purged: the invite row goes, the chain stays.
    ok(&app.cli(&["invites", "purge", "localhost", "--older-than", "0"]));
    assert!(
        probe::invite(&app, &token_of(&url)).is_none(),
        "the invite was purged"
    );
    let mut after: Value = serde_json::from_str(&show(true)).unwrap();
    // Now known from the invite id, to the millisecond.
    let kept = after["invite_minted_at"].take();
    assert_eq!(kept.as_str().unwrap()[..23], minted[..23], "{kept}");
    let mut before = before.clone();
    before["invite_minted_at"] = Value::Null;
    assert_eq!(after, before);

    fails_with(
        &app.cli(&["accounts", "show", "localhost", "nobody"]),
        "Error: account not found",
    );
}

// ---------------------------------------------------------- disable, enable

#[test]
fn a_disabled_account_cannot_sign_in_and_its_sessions_end_until_it_is_enabled() {
    let app = TestApp::spawn();
    let identity = register_account(&app, "alice");
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);

    assert_eq!(
        ok(&app.cli(&["accounts", "disable", "localhost", "alice"])),
        ""
    );
    // Refused on the very next request, by the session lookup itself.
    assert_eq!(auth_check(&app, Some(&identity)).status(), 401);
    let res = login(&app, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 401);
    let body: Value = res.json().unwrap();
    // The same answer as a wrong password: it tells no one the account exists.
    assert_eq!(body["message"], "wrong name or password");
    let listed = accounts_json(&app);
    assert_eq!(by_name(&listed, "alice")["disabled"], true);
    // Twice is fine.
    ok(&app.cli(&["accounts", "disable", "localhost", "alice"]));

    assert_eq!(
        ok(&app.cli(&["accounts", "enable", "localhost", "alice"])),
        ""
    );
    // The old session stays ended; signing in works again.
    assert_eq!(auth_check(&app, Some(&identity)).status(), 401);
    let res = login(&app, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let fresh = crate::helpers::set_cookie_value(&res, "identity").unwrap();
    assert_eq!(auth_check(&app, Some(&fresh)).status(), 200);
    assert_eq!(by_name(&accounts_json(&app), "alice")["disabled"], false);

    for cmd in ["disable", "enable"] {
        fails_with(
            &app.cli(&["accounts", cmd, "localhost", "nobody"]),
            "Error: account not found",
        );
    }
}

// ------------------------------------------------------------------- passwd

#[test]
fn accounts_passwd_sets_the_password_and_ends_every_session() {
    let app = TestApp::spawn();
    let identity = register_account(&app, "alice");
    let out = app.cli_with_stdin(
        &[
            "accounts",
            "passwd",
            "localhost",
            "alice",
            "--password-stdin",
        ],
        Some(&format!("{NEW_PASSWORD}\n")),
    );
    assert_eq!(ok(&out), "");
    assert_eq!(auth_check(&app, Some(&identity)).status(), 401);
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 401);
    assert_eq!(login(&app, "alice", NEW_PASSWORD).status(), 204);
}

#[test]
fn accounts_passwd_refuses_a_weak_password_an_unknown_name_and_a_missing_terminal() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let passwd = |name: &str, stdin: Option<&str>, flag: bool| {
        let mut args = vec!["accounts", "passwd", "localhost", name];
        if flag {
            args.push("--password-stdin");
        }
        app.cli_with_stdin(&args, stdin)
    };
    fails_with(&passwd("alice", Some("short\n"), true), "Error: ");
    fails_with(
        &passwd("nobody", Some(&format!("{NEW_PASSWORD}\n")), true),
        "Error: account not found",
    );
    fails_with(
        &passwd("alice", Some(&format!("{NEW_PASSWORD}\n")), false),
        "no terminal to ask for the password on: pipe it in with --password-stdin",
    );
    // Nothing changed.
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 204);
}

// ------------------------------------------------------------------- delete

#[test]
fn deleting_an_account_revokes_the_pending_invites_it_minted_and_no_others() {
    let app = TestApp::spawn();
    let alice = register_account(&app, "alice");
    let pending = mint_as(&app, &alice);
    let spent = mint_as(&app, &alice);
    assert_eq!(
        accept_invite(&app, &spent, "bob", GOOD_PASSWORD).status(),
        204
    );
    let (_, from_key) = mint_for(&app, "localhost");

    assert_eq!(
        ok(&app.cli(&["accounts", "delete", "localhost", "alice"])),
        ""
    );
    assert_eq!(auth_check(&app, Some(&alice)).status(), 401);
    let page = client()
        .get(format!("{}/api/invite/{pending}", app.url))
        .send()
        .unwrap();
    assert_eq!(page.status(), 404);
    assert_eq!(
        accept_invite(&app, &pending, "carol", GOOD_PASSWORD).status(),
        404
    );
    // bob, whom alice invited, stays; so does an invite minted with a key.
    assert_eq!(login(&app, "bob", GOOD_PASSWORD).status(), 204);
    assert_eq!(
        by_name(&accounts_json(&app), "bob")["invited_by"],
        "account alice"
    );
    assert_eq!(
        accept_invite(&app, &token_of(&from_key), "dave", GOOD_PASSWORD).status(),
        204
    );
    fails_with(
        &app.cli(&["accounts", "delete", "localhost", "alice"]),
        "Error: account not found",
    );
}

// ------------------------------------------------------------- reset invites

fn mint_reset(app: &TestApp, account: &str, extra: &[&str]) -> Output {
    let mut args = vec!["invites", "reset", "localhost", account];
    args.extend_from_slice(extra);
    app.cli(&args)
}

/// Opens a page and returns its HTML and CSRF cookie.
fn open_page(url: &str) -> (u16, String, Option<String>) {
    let res = client().get(url).send().unwrap();
    let status = res.status().as_u16();
    let cookie = crate::helpers::set_cookie_value(&res, "invite_csrf");
    (status, res.text().unwrap(), cookie)
}

fn post_reset_form(
    url: &str,
    cookie: &str,
    csrf: &str,
    password: &str,
    again: &str,
) -> reqwest::blocking::Response {
    let body =
        serde_urlencoded::to_string([("csrf", csrf), ("password", password), ("password2", again)])
            .unwrap();
    client()
        .post(url)
        .header("cookie", format!("invite_csrf={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .unwrap()
}

#[test]
fn a_reset_invite_page_sets_the_password_ends_other_sessions_and_signs_in_once() {
    let app = TestApp::spawn();
    let old_session = register_account(&app, "alice");
    let url = ok(&mint_reset(&app, "alice", &[])).trim().to_owned();
    assert_eq!(ok(&mint_reset(&app, "alice", &[])).lines().count(), 1);

    let (status, html, cookie) = open_page(&url);
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("alice@localhost"), "{html}");
    assert!(!html.contains("name=\"name\""), "asks for a name: {html}");
    assert_eq!(html.matches("type=\"password\"").count(), 2, "{html}");
    let cookie = cookie.expect("a CSRF cookie");
    let csrf = crate::helpers::csrf_field(&html);

    // A forged form and differing passwords change nothing.
    let forged = post_reset_form(&url, &cookie, "forged", NEW_PASSWORD, NEW_PASSWORD);
    assert_eq!(forged.status(), 403);
    let differ = post_reset_form(&url, &cookie, &csrf, NEW_PASSWORD, GOOD_PASSWORD);
    assert_eq!(differ.status(), 400);
    let weak = post_reset_form(&url, &cookie, &csrf, "short", "short");
    assert_eq!(weak.status(), 400);
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 204);

    let res = post_reset_form(&url, &cookie, &csrf, NEW_PASSWORD, NEW_PASSWORD);
    assert_eq!(res.status(), 200);
    let identity = crate::helpers::set_cookie_value(&res, "identity").expect("signed in");
    assert!(res.text().unwrap().contains("alice@localhost"));
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    assert_eq!(auth_check(&app, Some(&old_session)).status(), 401);
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 401);
    assert_eq!(login(&app, "alice", NEW_PASSWORD).status(), 204);
    // Used up.
    assert_eq!(open_page(&url).0, 410);
    let again = post_reset_form(&url, &cookie, &csrf, GOOD_PASSWORD, GOOD_PASSWORD);
    assert_eq!(again.status(), 410);
    assert_eq!(login(&app, "alice", NEW_PASSWORD).status(), 204);
}

fn post_json(app: &TestApp, token: &str, body: Value) -> reqwest::blocking::Response {
    client()
        .post(format!("{}/api/invite/{token}", app.url))
        .json(&body)
        .send()
        .unwrap()
}

#[test]
fn a_reset_invite_over_json_takes_only_a_password_and_answers_204_with_a_cookie() {
    let app = TestApp::spawn();
    let old_session = register_account(&app, "alice");
    let reset = token_of(ok(&mint_reset(&app, "alice", &["--ttl", "2h"])).trim());

    let with_name = post_json(
        &app,
        &reset,
        serde_json::json!({ "name": "mallory", "password": NEW_PASSWORD }),
    );
    assert_eq!(with_name.status(), 400);
    let body: Value = with_name.json().unwrap();
    assert_eq!(body["error"], "reset_invite", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("password"),
        "{body}"
    );

    // A password alone on an invite that creates accounts: 400, still usable.
    let (_, account_invite) = mint_for(&app, "localhost");
    let account_invite = token_of(&account_invite);
    let alone = post_json(
        &app,
        &account_invite,
        serde_json::json!({ "password": NEW_PASSWORD }),
    );
    assert_eq!(alone.status(), 400);
    assert_eq!(
        accept_invite(&app, &account_invite, "bob", GOOD_PASSWORD).status(),
        204
    );

    let res = post_json(
        &app,
        &reset,
        serde_json::json!({ "password": NEW_PASSWORD }),
    );
    assert_eq!(res.status(), 204);
    let identity = crate::helpers::set_cookie_value(&res, "identity").expect("cookie");
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    assert_eq!(auth_check(&app, Some(&old_session)).status(), 401);
    assert_eq!(login(&app, "alice", NEW_PASSWORD).status(), 204);
    let twice = post_json(
        &app,
        &reset,
        serde_json::json!({ "password": GOOD_PASSWORD }),
    );
    assert_eq!(twice.status(), 404);
    // No account was made from it.
    let names: Vec<_> = accounts_json(&app)
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[test]
fn invites_reset_refuses_an_unknown_account_and_a_bad_ttl() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    fails_with(&mint_reset(&app, "nobody", &[]), "Error: account not found");
    let bad = mint_reset(&app, "alice", &["--ttl", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(stderr(&bad).contains("--ttl"), "{bad:?}");
}

#[test]
fn a_reset_invite_in_headless_chromium_sets_the_password_and_signs_the_browser_in() {
    use crate::browser::{fill, registered_address, runtime, submit, ChromeDriver};
    use fantoccini::Locator;

    let app = TestApp::spawn();
    let old_session = register_account(&app, "alice");
    let url = ok(&mint_reset(&app, "alice", &[])).trim().to_owned();
    let driver = ChromeDriver::start();
    let identity = runtime().block_on(async {
        let c = driver.session().await;
        c.goto(&url).await.unwrap();
        let lead = c.find(Locator::Css("p.lead")).await.unwrap();
        assert!(lead.text().await.unwrap().contains("alice@localhost"));
        assert!(
            c.find(Locator::Css("input[name=\"name\"]")).await.is_err(),
            "the reset page asks for a name"
        );
        fill(&c, "password", NEW_PASSWORD).await;
        fill(&c, "password2", NEW_PASSWORD).await;
        submit(&c).await;
        // The form page shows the address too: wait for the page that
        // answers the POST before reading it (and the cookie it set).
        c.wait()
            .at_most(std::time::Duration::from_secs(30))
            .for_element(Locator::XPath("//h1[text()='Your password is changed']"))
            .await
            .expect("the page saying the password changed did not appear");
        assert_eq!(registered_address(&c).await, "alice@localhost");
        let cookie = c
            .get_named_cookie("identity")
            .await
            .expect("the browser is not signed in");
        c.close().await.unwrap();
        cookie.value().to_owned()
    });
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);
    assert_eq!(auth_check(&app, Some(&old_session)).status(), 401);
    assert_eq!(login(&app, "alice", NEW_PASSWORD).status(), 204);
}

#[test]
fn a_reset_invite_dies_with_its_account_and_never_resets_the_next_one_to_get_its_row() {
    let app = TestApp::spawn();
    create_account(&app, "alice");
    let reset = token_of(ok(&mint_reset(&app, "alice", &[])).trim());
    ok(&app.cli(&["accounts", "delete", "localhost", "alice"]));
    // SQLite hands the deleted account's row id to the next account.
    register_account(&app, "bob");
    let res = post_json(
        &app,
        &reset,
        serde_json::json!({ "password": NEW_PASSWORD }),
    );
    assert_eq!(
        res.status(),
        404,
        "a deleted account's reset invite must not work"
    );
    // Bob's password is still his own.
    assert_eq!(login(&app, "bob", GOOD_PASSWORD).status(), 204);
    assert_eq!(login(&app, "bob", NEW_PASSWORD).status(), 401);
}
