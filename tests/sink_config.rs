//! The network sinks' fields in the rules file: what a valid sink reads as, defaults included,
//! and every mistake reported at once at its line and column.

use std::time::Duration;

use ccrelay::rules::RuleSet;
use ccrelay::sinks::{Compression, ExchangeDeclaration, HttpAuth, SinkConfig};

fn parse(sinks: &str) -> RuleSet {
    let text = format!("version: 1\nsinks:\n{sinks}rules: []\n");
    RuleSet::parse(&text, "rules.yaml").unwrap_or_else(|errors| panic!("{errors}"))
}

fn check_refused(sinks: &str, expected: &str) {
    let text = format!("version: 1\nsinks:\n{sinks}rules: []\n");
    match RuleSet::parse(&text, "rules.yaml") {
        Ok(rules) => panic!("expected errors, parsed {rules}"),
        Err(errors) => assert_eq!(errors.to_string(), expected.trim(), "for:\n{text}"),
    }
}

#[test]
fn every_field_reads_as_written_and_defaults_fill_the_rest() {
    let rules = parse(
        r#"  q:
    type: amqp
    url: amqp://u:p@rabbit:5672/%2f
    exchange: commcare
    declare_exchange: { type: topic }
    routing_key: "{{ domain }}.{{ kind }}"
    mandatory: false
    headers: { app: "{{ query.app_id | default('') }}" }
  q2: { type: amqp, url: "amqps://rabbit", routing_key: forms }
  k:
    type: kafka
    brokers: "k1:9092,k2:9092"
    topic: "commcare.{{ kind }}"
    key: "{{ cases[0].case_id }}"
    compression: lz4
    delivery_timeout_seconds: 120
    settings: { linger.ms: 20, client.id: ccrelay }
  k2: { type: kafka, brokers: "k:9092", topic: t }
  h:
    type: http
    url: "https://example.org/hooks/{{ kind }}"
    method: PUT
    headers: { X-Domain: "{{ domain }}" }
    auth: { type: basic, username: hq, password: 0123 }
    timeout_seconds: 5
    signing_secret: whsec_aGVsbG8=
    max_in_flight: 8
  h2: { type: http, url: "http://localhost:8080/" }
"#,
    );
    let sink = |name: &str| rules.sinks.get(name).unwrap().config.clone();
    let SinkConfig::Amqp(q) = sink("q") else {
        panic!("amqp")
    };
    assert_eq!(q.url, "amqp://u:p@rabbit:5672/%2f");
    assert_eq!(q.exchange.source(), "commcare");
    assert_eq!(
        q.declare_exchange,
        Some(ExchangeDeclaration {
            kind: "topic".into(),
            durable: true
        })
    );
    assert_eq!(q.routing_key.source(), "{{ domain }}.{{ kind }}");
    assert!(!q.mandatory);
    assert_eq!(q.headers[0].0, "app");
    let SinkConfig::Amqp(q2) = sink("q2") else {
        panic!("amqp")
    };
    assert_eq!(q2.exchange.source(), "", "the default exchange");
    assert!(q2.mandatory, "mandatory by default");
    assert_eq!(q2.declare_exchange, None);

    let SinkConfig::Kafka(k) = sink("k") else {
        panic!("kafka")
    };
    assert_eq!(k.brokers, "k1:9092,k2:9092");
    assert_eq!(k.key.as_ref().unwrap().source(), "{{ cases[0].case_id }}");
    assert_eq!(k.compression, Compression::Lz4);
    assert_eq!(k.delivery_timeout, Duration::from_secs(120));
    assert_eq!(
        k.settings,
        vec![
            ("linger.ms".to_owned(), "20".to_owned()),
            ("client.id".to_owned(), "ccrelay".to_owned())
        ]
    );
    let SinkConfig::Kafka(k2) = sink("k2") else {
        panic!("kafka")
    };
    assert_eq!(k2.compression, Compression::None);
    assert_eq!(k2.delivery_timeout, Duration::from_secs(60));
    assert!(k2.key.is_none() && k2.headers.is_empty() && k2.settings.is_empty());
    let client = ccrelay::sinks::KafkaSink::client_config(&k2);
    assert_eq!(client.get("enable.idempotence"), Some("true"));
    assert_eq!(client.get("acks"), Some("all"));
    assert_eq!(client.get("message.timeout.ms"), Some("60000"));

    let SinkConfig::Http(h) = sink("h") else {
        panic!("http")
    };
    assert_eq!(h.method, reqwest::Method::PUT);
    assert_eq!(h.headers[0].0, "X-Domain");
    assert_eq!(
        h.auth,
        Some(HttpAuth::Basic {
            username: "hq".into(),
            password: "0123".into()
        }),
        "a number-looking password stays as written"
    );
    assert_eq!(h.timeout, Duration::from_secs(5));
    assert_eq!(h.signing_key.as_deref(), Some(&b"hello"[..]));
    assert_eq!(h.max_in_flight, 8);
    let SinkConfig::Http(h2) = sink("h2") else {
        panic!("http")
    };
    assert_eq!(h2.method, reqwest::Method::POST);
    assert_eq!(h2.timeout, Duration::from_secs(30));
    assert_eq!(h2.max_in_flight, 32);
    assert!(h2.auth.is_none() && h2.signing_key.is_none());
}

