//! The config file as a specification: what is accepted, what is refused and how each refusal
//! reads. Each error is `ORIGIN:LINE:COL: PATH: MESSAGE`, and every error in a file is reported.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ccrelay::config::HqCredential;
use ccrelay::config::{
    self, Auth, Config, ConfigErrors, Overrides, Secret, SignatureEncoding, from_yaml,
};
use ccrelay::control::RepeaterType;
use ccrelay::envelope::Kind;

fn vars(name: &str) -> Option<String> {
    match name {
        "HQ_PASSWORD" => Some("hq-secret-1".to_owned()),
        "HQ_API_KEY" => Some("ApiKey hq:abc123".to_owned()),
        "PARTNER_TOKEN" => Some("partner-token".to_owned()),
        "SIGNING_KEY" => Some("signing-key".to_owned()),
        "NUMERIC" => Some("0123".to_owned()),
        "PORT" => Some("8181".to_owned()),
        _ => None,
    }
}

fn files(path: &Path) -> io::Result<String> {
    match path.to_str() {
        Some("config/./secrets/hq-password-next") => Ok("hq-secret-2\n".to_owned()),
        Some("etc/token") => Ok("file-token\r\n".to_owned()),
        _ => Err(io::Error::new(io::ErrorKind::NotFound, "not found")),
    }
}

fn parse_with(text: &str, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    from_yaml(text, "test.yaml", &vars, &files, overrides)
}

fn parse(text: &str) -> Config {
    parse_with(text, &Overrides::default()).unwrap_or_else(|errors| panic!("{errors}"))
}

/// Expects `text` to be refused with exactly `expected`, one error per line.
fn check_refused(text: &str, expected: &str) {
    check_refused_with(text, &Overrides::default(), expected);
}

fn check_refused_with(text: &str, overrides: &Overrides, expected: &str) {
    match parse_with(text, overrides) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => assert_eq!(errors.to_string(), expected.trim_end(), "for:\n{text}"),
    }
}

