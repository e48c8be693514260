//! The admin API (`/api/admin/*`) with an admin-scope key: listing, minting,
//! showing and revoking invites and listing accounts, for the key's host
//! only; and the cap every reset invite's ttl is held to.

use crate::helpers::{register_account, stderr_of, stdout_of, TestApp};

#[test]
fn invites_reset_refuses_a_ttl_beyond_the_hosts_max_invite_expiry_and_mints_nothing() {
    let app = TestApp::spawn();
    register_account(&app, "alice");
    let out = app.cli(&["invites", "reset", "localhost", "alice", "--ttl", "31d"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout_of(&out), "");
    assert!(stderr_of(&out).contains("max_invite_expiry"), "{out:?}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invites WHERE kind = 'reset'"),
        0
    );
    // The maximum itself is allowed.
    let out = app.cli(&["invites", "reset", "localhost", "alice", "--ttl", "30d"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM invites WHERE kind = 'reset'"),
        1
    );
}
