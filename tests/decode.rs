//! What `decode` makes of each payload HQ forwards (commcare-forwarding.md §3 to §6.4), read
//! from our own fixtures in tests/fixtures/. Each test states one rule; docs/envelope.md is
//! the prose version.

use std::collections::BTreeSet;
use std::path::Path;

use ccrelay::decode::{Arrival, DecodeError, Decoded, Input, Limits, decode};
use ccrelay::envelope::{App, CaseAction, CaseOperation, Envelope, Form, Format, Kind};
use ccrelay::error::ErrorKind;
use serde_json::{Map, Value, json};

const RECEIVED_ON: &str = "2024-05-02T06:14:09.482113Z";
const SERVER_MODIFIED_ON: &str = "2024-05-02T06:14:09.611402Z";

fn fixture(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|err| panic!("reading {}: {err}", full.display()))
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture is JSON")
}

/// An input as HQ's forwarders send it: both payload headers set, no expected kind.
fn input(body: &[u8]) -> Input<'_> {
    Input {
        body,
        content_type: None,
        received_on: Some(RECEIVED_ON),
        server_modified_on: Some(SERVER_MODIFIED_ON),
        expected_kind: None,
        limits: Limits::default(),
    }
}

fn decode_ok(input: Input<'_>) -> Decoded {
    decode(&input).unwrap_or_else(|err| panic!("decoding failed: {err}"))
}

fn decode_fixture(path: &str) -> Decoded {
    let body = fixture(path);
    decode(&input(&body)).unwrap_or_else(|err| panic!("decoding {path} failed: {err}"))
}

/// The message and class of the error decoding `input` gives.
fn refusal(input: Input<'_>) -> (String, ErrorKind) {
    let error: DecodeError = decode(&input).expect_err("body is refused");
    (error.to_string(), error.kind())
}

fn form_of(decoded: &Decoded) -> &Form {
    decoded.form.as_ref().expect("payload has a form")
}

fn case_ids(cases: &[CaseOperation]) -> Vec<&str> {
    cases.iter().map(|case| case.case_id.as_str()).collect()
}

fn sha256_key(body: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)))
}

mod content_type {
    use super::*;