const MINIMAL: &str = "\
version: 1
data_dir: ./data
sources:
  hq:
    auth: { type: basic, credentials: [ { username: hq, password: \"${HQ_PASSWORD}\" } ] }
";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

#[test]
fn the_embedded_default_listens_on_loopback_and_takes_any_source() {
    let config = config::load(None, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, addr("127.0.0.1:8080"));
    assert_eq!(config.admin_listen, addr("127.0.0.1:9090"));
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.rules_path, None);
    let source = config.sources.get("anything").expect("the * fallback");
    assert_eq!((source.name.as_str(), &source.auth), ("*", &Auth::None));
    assert!(source.dedupe);
    assert_eq!(config.ingress, config::IngressSettings::default());
    assert_eq!(config.spool, config::SpoolSettings::default());
}

#[test]
fn the_example_parses_and_means_what_its_comments_say() {
    let text = std::fs::read_to_string("config/example.yaml").expect("config/example.yaml");
    let config = from_yaml(
        &text,
        "config/example.yaml",
        &vars,
        &files,
        &Overrides::default(),
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.listen, addr("0.0.0.0:8080"));
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/ccrelay"));
    assert_eq!(
        config.rules_path,
        Some(PathBuf::from("config/./rules.yaml"))
    );
    assert_eq!(config.ingress.request_timeout, Duration::from_secs(30));
    assert_eq!(config.spool.retention, Duration::from_secs(7 * 24 * 3600));

    let forms = config.sources.get("hq-forms").expect("hq-forms");
    assert_eq!(forms.domain.as_deref(), Some("kenya-mch"));
    assert_eq!(forms.kind, Some(Kind::Form));
    let Auth::Basic(credentials) = &forms.auth else {
        panic!("{:?}", forms.auth)
    };
    let passwords: Vec<&str> = credentials.iter().map(|c| c.password.expose()).collect();
    assert_eq!(passwords, ["hq-secret-1", "hq-secret-2"]);

    let cases = config.sources.get("hq-cases").expect("hq-cases");
    assert_eq!(
        cases.auth,
        Auth::Authorization(vec![Secret::new("ApiKey hq:abc123")])
    );
    let partner = config.sources.get("partner").expect("partner");
    assert_eq!(
        partner.auth,
        Auth::Bearer(vec![Secret::new("partner-token")])
    );

    let signed = config.sources.get("signed").expect("signed");
    assert!(!signed.dedupe);
    let Auth::Hmac(hmac) = &signed.auth else {
        panic!("{:?}", signed.auth)
    };
    assert_eq!(hmac.header, "x-hub-signature-256");
    assert_eq!(hmac.encoding, SignatureEncoding::Hex);
    assert_eq!(hmac.prefix.as_deref(), Some("sha256="));
    let timestamp = hmac.timestamp.as_ref().expect("timestamp check");
    assert_eq!(timestamp.header, "x-signature-timestamp");
    assert_eq!(timestamp.tolerance, Duration::from_secs(300));

    assert_eq!(
        config.sources.get("unlisted").map(|s| s.name.as_str()),
        Some("*")
    );
    let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["hq-cases", "hq-forms", "partner", "signed", "*"]);

    let control = &config.control;
    let hq = control.hq.as_ref().expect("control.hq");
    assert_eq!(hq.url, "https://www.commcarehq.org");
    assert_eq!(
        hq.credential,
        HqCredential::ApiKey {
            username: "admin@example.org".to_owned(),
            api_key: Secret::new("ApiKey hq:abc123"),
        }
    );
    assert_eq!(
        control.public_url.as_deref(),
        Some("https://relay.example.org")
    );
    assert_eq!(control.forwarders.len(), 2);
    assert_eq!(
        control.forwarders[0].types,
        [RepeaterType::FormRepeater, RepeaterType::ShortFormRepeater]
    );
    assert_eq!(control.api_keys[0].key, Secret::new("partner-token"));
    assert!(!control.register_on_start);
}

#[test]
fn a_minimal_file_gets_the_defaults() {
    let config = parse(MINIMAL);
    assert_eq!(config.listen, addr("127.0.0.1:8080"));
    assert_eq!(config.admin_listen, addr("127.0.0.1:9090"));
    assert_eq!(config.ingress.max_body_bytes.get(), 10 * 1024 * 1024);
    assert_eq!(config.ingress.max_concurrent_requests.get(), 1024);
    assert_eq!(config.ingress.max_depth.get(), 64);
    assert_eq!(config.ingress.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.spool.segment_bytes.get(), 64 * 1024 * 1024);
    assert_eq!(config.spool.max_disk_bytes.get(), 10 * 1024 * 1024 * 1024);
    assert!(
        config.sources.get("other").is_none(),
        "no * entry means unknown names are 404"
    );
}

#[test]
fn every_error_in_a_file_is_reported_with_position_and_path() {
    check_refused(
        "\
version: 1
lisen: 0.0.0.0:8080
admin_listen: localhost
data_dir: [a]
ingress:
  max_body_bytes: lots
  request_timeout_seconds: 0
sources:
  hq:
    kind: forms
    dedupe: yes
    auth: { type: hamc }
  \"bad name\":
    auth: { type: bearer, tokens: [\"${MISSING_TOKEN}\"] }
spool:
  segment_bytes: 100
  max_disk_bytes: 10
",
        "\
test.yaml:2:1: lisen: unknown field `lisen` (did you mean `listen`?), expected one of: version, listen, admin_listen, data_dir, rules, ingress, sources, spool, control
test.yaml:3:15: admin_listen: `localhost` is not an address with a port, such as 127.0.0.1:8080 or [::1]:8080
test.yaml:4:11: data_dir: expected a string, found a list
test.yaml:6:19: ingress.max_body_bytes: expected an integer, found a string
test.yaml:7:28: ingress.request_timeout_seconds: expected at least 1, found 0
test.yaml:10:11: sources.hq.kind: unknown payload kind `forms` (did you mean `form`?), expected one of: form, case, form_stub, app, user, location
test.yaml:11:13: sources.hq.dedupe: expected a boolean (true or false), found a string
test.yaml:12:19: sources.hq.auth.type: unknown auth type `hamc` (did you mean `hmac`?), expected one of: none, basic, bearer, authorization, hmac
test.yaml:13:3: sources[\"bad name\"]: source name `bad name` must be `*` or use only letters, digits, `.`, `_` and `-`
test.yaml:14:36: sources[\"bad name\"].auth.tokens[0]: environment variable `MISSING_TOKEN` is not set
test.yaml:17:19: spool.max_disk_bytes: `max_disk_bytes` (10) must be at least `segment_bytes` (100)
",
    );
}

#[test]
fn refusals_one_by_one() {
    // (what, config text, expected errors)
    let cases = [
        (
            "duplicate key",
            "version: 1\ndata_dir: a\ndata_dir: b\nsources: {}\n",
            "test.yaml:3:1: data_dir: duplicate key `data_dir` (first at 2:1)",
        ),
        (
            "yaml syntax",
            "version: 1\nsources:\n  hq: [\n",
            "test.yaml:4:1: while parsing a node, did not find expected node content",
        ),
        (
            "empty file",
            "# nothing yet\n",
            "test.yaml:1:1: the config file is empty; it needs at least `version` and `sources`",
        ),
        (
            "root not a map",
            "- version: 1\n",
            "test.yaml:1:1: expected a map, found a list",
        ),
        (
            "missing version, data_dir and sources",
            "listen: 127.0.0.1:8080\n",
            "test.yaml:1:1: missing field `version`\n\
             test.yaml:1:1: missing field `sources`\n\
             test.yaml:1:1: missing field `data_dir`",
        ),
        (
            "another version stops there",
            "version: 2\nwhatever: {}\n",
            "test.yaml:1:10: version: unsupported config version 2, this build reads version 1",
        ),
        (
            "no sources",
            "version: 1\ndata_dir: d\nsources: {}\n",
            "test.yaml:3:10: sources: expected at least one source",
        ),
        (
            "auth missing",
            "version: 1\ndata_dir: d\nsources:\n  hq: { domain: x }\n",
            "test.yaml:4:7: sources.hq: missing field `auth`",
        ),
        (
            "unknown auth field, with the fields of that type",
            "version: 1\ndata_dir: d\nsources:\n  hq:\n    auth: { type: bearer, token: [x] }\n",
            "test.yaml:5:11: sources.hq.auth: missing field `tokens`\n\
             test.yaml:5:27: sources.hq.auth.token: unknown field `token` (did you mean `tokens`?), expected one of: type, tokens",
        ),
        (
            "empty credential list and a bad username",
            "version: 1\ndata_dir: d\nsources:\n  a:\n    auth: { type: bearer, tokens: [] }\n  b:\n    auth: { type: basic, credentials: [{ username: \"a:b\", password: p }] }\n",
            "test.yaml:5:35: sources.a.auth.tokens: `tokens` needs at least one entry\n\
             test.yaml:7:52: sources.b.auth.credentials[0].username: username must be non-empty and without `:`",
        ),
        (
            "secrets: empty, unreadable file, not in a header",
            "version: 1\ndata_dir: d\nsources:\n  a:\n    auth: { type: bearer, tokens: [\"\", { file: nope }, \"two\\nlines\"] }\n",
            "test.yaml:5:36: sources.a.auth.tokens[0]: secret must not be empty\n\
             test.yaml:5:40: sources.a.auth.tokens[1]: cannot read secret file `nope`: not found\n\
             test.yaml:5:56: sources.a.auth.tokens[2]: secret must be printable ASCII to fit in an HTTP header",
        ),
        (
            "hmac details",
            "version: 1\ndata_dir: d\nsources:\n  a:\n    auth: { type: hmac, secrets: [k], header: \"X Sig\", encoding: b64, tolerance_seconds: 5 }\n",
            "test.yaml:5:47: sources.a.auth.header: `X Sig` is not a valid HTTP header name\n\
             test.yaml:5:66: sources.a.auth.encoding: unknown signature encoding `b64`, expected one of: hex, base64\n\
             test.yaml:5:90: sources.a.auth.tolerance_seconds: `tolerance_seconds` needs `timestamp_header` to be set",
        ),
        (
            "bad variable syntax",
            "version: 1\ndata_dir: \"${DATA\"\nsources:\n  hq: { auth: { type: none } }\n",
            "test.yaml:2:11: data_dir: `${` without a closing `}`; write `$${` for a literal `${`",
        ),
        (
            "same address twice",
            "version: 1\nlisten: 127.0.0.1:7000\nadmin_listen: 127.0.0.1:7000\ndata_dir: d\nsources:\n  hq: { auth: { type: none } }\n",
            "test.yaml:3:15: admin_listen: `admin_listen` and `listen` are both 127.0.0.1:7000; they need different addresses",
        ),
        (
            "allow_unauthenticated with real auth",
            "version: 1\ndata_dir: d\nsources:\n  hq:\n    auth: { type: bearer, tokens: [t] }\n    allow_unauthenticated: true\n",
            "test.yaml:6:28: sources.hq.allow_unauthenticated: `allow_unauthenticated` only applies to auth type `none`, not `bearer`",
        ),
        (
            "tags and anchors",
            "version: 1\ndata_dir: &d d\nsources:\n  hq: { auth: { type: !!str none } }\n",
            "test.yaml:2:14: data_dir: anchors (`&name`) are not supported\n\
             test.yaml:4:29: sources.hq.auth.type: tags (`!!str`) are not supported; quote the value to make it a string",
        ),
    ];
    for (what, text, expected) in cases {
        match parse_with(text, &Overrides::default()) {
            Ok(config) => panic!("{what}: expected errors, got {config:#?}"),
            Err(errors) => assert_eq!(errors.to_string(), expected, "{what}"),
        }
    }
}

#[test]
fn auth_none_needs_loopback_or_an_explicit_opt_in() {
    let open = "\
version: 1
listen: 0.0.0.0:8080
data_dir: d
sources:
  hq:
    auth: { type: none }
";
    check_refused(
        open,
        "test.yaml:6:11: sources.hq.auth: auth type `none` is only allowed when `listen` is a \
         loopback address, and listen is 0.0.0.0:8080; configure auth, or set \
         `allow_unauthenticated: true` on this source",
    );
    let opted_in = format!("{open}    allow_unauthenticated: true\n");
    assert_eq!(
        parse(&opted_in).sources.get("hq").map(|s| &s.auth),
        Some(&Auth::None)
    );

    // The rule is checked after the command line has had its say, both ways.
    let loopback = Overrides {
        listen: Some(addr("127.0.0.1:8080")),
        ..Overrides::default()
    };
    assert!(parse_with(open, &loopback).is_ok());
    let public = Overrides {
        listen: Some(addr("[::]:8080")),
        ..Overrides::default()
    };
    let default_text = config::DEFAULT_YAML;
    match from_yaml(default_text, "default.yaml", &vars, &files, &public) {
        Ok(config) => panic!("expected a refusal, got {config:#?}"),
        Err(errors) => assert_eq!(
            errors.to_string(),
            "default.yaml:10:11: sources[\"*\"].auth: auth type `none` is only allowed when \
             `listen` is a loopback address, and listen is [::]:8080 (from the command line); \
             configure auth, or set `allow_unauthenticated: true` on this source"
        ),
    }
}

#[test]
fn overrides_replace_file_values() {
    let overrides = Overrides {
        listen: Some(addr("127.0.0.1:1111")),
        admin_listen: Some(addr("127.0.0.1:2222")),
        data_dir: Some(PathBuf::from("/srv/data")),
        rules_path: Some(PathBuf::from("/srv/rules.yaml")),
    };
    let config = parse_with(MINIMAL, &overrides).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.listen, addr("127.0.0.1:1111"));
    assert_eq!(config.admin_listen, addr("127.0.0.1:2222"));
    assert_eq!(config.data_dir, PathBuf::from("/srv/data"));
    assert_eq!(config.rules_path, Some(PathBuf::from("/srv/rules.yaml")));

    // A data_dir given only on the command line is enough.
    let without_data_dir = MINIMAL.replace("data_dir: ./data\n", "");
    assert!(parse_with(&without_data_dir, &overrides).is_ok());
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let text = format!("{MINIMAL}rules: rules.yaml\n");
    let config = from_yaml(
        &text,
        "/etc/ccrelay/config.yaml",
        &vars,
        &files,
        &Overrides::default(),
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.data_dir, PathBuf::from("/etc/ccrelay/./data"));
    assert_eq!(
        config.rules_path,
        Some(PathBuf::from("/etc/ccrelay/rules.yaml"))
    );
}

#[test]
fn variables_fill_any_value_and_secrets_keep_their_text() {
    let config = parse(
        "\
version: 1
listen: 127.0.0.1:${PORT}
data_dir: d$${literal}
ingress:
  max_depth: ${PORT}
sources:
  hq:
    auth:
      type: basic
      credentials:
        - username: hq
          password: ${NUMERIC}
        - { username: hq, password: 0123 }
  file:
    auth: { type: bearer, tokens: [{ file: etc/token }] }
",
    );
    assert_eq!(config.listen, addr("127.0.0.1:8181"));
    assert_eq!(config.data_dir, PathBuf::from("d${literal}"));
    assert_eq!(config.ingress.max_depth.get(), 8181);
    let Some(Auth::Basic(credentials)) = config.sources.get("hq").map(|s| &s.auth) else {
        panic!("basic auth expected");
    };
    assert_eq!(credentials[0].password.expose(), "0123");
    assert_eq!(credentials[1].password.expose(), "0123");
    let file = config.sources.get("file").expect("file");
    assert_eq!(file.auth, Auth::Bearer(vec![Secret::new("file-token")]));
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let config = parse(MINIMAL);
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("hq-secret-1"), "{debug}");
    assert!(debug.contains("[redacted]"));
    assert_eq!(Secret::new("x").to_string(), "[redacted]");
}

#[test]
fn an_unreadable_file_is_reported_with_its_path() {
    let missing = Path::new("/nonexistent/ccrelay.yaml");
    let error = config::load(Some(missing), &Overrides::default()).expect_err("missing file");
    assert!(error.errors().is_empty());
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/ccrelay.yaml: cannot read the config file: "),
        "{error}"
    );
}

#[test]
fn control_is_empty_when_absent() {
    let config = parse(MINIMAL);
    assert!(config.control.hq.is_none());
    assert!(config.control.forwarders.is_empty());
    assert_eq!(config.control.max_registrations, 1000);
}

#[test]
fn control_mistakes_are_all_reported() {
    check_refused(
        &format!(
            "{MINIMAL}control:
  hq: {{ url: \"ftp://hq\", username: \"a:b\" }}
  forwarders:
    - {{ domain: kenya, types: [FormRepeter], source: nowhere }}
    - {{ domain: kenya, types: [], source: hq }}
  register_on_start: true
  api_keys:
    - {{ domain: \"bad domain\", username: ops, key: \"\" }}
"
        ),
        "\
test.yaml:7:7: control.hq: missing field `api_key` (HQ's ApiKey auth) or `password` (HTTP Basic)
test.yaml:7:14: control.hq.url: `ftp://hq` is not an http or https URL such as https://relay.example.org
test.yaml:7:36: control.hq.username: username must be non-empty printable ASCII without `:`
test.yaml:9:32: control.forwarders[0].types[0]: unknown forwarder type `FormRepeter` (did you mean `FormRepeater`?), expected one of: FormRepeater, CaseRepeater, CreateCaseRepeater, UpdateCaseRepeater, ShortFormRepeater, AppStructureRepeater, UserRepeater, LocationRepeater
test.yaml:10:31: control.forwarders[1].types: `types` needs at least one forwarder type
test.yaml:11:22: control.register_on_start: `register_on_start: true` needs `hq` and `public_url`
test.yaml:13:17: control.api_keys[0].domain: `bad domain` is not a CommCare project space name (letters, digits, `-`, `_`, `.`)
test.yaml:13:51: control.api_keys[0].key: secret must not be empty
",
    );
}

#[test]
fn a_forwarder_must_post_to_a_configured_source() {
    check_refused(
        &format!(
            "{MINIMAL}control:
  public_url: https://relay.example.org/
  forwarders:
    - {{ domain: kenya, types: [FormRepeater], source: nowhere }}
"
        ),
        "test.yaml:9:55: control.forwarders[0].source: source `nowhere` is not in `sources`; HQ would post to a path ccrelay answers 404\n",
    );
    let config = parse(&format!(
        "{MINIMAL}control:
  public_url: https://relay.example.org/
  forwarders:
    - {{ domain: kenya, types: [CaseRepeater, FormRepeater], source: hq }}
"
    ));
    assert_eq!(
        config.control.public_url.as_deref(),
        Some("https://relay.example.org")
    );
    assert_eq!(
        config.control.forwarders[0].types,
        [RepeaterType::FormRepeater, RepeaterType::CaseRepeater]
    );
}
