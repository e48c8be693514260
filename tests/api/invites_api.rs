//! `/invites_api`: minting, refusals, CORS and hostile input, all against the
//! real server over real HTTP (reqwest) or raw TCP when reqwest would tidy the
//! request up first.

use std::collections::HashSet;

use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::helpers::{client, exchange, header, request, stored_bytes, TestApp};
use crate::probe;

const ALLOWED: &str = "OPTIONS, GET, POST";

fn api(app: &TestApp, query: &str) -> String {
    format!("{}/invites_api{query}", app.url)
}

fn get(app: &TestApp, query: &str) -> RequestBuilder {
    client().get(api(app, query))
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn is_base64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks that `location` is this server's invite page and returns its token.
fn token_of(app: &TestApp, location: &str) -> String {
    let prefix = format!("{}/invite?", app.url);
    let token = location
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("Location {location:?} does not start with {prefix:?}"));
    assert_eq!(token.len(), 32, "token {token:?} is not 32 characters");
    assert!(is_base64url(token), "token {token:?} is not base64url");
    token.to_owned()
}

/// Sends a request and asserts a successful mint with `status`: empty body,
/// Location on the invite page. Returns the token.
fn expect_mint(app: &TestApp, req: RequestBuilder, status: u16) -> String {
    let res = req.send().unwrap();
    assert_eq!(res.status(), status, "{:?}", res.headers());
    let location = header(&res, "location").expect("no Location header");
    assert_eq!(res.text().unwrap(), "", "a mint answers with an empty body");
    token_of(app, &location)
}

/// Sends a request expected to be refused with `status`; checks that the body
/// says something, that nothing was minted, and returns the body.
fn expect_refusal(app: &TestApp, req: RequestBuilder, status: u16) -> String {
    let before = probe::invites(app);
    let res = req.send().unwrap();
    assert_eq!(res.status(), status, "{:?}", res.headers());
    assert!(
        res.headers().get("location").is_none(),
        "a refusal carries no Location"
    );
    let body = res.text().unwrap();
    assert!(
        body.trim().len() > 10,
        "the body should say what is wrong: {body:?}"
    );
    assert_eq!(
        probe::invites(app),
        before,
        "a refused request minted an invite"
    );
    body
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// Everything the store holds (see [`stored_bytes`]).
fn database_bytes(app: &TestApp) -> Vec<u8> {
    stored_bytes(&app.db)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A raw HTTP/1.1 GET (connection closed after the answer).
fn raw_get(app: &TestApp, target: &[u8], headers: &[&[u8]]) -> (u16, String) {
    raw_method(app, b"GET", target, headers)
}

fn raw_method(app: &TestApp, method: &[u8], target: &[u8], headers: &[&[u8]]) -> (u16, String) {
    let method = std::str::from_utf8(method).expect("an ASCII method");
    // Interim answers (`100 Continue`) are skipped by exchange.
    let answer = exchange(app.port, &request(method, target, headers, b""), false);
    (
        answer.status,
        format!("{}\r\n\r\n{}", answer.head, answer.body),
    )
}

/// A header of a raw answer, by case-insensitive name.
fn raw_header(answer: &str, name: &str) -> Option<String> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn raw_body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn key_parts(key: &str) -> (&str, &str) {
    key.split_once('/').expect("key is <id>/<secret>")
}

// ---------------------------------------------------------------- minting

#[test]
fn a_get_with_the_key_in_the_query_mints_one_invite_and_answers_201_with_its_location() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (id, _) = key_parts(&key);
    assert_eq!(probe::invites(&app), 0);

    let res = get(&app, &format!("?key={key}")).send().unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "content-length").as_deref(), Some("0"));
    let location = header(&res, "location").expect("Location");
    assert_eq!(res.text().unwrap(), "");
    let token = token_of(&app, &location);

    assert_eq!(probe::invites(&app), 1);
    // Found by the token's row id and the SHA-256 of its secret, as
    // docs/storage.md says tokens are kept: only the digest is stored.
    let invite = probe::invite(&app, &token).expect("the token names a stored invite");
    assert_eq!(invite.host.as_str(), "localhost");
    assert_eq!(invite.source, format!("api/token/{id}"));
    assert_eq!(
        invite.issuer_name, None,
        "the key's name (an operator's label) is recorded"
    );
    assert_eq!(invite.uses_spent, 0, "a new invite is unused");
    assert_eq!(
        invite.expires_at - invite.created_at,
        chrono::Duration::days(7),
        "the test config's invite_expiry is 7d"
    );
}

