//! The invite landing page (`GET /invite?TOKEN`) and web registration
//! (`POST` to the same URL), as a person with a browser meets them.

use std::sync::{Arc, Barrier};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::blocking::Response;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST};

use crate::helpers::{
    accept_invite, accept_invite_on, auth_check, auth_check_on, client, header, mint_for,
    set_cookie_line, set_cookie_value, token_of, TestApp, GOOD_PASSWORD,
};
use crate::probe;

/// A host whose invites run out one second after they are made.
const SHORT_EXPIRY: &str = r#"
[hosts."localhost"]
public_url = "http://127.0.0.1:{port}"
site_name = "Test Site"
invite_expiry = "1s"
"#;

/// What the form page hands a browser: its CSRF cookie and hidden field.
struct Form {
    cookie: String,
    field: String,
}

/// A header the answer must have.
fn required_header(res: &Response, name: &str) -> String {
    header(res, name).unwrap_or_else(|| panic!("no {name} header"))
}

/// The value of `<input ... name="NAME" ... value="...">` in a page.
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.find("value=\"")? + "value=\"".len();
    Some(tag[v..v + tag[v..].find('"')?].to_owned())
}

/// Loads the page at `url` like a browser would.
fn open_form(url: &str) -> Form {
    open_form_on(url, None)
}

/// Loads the page at `url`, addressed (by its `Host` header) to `host` if given.
fn open_form_on(url: &str, host: Option<&str>) -> Form {
    let mut req = client().get(url);
    if let Some(h) = host {
        req = req.header(HOST, h);
    }
    let res = req.send().unwrap();
    assert_eq!(res.status(), 200, "the invite page did not open");
    // `__Host-invite_csrf` on https hosts, `invite_csrf` on http ones.
    let cookie = set_cookie_value(&res, "invite_csrf")
        .or_else(|| set_cookie_value(&res, "__Host-invite_csrf"))
        .expect("no CSRF cookie");
    let html = res.text().unwrap();
    let field = input_value(&html, "csrf").expect("no csrf field");
    Form { cookie, field }
}

/// Posts the registration form with an optional CSRF cookie.
fn post_form(url: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Response {
    post_form_on(url, None, cookie, fields)
}

/// Posts the registration form, addressed to `host` if given.
fn post_form_on(
    url: &str,
    host: Option<&str>,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> Response {
    let mut req = client().post(url).form(fields);
    if let Some(h) = host {
        req = req.header(HOST, h);
    }
    if let Some(c) = cookie {
        // Under both names: the server reads the one its host uses.
        req = req.header(COOKIE, format!("invite_csrf={c}; __Host-invite_csrf={c}"));
    }
    req.send().unwrap()
}

/// Opens the page and submits the form as a browser would.
fn register(url: &str, name: &str, password: &str, password2: &str) -> Response {
    register_on(url, None, name, password, password2)
}

/// [`register`], addressed to `host` if given.
fn register_on(
    url: &str,
    host: Option<&str>,
    name: &str,
    password: &str,
    password2: &str,
) -> Response {
    let form = open_form_on(url, host);
    post_form_on(
        url,
        host,
        Some(&form.cookie),
        &[
            ("csrf", &form.field),
            ("name", name),
            ("password", password),
            ("password2", password2),
        ],
    )
}

/// `(used_at, used_by, source, issuer_name, expires_at)` of an invite.
type InviteRow = (Option<i64>, Option<i64>, String, Option<String>, i64);

fn invite_row(app: &TestApp, page_url: &str) -> InviteRow {
    let token = token_of(page_url);
    let invite = probe::invite(app, &token).expect("invite row");
    let (used_at, used_by) = probe::used_up(app, &token);
    (
        used_at,
        used_by,
        invite.source,
        invite.issuer_name,
        invite.expires_at.timestamp_micros(),
    )
}

fn assert_unused(app: &TestApp, page_url: &str) {
    let (used_at, used_by, ..) = invite_row(app, page_url);
    assert_eq!((used_at, used_by), (None, None), "the invite was consumed");
}

/// Every page: a strict CSP, no sniffing, no referrer.
fn assert_page_security_headers(res: &Response) {
    let csp = required_header(res, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "weak CSP: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains('*'),
        "{csp}"
    );
    assert_eq!(required_header(res, "x-content-type-options"), "nosniff");
    assert_eq!(required_header(res, "referrer-policy"), "no-referrer");
}

/// Pages carrying a token: all of the above, and never cached.
fn assert_token_page_headers(res: &Response) {
    assert_page_security_headers(res);
    assert_eq!(required_header(res, "cache-control"), "no-store");
    assert!(required_header(res, "content-type").starts_with("text/html"));
}

/// A page without its QR code, for failure messages.
fn excerpt(html: &str) -> String {
    match (html.find("<svg"), html.find("</svg>")) {
        (Some(a), Some(b)) => format!("{}<svg>…{}", &html[..a], &html[b..]),
        _ => html.to_owned(),
    }
}

/// The values of every `src="..."` and `href="..."` attribute of a page.
fn linked_urls(html: &str) -> Vec<String> {
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\"", "src='", "href='", "action=\""] {
        let quote = attr.chars().last().unwrap();
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find(quote).unwrap_or(rest.len());
            urls.push(rest[..end].to_owned());
        }
    }
    urls
}

