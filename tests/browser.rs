//! The console and the help page in a real headless Chromium, driven over
//! WebDriver (chromedriver; Debian's chromium and chromium-driver, which
//! .ci/run installs): sign in to the root's console, approve an update, see
//! the approval in the child's console, visit every page at the root and at
//! the site as admin and as auditor, follow the dashboard down to one
//! computer, and invoke an operation from /help. Any error in the browser's
//! console (a script error, a failed request) fails the test. Screenshots
//! are kept in `target/tmp/browser/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// A WebDriver session, spoken to with curl (plain HTTP on 127.0.0.1).
struct Browser {
    driver: Child,
    base: String,
    session: String,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = webdriver(&format!("{}/session/{}", self.base, self.session), "DELETE", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn webdriver(url: &str, method: &str, body: Option<&Value>) -> Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", method, "-H", "Content-Type: application/json"]);
    if let Some(b) = body {
        cmd.args(["--data-binary", &b.to_string()]);
    }
    let out = cmd.arg(url).output().expect("curl");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    fn start(shots: &Path) -> Browser {
        let driver_path = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromedriver is not installed: apt-get install chromium chromium-driver (.ci/run does)");
        let port = free_port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(20), || {
            webdriver(&format!("{base}/status"), "GET", None)["value"]["ready"] == true
        });
        let created = webdriver(
            &format!("{base}/session"),
            "POST",
            Some(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                // The nodes' certificates come from the organisation CA,
                // which this browser profile does not know.
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"]},
                "goog:loggingPrefs": {"browser": "ALL"}
            }}})),
        );
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        std::fs::create_dir_all(shots).unwrap();
        Browser {
            driver,
            base,
            session,
            shots: shots.to_path_buf(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let value = webdriver(
            &format!("{}/session/{}{path}", self.base, self.session),
            method,
            body.as_ref(),
        );
        value["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// The first element matching a CSS selector, waiting for it.
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
            if let Some(id) = found
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v.as_str())
            {
                return id.to_owned();
            }
            if Instant::now() > deadline {
                self.shot("not-found");
                panic!("no element {css}: {found}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.call("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        let result = self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
        if let Some(error) = result.get("error") {
            self.shot("click-failed");
            panic!("clicking {css}: {error}: {}", result["message"]);
        }
    }

    /// Waits until the text of `css` satisfies `check`.
    fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text(css);
            if check(&text) {
                return text;
            }
            if Instant::now() > deadline {
                self.shot("timeout");
                panic!("timed out waiting for {what}; {css} says {text:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fails on anything the page logged as an error since the last call
    /// (script errors, requests that failed).
    fn no_console_errors(&self, page: &str) {
        let logged = self.call("POST", "/se/log", Some(json!({"type": "browser"})));
        let errors: Vec<&Value> = logged
            .as_array()
            .map(|entries| entries.iter().filter(|e| e["level"] == "SEVERE").collect())
            .unwrap_or_default();
        if !errors.is_empty() {
            self.shot("console-error");
            panic!("{page}: the browser logged errors: {errors:?}");
        }
    }

    /// Goes to a console page and waits for its heading.
    fn page(&self, url: &str, heading: &str) -> String {
        self.go(url);
        let text = self.wait_text("#view h1", heading, |t| t.starts_with(heading));
        // The page's data, not only its heading, is drawn at once.
        std::thread::sleep(Duration::from_millis(150));
        self.no_console_errors(url);
        text
    }

    /// Signs in afresh (the tab's stored token cleared first).
    fn sign_in(&self, base: &str, token: &str, who: &str) {
        self.go(&format!("{base}/"));
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "sessionStorage.clear();", "args": []})),
        );
        self.call("POST", "/refresh", Some(json!({})));
        self.type_into("#token", token);
        // The page that loaded before the clear may have sent a request
        // without its token by then (a 401 the test caused): not counted.
        self.call("POST", "/se/log", Some(json!({"type": "browser"})));
        self.click("#signin-button");
        self.wait_text("#who", who, |t| t.contains(who));
    }

    fn shot(&self, name: &str) {
        use base64::Engine;
        if let Some(b64) = self.call("GET", "/screenshot", None).as_str()
            && let Ok(png) = base64::engine::general_purpose::STANDARD.decode(b64)
        {
            let _ = std::fs::write(self.shots.join(format!("{name}.png")), png);
        }
    }
}