#[test]
fn tokens_and_key_secrets_are_kept_only_as_digests_and_never_logged() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (id, secret) = key_parts(&key);
    let mut tokens = vec![
        expect_mint(&app, get(&app, &format!("?key={key}")), 201),
        expect_mint(&app, get(&app, "").header(AUTHORIZATION, bearer(&key)), 201),
        expect_mint(&app, get(&app, &format!("?key={key}&redirect=true")), 303),
        expect_mint(&app, client().post(api(&app, &format!("?key={key}"))), 201),
    ];
    // Refused requests that carry the secret must not log it either.
    expect_refusal(&app, get(&app, &format!("?key={key}&redirect=maybe")), 400);
    expect_refusal(&app, get(&app, &format!("?key={key}&key={key}")), 400);
    expect_refusal(&app, get(&app, &format!("?key={key}x")), 403);
    let (status, _) = raw_get(&app, format!("/invites_api?key={key}%zz").as_bytes(), &[]);
    assert_eq!(status, 400);
    let (status, _) = raw_get(&app, format!("/invites_api?key={key}\0").as_bytes(), &[]);
    assert_eq!(status, 400);
    tokens.push(expect_mint(
        &app,
        get(&app, &format!("?redirect=0&key={key}")),
        201,
    ));
    assert_eq!(probe::invites(&app), 5);

    for t in &tokens {
        assert!(
            probe::invite(&app, t).is_some(),
            "no digest stored for a minted token"
        );
    }
    let key_digest = probe::key(&app, id).expect("the key").secret_digest;
    assert_eq!(
        key_digest.as_bytes().to_vec(),
        sha256(secret),
        "the key is stored as SHA-256 of its secret"
    );

    let bytes = database_bytes(&app);
    assert!(
        contains(&bytes, id),
        "sanity: the key id is in the database"
    );
    assert!(
        !contains(&bytes, secret),
        "the key secret is in the database"
    );
    let log = app.log();
    assert!(
        log.matches("/invites_api").count() >= 5,
        "sanity: the log records requests: {log}"
    );
    assert!(!log.contains(secret), "the key secret is in the log: {log}");
    for t in &tokens {
        assert!(!contains(&bytes, t), "token {t} is in the database file");
        assert!(!log.contains(t.as_str()), "token {t} is in the log: {log}");
    }
}

#[test]
fn a_post_mints_like_a_get() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    expect_mint(&app, client().post(api(&app, &format!("?key={key}"))), 201);
    expect_mint(
        &app,
        client()
            .post(api(&app, ""))
            .header(AUTHORIZATION, bearer(&key)),
        201,
    );
    expect_mint(
        &app,
        client().post(api(&app, &format!("?key={key}&redirect=true"))),
        303,
    );
    assert_eq!(probe::invites(&app), 3);
}

#[test]
fn a_bearer_key_with_no_query_string_at_all_mints() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    // Raw, so there is certainly no `?` in the request target.
    let auth = format!("Authorization: Bearer {key}");
    let (status, answer) = raw_get(&app, b"/invites_api", &[auth.as_bytes()]);
    assert_eq!(status, 201, "{answer}");
    let location = raw_header(&answer, "location").expect("Location");
    token_of(&app, &location);
    assert_eq!(raw_body(&answer), "");
    // And with an empty query string.
    expect_mint(
        &app,
        get(&app, "?").header(AUTHORIZATION, bearer(&key)),
        201,
    );
    // And alongside an empty `key=`.
    expect_mint(
        &app,
        get(&app, "?key=").header(AUTHORIZATION, bearer(&key)),
        201,
    );
    assert_eq!(probe::invites(&app), 3);
}