fn assert_loads_nothing_from_elsewhere(app: &TestApp, html: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "the page has a script");
    assert!(!lower.contains("<iframe"), "the page has an iframe");
    assert!(!lower.contains("@import"), "the page imports CSS");
    for url in linked_urls(html) {
        let absolute = url.starts_with("//") || url.contains("://");
        assert!(
            !absolute || url.starts_with(&format!("{}/", app.url)),
            "the page links {url:?} on another origin"
        );
    }
}

// ------------------------------------------------------------ landing page

#[test]
fn the_landing_page_shows_the_site_the_inviter_the_expiry_the_form_and_a_qr_code() {
    let app = TestApp::spawn();
    let url = app.mint();
    let res = client().get(&url).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_token_page_headers(&res);
    let csrf_line = set_cookie_line(&res, "invite_csrf").expect("no CSRF cookie");
    assert!(csrf_line.contains("HttpOnly"), "{csrf_line}");
    assert!(csrf_line.contains("SameSite=Strict"), "{csrf_line}");
    assert!(!csrf_line.contains("Secure"), "http host: {csrf_line}");
    let html = res.text().unwrap();

    assert!(html.contains("Test Site"), "no site name");
    // The key's name ("test key") is the operator's label: invitees of a key
    // see the site.
    assert!(
        html.contains("The administrators of Test Site invited you."),
        "no inviter"
    );
    assert!(!html.contains("test key"), "the key's name is shown");
    assert!(html.contains("@localhost"), "no address host");
    let (.., expires_at) = invite_row(&app, &url);
    let expires = DateTime::<Utc>::from_timestamp_micros(expires_at).unwrap();
    let iso = expires.to_rfc3339_opts(SecondsFormat::Secs, true);
    assert!(
        html.contains(&format!("datetime=\"{iso}\"")),
        "no expiry {iso}"
    );
    let human = expires.format("%-d %B %Y at %H:%M UTC").to_string();
    assert!(html.contains(&human), "no readable expiry {human}");

    assert!(html.contains("<form method=\"post\""), "no POST form");
    for field in ["name", "password", "password2"] {
        assert!(
            html.contains(&format!("name=\"{field}\"")),
            "no {field} field"
        );
    }
    assert!(html.contains("type=\"password\""));
    let csrf = input_value(&html, "csrf").expect("no csrf field");
    assert!(html.contains("type=\"hidden\" name=\"csrf\""));
    assert!(csrf.len() >= 32, "short CSRF token {csrf}");
    assert!(html.contains("<svg"), "no inline QR code");
    assert!(!html.contains("<?xml"), "an XML declaration inside HTML");
    assert!(html.contains("name=\"viewport\""), "not made for phones");
}

#[test]
fn the_landing_page_runs_no_script_and_loads_nothing_from_other_sites() {
    let app = TestApp::spawn();
    let html = client().get(app.mint()).send().unwrap().text().unwrap();
    assert_loads_nothing_from_elsewhere(&app, &html);
    assert!(
        linked_urls(&html).iter().any(|u| u == "/static/style.css"),
        "the page has no stylesheet of its own"
    );
    let css = client()
        .get(format!("{}/static/style.css", app.url))
        .send()
        .unwrap();
    assert_eq!(css.status(), 200);
    assert!(required_header(&css, "content-type").starts_with("text/css"));
    let css = css.text().unwrap();
    assert!(!css.contains("@import") && !css.contains("url("), "{css}");
}

