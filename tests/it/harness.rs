//! A relay for tests: started in-process on port 0 with a temporary data dir, stopped through
//! its shutdown token; or as a child process, for tests that must kill it hard.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ccrelay::config::{self, Config, Overrides};
use tokio_util::sync::CancellationToken;

/// The config every test relay starts from; `extra` is appended (e.g. a `sources:` block).
pub fn config_text(data_dir: &Path, extra: &str) -> String {
    format!(
        "version: 1\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: {}\n{extra}",
        data_dir.display()
    )
}

pub fn parse_config(text: &str) -> Config {
    let no_vars = |_: &str| None;
    let no_files = |path: &Path| -> std::io::Result<String> {
        panic!("tests read no secret files: {}", path.display())
    };
    match config::from_yaml(
        text,
        "test config",
        &no_vars,
        &no_files,
        &Overrides::default(),
    ) {
        Ok(config) => config,
        Err(errors) => panic!("test config is invalid:\n{errors}"),
    }
}

pub struct Relay {
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub client: reqwest::Client,
}

impl Relay {
    /// Starts a relay whose config is the base plus `extra`.
    pub async fn start(extra: &str) -> Relay {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut relay = Relay::start_in(&data_dir, extra).await;
        relay._temp = Some(temp);
        relay
    }

    /// Starts a relay on an existing data dir (for restarts).
    pub async fn start_in(data_dir: &Path, extra: &str) -> Relay {
        let config = parse_config(&config_text(data_dir, extra));
        let listeners = ccrelay::app::Listeners::bind(&config)
            .await
            .expect("bind port 0");
        let (ingress, admin) = (listeners.ingress_addr(), listeners.admin_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ccrelay::app::run(config, listeners, shutdown.clone()));
        Relay {
            ingress,
            admin,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            shutdown,
            task,
            client: reqwest::Client::new(),
        }
    }

    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.shutdown.cancel();
        self.task
            .await
            .expect("relay task")
            .expect("relay stops cleanly");
        self._temp
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingress)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("ingress answers")
    }

    /// Starts a relay that serves `rules` from a file the test may rewrite; keep the returned
    /// folder alive as long as the relay.
    pub async fn start_with_rules(rules: &str, extra: &str) -> (Relay, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_path = dir.path().join("rules.yaml");
        std::fs::write(&rules_path, rules).expect("write the rules file");
        let relay = Relay::start(&format!("rules: {}\n{extra}", rules_path.display())).await;
        (relay, rules_path, dir)
    }

    /// `POST /rules/reload` on the admin listener: the rules file is read again at once.
    pub async fn reload_rules(&self) -> reqwest::Response {
        self.client
            .post(self.admin_url("/rules/reload"))
            .send()
            .await
            .expect("admin answers")
    }

    /// `GET` on the admin listener: the status and the JSON answer.
    pub async fn admin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .client
            .get(self.admin_url(path))
            .send()
            .await
            .expect("admin answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("admin answers JSON"))
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("admin answers");
        response.text().await.expect("metrics are text")
    }

    /// Waits until the file sink holds at least `count` envelopes, and returns them all.
    pub async fn wait_for_output(&self, count: usize) -> Vec<serde_json::Value> {
        wait_for_output(&self.data_dir, count).await
    }
}

/// Every envelope in the JSON-lines files under `<data_dir>/out`.
pub fn output(data_dir: &Path) -> Vec<serde_json::Value> {
    let mut envelopes = Vec::new();
    let mut folders = vec![data_dir.join("out")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let text = std::fs::read_to_string(&path).expect("output file");
                for line in text.lines() {
                    envelopes.push(serde_json::from_str(line).expect("each line is one envelope"));
                }
            }
        }
    }
    envelopes
}

pub async fn wait_for_output(data_dir: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let envelopes = output(data_dir);
        if envelopes.len() >= count || tokio::time::Instant::now() > deadline {
            return envelopes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small form with a case block, in the shape HQ forwards.
pub fn form_xml(instance_id: &str) -> String {
    format!(
        r#"<?xml version='1.0' ?>
<data xmlns="http://openrosa.org/formdesigner/TEST-FORM" name="Visit" uiVersion="1" version="3">
  <visit_type>routine</visit_type>
  <n0:case xmlns:n0="http://commcarehq.org/case/transaction/v2" case_id="case-{instance_id}" user_id="u1" date_modified="2024-05-02T09:14:07.120+03">
    <n0:update><n0:risk>high</n0:risk></n0:update>
  </n0:case>
  <n1:meta xmlns:n1="http://openrosa.org/jr/xforms">
    <n1:deviceID>d1</n1:deviceID><n1:timeStart>2024-05-02T09:01:44.511+03</n1:timeStart>
    <n1:timeEnd>2024-05-02T09:14:07.120+03</n1:timeEnd><n1:username>chw</n1:username>
    <n1:userID>u1</n1:userID><n1:instanceID>{instance_id}</n1:instanceID>
  </n1:meta>
</data>"#
    )
}

/// Waits until every id in `ids` is in the file sink's output (duplicates do not count).
pub async fn wait_for_ids(data_dir: &std::path::Path, ids: &[String]) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let envelopes = output(data_dir);
        let seen: HashSet<&str> = envelopes
            .iter()
            .filter_map(|envelope| envelope["id"].as_str())
            .collect();
        if ids.iter().all(|id| seen.contains(id.as_str())) || tokio::time::Instant::now() > deadline
        {
            return envelopes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