#[test]
fn redirect_with_an_empty_value_or_a_yes_word_answers_303_with_the_location() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let mut n = 0;
    for flag in [
        "redirect",
        "redirect=",
        "redirect=true",
        "redirect=1",
        "redirect=yes",
        "redirect=on",
        "redirect=TRUE",
    ] {
        let token = expect_mint(&app, get(&app, &format!("?key={key}&{flag}")), 303);
        n += 1;
        assert_eq!(probe::invites(&app), n, "{flag}");
        assert!(
            probe::invite(&app, &token).is_some(),
            "the 303 Location names the stored invite"
        );
    }
    // The flag also works with a Bearer key and before the key.
    expect_mint(
        &app,
        get(&app, "?redirect=true").header(AUTHORIZATION, bearer(&key)),
        303,
    );
    expect_mint(&app, get(&app, &format!("?redirect=on&key={key}")), 303);
}

#[test]
fn redirect_with_a_no_word_answers_201() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for flag in ["false", "0", "no", "off", "FALSE", "Off"] {
        expect_mint(&app, get(&app, &format!("?key={key}&redirect={flag}")), 201);
    }
    assert_eq!(probe::invites(&app), 6);
}

#[test]
fn a_bad_redirect_value_is_a_400_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for value in ["maybe", "2", "tru", "yes%20please", "%20"] {
        let body = expect_refusal(
            &app,
            get(&app, &format!("?key={key}&redirect={value}")),
            400,
        );
        assert!(
            body.contains("redirect"),
            "the body names the parameter: {body}"
        );
    }
    // Also a repeated flag.
    expect_refusal(
        &app,
        get(&app, &format!("?key={key}&redirect=1&redirect=1")),
        400,
    );
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn every_mint_gives_a_distinct_token() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let mut tokens: HashSet<String> = (0..25)
        .map(|_| expect_mint(&app, get(&app, &format!("?key={key}")), 201))
        .collect();
    // And across keys (each `mint` makes a fresh one).
    tokens.extend((0..3).map(|_| token_of(&app, &app.mint())));
    assert_eq!(tokens.len(), 28);
    assert_eq!(probe::invites(&app), 28);
    // Each is found by its own id and the digest of its own secret.
    assert!(tokens.iter().all(|t| probe::invite(&app, t).is_some()));
}

#[test]
fn a_key_mints_for_its_own_host() {
    let app = TestApp::spawn();
    let key = app.create_key("example.com");
    let res = get(&app, &format!("?key={key}")).send().unwrap();
    assert_eq!(res.status(), 201);
    let location = header(&res, "location").unwrap();
    let token = location
        .strip_prefix("https://example.com/invite?")
        .unwrap_or_else(|| panic!("unexpected Location {location}"));
    assert!(token.len() >= 24 && is_base64url(token), "{token}");
    assert_eq!(probe::census_of(&app, "example.com").invites, 1);
    assert_eq!(probe::invites(&app), 1);
}

#[test]
fn a_key_whose_host_is_no_longer_configured_is_refused() {
    let app = TestApp::spawn();
    let key = app.create_key("example.com");
    let (dir, db) = app.into_parts();
    let app = TestApp::spawn_in(
        dir,
        db,
        "[hosts.\"localhost\"]\npublic_url = \"http://127.0.0.1:{port}\"\n",
    );
    let body = expect_refusal(&app, get(&app, &format!("?key={key}")), 403);
    assert!(body.contains("example.com"), "{body}");
}

// ---------------------------------------------------------------- refusals

