//! The control module end to end: `ccrelay hq list|plan|apply` against the HQ stand-in (then
//! HQ forwarding to the relay it registered), and the Data Forwarding API the relay serves.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{self, Relay};
use crate::hq_standin::{HqPayload, HqStandin};

const HQ_USER: &str = "admin@example.org";
const HQ_KEY: &str = "hq-api-key";

/// The relay's ingest source HQ posts to.
const SOURCES: &str = "\
sources:
  hq:
    domain: kenya-mch
    auth: { type: basic, credentials: [ { username: hq, password: hq-secret } ] }
";

/// Writes the config `ccrelay hq` reads: the relay's sources plus a `control:` section.
fn hq_config(dir: &Path, hq_url: &str, public_url: &str, extra_hq: &str) -> std::path::PathBuf {
    let text = format!(
        "version: 1\ndata_dir: {data}\n{SOURCES}control:\n  hq: {{ url: \"{hq_url}\", username: \"{HQ_USER}\", api_key: \"{HQ_KEY}\"{extra_hq} }}\n  public_url: \"{public_url}\"\n  forwarders:\n    - {{ domain: kenya-mch, types: [FormRepeater, CaseRepeater], source: hq }}\n",
        data = dir.join("data").display(),
    );
    let path = dir.join("ccrelay.yaml");
    std::fs::write(&path, text).expect("write the config");
    path
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn ccrelay_hq(args: &[&str], config: &Path) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ccrelay"))
        .arg("hq")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .expect("run ccrelay");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn case_xml(case_id: &str) -> String {
    format!(
        r#"<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" user_id="u1" date_modified="2024-05-02T06:14:07.120000Z"><create><case_type>household</case_type><case_name>HH</case_name><owner_id>o1</owner_id></create></case>"#
    )
}

#[tokio::test]
async fn apply_registers_the_relay_once_and_hq_then_forwards_to_it() {
    let hq = HqStandin::start(HQ_USER, HQ_KEY, &["kenya-mch"]).await;
    let foreign = hq.seed(
        "kenya-mch",
        "FormRepeater",
        "https://dhis2.example.org/forms",
    );
    let relay = Relay::start(SOURCES).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let public_url = relay.url("");
    let config = hq_config(dir.path(), &hq.url(), &public_url, "");

    let plan = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let ingest = format!("{public_url}/ingest/hq");
    assert_eq!(
        plan.stdout,
        format!(
            "+ create FormRepeater in kenya-mch -> {ingest}\n+ create CaseRepeater in kenya-mch -> {ingest}\n2 to change, 0 already right\n"
        )
    );
    assert_eq!(hq.forwarders("kenya-mch").len(), 1, "plan changes nothing");

    let first = ccrelay_hq(&["apply"], &config).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stdout.ends_with("2 changed, 0 already right\n"),
        "{}",
        first.stdout
    );
    let second = ccrelay_hq(&["apply", "--json"], &config).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    let applied: Value = serde_json::from_str(&second.stdout).expect("JSON");
    assert_eq!(applied, json!({"changes": [], "unchanged": 2}));

    let forwarders = hq.forwarders("kenya-mch");
    assert_eq!(forwarders.len(), 3);
    assert!(
        forwarders.iter().any(|forwarder| forwarder.id == foreign),
        "the foreign forwarder stays"
    );
    let ours: Vec<_> = forwarders
        .iter()
        .filter(|f| f.url == ingest)
        .map(|f| f.repeater_type.as_str())
        .collect();
    assert_eq!(ours, ["FormRepeater", "CaseRepeater"]);

    let form = harness::form_xml("form-1");
    let form_payload = HqPayload {
        body: &form,
        content_type: "text/xml",
        header: ("received-on", "2024-05-02T06:14:09.482113Z"),
    };
    // The foreign forwarder's URL is not reachable from here; its operator removes it in HQ's
    // UI so that the stand-in forwards to ours only.
    hq.unseed(&foreign);
    assert_eq!(
        hq.forward(
            "kenya-mch",
            "FormRepeater",
            &form_payload,
            ("hq", "hq-secret")
        )
        .await,
        [202]
    );
    let case = case_xml("case-9");
    let case_payload = HqPayload {
        body: &case,
        content_type: "text/xml",
        header: ("server-modified-on", "2024-05-02T06:14:09.611402Z"),
    };
    assert_eq!(
        hq.forward(
            "kenya-mch",
            "CaseRepeater",
            &case_payload,
            ("hq", "hq-secret")
        )
        .await,
        [202]
    );
    let envelopes = relay.wait_for_output(2).await;
    let mut kinds: Vec<&str> = envelopes
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["case", "form"]);
    assert!(envelopes.iter().all(|e| e["domain"] == "kenya-mch"));
    relay.stop().await;
}