#[test]
fn approve_in_the_root_console_see_it_at_the_child_and_invoke_from_help() {
    let mut tree = Tree::new(&[("root", None), ("child", Some("root"))]);
    for id in ["root", "child"] {
        tree.top.insert(id.into(), "api_listen = \"127.0.0.1:0\"\n".into());
    }
    tree.start_all();
    let cvrf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cvrf/cvrfDocument-2022-Dec.trimmed.xml");
    ok(tree.ctl("root", &["import", cvrf.to_str().unwrap()]));
    ok(tree.ctl(
        "root",
        &[
            "call",
            "policies.upsert",
            "--params",
            r#"{"policy": {"id": "workstations", "name": "Workstations", "enabled": true}}"#,
        ],
    ));
    let token = |node: &str, role: &str| {
        ok(tree.ctl(
            node,
            &[
                "api-token",
                "create",
                "--name",
                &format!("browser-{role}"),
                "--role",
                role,
            ],
        ))
        .trim()
        .to_owned()
    };
    let root_token = token("root", "admin");
    let child_token = token("child", "auditor");
    let api = |node: &str| {
        let addr = std::fs::read_to_string(tree.nodes[node].data().join("api.addr")).unwrap();
        format!("https://{addr}")
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let browser = Browser::start(&shots);

    // Sign in to the root's console.
    browser.go(&format!("{}/", api("root")));
    browser.type_into("#token", &root_token);
    browser.click("#signin-button");
    browser.wait_text("#who", "the signed-in admin", |t| {
        t.contains("browser-admin (admin) at root")
    });
    browser.shot("1-root-hierarchy");

    // Approve KB5021233 for the workstations policy.
    browser.go(&format!("{}/#updates", api("root")));
    browser.wait_text("#view", "the update list", |t| t.starts_with("Updates ("));
    browser.click("button.approve[data-update=\"KB5021233\"]");
    browser.wait_text("#view", "the approval in the list", |t| {
        t.lines()
            .any(|l| l.starts_with("KB5021233") && l.contains("workstations"))
    });
    browser.shot("2-root-approved");
    browser.go(&format!("{}/#content", api("root")));
    browser.wait_text("#view", "the content page", |t| t.starts_with("Content at this node"));

    // The child's console shows it once it replicated; an auditor there
    // has no approve buttons.
    browser.go(&format!("{}/", api("child")));
    browser.type_into("#token", &child_token);
    browser.click("#signin-button");
    browser.wait_text("#who", "the child's auditor", |t| t.contains("(auditor) at child"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        browser.go(&format!("{}/#updates", api("child")));
        let text = browser.text("#view");
        if text
            .lines()
            .any(|l| l.starts_with("KB5021233") && l.contains("workstations"))
        {
            assert!(!text.contains("Approve"), "an auditor cannot approve");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the approval never reached the child console: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    browser.shot("3-child-sees-approval");

    // Computers report at the child; the root sees them in its reports.
    ok(run(&[
        "agent",
        "simulate",
        "--count",
        "3",
        "--runs",
        "1",
        "--prefix",
        "pc",
        "--inventories",
        fixture("windows-inventory").to_str().unwrap(),
        "--node",
        &tree.nodes["child"].addr(),
        "--pki",
        tree.path().join("pki").to_str().unwrap(),
    ]));
    wait_for("the computers at the root", Duration::from_secs(30), || {
        let listed = tree.json("root", &["--json", "call", "reports.computers"]);
        listed["items"].as_array().is_some_and(|i| i.len() == 3)
            && tree.json("root", &["--json", "call", "reports.compliance"])["overall"]["total"].as_u64() > Some(0)
    });
    ok(tree.ctl("root", &["call", "windows.upsert", "--params", r#"{"window": {"id": "nightly", "name": "Nightly", "time_zone": "UTC", "start": "22:00", "duration_minutes": 240}}"#]));
    let root_auditor = token("root", "auditor");
    let child_admin = token("child", "admin");

    // Every page at the root and at the site, as admin and as auditor.
    let pages = [
        ("dashboard", "Dashboard: "),
        ("computers", "Computers"),
        ("hierarchy", "Node "),
        ("updates", "Updates ("),
        ("policies", "Policies"),
        ("rollouts", "Staged rollouts"),
        ("content", "Content at this node"),
        ("windows", "Maintenance windows"),
    ];
    for (node, role, secret) in [
        ("root", "admin", &root_token),
        ("root", "auditor", &root_auditor),
        ("child", "admin", &child_admin),
        ("child", "auditor", &child_token),
    ] {
        browser.sign_in(&api(node), secret, &format!("({role}) at {node}"));
        for (page, heading) in pages {
            browser.page(&format!("{}/#{page}", api(node)), heading);
            browser.shot(&format!("{node}-{role}-{page}"));
        }
        // From the dashboard down to one computer: a count, the computers
        // behind it, one of them.
        browser.page(&format!("{}/#dashboard", api(node)), "Dashboard: ");
        browser.click("#view table a[href^=\"#computers?\"]");
        browser.wait_text("#view h1", "the computers behind a count", |t| {
            t.starts_with("Computers: ")
        });
        browser.shot(&format!("{node}-{role}-drill-computers"));
        browser.click("#view table a[href^=\"#computer?id=\"]");
        let heading = browser.wait_text("#view h1", "one computer", |t| t.starts_with("Computer pc-"));
        let detail = browser.text("#view");
        assert!(
            detail.contains("Updates") && detail.contains("child"),
            "{heading}: {detail}"
        );
        browser.no_console_errors("the drill-down");
        browser.shot(&format!("{node}-{role}-drill-computer"));
    }
    // The computers' CSV, streamed by the node and saved by the browser.
    browser.sign_in(&api("root"), &root_token, "(admin) at root");
    browser.page(&format!("{}/#computers", api("root")), "Computers");
    browser.click("#csv");
    browser.wait_text("#csv-status", "the download", |t| t == "Downloaded.");
    // Updates sort by a column's header.
    browser.page(&format!("{}/#updates", api("root")), "Updates (");
    browser.click("button.sort[data-sort=\"title\"]");
    browser.wait_text("#view table", "updates sorted by title", |t| t.contains("title ▲"));
    browser.no_console_errors("sorted updates");
    // A filter that matches nothing says what to do.
    browser.page(
        &format!("{}/#computers?search=nobody", api("root")),
        "Computers: name holds nobody",
    );
    assert!(browser.text("#view").contains("No computer matches these filters"));
    browser.no_console_errors("the empty computers page");

    // Invoke an operation from the help page.
    browser.go(&format!("{}/help", api("root")));
    browser.type_into("#token", &root_token);
    browser.click("form.invoke[data-op=\"updates.get\"] button");
    let result = browser.wait_text("#result-updates\\.get", "the operation's result", |t| {
        t.starts_with("200")
    });
    assert!(result.contains("KB5021233"), "{result}");
    browser.shot("4-help-invoked");
    for name in [
        "1-root-hierarchy",
        "2-root-approved",
        "3-child-sees-approval",
        "4-help-invoked",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "screenshot {name}");
    }
}
