//! The command line as an operator uses it: exit codes and what is printed.

use std::process::{Command, Output};

fn ccrelay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ccrelay"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run ccrelay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn rules_check_accepts_a_valid_file() {
    let output = ccrelay(&["rules", "check", "tests/rules/example.yaml"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("valid"));
}

#[test]
fn rules_check_reports_every_problem_with_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "version: 1\nsinks:\n  a: { type: file, path: \"x.jsonl\" }\nrules:\n  - name: one\n    when: { kind: { like: form } }\n    to: [nowhere]\n  - name: one\n    to: [a]\n",
    )
    .unwrap();
    let output = ccrelay(&["rules", "check", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let errors = text(&output.stderr);
    assert!(
        errors.contains(":6:"),
        "the unknown op is located: {errors}"
    );
    assert!(errors.contains("like"), "{errors}");
    assert!(
        errors.contains(":7:") && errors.contains("nowhere"),
        "the unknown sink is located: {errors}"
    );
    assert!(
        errors.contains(":8:") && errors.contains("one"),
        "the duplicate name is located: {errors}"
    );
}

#[test]
fn rules_test_runs_the_files_own_tests() {
    let output = ccrelay(&["rules", "test", "tests/rules/example.yaml"]);
    assert!(
        output.status.success(),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(text(&output.stdout).trim_end().ends_with("0 failed"));
}

#[test]
fn rules_test_with_a_payload_explains_where_it_goes() {
    let output = ccrelay(&[
        "rules",
        "test",
        "config/default-rules.yaml",
        "tests/fixtures/form_xml/visit.xml",
        "--header",
        "received-on: 2024-05-02T06:14:09.482113Z",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let explained = text(&output.stdout);
    assert!(explained.contains("matched rules:"), "{explained}");
    assert!(explained.contains("-> archive"), "{explained}");
    assert!(
        explained.contains("out/form/"),
        "the rendered destination: {explained}"
    );
}

#[test]
fn parse_prints_the_envelope_or_the_answer_ingress_would_give() {
    let output = ccrelay(&[
        "parse",
        "tests/fixtures/form_xml/visit.xml",
        "--content-type",
        "text/xml",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let envelope: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(envelope["kind"], "form");

    let refused = ccrelay(&[
        "parse",
        "tests/fixtures/form_xml/visit.xml",
        "--content-type",
        "image/png",
    ]);
    assert_eq!(refused.status.code(), Some(65));
    assert!(text(&refused.stderr).starts_with("415 Unsupported Media Type:"));
}

#[test]
fn serve_refuses_an_invalid_config_with_every_problem_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccrelay.yaml");
    std::fs::write(
        &path,
        "version: 1\nlisen: 1.2.3.4:80\ndata_dir: ./d\nsources: {}\n",
    )
    .unwrap();
    let output = ccrelay(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(78));
    let errors = text(&output.stderr);
    assert!(
        errors.contains("lisen") && errors.contains("listen"),
        "{errors}"
    );
}
