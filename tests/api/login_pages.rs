//! The pages for people who already have an account: `/login` (CSRF, wrong
//! passwords, limits, `?next=` and its open-redirect bypasses), `/account`
//! (password change, signing out other sessions) and `/logout`.

use reqwest::blocking::Response;

use crate::helpers::{
    accept_invite, auth_check, client, csrf_field, header, login, register_account,
    set_cookie_value, token_of, TestApp, DEFAULT_CONFIG, GOOD_PASSWORD,
};

const NEW_PASSWORD: &str = "orchid velvet harbour 57";

/// The default test configuration with top-level `settings` before it.
fn config_with(settings: &str) -> String {
    format!("{settings}\n{DEFAULT_CONFIG}")
}

/// A server whose sign-in limits stay out of the way of a test's many tries.
fn unlimited() -> TestApp {
    TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 0\nlogin_attempts_per_account_per_minute = 0",
    ))
}

/// `GET path` with `cookies` (a Cookie header's text, if any).
fn get(app: &TestApp, path: &str, cookies: &str) -> Response {
    let mut req = client().get(format!("{}{path}", app.url));
    if !cookies.is_empty() {
        req = req.header(reqwest::header::COOKIE, cookies);
    }
    req.send().unwrap()
}

/// `POST path` with a urlencoded form and `cookies`.
fn post_form(app: &TestApp, path: &str, cookies: &str, fields: &[(&str, &str)]) -> Response {
    let mut req = client().post(format!("{}{path}", app.url)).form(fields);
    if !cookies.is_empty() {
        req = req.header(reqwest::header::COOKIE, cookies);
    }
    req.send().unwrap()
}

/// A browser's state on a page with a form: its CSRF cookie and the form's tag.
struct Form {
    cookie: String,
    csrf: String,
}

/// Loads a page that carries a form (with `cookies` already held) and keeps
/// what posting it needs.
fn load_form(app: &TestApp, path: &str, cookies: &str) -> Form {
    let res = get(app, path, cookies);
    assert_eq!(res.status(), 200, "GET {path}");
    let nonce = set_cookie_value(&res, "invite_csrf").expect("no CSRF cookie");
    let html = res.text().unwrap();
    Form {
        cookie: format!("invite_csrf={nonce}"),
        csrf: csrf_field(&html),
    }
}

/// Signs in on the page with `next` and returns the answer.
fn sign_in_page(app: &TestApp, next: &str, name: &str, password: &str) -> Response {
    let form = load_form(app, "/login", "");
    post_form(
        app,
        "/login",
        &form.cookie,
        &[
            ("csrf", &form.csrf),
            ("name", name),
            ("password", password),
            ("next", next),
        ],
    )
}

fn location(res: &Response) -> String {
    header(res, "location").expect("no Location")
}