#[test]
fn no_credentials_is_a_401_with_a_bearer_challenge_and_mints_nothing() {
    let app = TestApp::spawn();
    app.create_key("localhost");
    for req in [
        get(&app, ""),
        get(&app, "?"),
        get(&app, "?key="),
        get(&app, "?key"),
        get(&app, "?redirect=true"),
        client().post(api(&app, "")),
    ] {
        let res = req.send().unwrap();
        assert_eq!(res.status(), 401);
        let challenge = header(&res, "www-authenticate").expect("WWW-Authenticate");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(res.headers().get("location").is_none());
        let body = res.text().unwrap();
        assert!(
            body.contains("key"),
            "the body says a key is missing: {body:?}"
        );
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn a_wrong_secret_is_a_403_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (id, secret) = key_parts(&key);
    // Same length, last character changed.
    let last = if secret.ends_with('A') { 'B' } else { 'A' };
    let wrong = format!("{id}/{}{last}", &secret[..secret.len() - 1]);
    let body = expect_refusal(&app, get(&app, &format!("?key={wrong}")), 403);
    assert!(body.contains("not valid"), "{body}");
    expect_refusal(
        &app,
        get(&app, "").header(AUTHORIZATION, bearer(&wrong)),
        403,
    );
    // A longer secret that starts with the right one.
    expect_refusal(&app, get(&app, &format!("?key={key}AAAA")), 403);
    // The key itself still works: the refusals did not lock it.
    expect_mint(&app, get(&app, &format!("?key={key}")), 201);
}

#[test]
fn a_malformed_key_is_a_403_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (id, secret) = key_parts(&key);
    for bad in [
        "nonsense".to_owned(),
        "abc/def".to_owned(),
        id.to_owned(),
        format!("{id}/"),
        format!("/{secret}"),
        format!("{}/{secret}", &id[..11]),
        format!("{id}x/{secret}"),
        format!("{id}/{secret}/x"),
        format!("{id}/{}", &secret[..31]),
        format!("{id}/{}=", &secret[..secret.len() - 1]),
        format!("{id}/{}", "a".repeat(129)),
        format!("{id}%2F{secret}%21"),
    ] {
        let body = expect_refusal(&app, get(&app, &format!("?key={bad}")), 403);
        assert!(body.contains("key"), "{bad}: {body}");
        expect_refusal(&app, get(&app, "").header(AUTHORIZATION, bearer(&bad)), 403);
    }
}

#[test]
fn an_unknown_key_id_is_a_403_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (_, secret) = key_parts(&key);
    let unknown = format!("AAAAAAAAAAAA/{secret}");
    let body = expect_refusal(&app, get(&app, &format!("?key={unknown}")), 403);
    assert!(body.contains("not valid"), "{body}");
    expect_refusal(
        &app,
        get(&app, "").header(AUTHORIZATION, bearer(&unknown)),
        403,
    );
}

#[test]
fn a_deleted_key_is_a_403_with_a_reason_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let other = app.create_key("localhost");
    let (id, _) = key_parts(&key);
    let out = app.cli(&["keys", "delete", "--", "localhost", id]);
    assert!(out.status.success(), "{out:?}");
    let body = expect_refusal(&app, get(&app, &format!("?key={key}")), 403);
    assert!(body.contains("deleted"), "{body}");
    expect_refusal(&app, get(&app, "").header(AUTHORIZATION, bearer(&key)), 403);
    expect_refusal(&app, client().post(api(&app, &format!("?key={key}"))), 403);
    // Other keys of the host are unaffected.
    expect_mint(&app, get(&app, &format!("?key={other}")), 201);
    assert_eq!(probe::invites(&app), 1);
}

#[test]
fn an_empty_bearer_is_a_401_challenge() {
    let app = TestApp::spawn();
    app.create_key("localhost");
    for value in [
        &b"Authorization: Bearer"[..],
        b"Authorization: Bearer ",
        b"Authorization: Bearer    ",
        b"Authorization: bearer",
        b"Authorization:",
    ] {
        let (status, answer) = raw_get(&app, b"/invites_api", &[value]);
        let shown = String::from_utf8_lossy(value);
        assert_eq!(status, 401, "{shown}: {answer}");
        let challenge = raw_header(&answer, "www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{shown}: {answer}");
        assert!(!raw_body(&answer).trim().is_empty(), "{shown}: {answer}");
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn bearer_with_extra_spaces_around_the_key_still_mints() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for value in [
        format!("Bearer  {key}"),
        format!("Bearer     {key}   "),
        format!("Bearer \t {key}"),
        format!("   Bearer {key}"),
    ] {
        let line = format!("Authorization: {value}");
        let (status, answer) = raw_get(&app, b"/invites_api", &[line.as_bytes()]);
        assert_eq!(status, 201, "{value:?}: {answer}");
        token_of(&app, &raw_header(&answer, "location").unwrap());
    }
    assert_eq!(probe::invites(&app), 4);
}

#[test]
fn a_bearer_with_more_than_a_key_is_a_403() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for value in [
        format!("Bearer {key} extra"),
        format!("Bearer {key} {key}"),
        format!("Bearer {key},{key}"),
    ] {
        expect_refusal(&app, get(&app, "").header(AUTHORIZATION, value), 403);
    }
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for scheme in ["bearer", "BEARER", "BeArEr"] {
        expect_mint(
            &app,
            get(&app, "").header(AUTHORIZATION, format!("{scheme} {key}")),
            201,
        );
    }
}

