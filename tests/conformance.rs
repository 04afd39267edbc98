//! Conformance: the real CommCare HQ payloads in ../shared/fixtures/commcare (INDEX.md there
//! says what each exercises) decode to the right kind, ids, xmlns and case operations, or are
//! refused as expected. Opt-in with `--features conformance`; the folder can be moved with
//! CCRELAY_COMMCARE_FIXTURES (relative paths are from the package root). When enabled and the
//! folder is missing, every test fails naming the path: a silent pass would hide that nothing
//! was checked.
#![cfg(feature = "conformance")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ccrelay::decode::{Decoded, Input, decode};
use ccrelay::envelope::{CaseAction, Format, Kind};
use ccrelay::error::ErrorKind;
use serde_json::{Value, json};

use CaseAction::{Close, Create, Index, Update};

const RECEIVED_ON: &str = "2024-05-02T06:14:09.482113Z";
const SERVER_MODIFIED_ON: &str = "2024-05-02T06:14:09.611402Z";

fn fixtures_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = match std::env::var_os("CCRELAY_COMMCARE_FIXTURES") {
        Some(dir) => root.join(dir),
        None => root.join("../shared/fixtures/commcare"),
    };
    assert!(
        dir.join("INDEX.md").is_file(),
        "the CommCare fixtures are missing: no INDEX.md in {} (set CCRELAY_COMMCARE_FIXTURES)",
        dir.display()
    );
    dir
}

fn read(path: &str) -> Vec<u8> {
    let full = fixtures_dir().join(path);
    std::fs::read(&full).unwrap_or_else(|err| panic!("reading {}: {err}", full.display()))
}

fn read_json(path: &str) -> Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|err| panic!("{path} is not JSON: {err}"))
}

/// The body as a forwarder would send it: both headers set, no expected kind.
fn decode_body(path: &str, body: &[u8]) -> Decoded {
    let input = Input {
        body,
        content_type: Some("text/xml"),
        received_on: Some(RECEIVED_ON),
        server_modified_on: Some(SERVER_MODIFIED_ON),
        ..Input::default()
    };
    decode(&input).unwrap_or_else(|err| panic!("decoding {path} failed: {err}"))
}

fn decode_file(path: &str) -> Decoded {
    decode_body(path, &read(path))
}

/// What a form file must decode to.
struct FormExpectation<'a> {
    id: Option<&'a str>,
    xmlns: Option<&'a str>,
    /// `(case_id, actions, version)` of each case operation, in document order.
    cases: &'a [(&'a str, &'a [CaseAction], u8)],
    ledgers: usize,
}

fn check_form(path: &str, expected: FormExpectation<'_>) -> Decoded {
    let decoded = decode_file(path);
    assert_eq!(decoded.kind, Kind::Form, "{path}");
    let form = decoded.form.as_ref().expect("a form");
    assert_eq!(form.id.as_deref(), expected.id, "{path}: form id");
    assert_eq!(form.xmlns.as_deref(), expected.xmlns, "{path}: xmlns");
    let cases: Vec<(&str, &[CaseAction], u8)> = decoded
        .cases
        .iter()
        .map(|case| (case.case_id.as_str(), case.actions.as_slice(), case.version))
        .collect();
    assert_eq!(cases, expected.cases, "{path}: cases");
    assert_eq!(decoded.ledgers.len(), expected.ledgers, "{path}: ledgers");
    let dedupe_prefix = match &form.id {
        Some(id) => format!("form:{id}:{RECEIVED_ON}:"),
        None => "sha256:".to_owned(),
    };
    assert!(
        decoded.dedupe_key.starts_with(&dedupe_prefix),
        "{path}: dedupe key {}",
        decoded.dedupe_key
    );
    decoded
}

fn check_refused(path: &str, expected_message: &str) {
    let body = read(path);
    let input = Input {
        body: &body,
        ..Input::default()
    };
    let error = decode(&input).expect_err(path);
    assert_eq!(error.kind(), ErrorKind::Unprocessable, "{path}");
    assert_eq!(error.to_string(), expected_message, "{path}");
}

