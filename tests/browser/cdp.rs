//! A small Chrome DevTools Protocol client: starts headless Chromium from Debian's `chromium`
//! package, opens pages and evaluates JavaScript in them. Just enough to look at the admin
//! page as an operator's browser shows it; no driver, no browser download.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command, or Chromium's start, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _chromium: Child,
    _profile: tempfile::TempDir,
}

/// One tab, attached with its own DevTools session.
pub struct Page {
    session: String,
}

/// The Chromium binary: `$CCRELAY_CHROMIUM`, else `chromium` on the PATH.
fn chromium_binary() -> PathBuf {
    std::env::var_os("CCRELAY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("chromium"))
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and connects to it.
    ///
    /// # Panics
    /// When Chromium is missing or does not start; the message says how to install it.
    pub async fn launch() -> Browser {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().expect("temp dir for the Chromium profile");
        let chromium = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {} ({err}): install Debian's `chromium` package \
                     (scripts/test.sh does) or point CCRELAY_CHROMIUM at a Chromium binary",
                    binary.display()
                )
            });
        // Chromium writes the port it chose and the browser's socket path to this file.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not open its DevTools port within {STEP_TIMEOUT:?}",
                binary.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(&address)
            .await
            .unwrap_or_else(|err| panic!("cannot connect to Chromium at {address}: {err}"));
        Browser {
            socket,
            next_id: 1,
            _chromium: chromium,
            _profile: profile,
        }
    }

    /// Sends one command and waits for its answer, skipping the events in between.
    ///
    /// # Panics
    /// When the command fails or takes longer than the step timeout.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let answer = self.call_raw(session, method, params).await;
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// Sends one command and returns the whole answer, an error included.
    ///
    /// # Panics
    /// When Chromium does not answer within the step timeout.
    async fn call_raw(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        tokio::time::timeout(STEP_TIMEOUT, async {
            self.socket
                .send(Message::text(command.to_string()))
                .await
                .expect("send to Chromium");
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .expect("Chromium closed the DevTools connection")
                    .expect("read from Chromium");
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                if value["id"] == id {
                    return value;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} took longer than {STEP_TIMEOUT:?}"))
    }

    /// Opens `url` in a new tab.
    pub async fn open(&mut self, url: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let page = Page {
            session: attached["sessionId"]
                .as_str()
                .expect("attaching gives a session id")
                .to_string(),
        };
        self.call(Some(&page.session), "Page.navigate", json!({ "url": url }))
            .await;
        page
    }

    /// Evaluates `expression` in the page, awaiting it if it is a promise, and returns its
    /// value as JSON.
    ///
    /// # Panics
    /// When the expression throws.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "`{expression}` threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is `true`, for up to `timeout`; returns whether it
    /// became true. An expression that throws, or a page still loading, counts as not yet.
    pub async fn wait_for(&mut self, page: &Page, expression: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let answer = self
                .call_raw(
                    Some(&page.session),
                    "Runtime.evaluate",
                    json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
                )
                .await;
            if answer["result"]["result"]["value"] == json!(true) {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