#[test]
fn the_sign_in_page_is_a_labelled_form_with_a_csrf_tag_and_the_security_headers() {
    let app = TestApp::spawn();
    let res = get(&app, "/login?next=/some/path", "");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
    assert_eq!(header(&res, "x-frame-options").as_deref(), Some("DENY"));
    let csp = header(&res, "content-security-policy").unwrap();
    assert!(
        csp.contains("form-action 'self';") && !csp.contains("script"),
        "{csp}"
    );
    let cookie = header(&res, "set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let html = res.text().unwrap();
    assert!(html.contains("Sign in to Test Site"), "{html}");
    assert!(html.contains("<label for=\"name\">") && html.contains("<label for=\"password\">"));
    assert!(
        html.contains("name=\"next\" value=\"/some/path\""),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert_eq!(csrf_field(&html).len(), 43);
}

#[test]
fn signing_in_on_the_page_goes_to_a_path_on_this_host_and_the_cookie_passes_the_check() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let res = sign_in_page(&app, "/some/path?x=1", "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/some/path?x=1");
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
    let identity = set_cookie_value(&res, "identity").expect("no identity cookie");
    assert_eq!(auth_check(&app, Some(&identity)).status(), 200);

    // Without a next, and with name@host, the account page is next.
    let res = sign_in_page(&app, "", "alice@localhost", GOOD_PASSWORD);
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account");
}

#[test]
fn no_next_leads_off_the_host_and_every_classic_bypass_lands_on_the_account_page() {
    let app = unlimited();
    register_account(&app, "alice");
    for next in [
        "//evil.test/x",
        "///evil.test",
        "/\\evil.test",
        "\\\\evil.test",
        "/\t/evil.test",
        "https://evil.test/",
        "http://evil.test",
        "https:evil.test",
        "https:/evil.test",
        "//evil.test@127.0.0.1/",
        "http://127.0.0.1@evil.test/",
        "http://user:pw@127.0.0.1/",
        "%2F%2Fevil.test",
        "/%2F..%2F/a/../..//evil.test",
        "javascript:alert(1)",
        "evil.test",
        "/\u{3000}/evil.test",
    ] {
        let res = sign_in_page(&app, next, "alice", GOOD_PASSWORD);
        assert_eq!(res.status(), 303, "{next:?}");
        assert_eq!(location(&res), "/account", "{next:?}");
    }
    // Percent-encoded `//` stays a path on this host.
    let res = sign_in_page(&app, "/%2F%2Fevil.test", "alice", GOOD_PASSWORD);
    assert_eq!(location(&res), "/%2F%2Fevil.test");
}

#[test]
fn an_origin_the_host_lists_in_allowed_redirects_is_honoured_and_may_receive_the_form() {
    let app = TestApp::spawn_with(&DEFAULT_CONFIG.replace(
        "site_name = \"Test Site\"",
        "site_name = \"Test Site\"\nallowed_redirects = [\"https://App.test\"]",
    ));
    register_account(&app, "alice");
    let res = sign_in_page(&app, "https://app.test/inbox?x=1", "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "https://app.test/inbox?x=1");
    // Another port or scheme of it is another origin.
    for next in ["https://app.test:444/", "http://app.test/"] {
        let res = sign_in_page(&app, next, "alice", GOOD_PASSWORD);
        assert_eq!(location(&res), "/account", "{next}");
    }
    // Browsers apply form-action to the redirect after the form.
    let csp = header(&get(&app, "/login", ""), "content-security-policy").unwrap();
    assert!(
        csp.contains("form-action 'self' https://app.test;"),
        "{csp}"
    );
}

#[test]
fn an_allowed_redirect_that_is_not_an_origin_is_refused_when_the_config_loads() {
    let app = TestApp::spawn();
    let config = app.dir.path().join("bad.toml");
    std::fs::write(
        &config,
        DEFAULT_CONFIG.replace("{port}", "1").replace(
            "site_name = \"Test Site\"",
            "allowed_redirects = [\"https://app.test/path\"]",
        ),
    )
    .unwrap();
    let out = crate::helpers::cli_at(&config, &app.db, &["keys", "list", "localhost"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = crate::helpers::stderr_of(&out);
    assert!(
        err.contains("allowed_redirects") && err.contains("origin"),
        "{err}"
    );
}

#[test]
fn a_wrong_password_brings_the_form_back_with_401_the_reason_and_the_name() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let res = sign_in_page(&app, "/x", "alice", "not the password at all");
    assert_eq!(res.status(), 401);
    assert!(set_cookie_value(&res, "identity").is_none());
    let html = res.text().unwrap();
    assert!(html.contains("Wrong name or password"), "{html}");
    assert!(html.contains("value=\"alice\""), "{html}");
    assert!(html.contains("name=\"next\" value=\"/x\""), "{html}");
    assert!(!html.contains("not the password"), "the password came back");
    // Unknown names read the same.
    let res = sign_in_page(&app, "", "nobody", GOOD_PASSWORD);
    assert_eq!(res.status(), 401);
}

#[test]
fn too_many_sign_ins_on_the_page_get_429_with_retry_after() {
    let app = TestApp::spawn_with(&config_with(
        "login_attempts_per_minute = 100\nlogin_attempts_per_account_per_minute = 2",
    ));
    register_account(&app, "alice");
    for _ in 0..2 {
        assert_eq!(
            sign_in_page(&app, "", "alice", "wrong wrong wrong").status(),
            401
        );
    }
    let res = sign_in_page(&app, "", "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 429);
    let wait: u64 = header(&res, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(res.text().unwrap().contains("Too many sign-in attempts"));
    // The page and the JSON API count against the same limit.
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 429);
}

#[test]
fn a_sign_in_form_without_its_csrf_tag_or_cookie_is_refused_with_403_and_signs_nobody_in() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let form = load_form(&app, "/login", "");
    for (cookie, csrf) in [
        ("", form.csrf.as_str()),
        (form.cookie.as_str(), ""),
        (
            form.cookie.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        (
            "invite_csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            form.csrf.as_str(),
        ),
    ] {
        let res = post_form(
            &app,
            "/login",
            cookie,
            &[
                ("csrf", csrf),
                ("name", "alice"),
                ("password", GOOD_PASSWORD),
            ],
        );
        assert_eq!(res.status(), 403, "{cookie:?} {csrf:?}");
        assert!(set_cookie_value(&res, "identity").is_none());
        assert!(res.text().unwrap().contains("came from another site"));
    }
    // A registration form's tag is not a sign-in form's.
    let page = app.mint();
    let invite = load_form(&app, &page[page.find("/invite").unwrap()..], &form.cookie);
    let res = post_form(
        &app,
        "/login",
        &form.cookie,
        &[
            ("csrf", &invite.csrf),
            ("name", "alice"),
            ("password", GOOD_PASSWORD),
        ],
    );
    assert_eq!(res.status(), 403);
    // Not a form at all.
    let res = client()
        .post(format!("{}/login", app.url))
        .json(&serde_json::json!({"name": "alice"}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
}

/// Registers `name` and returns the Cookie header text of its session.
fn session_of(app: &TestApp, name: &str) -> String {
    format!("identity={}", register_account(app, name))
}

/// The account page's form state for a signed-in browser: its cookies and tag.
fn account_form(app: &TestApp, session: &str) -> (String, String) {
    let form = load_form(app, "/account", session);
    (format!("{session}; {}", form.cookie), form.csrf)
}

#[test]
fn the_account_page_sends_strangers_to_sign_in_and_shows_the_address_to_its_owner() {
    let app = TestApp::spawn();
    for cookies in [
        "",
        "identity=not-a-token",
        "identity=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let res = get(&app, "/account", cookies);
        assert_eq!(res.status(), 303, "{cookies}");
        assert_eq!(location(&res), "/login?next=%2Faccount");
    }
    let session = session_of(&app, "alice");
    let res = get(&app, "/account", &session);
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "cache-control").as_deref(), Some("no-store"));
    let html = res.text().unwrap();
    assert!(html.contains("alice@localhost"), "{html}");
    for label in ["current", "password", "password2"] {
        assert!(
            html.contains(&format!("<label for=\"{label}\">")),
            "{label}"
        );
    }
    assert!(html.contains("action=\"/logout\""), "{html}");
}

#[test]
fn changing_the_password_on_the_account_page_needs_the_current_one_and_signs_out_other_sessions() {
    let app = unlimited();
    let this = session_of(&app, "alice");
    let other = login(&app, "alice", GOOD_PASSWORD);
    let other = set_cookie_value(&other, "identity").unwrap();
    let (cookies, csrf) = account_form(&app, &this);
    let change = |current: &str, new: &str, again: &str, csrf: &str| {
        post_form(
            &app,
            "/account/password",
            &cookies,
            &[
                ("csrf", csrf),
                ("current", current),
                ("password", new),
                ("password2", again),
            ],
        )
    };

    let res = change("wrong wrong wrong", NEW_PASSWORD, NEW_PASSWORD, &csrf);
    assert_eq!(res.status(), 401);
    assert!(res.text().unwrap().contains("current password is wrong"));
    let res = change(
        GOOD_PASSWORD,
        NEW_PASSWORD,
        "orchid velvet harbour 58",
        &csrf,
    );
    assert_eq!(res.status(), 400);
    assert!(res.text().unwrap().contains("differ"));
    let res = change(GOOD_PASSWORD, "short", "short", &csrf);
    assert_eq!(res.status(), 400);
    let res = change(GOOD_PASSWORD, NEW_PASSWORD, NEW_PASSWORD, "");
    assert_eq!(res.status(), 403);
    // Nothing so far changed anything.
    assert_eq!(auth_check(&app, Some(&other)).status(), 200);
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 204);

    let res = change(GOOD_PASSWORD, NEW_PASSWORD, NEW_PASSWORD, &csrf);
    assert_eq!(res.status(), 200);
    assert!(res.text().unwrap().contains("Your password was changed"));
    assert_eq!(
        auth_check(&app, Some(&other)).status(),
        401,
        "another session lives on"
    );
    let this_token = this.trim_start_matches("identity=");
    assert_eq!(auth_check(&app, Some(this_token)).status(), 200);
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 401);
    assert_eq!(login(&app, "alice", NEW_PASSWORD).status(), 204);
}

#[test]
fn signing_out_everywhere_else_keeps_this_session_and_the_password() {
    let app = TestApp::spawn();
    let this = session_of(&app, "alice");
    let other = set_cookie_value(&login(&app, "alice", GOOD_PASSWORD), "identity").unwrap();
    let (cookies, csrf) = account_form(&app, &this);
    let res = post_form(&app, "/account/sessions", &cookies, &[("csrf", "")]);
    assert_eq!(res.status(), 403);
    assert_eq!(auth_check(&app, Some(&other)).status(), 200);
    let res = post_form(&app, "/account/sessions", &cookies, &[("csrf", &csrf)]);
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .unwrap()
        .contains("Every other session was signed out"));
    assert_eq!(auth_check(&app, Some(&other)).status(), 401);
    assert_eq!(
        auth_check(&app, Some(this.trim_start_matches("identity="))).status(),
        200
    );
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 204);
    // Not signed in: to the sign-in page, nothing done.
    let res = post_form(&app, "/account/sessions", "", &[("csrf", &csrf)]);
    assert_eq!(res.status(), 303);
}

