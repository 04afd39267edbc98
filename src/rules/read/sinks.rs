//! The fields of the network sinks (`amqp`, `kafka`, `http`) read from the rules file, each
//! problem reported at its line and column. Pure: nothing here connects or resolves a name.

use std::time::Duration;

use super::read_template;
use crate::sinks::{
    AmqpSinkConfig, Compression, ExchangeDeclaration, HttpAuth, HttpSinkConfig, KafkaSinkConfig,
};
use crate::template::Template;
use crate::yaml::{Errors, MapReader, Node, join_key};

/// Defaults, documented in docs/rules.md.
pub const DEFAULT_KAFKA_DELIVERY_TIMEOUT_SECONDS: u64 = 60;
pub const DEFAULT_HTTP_TIMEOUT_SECONDS: u64 = 30;
pub const DEFAULT_HTTP_MAX_IN_FLIGHT: u64 = 32;
const MAX_HTTP_MAX_IN_FLIGHT: u64 = 1024;

pub(super) fn read_amqp(mut map: MapReader<'_>, errors: &mut Errors) -> Option<AmqpSinkConfig> {
    let url = map.required("url", errors).and_then(|node| {
        node.parse_str(errors, |text| {
            if !(text.starts_with("amqp://") || text.starts_with("amqps://")) {
                return Err(format!(
                    "expected an `amqp://` or `amqps://` URL, found `{}`",
                    crate::sinks::amqp::redact(text)
                ));
            }
            text.parse::<lapin::uri::AMQPUri>()
                .map(|_| text.to_owned())
                .map_err(|err| format!("invalid AMQP URL: {err}"))
        })
    });
    let exchange_node = map.optional("exchange");
    let exchange = match exchange_node {
        Some(node) => read_template(node, errors),
        None => Some(Template::compile("").expect("the empty template compiles")),
    };
    let routing_key = map
        .required("routing_key", errors)
        .and_then(|node| read_template(node, errors));
    let declare_exchange = match map.optional("declare_exchange") {
        Some(node) => read_declaration(node, exchange.as_ref(), exchange_node, errors).map(Some),
        None => Some(None),
    };
    let mandatory = match map.optional("mandatory") {
        Some(node) => node.as_bool(errors),
        None => Some(true),
    };
    let headers = read_headers(map.optional("headers"), errors, |_| Ok(()));
    map.finish(errors);
    Some(AmqpSinkConfig {
        url: url?,
        exchange: exchange?,
        routing_key: routing_key?,
        declare_exchange: declare_exchange?,
        mandatory: mandatory?,
        headers: headers?,
    })
}

fn read_declaration(
    node: &Node,
    exchange: Option<&Template>,
    exchange_node: Option<&Node>,
    errors: &mut Errors,
) -> Option<ExchangeDeclaration> {
    let mut map = node.as_map(errors)?;
    const KINDS: [(&str, &str); 4] = [
        ("direct", "direct"),
        ("fanout", "fanout"),
        ("topic", "topic"),
        ("headers", "headers"),
    ];
    let kind = map
        .required("type", errors)
        .and_then(|node| node.as_choice("exchange type", &KINDS, errors));
    let durable = match map.optional("durable") {
        Some(node) => node.as_bool(errors),
        None => Some(true),
    };
    map.finish(errors);
    // One exchange is declared per connection, so its name cannot vary by envelope.
    if let Some(exchange) = exchange {
        if exchange.source().is_empty() || !exchange.is_literal() {
            let at = exchange_node.unwrap_or(node);
            errors.push(at.error(
                "a declared exchange needs a fixed, non-empty `exchange` name (not a template)",
            ));
            return None;
        }
    }
    Some(ExchangeDeclaration {
        kind: kind?.to_owned(),
        durable: durable?,
    })
}

pub(super) fn read_kafka(mut map: MapReader<'_>, errors: &mut Errors) -> Option<KafkaSinkConfig> {
    let brokers = map.required("brokers", errors).and_then(|node| {
        node.parse_str(errors, |text| {
            if text.trim().is_empty() {
                Err("expected `host:port[,host:port...]`, found an empty string".to_owned())
            } else {
                Ok(text.to_owned())
            }
        })
    });
    let topic = map
        .required("topic", errors)
        .and_then(|node| read_template(node, errors));
    let key = match map.optional("key") {
        Some(node) => read_template(node, errors).map(Some),
        None => Some(None),
    };
    let headers = read_headers(map.optional("headers"), errors, |_| Ok(()));
    let compression = match map.optional("compression") {
        Some(node) => node.as_choice("compression", &Compression::CHOICES, errors),
        None => Some(Compression::None),
    };
    let delivery_timeout = read_seconds(
        map.optional("delivery_timeout_seconds"),
        DEFAULT_KAFKA_DELIVERY_TIMEOUT_SECONDS,
        errors,
    );
    let settings = match map.optional("settings") {
        Some(node) => read_settings(node, errors),
        None => Some(Vec::new()),
    };
    map.finish(errors);
    Some(KafkaSinkConfig {
        brokers: brokers?,
        topic: topic?,
        key: key?,
        headers: headers?,
        compression: compression?,
        delivery_timeout: delivery_timeout?,
        settings: settings?,
    })
}