#[test]
fn two_browsers_get_different_csrf_tokens_and_a_returning_one_keeps_its_own() {
    let app = TestApp::spawn();
    let url = app.mint();
    let (a, b) = (open_form(&url), open_form(&url));
    assert_ne!(a.cookie, b.cookie);
    assert_ne!(a.field, b.field);
    // The field is signed by the server, not a copy of the cookie.
    assert_ne!(a.cookie, a.field);
    let again = client()
        .get(&url)
        .header(COOKIE, format!("invite_csrf={}", a.cookie))
        .send()
        .unwrap();
    assert_eq!(
        set_cookie_value(&again, "invite_csrf").as_deref(),
        Some(a.cookie.as_str())
    );
    assert_eq!(
        input_value(&again.text().unwrap(), "csrf").as_deref(),
        Some(a.field.as_str())
    );
}

#[test]
fn viewing_the_landing_page_changes_nothing() {
    let app = TestApp::spawn();
    let url = app.mint();
    let before = invite_row(&app, &url);
    for _ in 0..3 {
        assert_eq!(client().get(&url).send().unwrap().status(), 200);
    }
    assert_eq!(client().head(&url).send().unwrap().status(), 200);
    assert_eq!(invite_row(&app, &url), before);
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(probe::sessions(&app), 0);
    assert_eq!(probe::invites(&app), 1);
    // And it is still good for registering.
    assert_eq!(
        register(&url, "viewer", GOOD_PASSWORD, GOOD_PASSWORD).status(),
        200
    );
}

