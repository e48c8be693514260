//! Several nodes on one database: three server processes share the store (on
//! SQLite one file, on PostgreSQL one database), as behind a load balancer.
//! Whatever one node or the CLI changes, every node honours on its next
//! request; a node killed with SIGKILL loses nothing it acknowledged, and the
//! others go on serving and take over the work it held.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use crate::helpers::*;
use crate::probe;
use crate::webhooks::{cli_mint, config, types, Holder, Receiver};

/// Three nodes on one fresh database.
fn three_nodes() -> [TestApp; 3] {
    let a = TestApp::spawn();
    let b = a.spawn_node();
    let c = a.spawn_node();
    [a, b, c]
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", stderr_of(out));
}

/// `GET /invites_api` on `node` with `key`: the status, and the page URL of a 201.
fn mint_on(node: &TestApp, key: &str) -> (u16, Option<String>) {
    let res = client()
        .get(format!("{}/invites_api?key={key}", node.url))
        .send()
        .unwrap();
    let page = header(&res, "location");
    (res.status().as_u16(), page)
}

#[test]
fn sixty_registrations_of_one_single_use_invite_spread_over_three_nodes_create_exactly_one_account()
{
    const RACERS: usize = 60;
    let nodes = three_nodes();
    let token = token_of(&nodes[0].mint());
    let barrier = Arc::new(Barrier::new(RACERS));
    let statuses: Vec<(usize, u16)> = thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let (node, token, barrier) = (&nodes[i % 3], &token, Arc::clone(&barrier));
                s.spawn(move || {
                    barrier.wait();
                    let res = accept_invite(node, token, &format!("racer{i}"), GOOD_PASSWORD);
                    (i, res.status().as_u16())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let winners: Vec<usize> = statuses
        .iter()
        .filter(|(_, status)| *status == 204)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one racer wins: {statuses:?}");
    // Every loser is told the invite is used up (404 on the JSON API), by
    // whichever node it asked; none sees a failure of the server.
    for (i, status) in &statuses {
        if *i != winners[0] {
            assert_eq!(*status, 404, "racer {i}: {statuses:?}");
        }
    }
    let census = probe::census(&nodes[0]);
    assert_eq!((census.accounts, census.sessions), (1, 1), "{census:?}");
    assert_eq!(
        census.uses_spent, 1,
        "the invite was spent once: {census:?}"
    );
    let winner =
        probe::account(&nodes[0], &format!("racer{}", winners[0])).expect("the winner's account");
    let invite = probe::invite(&nodes[0], &token).expect("the invite");
    assert_eq!(winner.invite_id, Some(invite.id));
}

#[test]
fn a_key_deleted_through_one_node_is_refused_by_the_other_two_on_their_next_request() {
    let [a, b, c] = three_nodes();
    let key = a.create_key("localhost");
    // Every node has used (and may cache) the key.
    for node in [&a, &b, &c] {
        assert_eq!(mint_on(node, &key).0, 201);
    }
    let id = key.split('/').next().expect("<id>/<secret>");
    ok(&a.cli(&["keys", "delete", "--", "localhost", id]));

    for node in [&b, &c, &a] {
        assert_eq!(mint_on(node, &key).0, 403, "node {}", node.url);
    }
    assert_eq!(
        probe::invites(&a),
        3,
        "no invite was minted after the delete"
    );
    assert!(probe::key(&a, id).is_none());
}

/// `GET /api/admin/invites` on `node` with `key` as Bearer: the status.
fn admin_list_on(node: &TestApp, key: &str) -> u16 {
    client()
        .get(format!("{}/api/admin/invites", node.url))
        .header("Authorization", format!("Bearer {key}"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn an_admin_key_deleted_through_the_cli_is_refused_by_every_node_on_its_next_admin_request() {
    let [a, b, c] = three_nodes();
    let out = a.cli(&["keys", "create", "localhost", "--scope", "admin"]);
    ok(&out);
    let key = stdout_of(&out).trim().to_owned();
    // Every node has checked (and may cache) the key; listing writes nothing
    // that would re-check it in the store.
    for node in [&a, &b, &c] {
        assert_eq!(admin_list_on(node, &key), 200, "node {}", node.url);
    }
    let id = key.split('/').next().expect("<id>/<secret>");
    ok(&a.cli(&["keys", "delete", "--", "localhost", id]));

    for node in [&b, &c, &a] {
        assert_eq!(admin_list_on(node, &key), 401, "node {}", node.url);
    }
}

#[test]
fn an_account_created_on_one_node_signs_in_on_another_and_signing_out_or_disabling_it_holds_on_every_node(
) {
    let [a, b, c] = three_nodes();
    register_account(&a, "alice");

    // Signed up on A, signed in on C; the session works everywhere.
    let res = login(&c, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let session = set_cookie_value(&res, "identity").expect("an identity cookie");
    for node in [&a, &b, &c] {
        assert_eq!(auth_check(node, Some(&session)).status(), 200);
    }

    // Signed out on B: refused by A and C on their next check.
    let res = client()
        .post(format!("{}/api/auth/logout", b.url))
        .header(reqwest::header::COOKIE, format!("identity={session}"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 204);
    for node in [&a, &c, &b] {
        assert_eq!(auth_check(node, Some(&session)).status(), 401);
    }
    assert!(probe::session(&a, &session).is_none());

    // Disabled on the CLI: every node refuses a session opened on any of them.
    let res = login(&b, "alice", GOOD_PASSWORD);
    assert_eq!(res.status(), 204);
    let session = set_cookie_value(&res, "identity").expect("an identity cookie");
    for node in [&a, &b, &c] {
        assert_eq!(auth_check(node, Some(&session)).status(), 200);
    }
    ok(&a.cli(&["accounts", "disable", "localhost", "alice"]));
    for node in [&c, &b, &a] {
        assert_eq!(auth_check(node, Some(&session)).status(), 401);
        assert_eq!(login(node, "alice", GOOD_PASSWORD).status(), 401);
    }
    assert_eq!(probe::census(&a).disabled_accounts, 1);
}

#[test]
fn a_node_killed_under_load_loses_no_acknowledged_invite_and_the_others_keep_serving() {
    /// Mints each surviving node's client makes.
    const MINTS: usize = 40;
    /// Mints the victim's client may make: far more than it has time for
    /// before the kill, and still a bound.
    const VICTIM_MINTS: usize = 400;
    /// Acknowledged mints on the victim before it is killed.
    const BEFORE_KILL: usize = 5;
    let [a, mut b, c] = three_nodes();
    let key = a.create_key("localhost");
    let (acked_tx, acked_rx) = mpsc::channel::<()>();

    let (survivors, victim) = thread::scope(|s| {
        // One client on each surviving node: every mint must succeed.
        let survivors: Vec<_> = [&a, &c]
            .into_iter()
            .map(|node| {
                let (url, key) = (node.url.clone(), key.clone());
                s.spawn(move || {
                    let mut pages = Vec::new();
                    for i in 0..MINTS {
                        let res = client()
                            .get(format!("{url}/invites_api?key={key}"))
                            .send()
                            .unwrap_or_else(|e| panic!("mint {i} on {url}: {e}"));
                        assert_eq!(res.status(), 201, "mint {i} on {url}");
                        pages.push(header(&res, "location").expect("a Location"));
                    }
                    pages
                })
            })
            .collect();
        // One on the victim: it records each mint acknowledged before the
        // kill and stops at the first that fails (the node is gone).
        let (url, key) = (b.url.clone(), key.clone());
        let victim = s.spawn(move || {
            let mut pages = Vec::new();
            for _ in 0..VICTIM_MINTS {
                match client().get(format!("{url}/invites_api?key={key}")).send() {
                    Ok(res) if res.status() == 201 => {
                        pages.push(header(&res, "location").expect("a Location"));
                        let _ = acked_tx.send(());
                    }
                    Ok(res) => panic!("the victim answered {} before it died", res.status()),
                    Err(_) => break,
                }
            }
            pages
        });
        for _ in 0..BEFORE_KILL {
            acked_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the victim acknowledged too few mints");
        }
        b.kill();
        let survivors: Vec<Vec<String>> =
            survivors.into_iter().map(|h| h.join().unwrap()).collect();
        (survivors, victim.join().unwrap())
    });

    assert!(
        (BEFORE_KILL..VICTIM_MINTS).contains(&victim.len()),
        "the victim was killed under load: {} acknowledged",
        victim.len()
    );
    // Every invite the victim acknowledged is found through the other nodes.
    for (i, page) in victim.iter().enumerate() {
        let node = if i % 2 == 0 { &a } else { &c };
        let token = token_of(page);
        let res = client()
            .get(format!("{}/api/invite/{token}", node.url))
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "acknowledged invite {i} was lost");
        assert!(probe::invite(&a, &token).is_some(), "invite {i}");
    }
    // The survivors served their whole load, and the store holds at least
    // every acknowledged invite (a mint cut off by the kill may have
    // committed without its answer reaching the client).
    assert!(survivors.iter().all(|pages| pages.len() == MINTS));
    let acknowledged = (2 * MINTS + victim.len()) as u64;
    assert!(probe::invites(&a) >= acknowledged);
    for node in [&a, &c] {
        assert_eq!(
            client()
                .get(format!("{}/health", node.url))
                .send()
                .unwrap()
                .status(),
            200
        );
    }
}

#[test]
fn a_webhook_delivery_leased_by_a_killed_node_is_delivered_once_by_another_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_port();
    let holder = Holder::listen(hook_port);
    let cfg = config(dir.path(), hook_port, r#"["1s"]"#);
    let db = dir.path().join("test.db");
    // Only A runs when the event is written, so A is the node that leases it.
    let mut a = TestApp::spawn_in(dir, db, &cfg);
    cli_mint(&a);
    holder.wait_for_attempt();
    a.kill();
    let b = a.spawn_node();
    let c = a.spawn_node();
    holder.close();

    let receiver = Receiver::start(a.dir.path(), hook_port, &[]);
    // The lease (60 s) runs out; then one of B and C delivers it, once.
    let got = receiver.wait_within(1, Duration::from_secs(90));
    assert_eq!(types(&got), ["invite.created"]);
    assert_eq!(got[0]["verified"], true);
    for node in [&b, &c] {
        let list = node.cli(&["webhooks", "list", "localhost", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(list[0]["state"], "delivered", "{list}");
    }
    assert_eq!(receiver.received().len(), 1, "delivered twice");
    assert_eq!(probe::census(&b).delivered, 1);
}