    #[test]
    fn form_xml_is_read_under_any_accepted_label_or_none() {
        let body = fixture("form_xml/visit.xml");
        for content_type in [
            Some("text/xml"),
            Some("application/xml; charset=UTF-8"),
            Some("text/plain"),
            Some("application/json"),
            None,
        ] {
            let decoded = decode_ok(Input {
                content_type,
                ..input(&body)
            });
            assert_eq!(
                (decoded.kind, decoded.format),
                (Kind::Form, Format::Xml),
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn a_bare_app_id_labelled_text_xml_is_an_app_not_xml() {
        let body = fixture("text/app_id.txt");
        let decoded = decode_ok(Input {
            content_type: Some("text/xml"),
            ..input(&body)
        });
        assert_eq!((decoded.kind, decoded.format), (Kind::App, Format::Text));
        assert_eq!(
            decoded.app,
            Some(App {
                id: "f4a1c9e07b2d4e6f8a0b1c2d3e4f5a6b".to_owned()
            })
        );
    }

    #[test]
    fn other_media_types_and_charsets_are_unsupported_media_even_for_a_good_body() {
        let body = fixture("form_xml/visit.xml");
        let refuse = |content_type| {
            refusal(Input {
                content_type: Some(content_type),
                ..input(&body)
            })
        };
        assert_eq!(
            refuse("image/png"),
            (
                "content type \"image/png\" is not read: expected text/xml, application/xml, \
                 application/json or text/plain"
                    .to_owned(),
                ErrorKind::UnsupportedMediaType
            )
        );
        assert_eq!(
            refuse("text/xml; charset=ISO-8859-1"),
            (
                "charset \"ISO-8859-1\" is not read: bodies must be UTF-8".to_owned(),
                ErrorKind::UnsupportedMediaType
            )
        );
    }
}

mod form_xml {
    use super::*;

    #[test]
    fn meta_gives_the_form_id_user_device_and_times_and_the_header_gives_received_on() {
        let decoded = decode_fixture("form_xml/visit.xml");
        assert_eq!((decoded.kind, decoded.format), (Kind::Form, Format::Xml));
        assert_eq!(decoded.domain, None, "XML bodies carry no domain");
        let form = form_of(&decoded);
        assert_eq!(
            Form {
                data: Value::Null,
                ..form.clone()
            },
            Form {
                id: Some("3f2a7c1e-9b8d-4e6f-a5c4-b3d2e1f0a9b8".to_owned()),
                xmlns: Some(
                    "http://openrosa.org/formdesigner/5B3C1E0A-7D41-4F8E-9A2B-6C0D1E2F3A4B"
                        .to_owned()
                ),
                name: Some("Household Visit".to_owned()),
                app_id: None,
                build_id: None,
                user_id: Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".to_owned()),
                username: Some("chw.amina".to_owned()),
                device_id: Some("352099001761481".to_owned()),
                time_start: Some("2024-05-02T06:10:11.042000Z".to_owned()),
                time_end: Some("2024-05-02T06:14:07.120000Z".to_owned()),
                received_on: Some(RECEIVED_ON.to_owned()),
                edited_on: None,
                data: Value::Null,
            }
        );
    }

    #[test]
    fn form_data_follows_hq_conventions() {
        let decoded = decode_fixture("form_xml/visit.xml");
        let data = &form_of(&decoded).data;
        assert_eq!(data["#type"], "data");
        assert_eq!(data["@version"], "12");
        assert_eq!(data["notes"], "", "an empty element is an empty answer");
        assert_eq!(data["members"]["member"][1]["member_name"], "Baraka Otieno");
        assert_eq!(data["meta"]["@xmlns"], "http://openrosa.org/jr/xforms");
        assert_eq!(
            data["meta"]["appVersion"]["@xmlns"], "http://commcarehq.org/xforms",
            "a child in another namespace than its parent keeps it"
        );
        assert_eq!(
            data["case"]["@case_id"],
            "9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b"
        );
        assert_eq!(
            data["case"]["index"]["parent"]["#text"],
            "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928"
        );
    }

    #[test]
    fn per_element_default_namespaces_convert_like_hq() {
        let decoded = decode_fixture("form_xml/namespaces.xml");
        assert_eq!(
            form_of(&decoded).data,
            fixture_json("form_xml/namespaces.expected.json")
        );
    }

    #[test]
    fn a_case_block_reads_create_update_and_index() {
        let decoded = decode_fixture("form_xml/visit.xml");
        let case = serde_json::to_value(&decoded.cases).unwrap();
        assert_eq!(
            case,
            json!([{
                "case_id": "9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b",
                "case_type": "household",
                "case_name": "Household 12",
                "owner_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "user_id": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                "date_modified": "2024-05-02T06:14:07.120000Z",
                "actions": ["create", "update", "index"],
                "properties": {
                    "case_type": "household", "case_name": "Household 12",
                    "owner_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                    "village": "Kisumu", "household_size": "4", "last_visit_notes": ""
                },
                "indices": {"parent": {"case_type": "village",
                    "case_id": "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928", "relationship": "child"}},
                "version": 2
            }])
        );
    }

    #[test]
    fn legacy_meta_spellings_are_read() {
        let decoded = decode_fixture("form_xml/legacy_meta.xml");
        let form = form_of(&decoded);
        assert_eq!(form.id.as_deref(), Some("LEGACY0UID0000000000000000000042"));
        assert_eq!(form.device_id.as_deref(), Some("NOKIA-6300-0042"));
        assert_eq!(form.time_start.as_deref(), Some("2011-02-15T22:00:52.312"));
        assert_eq!(form.time_end.as_deref(), Some("2011-02-15T22:01:18.957"));
        assert_eq!(form.user_id.as_deref(), Some("5c1a9e0d7b3f4e2a"));
        assert_eq!(form.name, None);
        assert_eq!(form.data["Meta"]["uid"], "LEGACY0UID0000000000000000000042");
    }

    #[test]
    fn any_prefix_works_for_root_meta_and_case_blocks() {
        let decoded = decode_fixture("form_xml/prefixed_everything.xml");
        let form = form_of(&decoded);
        assert_eq!(
            form.xmlns.as_deref(),
            Some("http://openrosa.org/formdesigner/PREFIXED-ROOT-0001"),
            "the root's own namespace is the form type, prefixed or not"
        );
        assert_eq!(form.name.as_deref(), Some("Prefixed Survey"));
        assert_eq!(form.data["@version"], "2");
        assert_eq!(
            form.id.as_deref(),
            Some("uuid:0d7e9f3c-1a2b-4c5d-8e9f-0a1b2c3d4e5f")
        );
        assert_eq!(form.username.as_deref(), Some("surveyor"));
        assert_eq!(case_ids(&decoded.cases), ["case-prefixed-1"]);
        assert_eq!(
            decoded.cases[0].actions,
            [CaseAction::Update, CaseAction::Close]
        );
        assert_eq!(
            decoded.cases[0].date_modified.as_deref(),
            Some("2024-03-01T10:00:00.000+05:30")
        );
    }

    #[test]
    fn case_blocks_anywhere_come_in_document_order() {
        let decoded = decode_fixture("form_xml/repeats_with_cases.xml");
        assert_eq!(
            case_ids(&decoded.cases),
            ["mother-1", "baby-1", "baby-3", "mother-1"],
            "root, first repeat, third repeat, root again"
        );
        let actions: Vec<&[CaseAction]> =
            decoded.cases.iter().map(|c| c.actions.as_slice()).collect();
        assert_eq!(
            actions,
            [
                &[CaseAction::Update][..],
                &[CaseAction::Create, CaseAction::Index],
                &[CaseAction::Create, CaseAction::Index],
                &[CaseAction::Close],
            ]
        );
        assert_eq!(decoded.cases[1].indices["mother"]["case_id"], "mother-1");
        assert_eq!(decoded.cases[1].owner_id.as_deref(), Some("owner-1"));
        assert_eq!(decoded.cases[2].owner_id, None);
        let data = &form_of(&decoded).data;
        assert_eq!(data["babies"]["baby"].as_array().map(Vec::len), Some(3));
        assert_eq!(data["case"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn casexml_1_blocks_are_read_with_version_1() {
        let decoded = decode_fixture("form_xml/cases_v1.xml");
        assert_eq!(case_ids(&decoded.cases), ["v1-client-1", "v1-client-2"]);
        let first = &decoded.cases[0];
        assert_eq!(first.version, 1);
        assert_eq!(first.case_type.as_deref(), Some("client"), "case_type_id");
        assert_eq!(first.user_id.as_deref(), Some("legacy-user-1"));
        assert_eq!(
            first.date_modified.as_deref(),
            Some("2010-10-06T07:23:23.000")
        );
        assert_eq!(first.properties["external_id"], "EXT-1");
        assert_eq!(first.properties["last_dot"], "");
        assert_eq!(first.actions, [CaseAction::Create, CaseAction::Update]);
        assert_eq!(
            decoded.cases[1].actions,
            [CaseAction::Update, CaseAction::Close]
        );
    }

    #[test]
    fn a_property_given_twice_keeps_the_last_value() {
        let decoded = decode_fixture("form_xml/duplicate_property.xml");
        assert_eq!(decoded.cases[0].properties["status"], "second");
        assert_eq!(decoded.cases[0].properties["next_visit"], "2012-05-27");
        assert_eq!(
            form_of(&decoded).data["case"]["update"]["status"],
            json!(["first", "second"]),
            "form.data keeps both, as HQ does"
        );
    }

    #[test]
    fn ledger_blocks_are_listed_with_their_element_name() {
        let decoded = decode_fixture("form_xml/ledgers.xml");
        assert_eq!(
            decoded.ledgers,
            [
                json!({"#type": "balance", "@entity-id": "clinic-9", "@date": "2024-02-01",
                    "@section-id": "stock", "@xmlns": "http://commcarehq.org/ledger/v1",
                    "entry": [{"@id": "amoxicillin", "@quantity": "120"}, {"@id": "ors", "@quantity": "40"}]}),
                json!({"#type": "transfer", "@src": "clinic-9", "@dest": "patient-3", "@date": "2024-02-01",
                    "@section-id": "stock", "@type": "dispense", "@xmlns": "http://commcarehq.org/ledger/v1",
                    "entry": {"@id": "ors", "@quantity": "2"}}),
            ]
        );
        assert!(decoded.cases.is_empty());
    }

    #[test]
    fn unicode_passes_through_text_attributes_and_cases() {
        let decoded = decode_fixture("form_xml/unicode.xml");
        let form = form_of(&decoded);
        assert_eq!(form.name.as_deref(), Some("Ziara ya Nyumbani ✓"));
        assert_eq!(form.username.as_deref(), Some("مستخدم"));
        assert_eq!(form.data["greeting"], "ሰላም 统一码 Habari 🌍");
        assert_eq!(
            decoded.cases[0].case_name.as_deref(),
            Some("Zoë Ñúñez 李雷")
        );
    }

    #[test]
    fn a_case_element_that_is_not_a_case_block_is_just_data() {
        let decoded = decode_fixture("form_xml/not_a_case_block.xml");
        assert!(decoded.cases.is_empty());
        assert_eq!(form_of(&decoded).data["case"]["case_type"], "malaria");
        assert_eq!(form_of(&decoded).id.as_deref(), Some("general-form-0001"));
    }

    #[test]
    fn a_form_without_xmlns_or_meta_is_accepted_with_nulls_and_a_body_hash_key() {
        let body = fixture("form_xml/missing_xmlns.xml");
        let decoded = decode_ok(input(&body));
        let form = form_of(&decoded);
        assert_eq!((form.id.as_deref(), form.xmlns.as_deref()), (None, None));
        assert_eq!(decoded.dedupe_key, sha256_key(&body));
    }
}

mod form_json {
    use super::*;

    #[test]
    fn the_form_api_object_gives_form_fields_domain_and_cases() {
        let decoded = decode_fixture("json/visit_form.json");
        assert_eq!((decoded.kind, decoded.format), (Kind::Form, Format::Json));
        assert_eq!(decoded.domain.as_deref(), Some("demo-project"));
        let form = form_of(&decoded);
        assert_eq!(
            form.id.as_deref(),
            Some("3f2a7c1e-9b8d-4e6f-a5c4-b3d2e1f0a9b8")
        );
        assert_eq!(
            form.app_id.as_deref(),
            Some("c0ffee00c0ffee00c0ffee00c0ffee00")
        );
        assert_eq!(
            form.build_id.as_deref(),
            Some("b0a7d00db0a7d00db0a7d00db0a7d00d")
        );
        assert_eq!(
            form.received_on.as_deref(),
            Some("2024-05-02T06:14:09.482113Z")
        );
        assert_eq!(form.edited_on, None);
        assert_eq!(form.data, fixture_json("json/visit_form.json")["form"]);
        assert_eq!(
            case_ids(&decoded.cases),
            ["9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b"]
        );
        assert_eq!(
            decoded.dedupe_key,
            "form:3f2a7c1e-9b8d-4e6f-a5c4-b3d2e1f0a9b8:2024-05-02T06:14:09.482113Z"
        );
    }

    #[test]
    fn an_edited_form_is_versioned_by_edited_on_and_keeps_meta_values_as_sent() {
        let decoded = decode_fixture("json/edited_form.json");
        assert_eq!(
            decoded.dedupe_key,
            "form:edited-form-0001:2024-05-03T11:00:00.000000Z"
        );
        let form = form_of(&decoded);
        assert_eq!(form.build_id, None);
        assert_eq!(form.data["meta"]["app_build_version"], 7);
        assert_eq!(form.data["meta"]["geo_point"], Value::Null);
    }

    #[test]
    fn the_same_form_as_xml_and_as_json_gives_the_same_data_meta_and_cases() {
        // HQ normalises device datetimes in form JSON (meta-sql.json); ccrelay keeps XML
        // values as sent, so this pair uses datetimes already in HQ's format.
        let from_xml = decode_fixture("form_xml/visit.xml");
        let from_json = decode_fixture("json/visit_form.json");
        let (xml_form, json_form) = (form_of(&from_xml), form_of(&from_json));
        assert_eq!(xml_form.data, json_form.data);
        let meta = |form: &Form| {
            (
                form.id.clone(),
                form.xmlns.clone(),
                form.name.clone(),
                form.user_id.clone(),
                form.username.clone(),
                form.device_id.clone(),
                form.time_start.clone(),
                form.time_end.clone(),
                form.received_on.clone(),
            )
        };
        assert_eq!(meta(xml_form), meta(json_form));
        assert_eq!(from_xml.cases, from_json.cases);
    }

    #[test]
    fn received_on_falls_back_to_the_header() {
        let body = br##"{"id": "f-1", "form": {"#type": "data", "@xmlns": "urn:x"}}"##;
        let decoded = decode_ok(input(body));
        assert_eq!(form_of(&decoded).received_on.as_deref(), Some(RECEIVED_ON));
        assert_eq!(decoded.dedupe_key, format!("form:f-1:{RECEIVED_ON}"));
    }
}

mod case_xml {
    use super::*;

    #[test]
    fn the_full_case_state_becomes_one_case_with_closed_and_the_header_version() {
        let decoded = decode_fixture("case_xml/household_closed.xml");
        assert_eq!((decoded.kind, decoded.format), (Kind::Case, Format::Xml));
        assert!(decoded.form.is_none());
        let case = &decoded.cases[..];
        assert_eq!(case.len(), 1);
        let case = &case[0];
        assert_eq!(case.case_id, "9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b");
        assert_eq!(
            case.actions,
            [
                CaseAction::Create,
                CaseAction::Update,
                CaseAction::Index,
                CaseAction::Close
            ]
        );
        assert_eq!(case.closed, Some(true));
        assert_eq!(case.server_modified_on.as_deref(), Some(SERVER_MODIFIED_ON));
        assert_eq!(
            case.properties.keys().collect::<Vec<_>>(),
            [
                "case_type",
                "case_name",
                "owner_id",
                "external_id",
                "date_opened",
                "village"
            ]
        );
        assert_eq!(
            decoded.dedupe_key,
            format!("case:9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b:{SERVER_MODIFIED_ON}")
        );
    }

    #[test]
    fn an_open_case_with_an_extension_index_and_no_user() {
        let decoded = decode_fixture("case_xml/open_extension.xml");
        let case = &decoded.cases[0];
        assert_eq!(case.closed, Some(false));
        assert_eq!(
            case.user_id, None,
            "HQ writes user_id=\"\" when no user is known"
        );
        assert_eq!(
            case.indices["host"],
            json!({"case_type": "site", "case_id": "site-4", "relationship": "extension"})
        );
    }

    #[test]
    fn a_bare_casexml_1_case_is_a_case_payload() {
        let decoded = decode_fixture("case_xml/v1_case.xml");
        assert_eq!(decoded.kind, Kind::Case);
        let case = &decoded.cases[0];
        assert_eq!((case.case_id.as_str(), case.version), ("v1-bare-case-1", 1));
        assert_eq!(case.case_type.as_deref(), Some("mother"));
        assert_eq!(case.user_id.as_deref(), Some("legacy-user-9"));
        assert_eq!(case.closed, Some(false));
    }

    #[test]
    fn without_the_header_the_key_is_the_body_hash() {
        let body = fixture("case_xml/household_closed.xml");
        let decoded = decode_ok(Input {
            server_modified_on: None,
            ..input(&body)
        });
        assert_eq!(decoded.cases[0].server_modified_on, None);
        assert_eq!(decoded.dedupe_key, sha256_key(&body));
    }
}

mod case_json {
    use super::*;

    #[test]
    fn properties_and_indices_are_taken_as_they_are() {
        let decoded = decode_fixture("json/case.json");
        let payload = fixture_json("json/case.json");
        assert_eq!((decoded.kind, decoded.format), (Kind::Case, Format::Json));
        assert_eq!(decoded.domain.as_deref(), Some("demo-project"));
        let case = &decoded.cases[0];
        assert_eq!(
            Value::Object(case.properties.clone()),
            payload["properties"]
        );
        assert_eq!(Value::Object(case.indices.clone()), payload["indices"]);
        assert_eq!(case.case_type.as_deref(), Some("household"));
        assert_eq!(case.case_name.as_deref(), Some("Household 12"));
        assert_eq!(
            case.owner_id.as_deref(),
            Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        );
        assert_eq!(
            case.date_modified.as_deref(),
            Some("2024-05-02T06:14:07.120000Z")
        );
        assert_eq!(case.closed, Some(false));
        assert_eq!(
            case.actions,
            [CaseAction::Create, CaseAction::Update, CaseAction::Index],
            "what the case_xml body of this case would hold"
        );
    }

    #[test]
    fn server_date_modified_is_the_version_and_wins_over_the_header() {
        let body = fixture("json/case.json");
        let decoded = decode_ok(Input {
            server_modified_on: Some("2099-01-01T00:00:00.000000Z"),
            ..input(&body)
        });
        assert_eq!(
            decoded.dedupe_key,
            "case:9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b:2024-05-02T06:14:09.611402Z"
        );
    }

    #[test]
    fn a_closed_case_without_server_date_modified_uses_the_header() {
        let decoded = decode_fixture("json/case_closed.json");
        let case = &decoded.cases[0];
        assert_eq!(case.closed, Some(true));
        assert_eq!(
            case.actions,
            [
                CaseAction::Create,
                CaseAction::Attachment,
                CaseAction::Close
            ]
        );
        assert_eq!(case.server_modified_on.as_deref(), Some(SERVER_MODIFIED_ON));
        let body = fixture("json/case_closed.json");
        let without_header = decode_ok(Input {
            server_modified_on: None,
            ..input(&body)
        });
        assert_eq!(without_header.dedupe_key, sha256_key(&body));
    }
}

mod form_stub {
    use super::*;

    #[test]
    fn a_stub_gives_the_form_id_received_on_and_case_ids() {
        let decoded = decode_fixture("json/form_stub.json");
        assert_eq!(
            (decoded.kind, decoded.format),
            (Kind::FormStub, Format::Json)
        );
        assert_eq!(
            decoded.form,
            Some(Form {
                id: Some("3f2a7c1e-9b8d-4e6f-a5c4-b3d2e1f0a9b8".to_owned()),
                received_on: Some("2024-05-02T06:14:09.482113Z".to_owned()),
                ..Form::default()
            })
        );
        assert_eq!(
            decoded.case_ids,
            Some(vec![
                "9c1f6e2a-3b4d-4e5f-8a7b-1c2d3e4f5a6b".to_owned(),
                "7e6d5c4b-3a29-4180-9f8e-7d6c5b4a3928".to_owned()
            ])
        );
        assert_eq!(decoded.domain, None);
        assert_eq!(
            decoded.dedupe_key,
            "form_stub:3f2a7c1e-9b8d-4e6f-a5c4-b3d2e1f0a9b8:2024-05-02T06:14:09.482113Z",
            "its own prefix: a stub never shadows the full form"
        );
    }

    #[test]
    fn a_stub_labelled_text_xml_as_hqs_docs_show_is_still_read_by_content() {
        let body = fixture("json/form_stub.json");
        let decoded = decode_ok(Input {
            content_type: Some("text/xml"),
            ..input(&body)
        });
        assert_eq!(decoded.kind, Kind::FormStub);
    }
}

mod app_user_location {
    use super::*;

    #[test]
    fn a_32_hex_id_is_an_app_keyed_by_body_hash() {
        let body = fixture("text/app_id.txt");
        let decoded = decode_ok(input(&body));
        assert_eq!(decoded.kind, Kind::App);
        assert_eq!(decoded.dedupe_key, sha256_key(&body));
        assert!(decoded.form.is_none() && decoded.cases.is_empty());
    }

    #[test]
    fn other_id_like_tokens_are_apps_only_where_an_app_is_expected() {
        let body = fixture("text/build_token.txt");
        let decoded = decode_ok(Input {
            expected_kind: Some(Kind::App),
            ..input(&body)
        });
        assert_eq!(
            decoded.app.map(|app| app.id).as_deref(),
            Some("build-2024.05.02_r3")
        );
        assert_eq!(
            refusal(input(&body)),
            (
                "body is not XML, not JSON and not an app id (32 hexadecimal digits)".to_owned(),
                ErrorKind::Unprocessable
            )
        );
        let not_an_id = fixture("bad/not_an_id.txt");
        assert_eq!(
            refusal(Input {
                expected_kind: Some(Kind::App),
                ..input(&not_an_id)
            })
            .0,
            "body is not an app id: expected one token of letters, digits, '-', '_' or '.', at \
             most 128 characters"
        );
    }

    #[test]
    fn a_user_object_is_kept_whole_with_its_domain() {
        let decoded = decode_fixture("json/user.json");
        assert_eq!((decoded.kind, decoded.format), (Kind::User, Format::Json));
        assert_eq!(decoded.user, Some(fixture_json("json/user.json")));
        assert_eq!(decoded.domain.as_deref(), Some("demo-project"));
        assert_eq!(decoded.dedupe_key, sha256_key(&fixture("json/user.json")));
    }

    #[test]
    fn a_location_object_is_kept_whole_with_its_domain() {
        let decoded = decode_fixture("json/location.json");
        assert_eq!(decoded.kind, Kind::Location);
        assert_eq!(decoded.location, Some(fixture_json("json/location.json")));
        assert_eq!(decoded.domain.as_deref(), Some("demo-project"));
    }
}

mod expected_kind {
    use super::*;

    fn refuse_as(path: &str, expected: Kind) -> String {
        let body = fixture(path);
        let (message, kind) = refusal(Input {
            expected_kind: Some(expected),
            ..input(&body)
        });
        assert_eq!(kind, ErrorKind::Unprocessable);
        message
    }

    #[test]
    fn a_body_of_another_kind_is_refused_naming_both() {
        assert_eq!(
            refuse_as("form_xml/visit.xml", Kind::Case),
            "expected a case payload, found form XML"
        );
        assert_eq!(
            refuse_as("case_xml/household_closed.xml", Kind::Form),
            "expected a form payload, found case XML"
        );
        assert_eq!(
            refuse_as("json/case.json", Kind::Form),
            "expected a form payload, found case JSON"
        );
        assert_eq!(
            refuse_as("json/visit_form.json", Kind::FormStub),
            "expected a form stub payload, found form JSON"
        );
        assert_eq!(
            refuse_as("form_xml/visit.xml", Kind::App),
            "expected an app payload, found form XML"
        );
        assert_eq!(
            refuse_as("text/app_id.txt", Kind::User),
            "expected a user payload, found an app id"
        );
    }

    #[test]
    fn an_unrecognised_object_is_refused_with_the_keys_it_lacks() {
        assert_eq!(
            refuse_as("bad/unknown_shape.json", Kind::FormStub),
            "expected a form stub payload: JSON object has no form_id, case_ids"
        );
        assert_eq!(
            refuse_as("bad/unknown_shape.json", Kind::Location),
            "expected a location payload: JSON object has no location_id, \
             location_type/location_type_name/site_code"
        );
    }

    #[test]
    fn a_body_of_the_expected_kind_decodes_as_without_expectation() {
        for (path, kind) in [
            ("form_xml/visit.xml", Kind::Form),
            ("case_xml/v1_case.xml", Kind::Case),
            ("json/case.json", Kind::Case),
            ("json/form_stub.json", Kind::FormStub),
            ("json/user.json", Kind::User),
            ("json/location.json", Kind::Location),
            ("text/app_id.txt", Kind::App),
        ] {
            let body = fixture(path);
            let expected = decode_ok(Input {
                expected_kind: Some(kind),
                ..input(&body)
            });
            assert_eq!(expected, decode_ok(input(&body)), "{path}");
        }
    }
}

mod dedupe_key {
    use super::*;

    #[test]
    fn form_xml_key_is_id_received_on_and_a_body_hash_prefix() {
        let body = fixture("form_xml/visit.xml");
        let decoded = decode_ok(input(&body));
        let hash = sha256_key(&body);
        let hex = &hash["sha256:".len()..];
        assert_eq!(
            decoded.dedupe_key,
            format!(
                "form:3f2a7c1e-9b8d-4e6f-a5c4-b3d2e1f0a9b8:{RECEIVED_ON}:{}",
                &hex[..16]
            )
        );
        assert_eq!(decoded.body_sha256, hex);
    }

    #[test]
    fn an_edit_under_the_same_received_on_gets_a_new_key() {
        let original = fixture("form_xml/visit.xml");
        let edited = String::from_utf8(original.clone())
            .unwrap()
            .replace("routine", "followup");
        let original_key = decode_ok(input(&original)).dedupe_key;
        let edited_key = decode_ok(input(edited.as_bytes())).dedupe_key;
        assert_ne!(original_key, edited_key);
        assert_eq!(
            original_key[..original_key.len() - 16],
            edited_key[..edited_key.len() - 16]
        );
    }

    #[test]
    fn form_xml_without_received_on_is_keyed_by_body_hash() {
        let body = fixture("form_xml/visit.xml");
        let decoded = decode_ok(Input {
            received_on: None,
            ..input(&body)
        });
        assert_eq!(decoded.dedupe_key, sha256_key(&body));
        assert_eq!(form_of(&decoded).received_on, None);
    }
}

mod bad_input {
    use super::*;

    fn check(body: &[u8], expected_message: &str) {
        let (message, kind) = refusal(input(body));
        assert_eq!(message, expected_message);
        assert_eq!(kind, ErrorKind::Unprocessable, "{message}");
    }

    fn check_fixture(path: &str, expected_message: &str) {
        check(&fixture(path), expected_message);
    }

    #[test]
    fn empty_and_blank_bodies() {
        check(b"", "body is empty");
        check(b" \r\n\t", "body is empty");
        check(b"\xEF\xBB\xBF", "body is empty");
    }

    #[test]
    fn invalid_utf8_names_the_byte() {
        check_fixture("bad/invalid_utf8.xml", "body is not valid UTF-8 at byte 58");
    }

    #[test]
    fn a_utf8_byte_order_mark_is_skipped() {
        let mut body = b"\xEF\xBB\xBF".to_vec();
        body.extend(fixture("form_xml/visit.xml"));
        assert_eq!(decode_ok(input(&body)).kind, Kind::Form);
    }

    #[test]
    fn malformed_xml_names_the_position() {
        check_fixture(
            "bad/malformed.xml",
            "malformed XML at line 3, column 13: ill-formed document: expected `</answer>`, \
             but `</answer\n</form>` was found",
        );
    }

    #[test]
    fn a_dtd_is_refused_and_its_entities_never_expanded() {
        check_fixture(
            "bad/doctype_entities.xml",
            "XML DOCTYPE at line 2, column 1 is refused: DTDs and entity declarations are never \
             read",
        );
        check_fixture(
            "bad/undefined_entity.xml",
            "XML entity &eacute; at line 2, column 14 is not defined: only &lt; &gt; &amp; \
             &apos; &quot; and character references are read",
        );
    }

    #[test]
    fn xml_that_is_not_one_utf8_document() {
        check_fixture(
            "bad/latin1_declared.xml",
            "XML declares encoding \"ISO-8859-1\": only UTF-8 is read",
        );
        check_fixture(
            "bad/two_roots.xml",
            "malformed XML at line 2, column 1: a second root element",
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_for_xml_and_json() {
        let depth = Limits::DEFAULT_MAX_DEPTH + 1;
        let xml = format!("{}{}", "<g>".repeat(depth), "</g>".repeat(depth));
        check(
            xml.as_bytes(),
            "XML nesting is deeper than 64 levels at line 1, column 193",
        );
        let json = format!("{{\"id\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
        check(
            json.as_bytes(),
            "JSON nesting is deeper than 64 levels at line 1, column 71",
        );
        let body = fixture("form_xml/visit.xml");
        let (message, _) = refusal(Input {
            limits: Limits { max_depth: 3 },
            ..input(&body)
        });
        assert_eq!(
            message,
            "XML nesting is deeper than 3 levels at line 8, column 4"
        );
    }

    #[test]
    fn json_that_is_not_one_known_object() {
        check_fixture("bad/array.json", "JSON body is an array, not an object");
        check_fixture(
            "bad/unknown_shape.json",
            "JSON object is not a form, case, form stub, user or location payload: expected \
             keys id+form, case_id+properties, form_id+case_ids, username+id or \
             location_id+location_type; found keys: name, value",
        );
        check_fixture(
            "bad/truncated.json",
            "malformed JSON: EOF while parsing a value at line 2 column 0",
        );
    }

    #[test]
    fn fields_of_the_wrong_type() {
        check_fixture(
            "bad/stub_case_ids_not_array.json",
            "field case_ids must be an array of strings",
        );
        check_fixture(
            "bad/case_json_empty_id.json",
            "field case_id must be a non-empty string",
        );
        check(
            br#"{"id": "f", "form": []}"#,
            "field form must be an object",
        );
    }

    #[test]
    fn an_empty_case_id_names_the_block() {
        check_fixture(
            "bad/empty_case_id_v1.xml",
            "case block 1 has an empty case_id",
        );
        check_fixture(
            "bad/empty_case_id_v2.xml",
            "case block 2 has an empty case_id",
        );
    }

    #[test]
    fn corrupted_bodies_decode_or_are_refused_without_panic() {
        // A fixed linear congruential sequence: the same corruptions on every run.
        let mut state: u64 = 0x5DEE_CE66;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 33) as usize
        };
        let interesting = b"<>/&;\"'=:[]{}#@ \n\xC3\xFF0";
        for path in [
            "form_xml/visit.xml",
            "form_xml/repeats_with_cases.xml",
            "form_xml/cases_v1.xml",
            "form_xml/ledgers.xml",
            "json/visit_form.json",
            "json/case.json",
            "case_xml/household_closed.xml",
        ] {
            let original = fixture(path);
            for _ in 0..300 {
                let mut body = original.clone();
                for _ in 0..1 + next() % 3 {
                    let at = next() % body.len();
                    body[at] = interesting[next() % interesting.len()];
                }
                let _ = decode(&input(&body));
            }
        }
    }

    #[test]
    fn every_truncation_of_a_real_body_decodes_or_is_refused_without_panic() {
        for path in [
            "form_xml/visit.xml",
            "json/visit_form.json",
            "case_xml/household_closed.xml",
        ] {
            let body = fixture(path);
            for end in 0..body.len() {
                let _ = decode(&input(&body[..end]));
            }
        }
    }
}

mod envelope {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn arrival(source_domain: Option<&str>) -> Arrival {
        let mut query = Map::new();
        query.insert(
            "app_id".to_owned(),
            json!("c0ffee00c0ffee00c0ffee00c0ffee00"),
        );
        let mut headers = Map::new();
        headers.insert("received-on".to_owned(), json!(RECEIVED_ON));
        Arrival {
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_owned(),
            received_at: "2024-05-02T06:14:10.000000Z".to_owned(),
            source: "forms".to_owned(),
            source_domain: source_domain.map(str::to_owned),
            method: "POST".to_owned(),
            content_type: Some("text/xml".to_owned()),
            query,
            headers,
            body_bytes: 2150,
            traceparent: Some(TRACEPARENT.to_owned()),
        }
    }

    #[test]
    fn arrival_completes_the_envelope_and_the_source_domain_fills_in_for_xml() {
        let decoded = decode_fixture("form_xml/visit.xml");
        let expected_form = decoded.form.clone();
        let envelope = decoded.into_envelope(arrival(Some("configured-domain")));
        assert_eq!(envelope.domain.as_deref(), Some("configured-domain"));
        assert_eq!(envelope.source, "forms");
        assert_eq!(envelope.query["app_id"], "c0ffee00c0ffee00c0ffee00c0ffee00");
        assert_eq!(envelope.body_bytes, 2150);
        assert_eq!(envelope.form, expected_form);
    }

    #[test]
    fn the_payloads_domain_wins_over_the_sources() {
        let envelope =
            decode_fixture("json/case.json").into_envelope(arrival(Some("configured-domain")));
        assert_eq!(envelope.domain.as_deref(), Some("demo-project"));
    }

    /// An envelope with every optional part present, so that every field serializes.
    fn full_envelope() -> Envelope {
        let mut envelope = decode_fixture("form_xml/ledgers.xml").into_envelope(arrival(None));
        let case = decode_fixture("case_xml/household_closed.xml")
            .cases
            .remove(0);
        envelope.cases = vec![case];
        envelope.case_ids = Some(vec!["c".to_owned()]);
        envelope.app = Some(App { id: "a".to_owned() });
        envelope.user = Some(json!({}));
        envelope.location = Some(json!({}));
        envelope
    }

    /// An envelope with every optional part absent.
    fn bare_envelope() -> Envelope {
        let mut envelope = decode_fixture("text/app_id.txt").into_envelope(arrival(None));
        envelope.app = None;
        envelope.traceparent = None;
        envelope
    }

    fn schema() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/envelope.schema.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        serde_json::from_str(&text).expect("the schema is JSON")
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    fn strings(value: &Value) -> BTreeSet<String> {
        value
            .as_array()
            .expect("an array")
            .iter()
            .map(|item| item.as_str().expect("a string").to_owned())
            .collect()
    }

    #[test]
    fn the_schema_lists_exactly_the_fields_the_envelope_serializes() {
        let schema = schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let full = serde_json::to_value(full_envelope()).unwrap();
        let bare = serde_json::to_value(bare_envelope()).unwrap();
        assert_eq!(
            keys(&schema["properties"]),
            keys(&full),
            "top-level properties"
        );
        assert_eq!(
            strings(&schema["required"]),
            keys(&bare),
            "top-level required"
        );

        let form = &full["form"];
        let form_schema = &schema["$defs"]["form"];
        assert_eq!(
            keys(&form_schema["properties"]),
            keys(form),
            "form properties"
        );
        let bare_form = serde_json::to_value(Form::default()).unwrap();
        assert_eq!(
            strings(&form_schema["required"]),
            keys(&bare_form),
            "form required"
        );

        let case = &full["cases"][0];
        let case_schema = &schema["$defs"]["case_operation"];
        assert_eq!(
            keys(&case_schema["properties"]),
            keys(case),
            "case properties"
        );
        let bare_case = serde_json::to_value(CaseOperation::default()).unwrap();
        assert_eq!(
            strings(&case_schema["required"]),
            keys(&bare_case),
            "case required"
        );
    }

    #[test]
    fn the_schema_enums_match_kind_format_and_case_action() {
        let schema = schema();
        let kinds: BTreeSet<String> = Kind::ALL
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect();
        assert_eq!(strings(&schema["properties"]["kind"]["enum"]), kinds);
        let formats: BTreeSet<String> = [Format::Xml, Format::Json, Format::Text]
            .iter()
            .map(|format| format.as_str().to_owned())
            .collect();
        assert_eq!(strings(&schema["properties"]["format"]["enum"]), formats);
        let actions = serde_json::to_value([
            CaseAction::Create,
            CaseAction::Update,
            CaseAction::Index,
            CaseAction::Attachment,
            CaseAction::Close,
        ])
        .unwrap();
        assert_eq!(
            strings(&schema["$defs"]["case_operation"]["properties"]["actions"]["items"]["enum"]),
            strings(&actions)
        );
    }
}