#[test]
fn an_unknown_or_malformed_token_gets_a_404_page() {
    let app = TestApp::spawn();
    let _ = app.mint();
    for query in [
        "?AAAAAAAAAAAAAAAAAAAAAAAA",
        "?not a token",
        "",
        "?",
        "?x=1&y=2",
    ] {
        let res = client()
            .get(format!("{}/invite{query}", app.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 404, "{query:?}");
        assert_token_page_headers(&res);
        let html = res.text().unwrap();
        assert!(
            html.contains("Invite not found"),
            "{query:?}: {}",
            excerpt(&html)
        );
        assert!(!html.to_ascii_lowercase().contains("<form"), "{query:?}");
    }
}

#[test]
fn a_used_invite_gets_a_410_page_that_says_it_was_used_and_whom_to_ask() {
    let app = TestApp::spawn();
    let url = app.mint();
    assert_eq!(
        accept_invite(&app, &token_of(&url), "first", GOOD_PASSWORD).status(),
        204
    );
    let res = client().get(&url).send().unwrap();
    assert_eq!(res.status(), 410);
    assert_token_page_headers(&res);
    let html = res.text().unwrap();
    assert!(html.contains("already been used"), "{}", excerpt(&html));
    assert!(
        html.contains("ask the person who invited you"),
        "{}",
        excerpt(&html)
    );
    assert!(!html.contains("expired"), "{}", excerpt(&html));
    assert!(
        !html.contains("<form"),
        "a used invite still shows the form"
    );
    assert!(html.contains("Test Site"), "{}", excerpt(&html));
}

#[test]
fn an_expired_invite_gets_a_410_page_that_says_it_expired_and_cannot_be_registered() {
    let app = TestApp::spawn_with(SHORT_EXPIRY);
    let url = app.mint();
    let form = open_form(&url);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let res = client().get(&url).send().unwrap();
    assert_eq!(res.status(), 410);
    assert_token_page_headers(&res);
    let html = res.text().unwrap();
    assert!(html.contains("expired"), "{}", excerpt(&html));
    assert!(!html.contains("already been used"), "{}", excerpt(&html));
    assert!(
        html.to_ascii_lowercase()
            .contains("ask the person who invited you"),
        "{}",
        excerpt(&html)
    );
    // A form loaded in time and sent too late creates nothing.
    let late = post_form(
        &url,
        Some(&form.cookie),
        &[
            ("csrf", &form.field),
            ("name", "late"),
            ("password", GOOD_PASSWORD),
            ("password2", GOOD_PASSWORD),
        ],
    );
    assert_eq!(late.status(), 410);
    assert!(late.text().unwrap().contains("expired"));
    assert_eq!(probe::accounts(&app), 0);
    assert_unused(&app, &url);
}

// ------------------------------------------------------- web registration

#[test]
fn registering_through_the_form_creates_the_account_uses_the_invite_and_signs_in() {
    let app = TestApp::spawn();
    let url = app.mint();
    let res = register(&url, "alice", GOOD_PASSWORD, GOOD_PASSWORD);
    assert_eq!(res.status(), 200);
    assert_token_page_headers(&res);
    let identity = set_cookie_line(&res, "identity").expect("no identity cookie");
    let attrs: Vec<&str> = identity.split(';').map(str::trim).collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing: {identity}");
    }
    assert!(
        !attrs.contains(&"Secure"),
        "Secure on an http host: {identity}"
    );
    let csrf_gone = set_cookie_line(&res, "invite_csrf").expect("CSRF cookie kept");
    assert!(csrf_gone.contains("Max-Age=0"), "{csrf_gone}");
    let token = set_cookie_value(&res, "identity").unwrap();
    let html = res.text().unwrap();
    assert!(html.contains("alice@localhost"), "{}", excerpt(&html));
    assert!(
        html.contains("Open the chat and sign in."),
        "{}",
        excerpt(&html)
    );
    assert!(
        html.contains(&format!("href=\"{}/health\"", app.url)),
        "{}",
        excerpt(&html)
    );
    assert_loads_nothing_from_elsewhere(&app, &html);

    // The one key there is, which minted the invite.
    assert_eq!(probe::census(&app).keys, 1);
    let minted_by = probe::invite(&app, &token_of(&url))
        .expect("the invite")
        .source;
    let key_id = minted_by
        .strip_prefix("api/token/")
        .unwrap_or_else(|| panic!("minted by a key: {minted_by}"));
    assert!(probe::key(&app, key_id).is_some());
    let account = probe::account(&app, "alice").expect("no account row");
    let (id, hash, invited_by) = (account.id, account.password_hash, account.invited_by);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(GOOD_PASSWORD));
    assert_eq!(invited_by, format!("key {key_id}"));
    let (used_at, used_by, source, ..) = invite_row(&app, &url);
    assert!(used_at.is_some(), "the invite was not consumed");
    assert_eq!(used_by, Some(id));
    assert_eq!(source, format!("api/token/{key_id}"));
    assert_eq!(probe::accounts(&app), 1);
    // One session, hers, found by the SHA-256 of its token: tokens are
    // stored only as digests.
    assert_eq!(probe::sessions(&app), 1);
    let session = probe::session(&app, &token).expect("the session is stored as a digest");
    assert_eq!(session.account.id, id);

    let check = auth_check(&app, Some(&token));
    assert_eq!(check.status(), 200);
    assert_eq!(
        required_header(&check, "x-invite-server-user"),
        "alice@localhost"
    );

    // The link is spent: the page now says so.
    assert_eq!(client().get(&url).send().unwrap().status(), 410);
}