/// librdkafka settings: names as librdkafka spells them (`linger.ms`), values as written.
fn read_settings(node: &Node, errors: &mut Errors) -> Option<Vec<(String, String)>> {
    let map = node.as_map(errors)?;
    let mut settings = Vec::new();
    let mut complete = true;
    for entry in map.entries() {
        match entry.value.as_text(errors) {
            Some(value) => settings.push((entry.key.clone(), value.to_owned())),
            None => complete = false,
        }
    }
    map.abandon();
    complete.then_some(settings)
}

pub(super) fn read_http(mut map: MapReader<'_>, errors: &mut Errors) -> Option<HttpSinkConfig> {
    let url = map.required("url", errors).and_then(|node| {
        let template = read_template(node, errors)?;
        // A fixed URL is checked now; a templated one when it renders.
        if template.is_literal() {
            let checked = reqwest::Url::parse(template.source())
                .map_err(|err| err.to_string())
                .and_then(|url| match url.scheme() {
                    "http" | "https" => Ok(()),
                    other => Err(format!("scheme `{other}` is not http or https")),
                });
            if let Err(message) = checked {
                errors.push(node.error(format!("invalid URL: {message}")));
                return None;
            }
        }
        Some(template)
    });
    const METHODS: [(&str, &str); 3] = [("POST", "POST"), ("PUT", "PUT"), ("PATCH", "PATCH")];
    let method = match map.optional("method") {
        Some(node) => node
            .as_choice("method", &METHODS, errors)
            .map(|name| reqwest::Method::from_bytes(name.as_bytes()).expect("a known method")),
        None => Some(reqwest::Method::POST),
    };
    let headers = read_headers(map.optional("headers"), errors, |name| {
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map(|_| ())
            .map_err(|_| format!("`{name}` is not a valid HTTP header name"))
    });
    let auth = match map.optional("auth") {
        Some(node) => read_auth(node, errors).map(Some),
        None => Some(None),
    };
    let timeout = read_seconds(
        map.optional("timeout_seconds"),
        DEFAULT_HTTP_TIMEOUT_SECONDS,
        errors,
    );
    let signing_key = match map.optional("signing_secret") {
        Some(node) => node
            .parse_str(errors, crate::sinks::http::parse_signing_secret)
            .map(Some),
        None => Some(None),
    };
    let max_in_flight = match map.optional("max_in_flight") {
        Some(node) => node.as_u64(errors).and_then(|count| {
            if (1..=MAX_HTTP_MAX_IN_FLIGHT).contains(&count) {
                Some(count as usize)
            } else {
                errors.push(node.error(format!(
                    "expected 1 to {MAX_HTTP_MAX_IN_FLIGHT} requests in flight, found {count}"
                )));
                None
            }
        }),
        None => Some(DEFAULT_HTTP_MAX_IN_FLIGHT as usize),
    };
    map.finish(errors);
    Some(HttpSinkConfig {
        url: url?,
        method: method?,
        headers: headers?,
        auth: auth?,
        timeout: timeout?,
        signing_key: signing_key?,
        max_in_flight: max_in_flight?,
    })
}

fn read_auth(node: &Node, errors: &mut Errors) -> Option<HttpAuth> {
    let mut map = node.as_map(errors)?;
    #[derive(Clone, Copy)]
    enum Type {
        Basic,
        Bearer,
    }
    let kind = map.required("type", errors).and_then(|node| {
        node.as_choice(
            "auth type",
            &[("basic", Type::Basic), ("bearer", Type::Bearer)],
            errors,
        )
    });
    let Some(kind) = kind else {
        map.abandon();
        return None;
    };
    let text = |map: &mut MapReader<'_>, name: &'static str, errors: &mut Errors| {
        map.required(name, errors)
            .and_then(|node| node.as_text(errors))
            .map(str::to_owned)
    };
    let auth = match kind {
        Type::Basic => {
            let username = text(&mut map, "username", errors);
            let password = text(&mut map, "password", errors);
            username
                .zip(password)
                .map(|(username, password)| HttpAuth::Basic { username, password })
        }
        Type::Bearer => text(&mut map, "token", errors).map(|token| HttpAuth::Bearer { token }),
    };
    map.finish(errors);
    auth
}

/// `name: template` pairs; `check_name` may refuse a name (HTTP header syntax).
fn read_headers(
    node: Option<&Node>,
    errors: &mut Errors,
    check_name: impl Fn(&str) -> Result<(), String>,
) -> Option<Vec<(String, Template)>> {
    let Some(node) = node else {
        return Some(Vec::new());
    };
    let map = node.as_map(errors)?;
    let mut headers = Vec::new();
    let mut complete = true;
    for entry in map.entries() {
        if let Err(message) = check_name(&entry.key) {
            errors.push(crate::yaml::Error {
                span: entry.key_span,
                path: join_key(&node.path, &entry.key),
                message,
            });
            complete = false;
            continue;
        }
        match read_template(&entry.value, errors) {
            Some(template) => headers.push((entry.key.clone(), template)),
            None => complete = false,
        }
    }
    map.abandon();
    complete.then_some(headers)
}

/// A positive whole number of seconds, or `default`.
fn read_seconds(node: Option<&Node>, default: u64, errors: &mut Errors) -> Option<Duration> {
    let Some(node) = node else {
        return Some(Duration::from_secs(default));
    };
    let seconds = node.as_u64(errors)?;
    if seconds == 0 {
        errors.push(node.error("expected a positive number of seconds, found 0"));
        return None;
    }
    Some(Duration::from_secs(seconds))
}