/// Every file checked below, so that a file added to the folder without an expectation fails.
const CHECKED: &[&str] = &[
    "api_json/case_v1_list_response.json",
    "api_json/form_v1_list_response.json",
    "form_json_internal/meta-sql.json",
    "form_json_internal/namespaces-sql.json",
    "form_xml/case_ledger_form.xml",
    "form_xml/device_log.xml",
    "form_xml/form_with_case.xml",
    "form_xml/gps_location.xml",
    "form_xml/invalid_form_xml.xml",
    "form_xml/meta.xml",
    "form_xml/missing_xmlns.xml",
    "form_xml/namespace_in_meta.xml",
    "form_xml/namespaces.xml",
    "form_xml/simple_form.xml",
    "form_xml/simple_form_edited.xml",
    "form_xml/unicode.xml",
    "form_xml_cases/bugs_duplicate_case_properties.xml",
    "form_xml_cases/bugs_empty_id.xml",
    "form_xml_cases/bugs_lots_of_subcases.xml",
    "form_xml_cases/case_in_repeats.xml",
    "form_xml_cases/mixed_cases.xml",
    "form_xml_cases/v2_basic_close.xml",
    "form_xml_cases/v2_basic_create.xml",
    "form_xml_cases/v2_basic_update.xml",
    "form_xml_cases/v2_index_update.xml",
];