#[test]
fn a_form_without_a_matching_csrf_cookie_and_field_is_refused_with_403_and_saves_nothing() {
    let app = TestApp::spawn();
    let url = app.mint();
    let form = open_form(&url);
    let other = open_form(&url);
    let fields = |csrf: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("csrf", csrf.to_owned()),
            ("name", "mallory".into()),
            ("password", GOOD_PASSWORD.into()),
            ("password2", GOOD_PASSWORD.into()),
        ]
    };
    let cases: Vec<(&str, Option<String>, Option<String>)> = vec![
        ("no cookie", None, Some(form.field.clone())),
        ("no field", Some(form.cookie.clone()), None),
        (
            "empty field",
            Some(form.cookie.clone()),
            Some(String::new()),
        ),
        (
            "wrong field",
            Some(form.cookie.clone()),
            Some("A".repeat(form.field.len())),
        ),
        (
            "another browser's field",
            Some(form.cookie.clone()),
            Some(other.field.clone()),
        ),
        (
            "empty cookie and field",
            Some(String::new()),
            Some(String::new()),
        ),
    ];
    for (what, cookie, field) in cases {
        let mut body = fields("");
        match field {
            Some(f) => body[0].1 = f,
            None => {
                body.remove(0);
            }
        }
        let pairs: Vec<(&str, &str)> = body.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = post_form(&url, cookie.as_deref(), &pairs);
        assert_eq!(res.status(), 403, "{what}");
        assert_token_page_headers(&res);
        assert!(
            set_cookie_line(&res, "identity").is_none(),
            "{what}: signed in"
        );
        let html = res.text().unwrap();
        assert!(
            html.contains("Nothing was saved"),
            "{what}: {}",
            excerpt(&html)
        );
        assert_eq!(input_value(&html, "name").as_deref(), Some("mallory"));
        assert_eq!(probe::accounts(&app), 0, "{what}");
        assert_eq!(probe::sessions(&app), 0, "{what}");
        assert_unused(&app, &url);
    }
    // The refused attempts left the invite usable.
    assert_eq!(
        register(&url, "mallory", GOOD_PASSWORD, GOOD_PASSWORD).status(),
        200
    );
}

/// Submits a bad form, checks the form comes back with the name kept and the
/// reason shown, and that the invite is untouched.
fn assert_form_returns(
    app: &TestApp,
    url: &str,
    (name, password, password2): (&str, &str, &str),
    status: u16,
    reason: &str,
) {
    let res = register(url, name, password, password2);
    assert_eq!(res.status(), status, "{name:?}/{password:?}");
    assert_token_page_headers(&res);
    assert!(set_cookie_line(&res, "identity").is_none(), "signed in");
    let html = res.text().unwrap();
    assert!(
        html.contains("class=\"error\""),
        "no error shown: {}",
        excerpt(&html)
    );
    assert!(
        html.contains(reason),
        "{reason:?} not in {}",
        excerpt(&html)
    );
    assert!(html.contains("<form"), "no form to try again");
    assert_eq!(
        input_value(&html, "name").as_deref(),
        Some(name),
        "the typed name was not kept"
    );
    assert_unused(app, url);
}

#[test]
fn a_taken_name_brings_the_form_back_and_the_invite_stays_usable() {
    let app = TestApp::spawn();
    let first = app.mint();
    assert_eq!(
        register(&first, "alice", GOOD_PASSWORD, GOOD_PASSWORD).status(),
        200
    );
    let url = app.mint();
    assert_form_returns(
        &app,
        &url,
        ("alice", GOOD_PASSWORD, GOOD_PASSWORD),
        409,
        "taken",
    );
    // Case does not make a different name.
    assert_form_returns(
        &app,
        &url,
        ("ALICE", GOOD_PASSWORD, GOOD_PASSWORD),
        409,
        "taken",
    );
    assert_eq!(probe::accounts(&app), 1);
    let res = register(&url, "alice2", GOOD_PASSWORD, GOOD_PASSWORD);
    assert_eq!(res.status(), 200);
    assert!(res.text().unwrap().contains("alice2@localhost"));
    assert_eq!(probe::accounts(&app), 2);
}

#[test]
fn a_name_outside_the_rule_brings_the_form_back_with_the_rule() {
    let app = TestApp::spawn();
    let url = app.mint();
    for bad in [
        "bad name",
        ".alice",
        "alice.",
        "al@ice",
        "ålice",
        "",
        &"a".repeat(65),
    ] {
        assert_form_returns(
            &app,
            &url,
            (bad, GOOD_PASSWORD, GOOD_PASSWORD),
            400,
            "1 to 64 characters of a-z, 0-9",
        );
    }
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(
        register(&url, "good.name_1-x", GOOD_PASSWORD, GOOD_PASSWORD).status(),
        200
    );
}

