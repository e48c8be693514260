//! `invite-server accounts ...` and `invite-server invites create`: what an
//! operator types, checked against a running server and its database.

use std::collections::HashSet;
use std::process::Output;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::helpers::{
    accept_invite, assert_unknown_host_refused, auth_check, client, describe_invite, login,
    mint_for, register_account, token_of, TestApp, GOOD_PASSWORD,
};

use crate::helpers::{stderr_of as stderr, stdout_of as stdout};
use crate::probe;

fn create(app: &TestApp, host: &str, name: &str, password: &str) -> Output {
    app.cli_with_stdin(
        &["accounts", "create", host, name, "--password-stdin"],
        Some(&format!("{password}\n")),
    )
}

fn assert_fails(out: &Output, message: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(out);
    assert!(err.starts_with("Error: "), "{err}");
    assert!(err.contains(message), "{message:?} not in {err:?}");
    assert_eq!(stdout(out), "", "output on failure");
}

// ----------------------------------------------------------- accounts create

#[test]
fn creating_an_account_from_stdin_exits_0_and_the_account_can_sign_in() {
    let app = TestApp::spawn();
    let out = create(&app, "localhost", "Alice", GOOD_PASSWORD);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("alice@localhost"), "{out:?}");
    let account = probe::account(&app, "alice").expect("no account row");
    assert_eq!(account.host.as_str(), "localhost");
    let hash = account.password_hash;
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(account.invited_by, "cli");
    // The running server sees it at once.
    let res = login(&app, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    assert_eq!(
        login(&app, "alice", "tulip quarry lantern 93").status(),
        401
    );
}

#[test]
fn a_password_from_stdin_loses_its_line_ending_but_nothing_else() {
    let app = TestApp::spawn();
    let out = app.cli_with_stdin(
        &[
            "accounts",
            "create",
            "localhost",
            "crlf",
            "--password-stdin",
        ],
        Some(&format!(" {GOOD_PASSWORD}\r\nsecond line\n")),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        login(&app, "crlf", &format!(" {GOOD_PASSWORD}")).status(),
        204
    );
    assert_eq!(login(&app, "crlf", GOOD_PASSWORD).status(), 401);
}

#[test]
fn an_account_that_breaks_the_policy_is_refused_with_exit_1_saying_why() {
    let app = TestApp::spawn();
    let long = "x".repeat(1025);
    let cases: Vec<(&str, &str, &str)> = vec![
        ("bob", "short", "too short"),
        ("bob", "", "too short"),
        ("bob", "password1", "too easy to guess"),
        ("bob", &long, "too long"),
        (
            "zebraquasarvolt",
            "zebraquasarvolt",
            "must not be the account name",
        ),
        ("bad name", GOOD_PASSWORD, "1 to 64 characters of a-z, 0-9"),
        (".bob", GOOD_PASSWORD, "does not start or end with"),
    ];
    for (name, password, why) in cases {
        assert_fails(&create(&app, "localhost", name, password), why);
    }
    assert_eq!(probe::accounts(&app), 0);
}

#[test]
fn a_guessable_password_is_refused_in_whole_sentences() {
    let app = TestApp::spawn();
    // Neither has the trailing-space run-on of a warning and advice glued
    // together; "alice2024" gets no zxcvbn warning, "password1" gets one.
    for password in ["alice2024", "password1"] {
        let out = create(&app, "localhost", "alice", password);
        assert_fails(&out, "the password is too easy to guess. ");
        let message = stderr(&out);
        let sentences = message
            .trim_end()
            .strip_prefix("Error: the password is too easy to guess. ")
            .unwrap();
        assert!(sentences.ends_with('.'), "{message:?}");
        for sentence in sentences.split_inclusive(". ") {
            assert!(
                sentence.starts_with(|c: char| c.is_ascii_uppercase()),
                "{sentence:?} in {message:?}"
            );
        }
    }
    assert_eq!(probe::accounts(&app), 0);
}

#[test]
fn without_a_terminal_or_password_stdin_the_error_says_to_use_password_stdin() {
    let app = TestApp::spawn();
    // Standard input is a pipe here, as in a script or a cron job.
    let out = app.cli_with_stdin(
        &["accounts", "create", "localhost", "alice"],
        Some(&format!("{GOOD_PASSWORD}\n")),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr(&out),
        "Error: no terminal to ask for the password on: pipe it in with --password-stdin\n"
    );
    assert_eq!(probe::accounts(&app), 0);
}

