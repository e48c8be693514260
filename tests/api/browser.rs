//! The real pages in a real browser: headless Chromium driven over W3C
//! WebDriver (chromedriver), from the link `/invites_api` hands out to a
//! signed-in account that `/api/auth/check` recognises.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{auth_check, TestApp, GOOD_PASSWORD};
use crate::probe;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "apt-get install chromium chromium-driver";

/// A chromedriver on a free loopback port with a fresh Chromium profile
/// directory. It runs in a process group of its own, which is killed whole on
/// drop, so a failing test leaves no browser behind.
pub(crate) struct ChromeDriver {
    child: Child,
    url: String,
    profile: TempDir,
    log: std::path::PathBuf,
}

impl ChromeDriver {
    pub(crate) fn start() -> Self {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the browser test needs Debian's Chromium and its driver; run `{INSTALL}`"
            );
        }
        let profile = tempfile::tempdir().expect("tempdir");
        let log = profile.path().join("chromedriver.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER} ({e}); run `{INSTALL}`"));
        let mut driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile,
            log,
        };
        driver.wait_ready();
        driver
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = format!("{}/status", self.url);
        loop {
            if let Ok(res) = crate::helpers::client().get(&status).send() {
                if let Ok(v) = res.json::<Value>() {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "chromedriver exited ({exit}): {}; run `{INSTALL}`",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens a headless Chromium session.
    pub(crate) async fn session(&self) -> Client {
        let user_data = self.profile.path().join("chromium");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", user_data.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Chromium would not start under chromedriver ({e}); run `{INSTALL}`\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Chromium inherited chromedriver's group.
        kill_group(&mut self.child);
    }
}

/// Kills `child` and the process group it leads (started with
/// `process_group(0)`, so the group id is its pid), and reaps it.
pub(crate) fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Types into the input named `name`, replacing what is there.
pub(crate) async fn fill(c: &Client, name: &str, text: &str) {
    let input = c
        .find(Locator::Css(&format!("input[name=\"{name}\"]")))
        .await
        .unwrap_or_else(|e| panic!("no {name} input: {e}"));
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

pub(crate) async fn submit(c: &Client) {
    c.find(Locator::Css("button[type=\"submit\"]"))
        .await
        .expect("no submit button")
        .click()
        .await
        .unwrap();
}

/// Waits for the success page and returns the address it shows.
pub(crate) async fn registered_address(c: &Client) -> String {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#address"))
        .await
        .expect("the success page did not appear")
        .text()
        .await
        .unwrap()
}

#[test]
fn a_newcomer_registers_in_headless_chromium_and_the_browser_is_signed_in() {
    let app = TestApp::spawn();
    let page = app.mint();
    let driver = ChromeDriver::start();
    let rt = runtime();

    let (identity, check_body) = rt.block_on(async {
        let c = driver.session().await;
        c.goto(&page).await.unwrap();
        let title = c.title().await.unwrap();
        assert!(title.contains("Test Site"), "title {title:?}");
        let lead = c
            .find(Locator::Css("p.lead"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // A key's name is the operator's label: its invitees see the site.
        assert!(
            lead.contains("The administrators of Test Site invited you."),
            "{lead}"
        );
        let qr = c
            .find(Locator::Css("section.qr svg"))
            .await
            .expect("no QR code");
        assert!(qr.is_displayed().await.unwrap(), "the QR code is hidden");
        // The stylesheet loaded under the page's CSP.
        let main = c.find(Locator::Css("main")).await.unwrap();
        assert_eq!(main.css_value("max-width").await.unwrap(), "544px");

        fill(&c, "name", "Browser.User").await;
        fill(&c, "password", GOOD_PASSWORD).await;
        fill(&c, "password2", GOOD_PASSWORD).await;
        submit(&c).await;
        assert_eq!(registered_address(&c).await, "browser.user@localhost");
        let body = c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("Open the chat and sign in."), "{body}");
        assert_eq!(c.current_url().await.unwrap().as_str(), page);

        let cookie = c
            .get_named_cookie("identity")
            .await
            .expect("the browser has no identity cookie");
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(
            cookie.same_site().map(|s| s.to_string()).as_deref(),
            Some("Strict")
        );
        assert_eq!(cookie.path(), Some("/"));
        assert!(
            c.get_named_cookie("invite_csrf").await.is_err(),
            "the CSRF cookie outlived the registration"
        );

        // The browser itself, cookie and all, passes the auth check.
        c.goto(&format!("{}/api/auth/check", app.url))
            .await
            .unwrap();
        let text = c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Going back to the spent link shows it is used.
        c.goto(&page).await.unwrap();
        let h1 = c
            .find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(h1.contains("already been used"), "{h1}");
        c.close().await.unwrap();
        (cookie.value().to_owned(), text)
    });

    let who: Value = serde_json::from_str(check_body.trim())
        .unwrap_or_else(|e| panic!("/api/auth/check showed {check_body:?}: {e}"));
    assert_eq!(who, json!({ "name": "browser.user", "host": "localhost" }));
    let check = auth_check(&app, Some(&identity));
    assert_eq!(check.status(), 200);
    assert_eq!(
        check.headers()["x-invite-server-user"].to_str().unwrap(),
        "browser.user@localhost"
    );
    assert!(probe::account(&app, "browser.user").is_some());
    assert_eq!(probe::census(&app).invites_used_up, 1);
}

#[test]
fn mismatched_passwords_in_chromium_bring_the_form_back_with_the_reason_and_the_name() {
    let app = TestApp::spawn();
    let page = app.mint();
    let driver = ChromeDriver::start();
    let rt = runtime();

    rt.block_on(async {
        let c = driver.session().await;
        c.goto(&page).await.unwrap();
        fill(&c, "name", "mixup").await;
        fill(&c, "password", GOOD_PASSWORD).await;
        fill(&c, "password2", "tulip quarry lantern 93").await;
        submit(&c).await;
        let error = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("p.error"))
            .await
            .expect("no error shown")
            .text()
            .await
            .unwrap();
        assert!(error.contains("The two passwords differ"), "{error}");
        let name = c.find(Locator::Css("input[name=\"name\"]")).await.unwrap();
        assert_eq!(name.prop("value").await.unwrap().as_deref(), Some("mixup"));
        for field in ["password", "password2"] {
            let input = c
                .find(Locator::Css(&format!("input[name=\"{field}\"]")))
                .await
                .unwrap();
            assert_eq!(
                input.prop("value").await.unwrap().as_deref(),
                Some(""),
                "{field} was sent back to the browser"
            );
        }
        assert!(c.get_named_cookie("identity").await.is_err(), "signed in");
        assert_eq!(probe::accounts(&app), 0);
        assert_eq!(probe::invites_not_used_up(&app), 1);

        // The form that came back works: retype the passwords and send it.
        fill(&c, "password", GOOD_PASSWORD).await;
        fill(&c, "password2", GOOD_PASSWORD).await;
        submit(&c).await;
        assert_eq!(registered_address(&c).await, "mixup@localhost");
        c.close().await.unwrap();
    });
    assert_eq!(probe::accounts(&app), 1);
}

#[test]
fn in_chromium_signing_in_lands_on_next_and_the_account_page_changes_the_password() {
    let app = TestApp::spawn();
    crate::helpers::register_account(&app, "walker");
    let other = crate::helpers::login(&app, "walker", GOOD_PASSWORD);
    let other = crate::helpers::set_cookie_value(&other, "identity").unwrap();
    let driver = ChromeDriver::start();
    let rt = runtime();
    let new_password = "orchid velvet harbour 57";

    rt.block_on(async {
        let c = driver.session().await;
        c.goto(&format!("{}/login?next=/health", app.url))
            .await
            .unwrap();
        fill(&c, "name", "walker").await;
        fill(&c, "password", GOOD_PASSWORD).await;
        submit(&c).await;
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_url(&url::Url::parse(&format!("{}/health", app.url)).unwrap())
            .await
            .expect("sign-in did not land on next");

        c.goto(&format!("{}/account", app.url)).await.unwrap();
        assert_eq!(registered_address(&c).await, "walker@localhost");
        fill(&c, "current", GOOD_PASSWORD).await;
        fill(&c, "password", new_password).await;
        fill(&c, "password2", new_password).await;
        c.find(Locator::Css("#change"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let notice = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css("p.notice"))
            .await
            .expect("no notice")
            .text()
            .await
            .unwrap();
        assert!(notice.contains("Your password was changed"), "{notice}");
        c.close().await.unwrap();
    });
    assert_eq!(auth_check(&app, Some(&other)).status(), 401);
    assert_eq!(
        crate::helpers::login(&app, "walker", GOOD_PASSWORD).status(),
        401
    );
    assert_eq!(
        crate::helpers::login(&app, "walker", new_password).status(),
        204
    );
}
