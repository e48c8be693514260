//! Operating the server: the shipped man page and systemd unit, shell
//! completions, and `check-config`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

use crate::config::{bin, run};
use crate::helpers::{self, stderr_of, stdout_of};

/// The checkout's root, where the shipped files are.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn invite_server(args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.args(args);
    run(cmd)
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The top-level subcommands `--help` lists (but `help` itself).
fn subcommands() -> Vec<String> {
    let out = invite_server(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = stdout_of(&out);
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&n| n != "help")
        .map(str::to_owned)
        .collect();
    assert!(names.len() >= 7, "too few subcommands in:\n{help}");
    names
}

#[test]
fn the_shipped_man_page_is_what_invite_server_man_prints() {
    let out = invite_server(&["man"]);
    assert!(out.status.success(), "{out:?}");
    let shipped = std::fs::read_to_string(repo().join("docs/invite-server.1")).unwrap();
    assert!(
        stdout_of(&out) == shipped,
        "docs/invite-server.1 is stale: regenerate it with \
         `cargo run -q -- man > docs/invite-server.1`"
    );
    for name in subcommands() {
        assert!(
            shipped.contains(&format!(".SS \"invite-server {name} ")),
            "the man page does not describe `{name}`"
        );
    }
}

#[test]
fn every_completion_script_names_every_subcommand_and_bash_accepts_its_own() {
    let names = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let out = invite_server(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = stdout_of(&out);
        for name in names
            .iter()
            .chain(&["create".into(), "list".into(), "delete".into()])
        {
            assert!(
                script.contains(name.as_str()),
                "{shell} script lacks `{name}`"
            );
        }
        if shell == "bash" {
            let dir = TempDir::new().unwrap();
            let path = write(&dir, "invite-server.bash", &script);
            let checked = run({
                let mut c = Command::new("bash");
                c.arg("-n").arg(&path);
                c
            });
            assert!(checked.status.success(), "bash -n refused it: {checked:?}");
        }
    }
}

#[test]
fn completions_and_the_man_page_need_no_configuration() {
    let dir = TempDir::new().unwrap();
    let broken = write(&dir, "broken.toml", "listen = \"nowhere\"\n");
    for args in [&["completions", "bash"][..], &["man"]] {
        let mut cmd = bin();
        cmd.env("INVITE_SERVER_CONFIG", &broken).args(args);
        let out = run(cmd);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(!out.stdout.is_empty(), "{args:?} printed nothing");
    }
}

