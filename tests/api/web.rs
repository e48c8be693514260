//! The HTTP surface's hardening: what invitees are told about their inviter,
//! bodies that break on every endpoint that takes one, the request log, which
//! host a request is for, and the registration form's and session's cookies.

use reqwest::blocking::Response;
use reqwest::header::{AUTHORIZATION, COOKIE, HOST};

use crate::helpers::{
    accept_invite_on, client, csrf_field, describe_invite, mint_for, raw_request, register_account,
    request, set_cookie_line, set_cookie_value, token_of, TestApp, DEFAULT_CONFIG, GOOD_PASSWORD,
};
use crate::probe;

/// What a landing page's form carries: the CSRF nonce its cookie holds, and
/// the signed hidden field.
struct Form {
    nonce: String,
    field: String,
}

/// Opens the landing page at `url`, addressed to `host` (its `Host` header),
/// sending `cookie` if given; reads the form's CSRF cookie (under
/// `cookie_name`) and field.
fn open_form(url: &str, host: &str, cookie_name: &str, cookie: Option<&str>) -> Form {
    let mut req = client().get(url).header(HOST, host);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let res = req.send().unwrap();
    assert_eq!(res.status(), 200, "the invite page did not open");
    let nonce = set_cookie_value(&res, cookie_name).expect("no CSRF cookie");
    let html = res.text().unwrap();
    let field = csrf_field(&html);
    Form { nonce, field }
}

/// Posts the registration form for `name` with the CSRF field `csrf` and the
/// `Cookie:` header `cookie`, addressed to `host`.
fn post_form(url: &str, host: &str, cookie: &str, csrf: &str, name: &str) -> Response {
    client()
        .post(url)
        .header(HOST, host)
        .header(COOKIE, cookie)
        .form(&[
            ("csrf", csrf),
            ("name", name),
            ("password", GOOD_PASSWORD),
            ("password2", GOOD_PASSWORD),
        ])
        .send()
        .unwrap()
}

/// The address the tests' server answers as its `localhost` host.
fn local(app: &TestApp) -> String {
    format!("127.0.0.1:{}", app.port)
}

/// Checks a refused form: 403, the form again with the typed name, nobody
/// signed in, and nothing saved.
fn assert_form_refused(app: &TestApp, res: Response, name: &str, what: &str) {
    assert_eq!(res.status(), 403, "{what}");
    assert!(
        set_cookie_line(&res, "identity").is_none()
            && set_cookie_line(&res, "__Host-identity").is_none(),
        "{what}: signed in"
    );
    let html = res.text().unwrap();
    assert!(html.contains("Nothing was saved"), "{what}");
    assert!(
        html.contains(&format!("value=\"{name}\"")),
        "{what}: name lost"
    );
    assert_eq!(probe::accounts(app), 0, "{what}");
    assert_eq!(probe::sessions(app), 0, "{what}");
    assert_eq!(probe::census(app).invites_used_up, 0, "{what}");
}

// ------------------------------------------------ 1. a key's name is private

#[test]
fn a_keys_name_is_never_shown_to_its_invitees() {
    let app = TestApp::spawn();
    let out = app.cli(&["keys", "create", "localhost", "my bookmark"]);
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let prosody = client()
        .get(format!("{}/invites_api?key={key}", app.url))
        .send()
        .unwrap();
    assert_eq!(prosody.status(), 201);
    let from_prosody = prosody.headers()["location"].to_str().unwrap().to_owned();
    let json = client()
        .post(format!("{}/api/invite", app.url))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .send()
        .unwrap();
    assert_eq!(json.status(), 200);
    let body: serde_json::Value = json.json().unwrap();
    let from_json = body["url"].as_str().unwrap().to_owned();

    for url in [&from_prosody, &from_json] {
        let html = client().get(url).send().unwrap().text().unwrap();
        assert!(
            !html.contains("my bookmark"),
            "the key's name is on the page"
        );
        assert!(
            html.contains("The administrators of Test Site invited you."),
            "the page does not name the site as the inviter"
        );
        let described = describe_invite(&app, &token_of(url));
        assert_eq!(described["issuer"]["name"], serde_json::Value::Null);
    }
    // Not even recorded for them.
    for url in [&from_prosody, &from_json] {
        let invite = probe::invite(&app, &token_of(url)).expect("the invite");
        assert_eq!(invite.issuer_name, None);
    }
}

