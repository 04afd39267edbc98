//! Crash safety: every payload answered 2xx before a `kill -9` reaches the file sink after a
//! restart, because ingress answers only after the spool synced it and the dispatcher resumes
//! from its stored cursor.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{form_xml, output, wait_for_ids};

struct Process {
    child: Child,
    ingress: String,
    admin: String,
}

impl Drop for Process {
    /// A failing test must not leave a relay running (it would hold the test's pipes open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(data_dir: &std::path::Path) -> Process {
    let (ingress_port, admin_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccrelay"))
        .args(["serve", "--listen", &format!("127.0.0.1:{ingress_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start ccrelay");
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");
    for _ in 0..200 {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|response| response.status() == 200)
        {
            return Process {
                child,
                ingress: format!("http://127.0.0.1:{ingress_port}/ingest/hq"),
                admin: format!("http://127.0.0.1:{admin_port}"),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().ok();
    child.wait().ok();
    panic!("ccrelay did not become ready");
}

#[tokio::test]
async fn every_payload_answered_2xx_survives_a_kill_9_and_reaches_the_sink_after_restart() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut relay = start(&data_dir).await;
    let client = reqwest::Client::new();

    // Many concurrent senders, killed mid-load once thousands are in: some requests are
    // answered, some are not.
    const KILL_AFTER: usize = 3000;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..16 {
        let client = client.clone();
        let url = relay.ingress.clone();
        let answered = Arc::clone(&answered);
        senders.spawn(async move {
            let mut accepted = Vec::new();
            for n in 0.. {
                let sent = client
                    .post(&url)
                    .header("content-type", "text/xml")
                    .body(form_xml(&format!("form-{sender}-{n}")))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 202 => {
                        let answer: serde_json::Value = response.json().await.unwrap();
                        accepted.push(answer["id"].as_str().unwrap().to_string());
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return accepted,
                }
            }
            accepted
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::Relaxed) < KILL_AFTER && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.child.kill().expect("kill -9"); // SIGKILL: no shutdown, no flush
    relay.child.wait().unwrap();
    let mut accepted = Vec::new();
    while let Some(ids) = senders.join_next().await {
        accepted.extend(ids.unwrap());
    }
    assert!(
        accepted.len() >= KILL_AFTER,
        "the load was real: {} accepted",
        accepted.len()
    );

    let restarted = start(&data_dir).await;
    let output = wait_for_ids(&data_dir, &accepted).await;
    let delivered: HashSet<&str> = output
        .iter()
        .map(|envelope| envelope["id"].as_str().unwrap())
        .collect();
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !delivered.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} accepted envelopes were lost, e.g. {:?}",
        lost.len(),
        accepted.len(),
        &lost[..lost.len().min(3)]
    );
    // Re-delivery after a crash is allowed (at least once), but only of what was in flight,
    // and the restart counts it.
    let duplicates = output.len() - delivered.len();
    let metrics = reqwest::get(format!("{}/metrics", restarted.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let redelivered: usize = metrics
        .lines()
        .find(|line| line.starts_with("ccrelay_sink_redelivered_total{sink=\"archive\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse().unwrap());
    assert!(
        duplicates <= redelivered,
        "{duplicates} duplicates in the output, {redelivered} counted as redelivered"
    );
    assert!(
        redelivered <= 512,
        "at most one batch was in flight: {redelivered} redelivered"
    );
}

#[tokio::test]
async fn sigterm_finishes_what_was_accepted_and_exits_zero() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut relay = start(&data_dir).await;
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0..20 {
        let response = client
            .post(&relay.ingress)
            .header("content-type", "text/xml")
            .body(form_xml(&format!("term-{n}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let answer: serde_json::Value = response.json().await.unwrap();
        accepted.push(answer["id"].as_str().unwrap().to_string());
    }
    let pid = relay.child.id().to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(signalled.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = relay.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ccrelay did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let delivered: HashSet<String> = output(&data_dir)
        .iter()
        .filter_map(|envelope| envelope["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        accepted.iter().all(|id| delivered.contains(id)),
        "everything accepted was delivered before exit"
    );
}