#[test]
fn a_weak_password_brings_the_form_back_saying_why() {
    let app = TestApp::spawn();
    let url = app.mint();
    assert_form_returns(
        &app,
        &url,
        ("bob", "short", "short"),
        400,
        "too short: at least 8 characters",
    );
    assert_form_returns(
        &app,
        &url,
        ("bob", "password1", "password1"),
        400,
        "too easy to guess",
    );
    assert_form_returns(
        &app,
        &url,
        ("bob", "12345678", "12345678"),
        400,
        "too easy to guess",
    );
    assert_form_returns(
        &app,
        &url,
        ("veryuncommonname", "veryuncommonname", "veryuncommonname"),
        400,
        "must not be the account name",
    );
    let long = "x".repeat(1025);
    assert_form_returns(&app, &url, ("bob", &long, &long), 400, "too long");
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(
        register(&url, "bob", GOOD_PASSWORD, GOOD_PASSWORD).status(),
        200
    );
}

#[test]
fn mismatched_passwords_bring_the_form_back_and_the_invite_stays_usable() {
    let app = TestApp::spawn();
    let url = app.mint();
    assert_form_returns(
        &app,
        &url,
        ("carol", GOOD_PASSWORD, "tulip quarry lantern 93"),
        400,
        "The two passwords differ",
    );
    assert_form_returns(&app, &url, ("carol", GOOD_PASSWORD, ""), 400, "differ");
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(
        register(&url, "carol", GOOD_PASSWORD, GOOD_PASSWORD).status(),
        200
    );
}

#[test]
fn typed_text_is_escaped_when_the_form_comes_back() {
    let app = TestApp::spawn();
    let url = app.mint();
    let res = register(
        &url,
        "\"><script>alert(1)</script>",
        GOOD_PASSWORD,
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 400);
    let html = res.text().unwrap();
    assert!(!html.contains("<script"), "{}", excerpt(&html));
    assert!(
        html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
        "{}",
        excerpt(&html)
    );
}

#[test]
fn an_upper_case_name_is_registered_in_lower_case() {
    let app = TestApp::spawn();
    let url = app.mint();
    let res = register(&url, "  Dave.SMITH ", GOOD_PASSWORD, GOOD_PASSWORD);
    assert_eq!(res.status(), 200);
    let token = set_cookie_value(&res, "identity").unwrap();
    assert!(res.text().unwrap().contains("dave.smith@localhost"));
    assert!(probe::account(&app, "dave.smith").is_some());
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(
        required_header(&auth_check(&app, Some(&token)), "x-invite-server-user"),
        "dave.smith@localhost"
    );
}

#[test]
fn a_form_that_is_not_urlencoded_or_too_large_is_refused_and_saves_nothing() {
    let app = TestApp::spawn();
    let url = app.mint();
    let form = open_form(&url);
    let json = client()
        .post(&url)
        .header(COOKIE, format!("invite_csrf={}", form.cookie))
        .header(CONTENT_TYPE, "application/json")
        .body(format!(
            r#"{{"csrf":"{}","name":"eve","password":"{GOOD_PASSWORD}","password2":"{GOOD_PASSWORD}"}}"#,
            form.field
        ))
        .send()
        .unwrap();
    assert_eq!(json.status(), 400);
    assert_token_page_headers(&json);
    let big = "x".repeat(17 * 1024);
    let huge = post_form(
        &url,
        Some(&form.cookie),
        &[
            ("csrf", &form.field),
            ("name", "eve"),
            ("password", GOOD_PASSWORD),
            ("password2", GOOD_PASSWORD),
            ("padding", &big),
        ],
    );
    assert_eq!(huge.status(), 413);
    assert_eq!(probe::accounts(&app), 0);
    assert_unused(&app, &url);
}

#[test]
fn posting_to_an_unknown_or_used_invite_gets_the_404_or_410_page() {
    let app = TestApp::spawn();
    let url = app.mint();
    let form = open_form(&url);
    assert_eq!(
        accept_invite(&app, &token_of(&url), "first", GOOD_PASSWORD).status(),
        204
    );
    let fields = [
        ("csrf", form.field.as_str()),
        ("name", "second"),
        ("password", GOOD_PASSWORD),
        ("password2", GOOD_PASSWORD),
    ];
    let used = post_form(&url, Some(&form.cookie), &fields);
    assert_eq!(used.status(), 410);
    assert!(used.text().unwrap().contains("already been used"));
    let unknown = post_form(
        &format!("{}/invite?AAAAAAAAAAAAAAAAAAAAAAAA", app.url),
        Some(&form.cookie),
        &fields,
    );
    assert_eq!(unknown.status(), 404);
    assert_eq!(probe::accounts(&app), 1);
}