#[test]
fn a_keys_name_recorded_by_an_older_version_is_not_shown_either() {
    let app = TestApp::spawn_sqlite();
    let url = app.mint();
    // What earlier versions stored for every key-minted invite. Only SQLite
    // databases come from those versions, so the file is changed directly.
    let db = rusqlite::Connection::open(&app.db).unwrap();
    db.execute("UPDATE invites SET issuer_name = 'my bookmark'", [])
        .unwrap();
    drop(db);

    let html = client().get(&url).send().unwrap().text().unwrap();
    assert!(
        !html.contains("my bookmark"),
        "the key's name is on the page"
    );
    assert!(html.contains("The administrators of Test Site invited you."));
    let described = describe_invite(&app, &token_of(&url));
    assert_eq!(described["issuer"]["name"], serde_json::Value::Null);
}

// ------------------------------------- 2. every body is read before awaiting

/// A POST whose chunked body has a chunk size that is not hex, on a
/// connection left open (so only the server can end the exchange).
fn broken_chunked_post(target: &str, headers: &[String]) -> Vec<u8> {
    let mut all: Vec<&[u8]> = vec![
        b"Transfer-Encoding: chunked",
        b"Content-Type: application/json",
    ];
    all.extend(headers.iter().map(|h| h.as_bytes()));
    request("POST", target.as_bytes(), &all, b"zz\r\n{}\r\n0\r\n\r\n")
}