#[test]
fn other_authorization_schemes_carry_no_key() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        format!("Token {key}"),
        format!("Bearerx {key}"),
        key.clone(),
        "Digest username=\"x\"".to_owned(),
    ] {
        let res = get(&app, "").header(AUTHORIZATION, &value).send().unwrap();
        assert_eq!(res.status(), 401, "{value}");
        assert!(header(&res, "www-authenticate")
            .unwrap()
            .starts_with("Bearer"));
        // The key in the query still counts when another scheme is in the header.
        expect_mint(
            &app,
            get(&app, &format!("?key={key}")).header(AUTHORIZATION, &value),
            201,
        );
    }
    assert_eq!(probe::invites(&app), 5);
}

#[test]
fn two_authorization_headers_are_a_400_even_when_equal() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let other = app.create_key("localhost");
    for second in [&key, &other] {
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, HeaderValue::from_str(&bearer(&key)).unwrap());
        headers.append(
            AUTHORIZATION,
            HeaderValue::from_str(&bearer(second)).unwrap(),
        );
        let body = expect_refusal(&app, get(&app, "").headers(headers), 400);
        assert!(body.contains("Authorization"), "{body}");
    }
    // Raw too, so no client merges them.
    let line = format!("Authorization: Bearer {key}");
    let (status, answer) = raw_get(
        &app,
        b"/invites_api",
        &[line.as_bytes(), b"Authorization: Basic eDp5"],
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn a_query_key_and_a_bearer_key_must_agree() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let other = app.create_key("localhost");
    let body = expect_refusal(
        &app,
        get(&app, &format!("?key={key}")).header(AUTHORIZATION, bearer(&other)),
        400,
    );
    assert!(body.contains("different"), "{body}");
    // A valid and an invalid key disagreeing: still a 400, nothing minted.
    expect_refusal(
        &app,
        get(&app, "?key=nonsense").header(AUTHORIZATION, bearer(&key)),
        400,
    );
    // Agreeing is fine.
    expect_mint(
        &app,
        get(&app, &format!("?key={key}")).header(AUTHORIZATION, bearer(&key)),
        201,
    );
    assert_eq!(probe::invites(&app), 1);
}