#[test]
fn every_mistake_is_reported_at_its_position() {
    check_refused(
        r#"  q:
    type: amqp
    url: http://rabbit
    exchange: "{{ kind }}"
    declare_exchange: { type: fan }
    mandatory: yes
  q2: { type: amqp, url: "amqp://r", exchange: "{{ kind }}", routing_key: x, declare_exchange: { type: topic } }
  q3: { type: amqp, url: "amqp://r", rooting_key: x }
  k:
    type: kafka
    brokers: ""
    topic: "{{ kind }"
    compression: zstd
    delivery_timeout_seconds: 0
    settings: { linger.ms: [1] }
  h:
    type: http
    url: "ftp://x"
    method: GET
    headers: { "bad header": x }
    auth: { type: digest }
    timeout_seconds: soon
    signing_secret: s3cret
    max_in_flight: 0
  h2: { type: http, auth: { type: bearer } }
"#,
        r#"
rules.yaml:4:5: sinks.q: missing field `routing_key`
rules.yaml:5:10: sinks.q.url: expected an `amqp://` or `amqps://` URL, found `http://rabbit`
rules.yaml:6:15: sinks.q.exchange: a declared exchange needs a fixed, non-empty `exchange` name (not a template)
rules.yaml:7:31: sinks.q.declare_exchange.type: unknown exchange type `fan`, expected one of: direct, fanout, topic, headers
rules.yaml:8:16: sinks.q.mandatory: expected a boolean (true or false), found a string
rules.yaml:9:48: sinks.q2.exchange: a declared exchange needs a fixed, non-empty `exchange` name (not a template)
rules.yaml:10:7: sinks.q3: missing field `routing_key`
rules.yaml:10:38: sinks.q3.rooting_key: unknown field `rooting_key` (did you mean `routing_key`?), expected one of: type, retry, max_backlog, url, exchange, routing_key, declare_exchange, mandatory, headers
rules.yaml:13:14: sinks.k.brokers: expected `host:port[,host:port...]`, found an empty string
rules.yaml:14:12: sinks.k.topic: template `{{ kind }`: syntax error: unexpected `}`, expected end of variable block
rules.yaml:15:18: sinks.k.compression: unknown compression `zstd`, expected one of: none, gzip, snappy, lz4
rules.yaml:16:31: sinks.k.delivery_timeout_seconds: expected a positive number of seconds, found 0
rules.yaml:17:28: sinks.k.settings["linger.ms"]: expected a string, found a list
rules.yaml:20:10: sinks.h.url: invalid URL: scheme `ftp` is not http or https
rules.yaml:21:13: sinks.h.method: unknown method `GET`, expected one of: POST, PUT, PATCH
rules.yaml:22:16: sinks.h.headers["bad header"]: `bad header` is not a valid HTTP header name
rules.yaml:23:19: sinks.h.auth.type: unknown auth type `digest`, expected one of: basic, bearer
rules.yaml:24:22: sinks.h.timeout_seconds: expected an integer, found a string
rules.yaml:25:21: sinks.h.signing_secret: expected a Standard Webhooks secret, `whsec_` followed by base64
rules.yaml:26:20: sinks.h.max_in_flight: expected 1 to 1024 requests in flight, found 0
rules.yaml:27:7: sinks.h2: missing field `url`
rules.yaml:27:27: sinks.h2.auth: missing field `token`
"#,
    );
}