#[test]
fn a_malformed_chunked_body_gets_a_4xx_answer_on_every_post_endpoint() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let identity = register_account(&app, "alice");
    let api_token = token_of(&app.mint());
    let page_token = token_of(&app.mint());
    let invites = probe::invites(&app);
    let sessions = probe::sessions(&app);
    let bearer = format!("Authorization: Bearer {key}");
    let cookie = format!("Cookie: identity={identity}");
    // Each with the credentials that take it past every check but the body,
    // and the content type its surface answers in.
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (format!("/invites_api?key={key}"), vec![], "text/plain"),
        (
            "/api/invite".into(),
            vec![bearer.clone()],
            "application/json",
        ),
        (
            "/api/invite".into(),
            vec![cookie.clone()],
            "application/json",
        ),
        (
            format!("/api/invite/{api_token}"),
            vec![],
            "application/json",
        ),
        ("/api/auth/login".into(), vec![], "application/json"),
        ("/api/auth/logout".into(), vec![cookie], "application/json"),
        (format!("/invite?{page_token}"), vec![], "text/html"),
    ];
    for (target, headers, content_type) in &cases {
        // raw_request stops waiting after 10 s: an answer must come first.
        let (status, text) = raw_request(app.port, &broken_chunked_post(target, headers));
        let path = target.split('?').next().unwrap();
        assert!(
            (400..500).contains(&status),
            "{path} with {headers:?}: no 4xx answer: {text:?}"
        );
        assert!(
            text.to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "{path}: not answered as {content_type}: {text}"
        );
    }
    // Nothing was minted, registered, or signed out.
    assert_eq!(probe::invites(&app), invites);
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(probe::sessions(&app), sessions);
    assert_eq!(
        client()
            .get(format!("{}/health", app.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

// --------------------------------------------------------- 3. the request log

/// The log line of the request whose `X-Request-Id` is `id`.
fn log_line(app: &TestApp, res: &Response) -> String {
    let id = res
        .headers()
        .get("x-request-id")
        .expect("no X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.len() >= 16, "short request id {id}");
    let log = app.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("id={id}")) && l.contains("status="))
        .collect();
    assert_eq!(lines.len(), 1, "not one request line for {id}: {log}");
    lines[0].to_owned()
}

#[test]
fn every_request_line_has_an_id_the_client_address_and_the_path_with_tokens_redacted() {
    let app = TestApp::spawn();
    let url = app.mint();
    let token = token_of(&url);
    let get = |path: &str| client().get(format!("{}{path}", app.url)).send().unwrap();
    let cases = [
        (
            format!("/api/invite/{token}"),
            200,
            "/api/invite/[redacted]",
        ),
        (format!("/invite?{token}"), 200, "/invite"),
        ("/health".to_owned(), 200, "/health"),
        // Unrouted paths too, with anything that may be a token left out.
        (
            format!("/api/invite/{token}/more"),
            404,
            "/api/invite/[redacted]/[redacted]",
        ),
        (format!("/{token}"), 404, "/[redacted]"),
        (
            format!("/invites/{token}?{token}"),
            404,
            "/invites/[redacted]",
        ),
    ];
    let mut ids = Vec::new();
    for (path, status, logged) in &cases {
        let res = get(path);
        assert_eq!(res.status(), *status, "{path}");
        let line = log_line(&app, &res);
        assert!(line.contains("client=127.0.0.1"), "{line}");
        assert!(line.contains(&format!(" path={logged} ")), "{line}");
        assert!(line.contains(&format!("status={status}")), "{line}");
        assert!(!line.contains(&token), "a token in the log: {line}");
        ids.push(res.headers()["x-request-id"].clone());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), cases.len(), "request ids repeat");
    assert!(!app.log().contains(&token), "a token in the log");
}

// ----------------------------------------------- 4. which host a request is for

#[test]
fn an_absolute_form_request_target_is_answered_for_its_own_authority() {
    let app = TestApp::spawn();
    let (_, page) = mint_for(&app, "example.com");
    let res = accept_invite_on(
        &app,
        "example.com",
        &token_of(&page),
        "frank",
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 204);
    // Either name: this test is about the host, not the cookie's name.
    let identity = set_cookie_value(&res, "__Host-identity")
        .or_else(|| set_cookie_value(&res, "identity"))
        .expect("no identity cookie");
    let check = |target: &str, host: &str| {
        raw_request(
            app.port,
            format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
                 Cookie: identity={identity}; __Host-identity={identity}\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    // The target's authority wins over Host (RFC 9112, 3.2.2), both ways.
    let (status, text) = check("http://example.com/api/auth/check", &local(&app));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("frank@example.com"), "{text}");
    let (status, text) = check(
        &format!("http://{}/api/auth/check", local(&app)),
        "example.com",
    );
    assert_eq!(status, 401, "{text}");
    // A default port in the target is the same authority.
    let (status, text) = check("https://EXAMPLE.com:443/api/auth/check", &local(&app));
    assert_eq!(status, 200, "{text}");
}

#[test]
fn a_host_header_is_matched_by_host_name_whatever_its_port_case_or_trailing_dot() {
    // nginx's `$host` drops the port: a host whose public URL has one must
    // still be found behind the documented proxy configuration.
    let app = TestApp::spawn_with(
        "[hosts.\"localhost\"]\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [hosts.\"chat.test\"]\npublic_url = \"https://web.chat.test:8443\"\n",
    );
    let (_, page) = mint_for(&app, "chat.test");
    let res = accept_invite_on(
        &app,
        "web.chat.test:8443",
        &token_of(&page),
        "gina",
        GOOD_PASSWORD,
    );
    assert_eq!(res.status(), 204);
    let identity = set_cookie_value(&res, "__Host-identity").expect("no identity cookie");
    for host in [
        "web.chat.test",
        "WEB.chat.test.:8443",
        "web.chat.test:8443",
        "chat.test",
    ] {
        let res = client()
            .get(format!("{}/api/auth/check", app.url))
            .header(reqwest::header::HOST, host)
            .header(
                reqwest::header::COOKIE,
                format!("__Host-identity={identity}"),
            )
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "Host: {host}");
    }
}

#[test]
fn another_hosts_invite_is_not_found_on_a_hosts_page_or_api() {
    let app = TestApp::spawn();
    let (_, page) = mint_for(&app, "example.com");
    let token = token_of(&page);
    let here = local(&app);
    let page_url = format!("{}/invite?{token}", app.url);
    let api_url = format!("{}/api/invite/{token}", app.url);
    let at = |req: reqwest::blocking::RequestBuilder, host: &str| {
        req.header(HOST, host).send().unwrap().status().as_u16()
    };

    // Addressed to localhost: example.com's invite does not exist there.
    assert_eq!(at(client().get(&page_url), &here), 404);
    assert_eq!(at(client().get(&api_url), &here), 404);
    let form = [
        ("csrf", "x"),
        ("name", "mallory"),
        ("password", GOOD_PASSWORD),
        ("password2", GOOD_PASSWORD),
    ];
    assert_eq!(at(client().post(&page_url).form(&form), &here), 404);
    let json = serde_json::json!({ "name": "mallory", "password": GOOD_PASSWORD });
    assert_eq!(at(client().post(&api_url).json(&json), &here), 404);
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(probe::census(&app).invites_used_up, 0);

    // And a localhost invite does not exist on example.com.
    let local_token = token_of(&app.mint());
    let local_api = format!("{}/api/invite/{local_token}", app.url);
    assert_eq!(at(client().get(&local_api), "example.com"), 404);
    assert_eq!(at(client().get(&local_api), &here), 200);

    // On its own host it is there; addressed to no configured host, the
    // invite's own host decides, as before.
    assert_eq!(at(client().get(&page_url), "example.com"), 200);
    assert_eq!(at(client().get(&api_url), "example.com"), 200);
    assert_eq!(at(client().get(&api_url), "unknown.test"), 200);
    let res = accept_invite_on(&app, "example.com", &token, "frank", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
}

// ------------------------------------------ 5. CSRF tokens the server signed

#[test]
fn an_equal_csrf_cookie_and_field_that_the_server_did_not_issue_are_refused() {
    let app = TestApp::spawn();
    let url = app.mint();
    let here = local(&app);
    let made_up = "A".repeat(43);
    let res = post_form(
        &url,
        &here,
        &format!("invite_csrf={made_up}"),
        &made_up,
        "mallory",
    );
    assert_form_refused(&app, res, "mallory", "a made-up pair");
    // The server's own nonce copied into the field is no better.
    let form = open_form(&url, &here, "invite_csrf", None);
    let cookie = format!("invite_csrf={}", form.nonce);
    let res = post_form(&url, &here, &cookie, &form.nonce, "mallory");
    assert_form_refused(&app, res, "mallory", "the nonce as the field");
    // The pair the page handed out works.
    let res = post_form(&url, &here, &cookie, &form.field, "mallory");
    assert_eq!(res.status(), 200);
    assert_eq!(probe::accounts(&app), 1);
}

#[test]
fn a_csrf_field_for_one_invite_does_not_work_on_another() {
    let app = TestApp::spawn();
    let (a, b) = (app.mint(), app.mint());
    let here = local(&app);
    let form_a = open_form(&a, &here, "invite_csrf", None);
    let cookie = format!("invite_csrf={}", form_a.nonce);
    // The same browser (same nonce) opens invite B: another field.
    let form_b = open_form(&b, &here, "invite_csrf", Some(&cookie));
    assert_eq!(form_b.nonce, form_a.nonce);
    assert_ne!(form_b.field, form_a.field);

    let res = post_form(&b, &here, &cookie, &form_a.field, "mallory");
    assert_form_refused(&app, res, "mallory", "invite A's field on B");
    let res = post_form(&b, &here, &cookie, &form_b.field, "mallory");
    assert_eq!(res.status(), 200);
    let res = post_form(&a, &here, &cookie, &form_a.field, "mallory2");
    assert_eq!(res.status(), 200);
}

#[test]
fn the_form_key_lives_in_the_database_so_a_form_survives_a_restart() {
    let app = TestApp::spawn();
    let url = app.mint();
    let here = local(&app);
    let form = open_form(&url, &here, "invite_csrf", None);
    let key = probe::form_key_signature(&app);

    let (dir, db) = app.into_parts();
    let app = TestApp::spawn_in(dir, db, DEFAULT_CONFIG);
    // The server now listens on another port.
    let url = url.replacen(&here, &local(&app), 1);
    let here = local(&app);
    let cookie = format!("invite_csrf={}", form.nonce);
    let res = post_form(&url, &here, &cookie, &form.field, "returning");
    assert_eq!(res.status(), 200, "a form signed before the restart");
    let again = probe::form_key_signature(&app);
    assert_eq!(again, key, "the key changed on restart");
}

// ------------------------------------------- 6. __Host- cookies on https hosts

#[test]
fn on_an_https_host_only_the_host_prefixed_cookies_are_read() {
    let app = TestApp::spawn();
    let (_, page) = mint_for(&app, "example.com");
    let url = format!("{}/invite?{}", app.url, token_of(&page));
    let form = open_form(&url, "example.com", "__Host-invite_csrf", None);

    // The plain-named CSRF cookie is ignored there.
    let plain = format!("invite_csrf={}", form.nonce);
    let res = post_form(&url, "example.com", &plain, &form.field, "erin");
    assert_form_refused(&app, res, "erin", "a plain-named CSRF cookie");
    let prefixed = format!("__Host-invite_csrf={}", form.nonce);
    let res = post_form(&url, "example.com", &prefixed, &form.field, "erin");
    assert_eq!(res.status(), 200);
    assert!(set_cookie_line(&res, "identity").is_none());
    let identity = set_cookie_value(&res, "__Host-identity").expect("no __Host-identity");

    let check = |host: &str, cookie: String| {
        client()
            .get(format!("{}/api/auth/check", app.url))
            .header(HOST, host)
            .header(COOKIE, cookie)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(check("example.com", format!("identity={identity}")), 401);
    assert_eq!(
        check("example.com", format!("__Host-identity={identity}")),
        200
    );
    // An http host reads only the plain name.
    let alice = register_account(&app, "alice");
    let here = local(&app);
    assert_eq!(check(&here, format!("__Host-identity={alice}")), 401);
    assert_eq!(check(&here, format!("identity={alice}")), 200);

    // Signing out on the https host clears the prefixed cookie and ends the session.
    let out = client()
        .post(format!("{}/api/auth/logout", app.url))
        .header(HOST, "example.com")
        .header(COOKIE, format!("__Host-identity={identity}"))
        .send()
        .unwrap();
    assert_eq!(out.status(), 204);
    let cleared = set_cookie_line(&out, "__Host-identity").expect("not cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert!(cleared.contains("Secure"), "{cleared}");
    assert_eq!(
        check("example.com", format!("__Host-identity={identity}")),
        401
    );
}

#[test]
fn a_session_of_one_host_cannot_mint_on_another() {
    let app = TestApp::spawn();
    let identity = register_account(&app, "hugo");
    // The same session token, presented to example.com under its cookie name.
    let res = client()
        .post(format!("{}/api/invite", app.url))
        .header(reqwest::header::HOST, "example.com")
        .header(
            reqwest::header::COOKIE,
            format!("__Host-identity={identity}; identity={identity}"),
        )
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().unwrap();
    assert_eq!(body["message"], "not signed in to this host");
    // On its own host it mints.
    let res = client()
        .post(format!("{}/api/invite", app.url))
        .header(reqwest::header::COOKIE, format!("identity={identity}"))
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
}