#[test]
fn signing_out_needs_the_account_pages_tag_then_ends_the_session_and_goes_to_sign_in() {
    let app = TestApp::spawn();
    let this = session_of(&app, "alice");
    let token = this.trim_start_matches("identity=").to_owned();
    let (cookies, csrf) = account_form(&app, &this);
    let res = post_form(&app, "/logout", &cookies, &[("csrf", "forged")]);
    assert_eq!(res.status(), 403);
    assert_eq!(auth_check(&app, Some(&token)).status(), 200);

    let res = post_form(&app, "/logout", &cookies, &[("csrf", &csrf)]);
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login");
    let cleared = crate::helpers::set_cookie_line(&res, "identity").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(auth_check(&app, Some(&token)).status(), 401);
    // Signed out already: the same answer, nothing to forge.
    let res = post_form(&app, "/logout", "", &[]);
    assert_eq!(res.status(), 303);
    assert_eq!(get(&app, "/logout", "").status(), 405);
}

#[test]
fn a_used_invites_page_links_to_the_sign_in_page() {
    let app = TestApp::spawn();
    let page = app.mint();
    assert_eq!(
        accept_invite(&app, &token_of(&page), "alice", GOOD_PASSWORD).status(),
        204
    );
    let res = client().get(&page).send().unwrap();
    assert_eq!(res.status(), 410);
    let html = res.text().unwrap();
    assert!(html.contains("href=\"/login\""), "{html}");
}

#[test]
fn an_account_page_tag_works_only_for_the_session_it_was_shown_to() {
    // A sibling site on an http host can plant the nonce cookie and get a tag
    // for its own session; that tag must sign nothing for another session.
    let app = TestApp::spawn();
    let mallory = session_of(&app, "mallory");
    let (mallory_cookies, mallory_tag) = account_form(&app, &mallory);
    let nonce_cookie = mallory_cookies
        .split("; ")
        .find(|c| c.starts_with("invite_csrf="))
        .expect("the nonce cookie")
        .to_owned();
    let alice = session_of(&app, "alice");
    let alice_token = alice.trim_start_matches("identity=").to_owned();
    let planted = format!("{alice}; {nonce_cookie}");
    let res = post_form(&app, "/logout", &planted, &[("csrf", &mallory_tag)]);
    assert_eq!(res.status(), 403);
    assert_eq!(auth_check(&app, Some(&alice_token)).status(), 200);
}