#[test]
fn check_config_prints_the_effective_configuration_which_reads_back_the_same() {
    let dir = TempDir::new().unwrap();
    let config = write(
        &dir,
        "config.toml",
        r#"
trusted_proxies = ["10.0.0.0/8", "::1"]
login_attempts_per_minute = 5

[hosts."a.test"]
public_url = "https://a.test/"
after_registration_url = "https://chat.a.test"

[hosts."b.test"]
public_url = "https://b.test"
invite_expiry = "12h"
site_name = "Bee"
"#,
    );
    let db = dir.path().join("elsewhere.db");
    let check = |config: &Path| {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(config)
            .arg("--db")
            .arg(&db)
            .env("INVITE_SERVER_LISTEN", "127.0.0.1:6789")
            .arg("check-config");
        let out = run(cmd);
        assert!(out.status.success(), "{out:?}");
        stdout_of(&out)
    };
    let printed = check(&config);
    let effective: toml::Table = toml::from_str(&printed).expect("check-config prints TOML");
    // Flags and environment as `serve` takes them; the file; the defaults.
    assert_eq!(
        effective["listen"].as_str(),
        Some("127.0.0.1:6789"),
        "{printed}"
    );
    assert_eq!(effective["database"].as_str(), db.to_str(), "{printed}");
    assert_eq!(effective["login_attempts_per_minute"].as_integer(), Some(5));
    assert_eq!(effective["max_connections"].as_integer(), Some(1024));
    let a = &effective["hosts"]["a.test"];
    assert_eq!(
        a["public_url"].as_str(),
        Some("https://a.test"),
        "{printed}"
    );
    assert_eq!(a["invite_expiry"].as_str(), Some("7d"), "{printed}");
    assert_eq!(a["site_name"].as_str(), Some("a.test"), "{printed}");
    assert_eq!(
        effective["hosts"]["b.test"]["invite_expiry"].as_str(),
        Some("12h")
    );
    assert!(
        printed.contains(r#"trusted_proxies = ["10.0.0.0/8", "::1"]"#),
        "{printed}"
    );
    // Fed back as the configuration, it is the same configuration.
    let again = write(&dir, "printed.toml", &printed);
    assert_eq!(check(&again), printed);
}

#[test]
fn check_config_without_hosts_says_the_built_in_host_follows_the_listen_address() {
    let out = invite_server(&["check-config", "--listen", "127.0.0.1:7000"]);
    assert!(out.status.success(), "{out:?}");
    let printed = stdout_of(&out);
    let effective: toml::Table = toml::from_str(&printed).unwrap();
    assert!(effective.get("hosts").is_none(), "{printed}");
    assert!(printed.contains("built-in host `localhost`"), "{printed}");
    assert!(printed.contains("http://127.0.0.1:7000"), "{printed}");
}

#[test]
fn check_config_refuses_what_serve_refuses_with_the_same_message() {
    let dir = TempDir::new().unwrap();
    let bad = [
        ("listen.toml", "listen = \"localhost:5280\"\n"),
        ("hosts.toml", "[hosts]\n"),
        (
            "same-address.toml",
            "[hosts.\"a.test\"]\npublic_url = \"https://x.test\"\n\
             [hosts.\"b.test\"]\npublic_url = \"https://x.test/b\"\n",
        ),
        ("unknown-key.toml", "lisen = \"127.0.0.1:5280\"\n"),
    ];
    let mut files: Vec<PathBuf> = bad.iter().map(|(n, t)| write(&dir, n, t)).collect();
    files.push(dir.path().join("missing.toml"));
    let db = dir.path().join("never-created.db");
    for file in &files {
        let outcome = |command: &str| {
            let mut cmd = bin();
            cmd.arg("--config")
                .arg(file)
                .arg("--db")
                .arg(&db)
                .arg(command);
            let out = run(cmd);
            (out.status.code(), stderr_of(&out))
        };
        let checked = outcome("check-config");
        assert_eq!(checked.0, Some(1), "{file:?}: {checked:?}");
        assert!(checked.1.starts_with("Error: "), "{file:?}: {checked:?}");
        assert_eq!(checked, outcome("serve"), "{file:?}");
    }
    assert!(!db.exists(), "checking created the database");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_warnings() {
    let unit =
        std::fs::read_to_string(repo().join("contrib/systemd/invite-server.service")).unwrap();
    let exec = "ExecStart=/usr/local/bin/invite-server --config /etc/invite-server/config.toml \
                --db /var/lib/invite-server/invite-server.db serve\n";
    assert!(unit.contains(exec), "the unit's ExecStart changed:\n{unit}");
    // verify wants ExecStart's binary to exist: the one just built.
    let dir = TempDir::new().unwrap();
    let copy = unit.replace(
        "ExecStart=/usr/local/bin/invite-server ",
        &format!("ExecStart={} ", helpers::BIN),
    );
    let path = write(&dir, "invite-server.service", &copy);
    let out = run({
        let mut c = Command::new("/usr/bin/systemd-analyze");
        c.arg("verify").arg(&path);
        c
    });
    let said = stderr_of(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {said}"
    );
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("invite-server"))
        .collect();
    assert!(
        about_unit.is_empty(),
        "warnings about the unit:\n{}",
        about_unit.join("\n")
    );
}