#[test]
fn every_payload_file_has_an_expectation() {
    let dir = fixtures_dir();
    let mut found = BTreeSet::new();
    for folder in std::fs::read_dir(&dir).expect("fixture folder lists") {
        let folder = folder.expect("entry").path();
        if !folder.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&folder).expect("subfolder lists") {
            let file = file.expect("entry").path();
            let relative = file.strip_prefix(&dir).expect("inside the folder");
            found.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    let checked: BTreeSet<String> = CHECKED.iter().map(|path| (*path).to_owned()).collect();
    assert_eq!(found, checked);
}

mod form_xml {
    use super::*;

    #[test]
    fn namespace_in_meta() {
        let decoded = check_form(
            "form_xml/namespace_in_meta.xml",
            FormExpectation {
                id: Some("801b5a2f-42f0-4394-97b9-fd0622ff6448"),
                xmlns: Some("http://bihar.commcarehq.org/pregnancy/new"),
                cases: &[("4aaeeb3f-87d6-4c21-90f5-4d2aabdff589", &[Create, Update], 2)],
                ledgers: 0,
            },
        );
        let form = decoded.form.as_ref().unwrap();
        assert_eq!(form.name.as_deref(), Some("New Beneficiary"));
        assert_eq!(form.username.as_deref(), Some("ctest"));
        assert_eq!(form.device_id.as_deref(), Some("7FU5S85W2ZVYKDWW6HXM0BSZW"));
        assert_eq!(form.time_start.as_deref(), Some("2012-03-02T21:34:21.533Z"));
        assert_eq!(
            form.data["meta"]["appVersion"]["@xmlns"],
            "http://commcarehq.org/xforms"
        );
        let case = &decoded.cases[0];
        assert_eq!(case.case_type.as_deref(), Some("cc_bihar_pregnancy"));
        assert_eq!(
            case.owner_id.as_deref(),
            Some("6046f531e7c5bdb2cb59258a78bba32d")
        );
        assert_eq!(case.properties["husband_name"], "");
    }

    #[test]
    fn form_with_case() {
        let decoded = check_form(
            "form_xml/form_with_case.xml",
            FormExpectation {
                id: Some("ad38211be256653bceac8e2156475666"),
                xmlns: Some("http://commcarehq.org/test/submit"),
                cases: &[("ad38211be256653bceac8e2156475667", &[Create, Update], 2)],
                ledgers: 0,
            },
        );
        assert_eq!(decoded.cases[0].properties["external_id"], "someexternal");
        assert_eq!(decoded.form.unwrap().name.as_deref(), Some("v2 create"));
    }

    #[test]
    fn simple_form_with_legacy_meta_and_its_edit() {
        let original = check_form(
            "form_xml/simple_form.xml",
            FormExpectation {
                id: Some("someuid"),
                xmlns: Some("http://commcarehq.org/test/submit"),
                cases: &[],
                ledgers: 0,
            },
        );
        let form = original.form.as_ref().unwrap();
        assert_eq!(form.device_id.as_deref(), Some("myphone"));
        assert_eq!(form.time_end.as_deref(), Some("2010-06-29T13:55:50.137"));
        assert_eq!(form.user_id, None);
        assert_eq!(form.data["baz"]["bop"], "bang");

        let edited = check_form(
            "form_xml/simple_form_edited.xml",
            FormExpectation {
                id: Some("ad38211be256653bceac8e2156475664"),
                xmlns: Some("http://commcarehq.org/test/submit"),
                cases: &[],
                ledgers: 0,
            },
        );
        assert_eq!(edited.form.unwrap().data["baz"]["bop"], "bong");
    }

    #[test]
    fn case_ledger_form() {
        let decoded = check_form(
            "form_xml/case_ledger_form.xml",
            FormExpectation {
                id: Some("ad38211be256653bceac8e2156475664"),
                xmlns: Some("http://commcarehq.org/test/submit"),
                cases: &[
                    ("fbb69a88-1eca-463a-883e-1148b96fb03b", &[Create, Update], 2),
                    ("fbb69a88-1eca-463a-883e-1148b96fb03b", &[Close], 2),
                    ("fbb69a88-1eca-463a-883e-1148b96fb03c", &[Create, Update], 2),
                ],
                ledgers: 1,
            },
        );
        assert_eq!(
            decoded.cases[0].owner_id.as_deref(),
            Some("91cadfa4cb957cf021c76dfe31d206a6"),
            "update overrides create"
        );
        assert_eq!(
            decoded.cases[0].properties["amount-owed-to-entrepreneur"],
            "119600"
        );
        assert_eq!(
            decoded.ledgers[0],
            json!({"#type": "balance", "@xmlns": "http://commcarehq.org/ledger/v1",
                "@entity-id": "fbb69a88-1eca-463a-883e-1148b96fb03b", "@date": "2000-01-01",
                "@section-id": "stock",
                "entry": {"@id": "fbb69a88-1eca-463a-883e-1148b96fb03b", "@quantity": "10"}})
        );
    }

    #[test]
    fn invalid_form_xml_is_refused() {
        check_refused(
            "form_xml/invalid_form_xml.xml",
            "malformed XML at line 3, column 10: ill-formed document: expected `</foo>`, but \
             `</foo\n</form>` was found",
        );
    }

    /// HQ rejects forms without xmlns, so none should arrive; ccrelay accepts one anyway
    /// (xmlns null, id null, keyed by body hash) rather than lose it.
    #[test]
    fn missing_xmlns_is_accepted_with_null_xmlns() {
        check_form(
            "form_xml/missing_xmlns.xml",
            FormExpectation {
                id: None,
                xmlns: None,
                cases: &[],
                ledgers: 0,
            },
        );
    }

    /// HQ never forwards device reports; ccrelay reads one as any form (rules may drop it by
    /// xmlns), and its `<case>` holds no case_id, so it is not a case block.
    #[test]
    fn device_log_is_an_ordinary_form_without_cases() {
        check_form(
            "form_xml/device_log.xml",
            FormExpectation {
                id: None,
                xmlns: Some("http://code.javarosa.org/devicereport"),
                cases: &[],
                ledgers: 0,
            },
        );
    }

    #[test]
    fn unicode() {
        let decoded = check_form(
            "form_xml/unicode.xml",
            FormExpectation {
                id: None,
                xmlns: Some("http://org.commcarehq/app/unicode"),
                cases: &[],
                ledgers: 0,
            },
        );
        assert_eq!(decoded.form.unwrap().data["datum"], "统一码");
    }

    #[test]
    fn gps_location_blank_answers_are_empty_strings() {
        let decoded = check_form(
            "form_xml/gps_location.xml",
            FormExpectation {
                id: Some("5d3d01561f584e85b53669a48bfc6039"),
                xmlns: Some("http://org.commcarehq/formdesigner/badmetauser"),
                cases: &[],
                ledgers: 0,
            },
        );
        let data = decoded.form.unwrap().data;
        assert_eq!(data["q2_participant_gender"], "");
        assert_eq!(
            data["q8_participant_and_partner_use_condom_during_intercourse"],
            ""
        );
        assert_eq!(
            data["meta"]["location"],
            json!({"@xmlns": "http://commcarehq.org/xforms", "#text": "42.3739063 -71.1109113 0.0 886.0"})
        );
    }

    /// HQ's own conversion of the same file, `namespaces-sql.json`, is matched exactly.
    #[test]
    fn namespaces_convert_exactly_as_hq_stored_them() {
        let decoded = decode_file("form_xml/namespaces.xml");
        let hq = read_json("form_json_internal/namespaces-sql.json");
        assert_eq!(decoded.form.unwrap().data, hq["form"]);
    }

    /// `meta-sql.json` comes from another upstream version of `meta.xml` (xmlns
    /// `http://openrosa.org/app/general`) and has HQ's datetime normalisation applied; apart
    /// from those, the conversion matches exactly. The `<case>` there is not a case block.
    #[test]
    fn meta_converts_as_hq_stored_it_apart_from_xmlns_and_normalised_times() {
        let decoded = check_form(
            "form_xml/meta.xml",
            FormExpectation {
                id: None,
                xmlns: Some("http://org.commcarehq/app/general"),
                cases: &[],
                ledgers: 0,
            },
        );
        let form = decoded.form.unwrap();
        assert_eq!(
            form.user_id.as_deref(),
            Some("f7f0c79e-8b79-11df-b7de-005056c00008")
        );
        assert_eq!(form.time_start.as_deref(), Some("2010-07-22T13:54:27.971"));
        let without_differences = |mut data: Value| {
            let object = data.as_object_mut().unwrap();
            object.remove("@xmlns");
            let meta = object["meta"].as_object_mut().unwrap();
            meta.remove("timeStart");
            meta.remove("timeEnd");
            data
        };
        let hq = read_json("form_json_internal/meta-sql.json");
        assert_eq!(
            without_differences(form.data),
            without_differences(hq["form"].clone())
        );
    }
}

mod form_xml_cases {
    use super::*;

    #[test]
    fn casexml_1_blocks_in_repeats() {
        let decoded = check_form(
            "form_xml_cases/case_in_repeats.xml",
            FormExpectation {
                id: Some("JLP8BS71HFU3VGMIWW610W80T"),
                xmlns: Some(
                    "http://openrosa.org/formdesigner/FB088320-11E3-406A-AA3F-1D8E7A81F40D",
                ),
                cases: &[
                    ("32337c03-2b73-497f-ab18-2b587f8c21df", &[Create, Update], 1),
                    ("581b0506-7c94-4af5-ac67-f934566d5418", &[Create, Update], 1),
                    ("CMYOSI95QCED3ZWIP9ZK1QNQ6", &[Create, Update, Close], 1),
                ],
                ledgers: 0,
            },
        );
        assert_eq!(
            decoded.cases[0].case_type.as_deref(),
            Some("newborn_hiv_child")
        );
        assert_eq!(
            decoded.cases[0].user_id.as_deref(),
            Some("2XC1EINEJV1NZ7QXHVUMHUQQV")
        );
        let repeats = &decoded.form.as_ref().unwrap().data["child_repeat"];
        assert_eq!(repeats.as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn casexml_1_blocks_at_any_depth() {
        check_form(
            "form_xml_cases/mixed_cases.xml",
            FormExpectation {
                id: None,
                xmlns: Some("http://org.commcarehq/formdesigner/parent"),
                cases: &[
                    ("0bd56681dce2b7a5160f75266d1e436e", &[Create, Update], 1),
                    ("0bd56681dce2b7a5140f75266d1d93a6", &[Create, Update], 1),
                    ("0bd56681dce2b7a5140f75266d1d9312", &[Create, Update], 1),
                    ("0bd56681dce2b7a5140f75266d2064c0", &[Create, Update], 1),
                ],
                ledgers: 0,
            },
        );
    }

    #[test]
    fn casexml_2_basics() {
        let xmlns = Some("http://org.commcarehq/case/test/create");
        let create = check_form(
            "form_xml_cases/v2_basic_create.xml",
            FormExpectation {
                id: None,
                xmlns,
                cases: &[("foo-case-id", &[Create], 2)],
                ledgers: 0,
            },
        );
        assert_eq!(create.cases[0].case_type.as_deref(), Some("v2_case_type"));
        assert_eq!(create.cases[0].user_id.as_deref(), Some("bar-user-id"));
        let update = check_form(
            "form_xml_cases/v2_basic_update.xml",
            FormExpectation {
                id: None,
                xmlns,
                cases: &[("foo-case-id", &[Update], 2)],
                ledgers: 0,
            },
        );
        assert_eq!(
            update.cases[0].case_type.as_deref(),
            Some("updated_v2_case_type")
        );
        assert_eq!(update.cases[0].properties["dynamic"], "something dynamic");
        check_form(
            "form_xml_cases/v2_basic_close.xml",
            FormExpectation {
                id: None,
                xmlns,
                cases: &[("foo-case-id", &[Close], 2)],
                ledgers: 0,
            },
        );
        let index = check_form(
            "form_xml_cases/v2_index_update.xml",
            FormExpectation {
                id: None,
                xmlns,
                cases: &[("foo-case-id", &[Index], 2)],
                ledgers: 0,
            },
        );
        assert_eq!(
            Value::Object(index.cases[0].indices.clone()),
            json!({"foo_ref": {"case_type": "bar", "case_id": "some_referenced_id", "relationship": "child"},
                "baz_ref": {"case_type": "bop", "case_id": "some_other_referenced_id", "relationship": "child"}})
        );
    }

    #[test]
    fn lots_of_subcases() {
        let mut cases: Vec<(&str, &[CaseAction], u8)> = vec![
            ("f8b34e0c744f8f45dfa12e28617e5716", &[Create, Update], 2),
            (
                "7554c7f4-fc96-4b1d-aec8-8890e96ffc54",
                &[Create, Update, Index],
                2,
            ),
        ];
        let tasks: Vec<String> = (1..=9)
            .map(|n| format!("763ca815-df9c-4037-9f0e-6edd2af8ba6c{n}"))
            .collect();
        cases.extend(
            tasks
                .iter()
                .map(|id| (id.as_str(), &[Create, Update, Index][..], 2)),
        );
        let decoded = check_form(
            "form_xml_cases/bugs_lots_of_subcases.xml",
            FormExpectation {
                id: Some("e9d6bb33-783d-4978-a2e0-762b42e87b9d"),
                xmlns: Some("http://bihar.commcarehq.org/test/data"),
                cases: &cases,
                ledgers: 0,
            },
        );
        assert_eq!(
            decoded.cases[1].indices["mother_id"]["case_id"],
            "f8b34e0c744f8f45dfa12e28617e5716"
        );
        assert_eq!(
            decoded.cases[0].date_modified.as_deref(),
            Some("2012-04-19")
        );
    }

    #[test]
    fn empty_case_id_is_refused() {
        check_refused(
            "form_xml_cases/bugs_empty_id.xml",
            "case block 1 has an empty case_id",
        );
    }

    #[test]
    fn duplicate_case_property() {
        let decoded = check_form(
            "form_xml_cases/bugs_duplicate_case_properties.xml",
            FormExpectation {
                id: Some("ea9571f2-785a-4159-8937-caf66c25ac4f"),
                xmlns: Some("http://bihar.commcarehq.org/pregnancy/registration"),
                cases: &[("061ecbae-d9be-4bb5-bdd4-e62abd5eaf7b", &[Update], 2)],
                ledgers: 0,
            },
        );
        assert_eq!(decoded.cases[0].properties["foo"], "");
        assert_eq!(decoded.cases[0].properties["date_next_eb"], "2012-05-27");
    }
}

mod api_json {
    use super::*;

    fn first_object(path: &str) -> Vec<u8> {
        let list = read_json(path);
        serde_json::to_vec(&list["objects"][0]).expect("re-encodes")
    }

    #[test]
    fn form_api_object_is_a_form_json_payload() {
        let path = "api_json/form_v1_list_response.json";
        let decoded = decode_body(path, &first_object(path));
        assert_eq!((decoded.kind, decoded.format), (Kind::Form, Format::Json));
        assert_eq!(decoded.domain.as_deref(), Some("corpora"));
        let form = decoded.form.as_ref().unwrap();
        assert_eq!(
            form.id.as_deref(),
            Some("f959449c-8776-42ac-b776-3f564fafc331")
        );
        assert_eq!(
            form.xmlns.as_deref(),
            Some("http://openrosa.org/formdesigner/4281EB62-46E6-49AD-A08C")
        );
        assert_eq!(form.name.as_deref(), Some("Case Update"));
        assert_eq!(form.app_id.as_deref(), Some("effb341b"));
        assert_eq!(
            form.user_id.as_deref(),
            Some("e7ad965c70802884a7a67add763939e8")
        );
        assert_eq!(
            form.username.as_deref(),
            Some("testuser"),
            "from form.meta, not metadata"
        );
        let cases: Vec<(&str, &[CaseAction])> = decoded
            .cases
            .iter()
            .map(|case| (case.case_id.as_str(), case.actions.as_slice()))
            .collect();
        assert_eq!(cases, [("b6996b7b-6b3f-476a-9006", &[Update][..])]);
        assert_eq!(decoded.cases[0].properties["intval"], "5");
        assert_eq!(
            decoded.dedupe_key,
            "form:f959449c-8776-42ac-b776-3f564fafc331:2016-11-29T14:50:42.530616Z"
        );
    }

    /// ccrelay never receives the Case API v0.4/v0.5 shape (case_json differs), but it has
    /// every key case JSON is recognised by, so it reads as a case; extra keys are ignored.
    #[test]
    fn case_api_object_reads_as_a_case_json_payload() {
        let path = "api_json/case_v1_list_response.json";
        let decoded = decode_body(path, &first_object(path));
        assert_eq!((decoded.kind, decoded.format), (Kind::Case, Format::Json));
        let case = &decoded.cases[0];
        assert_eq!(case.case_id, "45WKYXQRFFU3AT4Y022EX7HF2");
        assert_eq!(case.case_type.as_deref(), Some("programmer"));
        assert_eq!(case.owner_id, None, "owner_id is null in the payload");
        assert_eq!(case.closed, Some(false));
        assert_eq!(case.actions, [Create, Update]);
        assert_eq!(
            decoded.dedupe_key,
            "case:45WKYXQRFFU3AT4Y022EX7HF2:2012-04-05T23:56:41Z"
        );
    }

    #[test]
    fn list_envelopes_are_not_payloads() {
        check_refused(
            "api_json/form_v1_list_response.json",
            "JSON object is not a form, case, form stub, user or location payload: expected \
             keys id+form, case_id+properties, form_id+case_ids, username+id or \
             location_id+location_type; found keys: meta, objects",
        );
    }

    /// HQ's internal form documents show the conversion; they are not forwarded payloads.
    #[test]
    fn internal_form_documents_are_not_payloads() {
        for path in [
            "form_json_internal/meta-sql.json",
            "form_json_internal/namespaces-sql.json",
        ] {
            let body = read(path);
            let error = decode(&Input {
                body: &body,
                ..Input::default()
            })
            .expect_err(path);
            assert!(
                error
                    .to_string()
                    .starts_with("JSON object is not a form, case"),
                "{path}: {error}"
            );
        }
    }
}

/// No real sample shows a case_xml body (commcare-forwarding.md §5.1); the one case block of
/// a real form, alone, is the closest thing, and must read as a case payload.
#[test]
fn a_real_case_block_alone_is_a_case_xml_payload() {
    let form = String::from_utf8(read("form_xml/form_with_case.xml")).unwrap();
    let start = form.find("<case ").unwrap();
    let end = form.find("</case>").unwrap() + "</case>".len();
    let decoded = decode_body("form_with_case.xml's case", &form.as_bytes()[start..end]);
    assert_eq!(decoded.kind, Kind::Case);
    assert_eq!(decoded.cases[0].case_id, "ad38211be256653bceac8e2156475667");
    assert_eq!(decoded.cases[0].closed, Some(false));
    assert_eq!(
        decoded.dedupe_key,
        format!("case:ad38211be256653bceac8e2156475667:{SERVER_MODIFIED_ON}")
    );
}