#[test]
fn an_https_host_sets_secure_host_prefixed_cookies() {
    let app = TestApp::spawn();
    let (_, page) = mint_for(&app, "example.com");
    assert!(page.starts_with("https://example.com/invite?"), "{page}");
    let url = format!("{}/invite?{}", app.url, token_of(&page));
    let res = client()
        .get(&url)
        .header(HOST, "example.com")
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    // The __Host- prefix: no sibling subdomain can plant this cookie.
    assert!(set_cookie_line(&res, "invite_csrf").is_none());
    let csrf = set_cookie_line(&res, "__Host-invite_csrf").unwrap();
    let attrs: Vec<&str> = csrf.split(';').map(str::trim).collect();
    assert!(
        attrs.contains(&"Secure") && attrs.contains(&"Path=/"),
        "{csrf}"
    );
    assert!(!csrf.contains("Domain"), "{csrf}");
    let html = res.text().unwrap();
    assert!(html.contains("example.com"), "no site name");
    assert!(html.contains("<svg"));

    // The web form on that host signs in with `__Host-identity`.
    let res = register_on(
        &url,
        Some("example.com"),
        "erin",
        GOOD_PASSWORD,
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 200);
    assert!(set_cookie_line(&res, "identity").is_none());
    assert_host_identity_cookie(&res);
    assert!(res.text().unwrap().contains("erin@example.com"));

    // The JSON API on that host.
    let (_, page) = mint_for(&app, "example.com");
    let res = accept_invite_on(
        &app,
        "example.com",
        &token_of(&page),
        "frank",
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 204);
    assert!(set_cookie_line(&res, "identity").is_none());
    let token = assert_host_identity_cookie(&res);
    let check = auth_check_on(&app, "example.com", &token);
    assert_eq!(check.status(), 200);
    assert_eq!(
        required_header(&check, "x-invite-server-user"),
        "frank@example.com"
    );
    assert_eq!(probe::census_of(&app, "example.com").accounts, 2);
}

/// Checks the `__Host-identity` cookie a response sets has every attribute
/// the prefix demands and ours add; returns its value.
fn assert_host_identity_cookie(res: &Response) -> String {
    let line = set_cookie_line(res, "__Host-identity").expect("no __Host-identity cookie");
    let attrs: Vec<&str> = line.split(';').map(str::trim).collect();
    for want in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing: {line}");
    }
    assert!(!line.contains("Domain"), "{line}");
    set_cookie_value(res, "__Host-identity").unwrap()
}

#[test]
fn twenty_simultaneous_form_registrations_on_one_invite_create_exactly_one_account() {
    const N: usize = 20;
    let app = TestApp::spawn();
    let url = app.mint();
    let forms: Vec<Form> = (0..N).map(|_| open_form(&url)).collect();
    let barrier = Arc::new(Barrier::new(N));
    let handles: Vec<_> = forms
        .into_iter()
        .enumerate()
        .map(|(i, form)| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let name = format!("racer{i}");
                let client = client();
                let req = client
                    .post(&url)
                    .header(COOKIE, format!("invite_csrf={}", form.cookie))
                    .form(&[
                        ("csrf", form.field.as_str()),
                        ("name", &name),
                        ("password", GOOD_PASSWORD),
                        ("password2", GOOD_PASSWORD),
                    ]);
                barrier.wait();
                let res = req.send().unwrap();
                let status = res.status().as_u16();
                let signed_in = set_cookie_line(&res, "identity").is_some();
                (name, status, signed_in)
            })
        })
        .collect();
    let results: Vec<(String, u16, bool)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter(|r| r.1 == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(winners[0].2, "the winner was not signed in");
    for (name, status, signed_in) in &results {
        if *status != 200 {
            assert_eq!(*status, 410, "{name}: {results:?}");
            assert!(!signed_in, "{name} was signed in");
        }
    }
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(probe::sessions(&app), 1);
    let winner = probe::account(&app, &winners[0].0).expect("the winner's account");
    let (used_at, used_by, ..) = invite_row(&app, &url);
    assert!(used_at.is_some());
    assert_eq!(used_by, Some(winner.id));
}