#[tokio::test]
async fn list_follows_pagination_and_apply_repoints_and_deletes_only_ours() {
    let hq = HqStandin::start(HQ_USER, HQ_KEY, &["kenya-mch"]).await;
    for number in 0..23 {
        hq.seed(
            "kenya-mch",
            "FormRepeater",
            &format!("https://other.example.org/{number}"),
        );
    }
    let stale = hq.seed(
        "kenya-mch",
        "FormRepeater",
        "https://relay.example.org/ingest/old",
    );
    let extra = hq.seed(
        "kenya-mch",
        "ShortFormRepeater",
        "https://relay.example.org/ingest/old",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hq_config(dir.path(), &hq.url(), "https://relay.example.org", "");

    let listed = ccrelay_hq(&["list", "--json"], &config).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let listed: Vec<Value> = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(listed.len(), 25, "all three pages");
    let pages = hq
        .requests()
        .iter()
        .filter(|request| request.starts_with("GET list"))
        .count();
    assert_eq!(pages, 3);

    let plan = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(
        plan.stdout,
        format!(
            "~ update FormRepeater {stale} in kenya-mch: https://relay.example.org/ingest/old -> https://relay.example.org/ingest/hq\n\
             + create CaseRepeater in kenya-mch -> https://relay.example.org/ingest/hq\n\
             - delete ShortFormRepeater {extra} in kenya-mch -> https://relay.example.org/ingest/old\n\
             3 to change, 0 already right\n"
        )
    );
    let applied = ccrelay_hq(&["apply"], &config).await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let again = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(again.stdout, "0 to change, 2 already right\n");
    assert_eq!(hq.forwarders("kenya-mch").len(), 25, "23 foreign + 2 ours");
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let hq = HqStandin::start(HQ_USER, "another-key", &["kenya-mch"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hq_config(dir.path(), &hq.url(), "https://relay.example.org", "");
    let refused = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(
            "HQ refused the credentials of `admin@example.org` (control.hq.api_key) with 401"
        ),
        "{}",
        refused.stderr
    );

    let not_admin = HqStandin::start(HQ_USER, HQ_KEY, &["elsewhere"]).await;
    let config = hq_config(
        dir.path(),
        &not_admin.url(),
        "https://relay.example.org",
        "",
    );
    let forbidden = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(forbidden.code, 1);
    assert!(
        forbidden
            .stderr
            .contains("`admin@example.org` must be an admin of the project space `kenya-mch`"),
        "{}",
        forbidden.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let config = hq_config(
        dir.path(),
        &closed_url,
        "https://relay.example.org",
        ", max_attempts: 2, max_retry_wait_seconds: 1",
    );
    let unreachable = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable.stderr.contains(&format!(
            "cannot reach HQ at {closed_url}/a/kenya-mch/api/v0.5/data-forwarding/"
        )),
        "{}",
        unreachable.stderr
    );
    assert!(
        unreachable.stderr.contains("after 2 attempts"),
        "{}",
        unreachable.stderr
    );
}

#[tokio::test]
async fn throttling_is_waited_out_per_retry_after() {
    let hq = HqStandin::start(HQ_USER, HQ_KEY, &["kenya-mch"]).await;
    hq.throttle_next(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hq_config(dir.path(), &hq.url(), "https://relay.example.org", "");
    let started = Instant::now();
    let applied = ccrelay_hq(&["apply"], &config).await;
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two Retry-After: 1 waits"
    );
    assert_eq!(hq.forwarders("kenya-mch").len(), 2);

    hq.throttle_next(10);
    let config = hq_config(
        dir.path(),
        &hq.url(),
        "https://relay.example.org",
        ", max_attempts: 1",
    );
    let throttled = ccrelay_hq(&["plan"], &config).await;
    assert_eq!(throttled.code, 1);
    assert!(
        throttled.stderr.contains("HQ kept answering 429"),
        "{}",
        throttled.stderr
    );
}

#[tokio::test]
async fn a_removed_api_prints_the_manual_steps() {
    let hq = HqStandin::start(HQ_USER, HQ_KEY, &["kenya-mch"]).await;
    hq.set_removed(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = hq_config(dir.path(), &hq.url(), "https://relay.example.org", "");
    let run = ccrelay_hq(&["apply"], &config).await;
    assert_eq!(run.code, 69);
    assert!(
        run.stderr
            .contains("CommCare HQ removed the Data Forwarding API in 2022"),
        "{}",
        run.stderr
    );
    let hq_url = hq.url();
    let step = |number: u32, ui: &str, repeater: &str, format: &str| {
        [
            format!(
                "{number}. In {hq_url}/a/kenya-mch/ open Project Settings -> Data Forwarding and choose \"{ui}\" ({repeater}), then \"Add a forwarding location\"."
            ),
            "   URL: https://relay.example.org/ingest/hq".to_owned(),
            format!("   Payload format: {format}"),
            "   Request method: POST".to_owned(),
            "   Authentication: HTTP Basic, username `hq`, password as configured in sources.hq.auth.credentials".to_owned(),
        ]
        .join("\n")
    };
    assert_eq!(
        run.stdout,
        format!(
            "Set up these forwarders by hand:\n\n{}\n{}\n\n",
            step(1, "Forward Forms", "FormRepeater", "XML (form_xml)"),
            step(
                2,
                "Forward Cases",
                "CaseRepeater",
                "XML (case_xml) or JSON (case_json)"
            ),
        )
    );
    let json_run = ccrelay_hq(&["plan", "--json"], &config).await;
    let body: Value = serde_json::from_str(&json_run.stdout).expect("JSON");
    assert!(
        body["manual_steps"]
            .as_str()
            .expect("steps")
            .contains("URL: https://relay.example.org/ingest/hq")
    );
}

// --- The API the relay serves ---------------------------------------------------------------

const API_KEYS: &str = "\
control:
  api_keys:
    - { domain: kenya-mch, username: ops@example.org, key: key-kenya }
    - { domain: uganda, username: ops@example.org, key: key-uganda }
";

const LIST: &str = "/a/kenya-mch/api/v0.5/data-forwarding/";

fn relay_config() -> String {
    format!("{SOURCES}{API_KEYS}")
}

async fn call(
    relay: &Relay,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = relay.client.request(method, relay.admin_url(path));
    if let Some(key) = key {
        request = request.header("authorization", format!("ApiKey ops@example.org:{key}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, headers, value)
}

#[tokio::test]
async fn the_served_api_answers_every_method_as_hq_did() {
    use reqwest::Method;
    let relay = Relay::start(&relay_config()).await;
    let form = json!({"type": "FormRepeater", "url": "https://svc.example.org/forms"});

    let (status, headers, _) = call(&relay, Method::POST, LIST, None, Some(form.clone())).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(
        call(
            &relay,
            Method::POST,
            LIST,
            Some("wrong"),
            Some(form.clone())
        )
        .await
        .0,
        401
    );
    let (status, _, body) = call(
        &relay,
        Method::POST,
        LIST,
        Some("key-uganda"),
        Some(form.clone()),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"code": "forbidden", "detail": "these credentials are not valid for domain `kenya-mch`"})
        )
    );

    let (status, headers, body) =
        call(&relay, Method::POST, LIST, Some("key-kenya"), Some(form)).await;
    assert_eq!((status, body), (201, Value::Null));
    let location = headers["location"].to_str().expect("text").to_owned();
    assert!(
        location.starts_with(LIST) && location.ends_with('/'),
        "{location}"
    );
    let id = location[LIST.len()..location.len() - 1].to_owned();
    assert_eq!(id.len(), 32);

    let (status, _, body) = call(&relay, Method::GET, &location, Some("key-kenya"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"id": id, "type": "FormRepeater", "domain": "kenya-mch", "url": "https://svc.example.org/forms", "version": null, "resource_uri": location})
    );

    let case = json!({"type": "CaseRepeater", "url": "https://svc.example.org/cases", "domain": "kenya-mch"});
    assert_eq!(
        call(&relay, Method::POST, LIST, Some("key-kenya"), Some(case))
            .await
            .0,
        201
    );
    let (status, _, body) = call(
        &relay,
        Method::GET,
        &format!("{LIST}?limit=1"),
        Some("key-kenya"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["meta"],
        json!({"limit": 1, "offset": 0, "next": format!("{LIST}?limit=1&offset=1"), "previous": null, "total_count": 2})
    );
    assert_eq!(body["objects"][0]["id"], json!(id));
    let (_, _, second) = call(
        &relay,
        Method::GET,
        &format!("{LIST}?limit=1&offset=1"),
        Some("key-kenya"),
        None,
    )
    .await;
    assert_eq!(second["meta"]["next"], Value::Null);
    assert_eq!(
        second["meta"]["previous"],
        json!(format!("{LIST}?limit=1&offset=0"))
    );
    assert_eq!(second["objects"][0]["version"], json!("2.0"));
    let (_, _, other_domain) = call(
        &relay,
        Method::GET,
        "/a/uganda/api/v0.5/data-forwarding/",
        Some("key-uganda"),
        None,
    )
    .await;
    assert_eq!(other_domain["meta"]["total_count"], 0);

    let moved = json!({"type": "FormRepeater", "url": "https://svc.example.org/v2/forms"});
    assert_eq!(
        call(
            &relay,
            Method::PUT,
            &location,
            Some("key-kenya"),
            Some(moved)
        )
        .await
        .0,
        204
    );
    let (_, _, body) = call(&relay, Method::GET, &location, Some("key-kenya"), None).await;
    assert_eq!(body["url"], "https://svc.example.org/v2/forms");

    let (status, _, body) = call(
        &relay,
        Method::POST,
        LIST,
        Some("key-kenya"),
        Some(json!({"type": "Nope", "url": "https://x.org"})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .starts_with("unknown type `Nope`")
    );
    let (status, _, body) = call(
        &relay,
        Method::PUT,
        &location,
        Some("key-kenya"),
        Some(json!(["not", "an", "object"])),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (400, json!("bad_request")));
    let response = relay
        .client
        .post(relay.admin_url(LIST))
        .header("authorization", "ApiKey ops@example.org:key-kenya")
        .body("{not json")
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 400);
    let huge =
        json!({"type": "FormRepeater", "url": "https://x.org", "version": "x".repeat(70_000)});
    assert_eq!(
        call(&relay, Method::POST, LIST, Some("key-kenya"), Some(huge))
            .await
            .0,
        413
    );

    let unknown = format!("{LIST}{}/", "0".repeat(32));
    assert_eq!(
        call(&relay, Method::GET, &unknown, Some("key-kenya"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(
            &relay,
            Method::PUT,
            &unknown,
            Some("key-kenya"),
            Some(json!({"type": "FormRepeater", "url": "https://x.org"}))
        )
        .await
        .0,
        404
    );
    let other = format!("/a/uganda/api/v0.5/data-forwarding/{id}/");
    assert_eq!(
        call(&relay, Method::GET, &other, Some("key-uganda"), None)
            .await
            .0,
        404,
        "ids are per domain"
    );

    assert_eq!(
        call(&relay, Method::DELETE, &location, Some("key-kenya"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        call(&relay, Method::DELETE, &location, Some("key-kenya"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&relay, Method::GET, &location, Some("key-kenya"), None)
            .await
            .0,
        404
    );
    relay.stop().await;
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    use reqwest::Method;
    let relay = Relay::start(&relay_config()).await;
    let form = json!({"type": "ShortFormRepeater", "url": "https://svc.example.org/stubs"});
    let (status, headers, _) =
        call(&relay, Method::POST, LIST, Some("key-kenya"), Some(form)).await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().expect("text").to_owned();
    let data_dir = relay.data_dir.clone();
    let temp = relay.stop().await;

    let restarted = Relay::start_in(&data_dir, &relay_config()).await;
    let (status, _, body) = call(&restarted, Method::GET, &location, Some("key-kenya"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["type"], "ShortFormRepeater");
    assert_eq!(body["url"], "https://svc.example.org/stubs");
    let id = location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("id");
    let (_, rules) = restarted.admin_get("/rules").await;
    assert!(
        rules["sinks"]
            .as_array()
            .expect("sinks")
            .contains(&json!(format!("control-{id}"))),
        "merged before serving: {rules}"
    );
    restarted.stop().await;
    drop(temp);
}

/// A service behind ccrelay that registered itself: records every request it gets.
#[derive(Clone, Default)]
struct Receiver {
    requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    received_on: Option<String>,
    server_modified_on: Option<String>,
    body: String,
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        let receiver = self.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let receiver = receiver.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|value| value.to_str().ok())
                            .map(str::to_owned)
                    };
                    receiver.requests.lock().expect("lock").push(Received {
                        path: uri.path().to_owned(),
                        content_type: header("content-type").unwrap_or_default(),
                        received_on: header("received-on"),
                        server_modified_on: header("server-modified-on"),
                        body,
                    });
                    axum::http::StatusCode::OK
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
        format!("http://{addr}")
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let requests = self.requests.lock().expect("lock").clone();
            if requests.len() >= count || Instant::now() > deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until the rules in force have exactly these `control-` sinks.
async fn wait_for_control_sinks(relay: &Relay, mut expected: Vec<String>) {
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = relay.admin_get("/rules").await;
        let mut sinks: Vec<String> = status["sinks"]
            .as_array()
            .expect("sinks")
            .iter()
            .filter_map(|sink| sink.as_str())
            .filter(|sink| sink.starts_with("control-"))
            .map(str::to_owned)
            .collect();
        sinks.sort();
        if sinks == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "control sinks {sinks:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn register(
    relay: &Relay,
    domain: &str,
    key: &str,
    repeater_type: &str,
    url: &str,
) -> String {
    let (status, headers, _) = call(
        relay,
        reqwest::Method::POST,
        &format!("/a/{domain}/api/v0.5/data-forwarding/"),
        Some(key),
        Some(json!({"type": repeater_type, "url": url})),
    )
    .await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().expect("text");
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("id")
        .to_owned()
}

#[tokio::test]
async fn a_registered_endpoint_receives_exactly_its_domains_payloads_of_its_type() {
    let receiver = Receiver::default();
    let service = receiver.start().await;
    let relay = Relay::start(&format!(
        "{SOURCES}  ug:\n    domain: uganda\n    auth: {{ type: basic, credentials: [ {{ username: hq, password: hq-secret }} ] }}\n{API_KEYS}"
    ))
    .await;
    let forms = register(
        &relay,
        "kenya-mch",
        "key-kenya",
        "FormRepeater",
        &format!("{service}/kenya/forms"),
    )
    .await;
    let cases = register(
        &relay,
        "kenya-mch",
        "key-kenya",
        "CaseRepeater",
        &format!("{service}/kenya/cases"),
    )
    .await;
    let uganda = register(
        &relay,
        "uganda",
        "key-uganda",
        "FormRepeater",
        &format!("{service}/uganda/forms"),
    )
    .await;
    wait_for_control_sinks(
        &relay,
        vec![
            format!("control-{forms}"),
            format!("control-{cases}"),
            format!("control-{uganda}"),
        ],
    )
    .await;

    let post = |source: &'static str, body: String, header: (&'static str, &'static str)| {
        relay
            .client
            .post(relay.url(&format!("/ingest/{source}")))
            .basic_auth("hq", Some("hq-secret"))
            .header("content-type", "text/xml")
            .header(header.0, header.1)
            .body(body)
            .send()
    };
    let kenya_form = harness::form_xml("kenya-form-1");
    let case = case_xml("kenya-case-1");
    let uganda_form = harness::form_xml("uganda-form-1");
    let statuses = [
        post(
            "hq",
            kenya_form.clone(),
            ("received-on", "2024-05-02T06:14:09.482113Z"),
        )
        .await
        .expect("ingress")
        .status(),
        post(
            "hq",
            case.clone(),
            ("server-modified-on", "2024-05-02T06:14:09.611402Z"),
        )
        .await
        .expect("ingress")
        .status(),
        post(
            "ug",
            uganda_form.clone(),
            ("received-on", "2024-05-03T07:00:00.000000Z"),
        )
        .await
        .expect("ingress")
        .status(),
    ];
    assert!(
        statuses.iter().all(|status| status.as_u16() == 202),
        "{statuses:?}"
    );

    receiver.wait_for(3).await;
    // Everything is delivered to the archive too; give a wrong extra delivery time to show up.
    relay.wait_for_output(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut received = receiver.requests.lock().expect("lock").clone();
    received.sort_by(|a, b| a.path.cmp(&b.path));
    let summary: Vec<(&str, &str, Option<&str>, Option<&str>)> = received
        .iter()
        .map(|request| {
            (
                request.path.as_str(),
                request.content_type.as_str(),
                request.received_on.as_deref(),
                request.server_modified_on.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "/kenya/cases",
                "text/xml",
                None,
                Some("2024-05-02T06:14:09.611402Z")
            ),
            (
                "/kenya/forms",
                "text/xml",
                Some("2024-05-02T06:14:09.482113Z"),
                None
            ),
            (
                "/uganda/forms",
                "text/xml",
                Some("2024-05-03T07:00:00.000000Z"),
                None
            ),
        ]
    );
    assert_eq!(received[0].body, case, "the raw body, as HQ sent it");
    assert_eq!(received[1].body, kenya_form);
    assert_eq!(received[2].body, uganda_form);
    let metrics = relay.metrics().await;
    assert!(
        metrics.contains(&format!("sink=\"control-{forms}\"")),
        "per-sink metrics"
    );

    // Deleting a registration removes its sink without a restart.
    let detail = format!("{LIST}{forms}/");
    assert_eq!(
        call(
            &relay,
            reqwest::Method::DELETE,
            &detail,
            Some("key-kenya"),
            None
        )
        .await
        .0,
        204
    );
    wait_for_control_sinks(
        &relay,
        vec![format!("control-{cases}"), format!("control-{uganda}")],
    )
    .await;
    relay.stop().await;
}

#[tokio::test]
async fn serve_registers_at_start_and_serves_even_when_hq_refuses() {
    let hq = HqStandin::start(HQ_USER, HQ_KEY, &["kenya-mch"]).await;
    let control = |hq_url: &str| {
        format!(
            "{SOURCES}control:\n  hq: {{ url: \"{hq_url}\", username: \"{HQ_USER}\", api_key: \"{HQ_KEY}\" }}\n  public_url: https://relay.example.org\n  register_on_start: true\n  forwarders:\n    - {{ domain: kenya-mch, types: [FormRepeater], source: hq }}\n"
        )
    };
    let relay = Relay::start(&control(&hq.url())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while hq.forwarders("kenya-mch").is_empty() {
        assert!(Instant::now() < deadline, "serve did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let forwarders = hq.forwarders("kenya-mch");
    assert_eq!(forwarders.len(), 1);
    assert_eq!(forwarders[0].url, "https://relay.example.org/ingest/hq");
    relay.stop().await;

    let removed = HqStandin::start(HQ_USER, HQ_KEY, &["kenya-mch"]).await;
    removed.set_removed(true);
    let relay = Relay::start(&control(&removed.url())).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while removed.requests().is_empty() {
        assert!(Instant::now() < deadline, "serve did not try to register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = relay
        .post("/ingest/hq", "text/xml", harness::form_xml("still-serving"))
        .await;
    assert_eq!(
        response.status().as_u16(),
        401,
        "ingress serves (and wants its credentials)"
    );
    let (status, _) = relay.admin_get("/readyz").await;
    assert_eq!(status, 200);
    relay.stop().await;
}