#[test]
fn other_methods_are_405_with_allow_and_mint_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        for req in [
            client().request(method.clone(), api(&app, &format!("?key={key}"))),
            client()
                .request(method.clone(), api(&app, ""))
                .header(AUTHORIZATION, bearer(&key)),
        ] {
            let res = req.send().unwrap();
            assert_eq!(res.status(), 405, "{method}");
            assert_eq!(header(&res, "allow").as_deref(), Some(ALLOWED), "{method}");
            assert!(res.headers().get("location").is_none());
            assert!(!res.text().unwrap().trim().is_empty(), "{method}");
        }
    }
    // Methods a client library would rarely send. (CONNECT is left out: actix
    // answers it 405 too, but holds the connection open for about a second.)
    for method in [&b"TRACE"[..], b"FROB", b"OPTIONS2"] {
        let (status, answer) = raw_method(
            &app,
            method,
            format!("/invites_api?key={key}").as_bytes(),
            &[],
        );
        assert_eq!(status, 405, "{answer}");
        assert_eq!(raw_header(&answer, "allow").as_deref(), Some(ALLOWED));
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn head_never_mints() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for req in [
        client().head(api(&app, &format!("?key={key}"))),
        client().head(api(&app, &format!("?key={key}&redirect=true"))),
        client()
            .head(api(&app, ""))
            .header(AUTHORIZATION, bearer(&key)),
    ] {
        let res = req.send().unwrap();
        assert_eq!(res.status(), 405);
        assert_eq!(header(&res, "allow").as_deref(), Some(ALLOWED));
        assert!(res.headers().get("location").is_none());
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn an_options_preflight_needs_no_key_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for req in [
        client()
            .request(Method::OPTIONS, api(&app, ""))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization"),
        client().request(Method::OPTIONS, api(&app, &format!("?key={key}"))),
        client()
            .request(Method::OPTIONS, api(&app, "?key=nonsense&redirect=maybe"))
            .header(AUTHORIZATION, "Bearer wrong"),
    ] {
        let res = req.send().unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        assert!(res.headers().get("location").is_none());
        assert_eq!(
            header(&res, "access-control-allow-methods").as_deref(),
            Some(ALLOWED)
        );
    }
    assert_eq!(probe::invites(&app), 0);
}

// ---------------------------------------------------------------- CORS

fn assert_cors(res: &Response, origin: Option<&str>, what: &str) {
    assert_eq!(
        header(res, "access-control-allow-origin").as_deref(),
        Some(origin.unwrap_or("*")),
        "{what}"
    );
    if origin.is_some() {
        let vary = header(res, "vary").unwrap_or_default();
        assert!(
            vary.contains("Origin"),
            "{what}: an echoed origin needs Vary: Origin"
        );
    }
    assert_eq!(
        header(res, "access-control-allow-methods").as_deref(),
        Some(ALLOWED),
        "{what}"
    );
    assert_eq!(
        header(res, "access-control-allow-headers").as_deref(),
        Some("Content-Type, Authorization"),
        "{what}"
    );
    assert_eq!(
        header(res, "access-control-max-age").as_deref(),
        Some("7200"),
        "{what}"
    );
}

#[test]
fn every_answer_of_the_api_carries_the_cors_headers() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (id, _) = key_parts(&key);
    let deleted = app.create_key("localhost");
    let out = app.cli(&["keys", "delete", "--", "localhost", key_parts(&deleted).0]);
    assert!(out.status.success());
    let cases: Vec<(u16, Method, String, Option<String>)> = vec![
        (201, Method::GET, format!("?key={key}"), None),
        (201, Method::POST, String::new(), Some(bearer(&key))),
        (303, Method::GET, format!("?key={key}&redirect"), None),
        (
            400,
            Method::GET,
            format!("?key={key}&redirect=perhaps"),
            None,
        ),
        (400, Method::GET, "?key=%zz".into(), None),
        (401, Method::GET, String::new(), None),
        (
            403,
            Method::GET,
            format!("?key={id}/wrongwrongwrongwrongwrongwrongwrong"),
            None,
        ),
        (403, Method::GET, format!("?key={deleted}"), None),
        (403, Method::GET, "?key=malformed".into(), None),
        (405, Method::PUT, format!("?key={key}"), None),
        (405, Method::DELETE, String::new(), None),
        (405, Method::HEAD, format!("?key={key}"), None),
        (204, Method::OPTIONS, String::new(), None),
    ];
    for origin in [
        None,
        Some("https://chat.example"),
        Some("http://127.0.0.1:9"),
    ] {
        for (status, method, query, auth) in &cases {
            let mut req = client().request(method.clone(), api(&app, query));
            if let Some(o) = origin {
                req = req.header("Origin", o);
            }
            if let Some(a) = auth {
                req = req.header(AUTHORIZATION, a);
            }
            let res = req.send().unwrap();
            let what = format!("{method} {query} (Origin {origin:?})");
            assert_eq!(res.status(), *status, "{what}");
            assert_cors(&res, origin, &what);
        }
    }
    assert_eq!(probe::invites(&app), 3 * 3);
}

// ---------------------------------------------------------------- hostile input