#[test]
fn account_names_that_look_like_options_can_be_created_and_deleted() {
    let app = TestApp::spawn();
    // Registration allows a leading '-', so the CLI must reach such accounts.
    register_account(&app, "-web");
    let out = create(&app, "localhost", "-x", GOOD_PASSWORD);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr(&out).contains("-x@localhost"), "{out:?}");
    for name in ["-x", "-web"] {
        let out = app.cli(&["accounts", "delete", "localhost", name]);
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
    }
    assert_eq!(probe::accounts(&app), 0);
    let out = app.cli(&["accounts", "delete", "localhost", "-x"]);
    assert_eq!(stderr(&out), "Error: account not found\n");
}

#[test]
fn a_taken_name_is_refused_with_exit_1_whoever_took_it() {
    let app = TestApp::spawn();
    assert!(create(&app, "localhost", "alice", GOOD_PASSWORD)
        .status
        .success());
    register_account(&app, "webuser");
    for name in ["alice", "ALICE", "webuser"] {
        assert_fails(
            &create(&app, "localhost", name, "another fine passphrase 7"),
            "taken",
        );
    }
    assert_eq!(probe::accounts(&app), 2);
    // The first password still holds.
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 204);
    // The same name on another host is another account.
    assert!(create(&app, "example.com", "alice", GOOD_PASSWORD)
        .status
        .success());
    assert_eq!(probe::accounts(&app), 3);
}

#[test]
fn an_unknown_host_is_refused_with_exit_1_asking_for_a_valid_host() {
    let app = TestApp::spawn();
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "accounts",
            "create",
            "nowhere.invalid",
            "bob",
            "--password-stdin",
        ],
        vec!["accounts", "list", "nowhere.invalid"],
        vec!["accounts", "list", "nowhere.invalid", "--json"],
        vec!["accounts", "delete", "nowhere.invalid", "bob"],
        vec!["invites", "create", "nowhere.invalid"],
        vec!["invites", "create", "nowhere.invalid", "--count", "3"],
    ];
    for args in commands {
        let out = app.cli_with_stdin(&args, Some(&format!("{GOOD_PASSWORD}\n")));
        assert_unknown_host_refused(&out, &args, "nowhere.invalid");
    }
    assert_eq!(probe::accounts(&app), 0);
    assert_eq!(probe::invites(&app), 0);
}

// ------------------------------------------------------------- accounts list

#[test]
fn accounts_list_prints_one_hosts_accounts_as_lines_and_as_json() {
    let app = TestApp::spawn();
    assert!(create(&app, "localhost", "bob", GOOD_PASSWORD)
        .status
        .success());
    let (key, page) = mint_for(&app, "localhost");
    let key_id = key.split('/').next().unwrap();
    assert_eq!(
        accept_invite(&app, &token_of(&page), "alice", GOOD_PASSWORD).status(),
        204
    );
    assert!(create(&app, "example.com", "carol", GOOD_PASSWORD)
        .status
        .success());

    let out = app.cli(&["accounts", "list", "localhost"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0][0], "alice", "{text}");
    assert_eq!(lines[0][2], format!("key {key_id}"));
    assert_eq!(lines[1][0], "bob");
    assert_eq!(lines[1][2], "cli");
    for line in &lines {
        assert_eq!(line.len(), 3, "{text}");
        let created = DateTime::parse_from_rfc3339(line[1]).expect("created time");
        assert!((Utc::now() - created.with_timezone(&Utc)).num_seconds() < 120);
        assert!(line[1].ends_with('Z'), "{text}");
    }

    let out = app.cli(&["accounts", "list", "localhost", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "alice");
    assert_eq!(list[0]["host"], "localhost");
    assert_eq!(list[0]["invited_by"], format!("key {key_id}"));
    assert_eq!(list[1]["name"], "bob");
    assert_eq!(list[1]["invited_by"], "cli");
    for a in list {
        let created = a["created_at"].as_str().unwrap();
        assert!(DateTime::parse_from_rfc3339(created).is_ok(), "{created}");
        assert!(a.get("password_hash").is_none(), "the hash is listed: {a}");
        assert!(!a.to_string().contains("argon2"), "{a}");
    }

    let out = app.cli(&["accounts", "list", "example.com"]);
    assert_eq!(stdout(&out).lines().count(), 1);
    assert!(stdout(&out).starts_with("carol\t"));
}

#[test]
fn accounts_list_of_a_host_without_accounts_is_empty() {
    let app = TestApp::spawn();
    let out = app.cli(&["accounts", "list", "localhost"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "");
    let out = app.cli(&["accounts", "list", "localhost", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let list: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(list, serde_json::json!([]));
}

// ----------------------------------------------------------- accounts delete

#[test]
fn deleting_an_account_signs_it_out_everywhere_and_leaves_others_alone() {
    let app = TestApp::spawn();
    let page = app.mint();
    assert_eq!(
        accept_invite(&app, &token_of(&page), "alice", GOOD_PASSWORD).status(),
        204
    );
    let from_login = login(&app, "alice", GOOD_PASSWORD);
    let alice_cookie = crate::helpers::set_cookie_value(&from_login, "identity").unwrap();
    let bob_cookie = register_account(&app, "bob");
    assert_eq!(auth_check(&app, Some(&alice_cookie)).status(), 200);

    let out = app.cli(&["accounts", "delete", "localhost", "ALICE"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 401);
    assert_eq!(auth_check(&app, Some(&alice_cookie)).status(), 401);
    assert_eq!(probe::accounts(&app), 1);
    assert_eq!(probe::sessions(&app), 1, "alice's sessions outlived her");
    let listed = stdout(&app.cli(&["accounts", "list", "localhost"]));
    assert!(!listed.contains("alice"), "{listed}");
    // Bob is untouched.
    assert_eq!(auth_check(&app, Some(&bob_cookie)).status(), 200);
    // Her invite stays spent.
    assert_eq!(client().get(&page).send().unwrap().status(), 410);

    // The name is free again, and the old cookie does not open the new account.
    assert!(
        create(&app, "localhost", "alice", "a brand new passphrase 8")
            .status
            .success()
    );
    assert_eq!(auth_check(&app, Some(&alice_cookie)).status(), 401);
    assert_eq!(login(&app, "alice", GOOD_PASSWORD).status(), 401);
    assert_eq!(
        login(&app, "alice", "a brand new passphrase 8").status(),
        204
    );
}

#[test]
fn deleting_an_account_that_does_not_exist_exits_1_account_not_found() {
    let app = TestApp::spawn();
    assert!(create(&app, "example.com", "carol", GOOD_PASSWORD)
        .status
        .success());
    for name in ["nobody", "bad name", "carol"] {
        let out = app.cli(&["accounts", "delete", "localhost", name]);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert_eq!(stderr(&out), "Error: account not found\n", "{name}");
    }
    assert_eq!(probe::accounts(&app), 1, "carol on example.com was deleted");
}

// ------------------------------------------------------------ invites create

#[test]
fn invites_create_prints_one_url_whose_page_answers_200() {
    let app = TestApp::spawn();
    let out = app.cli(&["invites", "create", "localhost"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let url = text.strip_suffix('\n').expect("no final newline");
    assert!(!url.contains('\n'), "more than one line: {text:?}");
    assert!(url.starts_with(&format!("{}/invite?", app.url)), "{url}");
    let invite = probe::invite(&app, &token_of(url)).expect("the invite is stored");
    let (source, issuer) = (invite.source, invite.issuer_name);
    assert_eq!((source.as_str(), issuer), ("cli", None));

    let page = client().get(url).send().unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().unwrap();
    assert!(
        html.contains("The administrators of Test Site invited you."),
        "no inviter line"
    );
    let token = token_of(url);
    let described = describe_invite(&app, &token);
    assert_eq!(
        described["issuer"],
        serde_json::json!({ "id": "cli", "name": null })
    );
    // The first person can be invited without any key.
    assert_eq!(
        accept_invite(&app, &token, "first", GOOD_PASSWORD).status(),
        204
    );
    let invited_by = probe::account(&app, "first")
        .expect("the account")
        .invited_by;
    assert_eq!(invited_by, "cli");
}

#[test]
fn invites_create_with_a_count_prints_that_many_distinct_working_urls() {
    let app = TestApp::spawn();
    let out = app.cli(&["invites", "create", "localhost", "--count", "5"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let urls: Vec<&str> = text.lines().collect();
    assert_eq!(urls.len(), 5, "{text}");
    assert_eq!(urls.iter().collect::<HashSet<_>>().len(), 5, "{text}");
    let unused_cli_invites = urls
        .iter()
        .filter_map(|url| probe::invite(&app, &token_of(url)))
        .filter(|i| i.source == "cli" && i.uses_spent == 0)
        .count();
    assert_eq!(unused_cli_invites, 5);
    for url in &urls {
        assert_eq!(client().get(*url).send().unwrap().status(), 200, "{url}");
    }

    let out = app.cli(&["invites", "create", "example.com", "--count", "2"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for url in stdout(&out).lines() {
        assert!(url.starts_with("https://example.com/invite?"), "{url}");
    }
    assert_eq!(probe::census_of(&app, "example.com").invites, 2);
}

#[test]
fn invites_create_with_a_count_of_zero_is_refused_and_mints_nothing() {
    let app = TestApp::spawn();
    for count in ["0", "-1", "many"] {
        let out = app.cli(&["invites", "create", "localhost", "--count", count]);
        assert!(!out.status.success(), "--count {count}: {out:?}");
        assert_eq!(stdout(&out), "", "--count {count}");
    }
    assert_eq!(probe::invites(&app), 0);
}