#[test]
fn bad_percent_encoding_is_a_400_with_cors_and_mints_nothing() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for query in [
        "key=%zz".to_owned(),
        "key=%".to_owned(),
        "key=%4".to_owned(),
        "key=%ff".to_owned(),
        "key=%c3%28".to_owned(),
        format!("key={key}%"),
        format!("key={key}&redirect=%ff"),
        format!("key={key}&x=%zz"),
        format!("key={key}&%c3=1"),
        format!("%zz&key={key}"),
    ] {
        let (status, answer) = raw_get(&app, format!("/invites_api?{query}").as_bytes(), &[]);
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(
            raw_body(&answer).contains("query string"),
            "{query}: the body says what is wrong: {answer}"
        );
        assert_eq!(
            raw_header(&answer, "access-control-allow-origin").as_deref(),
            Some("*"),
            "{query}"
        );
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn nul_bytes_are_refused_with_a_4xx() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    // Encoded NUL reaches the handler: a malformed key, or a bad flag.
    let res = get(&app, &format!("?key={key}%00")).send().unwrap();
    assert_eq!(res.status(), 403);
    let res = get(&app, "?key=%00").send().unwrap();
    assert_eq!(res.status(), 403);
    let res = get(&app, &format!("?key={key}&redirect=%00"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    // Raw NUL in the request line or a header is refused by the HTTP parser.
    let with_nul = format!("/invites_api?key={key}\0");
    let (status, answer) = raw_get(&app, with_nul.as_bytes(), &[]);
    assert_eq!(status, 400, "{answer}");
    let auth = format!("Authorization: Bearer {key}\0");
    let (status, answer) = raw_get(&app, b"/invites_api", &[auth.as_bytes()]);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn a_duplicated_key_parameter_is_a_400() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let other = app.create_key("localhost");
    for query in [
        format!("?key={key}&key={key}"),
        format!("?key={key}&key={other}"),
        format!("?key={key}&key="),
        format!("?key={key}&key"),
    ] {
        let body = expect_refusal(&app, get(&app, &query), 400);
        assert!(body.contains("more than once"), "{query}: {body}");
    }
}

#[test]
fn a_very_long_query_is_a_4xx() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    // Long but within the HTTP parser's limits: the handler refuses the key.
    let long = format!("?key={key}{}", "a".repeat(8_000));
    expect_refusal(&app, get(&app, &long), 403);
    let long = format!("?key={key}&pad={}", "b".repeat(30_000));
    // An unknown parameter is ignored; the key is fine.
    expect_mint(&app, get(&app, &long), 201);
    // Beyond what the HTTP parser takes: it refuses the request itself.
    for len in [70_000, 100_000] {
        let target = format!("/invites_api?key={key}&pad={}", "c".repeat(len));
        let (status, answer) = raw_get(&app, target.as_bytes(), &[]);
        assert!((400..500).contains(&status), "{len}: {answer}");
    }
    assert_eq!(probe::invites(&app), 1);
}

#[test]
fn huge_and_numerous_headers_get_a_431() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let auth = format!("Authorization: Bearer {key}");

    // A large header that still fits: answered normally.
    let big = format!("X-Big: {}", "a".repeat(60_000));
    let (status, answer) = raw_get(&app, b"/invites_api", &[auth.as_bytes(), big.as_bytes()]);
    assert_eq!(status, 201, "{answer}");

    // A head beyond actix's limit.
    let huge = format!("X-Huge: {}", "a".repeat(200_000));
    let (status, answer) = raw_get(&app, b"/invites_api", &[auth.as_bytes(), huge.as_bytes()]);
    assert_eq!(status, 431, "{answer}");

    // More header lines than actix takes.
    let many: Vec<String> = (0..120).map(|i| format!("X-H{i}: v")).collect();
    let mut lines: Vec<&[u8]> = vec![auth.as_bytes()];
    lines.extend(many.iter().map(|h| h.as_bytes()));
    let (status, answer) = raw_get(&app, b"/invites_api", &lines);
    assert_eq!(status, 431, "{answer}");

    // And through reqwest.
    let mut req = get(&app, "").header(AUTHORIZATION, bearer(&key));
    for i in 0..120 {
        req = req.header(format!("x-many-{i}"), "v");
    }
    assert_eq!(req.send().unwrap().status(), 431);

    assert_eq!(probe::invites(&app), 1);
    assert_eq!(
        client()
            .get(format!("{}/health", app.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn a_non_ascii_authorization_header_is_a_403() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for value in [
        format!("Bearer {key}\u{e9}").into_bytes(),
        b"Bearer \xff\xfe".to_vec(),
        "Bearer cl\u{e9}/secr\u{e8}t".as_bytes().to_vec(),
    ] {
        let res = get(&app, "")
            .header(AUTHORIZATION, HeaderValue::from_bytes(&value).unwrap())
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        let body = res.text().unwrap();
        assert!(body.contains("ASCII"), "{body}");
        let mut line = b"Authorization: ".to_vec();
        line.extend_from_slice(&value);
        let (status, answer) = raw_get(&app, b"/invites_api", &[&line]);
        assert_eq!(status, 403, "{answer}");
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn a_non_ascii_header_of_another_scheme_does_not_hide_a_query_key() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let res = get(&app, &format!("?key={key}"))
        .header(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        )
        .send()
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(probe::invites(&app), 1);
}

#[test]
fn hostile_requests_never_get_a_5xx_and_the_server_stays_up() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    let (id, _) = key_parts(&key);
    let targets: Vec<Vec<u8>> = vec![
        b"/invites_api?%".to_vec(),
        b"/invites_api?&&&&".to_vec(),
        b"/invites_api?=".to_vec(),
        b"/invites_api?==&=key".to_vec(),
        b"/invites_api?key=%%%".to_vec(),
        b"/invites_api?key=%u0041".to_vec(),
        b"/invites_api?key=%ed%a0%80".to_vec(),
        b"/invites_api?key=\xff\xfe".to_vec(),
        b"/invites_api?k\xc3\xa9y=1".to_vec(),
        b"/invites_api?key=a\x01b".to_vec(),
        b"/invites_api?key=a\tb".to_vec(),
        b"/invites_api?key=a b".to_vec(),
        format!("/invites_api?key={id}/%2e%2e%2f%2e%2e").into_bytes(),
        format!("/invites_api?key={id}/{}", "+".repeat(40)).into_bytes(),
        format!("/invites_api?key={id}//{}", "x".repeat(40)).into_bytes(),
        format!("/invites_api?key=../../{key}").into_bytes(),
        format!("/invites_api?redirect&redirect&key={key}").into_bytes(),
        b"/invites_api?key[]=x".to_vec(),
        b"/invites_api/../invites_api?key=x".to_vec(),
        b"/invites_api#frag".to_vec(),
        b"http://127.0.0.1/invites_api?key=x".to_vec(),
        b"*".to_vec(),
    ];
    let headers: Vec<Vec<u8>> = vec![
        b"Authorization: Bearer".to_vec(),
        b"Authorization: Bearer /".to_vec(),
        b"Authorization: Bearer \xc3\xa9".to_vec(),
        b"Authorization: \x7f".to_vec(),
        b"Authorization: Bearer a\x01b".to_vec(),
        b"Authorization:    ".to_vec(),
        b"Origin: \xff".to_vec(),
        b"Origin: null".to_vec(),
        b"Content-Length: -1".to_vec(),
        b"Content-Length: 99999999999999999999999".to_vec(),
        b"Transfer-Encoding: chunked, identity".to_vec(),
        b"Expect: 100-continue".to_vec(),
        format!("Authorization: Bearer {}", "A".repeat(10_000)).into_bytes(),
    ];
    let mut answers = Vec::new();
    for t in &targets {
        answers.push((
            String::from_utf8_lossy(t).into_owned(),
            raw_get(&app, t, &[]),
        ));
    }
    for h in &headers {
        answers.push((
            String::from_utf8_lossy(h).into_owned(),
            raw_get(&app, b"/invites_api", &[h]),
        ));
    }
    for (what, (status, answer)) in &answers {
        assert!(
            (400..500).contains(status),
            "{what:?} got {status} (0 = connection dropped): {answer}"
        );
    }
    assert_eq!(probe::invites(&app), 0);
    let res = client().get(format!("{}/health", app.url)).send().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().unwrap(), "ok\n");
    assert!(!app.log().contains("panicked"), "{}", app.log());
}

#[test]
fn health_needs_no_credentials_and_ignores_them() {
    let app = TestApp::spawn();
    for req in [
        client().get(format!("{}/health", app.url)),
        client()
            .get(format!("{}/health?key=nonsense", app.url))
            .header(AUTHORIZATION, "Bearer nonsense"),
    ] {
        let res = req.send().unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().unwrap(), "ok\n");
    }
    assert_eq!(probe::invites(&app), 0);
}

#[test]
fn bearer_followed_by_a_tab_or_several_spaces_is_still_a_key() {
    let app = TestApp::spawn();
    let key = app.create_key("localhost");
    for value in [format!("Bearer\t{key}"), format!("bearer   {key}  ")] {
        let res = get(&app, "")
            .header(AUTHORIZATION, value.as_str())
            .send()
            .unwrap();
        assert_eq!(res.status(), 201, "{value:?}");
    }
    assert_eq!(probe::invites(&app), 2);
}
