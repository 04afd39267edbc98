//! Cases: case blocks inside forms (CaseXML 2.0 and 1.0, commcare-forwarding.md §5.3, §5.4)
//! and the two case payloads (`case_xml`, `case_json`, §5.1, §5.2), each as a
//! `CaseOperation`.
//!
//! A block is read from its value in HQ's JSON conventions (`xml` module), so a block from form
//! XML and the same block inside a form JSON payload read alike. Rules where HQ is silent or
//! unconfirmed:
//!
//! - A property given twice in one `<update>` (an array here): the last one wins.
//! - `<update>` overrides `<create>` for `case_type`, `case_name` and `owner_id`.
//! - Property values are the element's text (`""` for an empty element); an element with
//!   child elements, which CaseXML does not define, is kept as its JSON value.
//! - A blank `user_id` or `date_modified` (HQ writes `user_id=""` when no user is known) is
//!   absent.
//! - An index without `relationship` is `child`; empty index text (a removed link) is kept as
//!   `case_id: ""`.

use serde_json::{Map, Value};

use super::commcare::{non_blank, text_of};
use super::{DecodeError, Result};
use crate::envelope::{CaseAction, CaseOperation};

/// The CaseXML 2.0 namespace.
pub(crate) const CASE_V2_NAMESPACE: &str = "http://commcarehq.org/case/transaction/v2";

/// Which CaseXML a block is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CaseVersion {
    /// No namespace; `case_id` and `date_modified` are child elements; `case_type_id`.
    V1,
    /// `http://commcarehq.org/case/transaction/v2`; `@case_id`, `@date_modified`, `@user_id`.
    V2,
}

/// Whether a JSON value found at a `case` key is a CaseXML 2.0 block.
pub(crate) fn is_v2_block(value: &Value) -> bool {
    value.as_object().is_some_and(|block| {
        block.get("@xmlns").and_then(Value::as_str) == Some(CASE_V2_NAMESPACE)
            || block.contains_key("@case_id")
    })
}

/// Whether a JSON value found at a `case` key is a CaseXML 1.0 block: it has a `case_id`
/// child. Old forms hold other `<case>` elements (`meta.xml` in HQ's tests) that are not.
pub(crate) fn is_v1_block(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|block| block.contains_key("case_id") && !is_v2_block(value))
}

/// Reads one case block. `number` counts blocks from 1 in document order, for messages.
///
/// # Errors
///
/// `MissingCaseId` or `EmptyCaseId` when the block does not name its case.
pub(crate) fn from_block(
    block: &Value,
    version: CaseVersion,
    number: usize,
) -> Result<CaseOperation> {
    let empty = Map::new();
    let fields = block.as_object().unwrap_or(&empty);
    let (case_id, date_modified, mut user_id) = match version {
        CaseVersion::V2 => (
            fields.get("@case_id"),
            non_blank(fields.get("@date_modified")),
            non_blank(fields.get("@user_id")),
        ),
        CaseVersion::V1 => (
            fields.get("case_id"),
            non_blank(fields.get("date_modified")),
            None,
        ),
    };
    let case_id = match case_id {
        None => return Err(DecodeError::MissingCaseId { block: number }),
        Some(case_id) => match text_of(Some(case_id)) {
            Some(case_id) if !case_id.trim().is_empty() => case_id,
            _ => return Err(DecodeError::EmptyCaseId { block: number }),
        },
    };
    let mut operation = CaseOperation {
        case_id,
        date_modified,
        version: match version {
            CaseVersion::V1 => 1,
            CaseVersion::V2 => 2,
        },
        ..CaseOperation::default()
    };
    if let Some(create) = fields.get("create") {
        operation.actions.push(CaseAction::Create);
        for (name, value) in child_fields(last(create)) {
            match (version, name.as_str()) {
                (CaseVersion::V1, "case_type_id") => {
                    set_property(&mut operation, "case_type", value)
                }
                (CaseVersion::V1, "user_id") => user_id = non_blank(Some(value)),
                _ => set_property(&mut operation, name, value),
            }
        }
    }
    if let Some(update) = fields.get("update") {
        operation.actions.push(CaseAction::Update);
        for (name, value) in child_fields(last(update)) {
            set_property(&mut operation, name, value);
        }
    }
    if let Some(index) = fields.get("index") {
        operation.actions.push(CaseAction::Index);
        for (identifier, link) in child_fields(last(index)) {
            let link = last(link);
            let relationship =
                text_of(link.get("@relationship")).unwrap_or_else(|| "child".to_owned());
            let mut entry = Map::new();
            entry.insert(
                "case_type".to_owned(),
                Value::from(text_of(link.get("@case_type"))),
            );
            entry.insert(
                "case_id".to_owned(),
                Value::String(text_of(Some(link)).unwrap_or_default()),
            );
            entry.insert("relationship".to_owned(), Value::String(relationship));
            operation
                .indices
                .insert(identifier.clone(), Value::Object(entry));
        }
    }
    if fields.contains_key("attachment") {
        operation.actions.push(CaseAction::Attachment);
    }
    if fields.contains_key("close") {
        operation.actions.push(CaseAction::Close);
    }
    operation.user_id = user_id;
    Ok(operation)
}

/// A `case_xml` payload: the case's full current state as one block at the root.
pub(crate) fn from_case_xml(
    root: &Value,
    version: CaseVersion,
    server_modified_on: Option<&str>,
) -> Result<CaseOperation> {
    let mut operation = from_block(root, version, 1)?;
    operation.closed = Some(operation.actions.contains(&CaseAction::Close));
    operation.server_modified_on = server_modified_on.map(str::to_owned);
    Ok(operation)
}

/// A `case_json` payload (`CommCareCaseAPISerializer`, §5.2). Its `properties` and `indices`
/// are taken as they are. JSON carries state, not actions, so `actions` lists what the
/// `case_xml` body of the same case would hold: `create` always, `update` when a property
/// other than `case_type`, `case_name` and `owner_id` is set, `index`, `attachment` when
/// there are any, `close` when closed. The Case API v0.4/v0.5 shape (`id`, `resource_uri`)
/// reads the same way, its extra keys ignored.
///
/// # Errors
///
/// `WrongFieldType` when `case_id` is not a non-empty string or `properties` not an object.
pub(crate) fn from_case_json(
    payload: &Map<String, Value>,
    server_modified_on_header: Option<&str>,
) -> Result<CaseOperation> {
    let case_id = match payload.get("case_id") {
        Some(Value::String(case_id)) if !case_id.trim().is_empty() => case_id.clone(),
        _ => {
            return Err(DecodeError::WrongFieldType {
                field: "case_id",
                expected: "a non-empty string",
            });
        }
    };
    let properties = match payload.get("properties") {
        Some(Value::Object(properties)) => properties.clone(),
        _ => {
            return Err(DecodeError::WrongFieldType {
                field: "properties",
                expected: "an object",
            });
        }
    };
    let indices = match payload.get("indices") {
        Some(Value::Object(indices)) => indices.clone(),
        _ => Map::new(),
    };
    let has_attachments = payload
        .get("attachments")
        .and_then(Value::as_object)
        .is_some_and(|attachments| !attachments.is_empty());
    let closed = match payload.get("closed") {
        Some(Value::Bool(closed)) => *closed,
        _ => payload
            .get("date_closed")
            .is_some_and(|closed| !closed.is_null()),
    };
    let mut actions = vec![CaseAction::Create];
    let create_fields = ["case_type", "case_name", "owner_id"];
    if properties
        .keys()
        .any(|name| !create_fields.contains(&name.as_str()))
    {
        actions.push(CaseAction::Update);
    }
    if !indices.is_empty() {
        actions.push(CaseAction::Index);
    }
    if has_attachments {
        actions.push(CaseAction::Attachment);
    }
    if closed {
        actions.push(CaseAction::Close);
    }
    Ok(CaseOperation {
        case_id,
        case_type: text_of(properties.get("case_type")),
        case_name: text_of(properties.get("case_name")),
        owner_id: text_of(properties.get("owner_id")),
        user_id: non_blank(payload.get("user_id")),
        date_modified: text_of(payload.get("date_modified")),
        actions,
        properties,
        indices,
        server_modified_on: text_of(payload.get("server_date_modified"))
            .or_else(|| server_modified_on_header.map(str::to_owned)),
        closed: Some(closed),
        version: 2,
    })
}

/// The last of repeated siblings (an array), else the value itself.
fn last(value: &Value) -> &Value {
    match value {
        Value::Array(repeats) => repeats.last().unwrap_or(value),
        single => single,
    }
}

/// The child elements of a block part, without its `@` attributes and `#` text.
fn child_fields(part: &Value) -> impl Iterator<Item = (&String, &Value)> {
    part.as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| !name.starts_with('@') && !name.starts_with('#'))
}

fn set_property(operation: &mut CaseOperation, name: &str, value: &Value) {
    let value = property_value(last(value));
    let text = value.as_str().map(str::to_owned);
    match name {
        "case_type" => operation.case_type = text,
        "case_name" => operation.case_name = text,
        "owner_id" => operation.owner_id = text,
        _ => {}
    }
    operation.properties.insert(name.to_owned(), value);
}

/// A property's value: its text, unless it has child elements of its own.
fn property_value(value: &Value) -> Value {
    match value {
        Value::Object(object)
            if object
                .keys()
                .any(|key| !key.starts_with('@') && !key.starts_with('#')) =>
        {
            value.clone()
        }
        Value::Object(object) => object
            .get("#text")
            .cloned()
            .unwrap_or_else(|| Value::String(String::new())),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(block: Value, version: CaseVersion, expected: Value) {
        let operation = from_block(&block, version, 1).expect("block reads");
        let actual = serde_json::to_value(&operation).unwrap();
        assert_eq!(actual, expected, "reading {block}");
    }

    #[test]
    fn v2_block_reads_attributes_and_every_part_in_action_order() {
        check(
            json!({"@xmlns": CASE_V2_NAMESPACE, "@case_id": "c1", "@user_id": "u1", "@date_modified": "2024-05-02",
                "close": "", "index": {"parent": {"@case_type": "household", "#text": "p1"},
                    "host": {"@case_type": "site", "@relationship": "extension", "#text": "h1"}},
                "update": {"village": "Kisumu", "case_name": "Renamed"},
                "create": {"case_type": "member", "case_name": "Ama", "owner_id": "o1"},
                "attachment": {"photo": {"@src": "a.jpg", "@from": "local"}}}),
            CaseVersion::V2,
            json!({"case_id": "c1", "case_type": "member", "case_name": "Renamed", "owner_id": "o1",
                "user_id": "u1", "date_modified": "2024-05-02",
                "actions": ["create", "update", "index", "attachment", "close"],
                "properties": {"case_type": "member", "case_name": "Renamed", "owner_id": "o1", "village": "Kisumu"},
                "indices": {"parent": {"case_type": "household", "case_id": "p1", "relationship": "child"},
                    "host": {"case_type": "site", "case_id": "h1", "relationship": "extension"}},
                "version": 2}),
        );
    }

    #[test]
    fn duplicate_property_last_one_wins_and_empty_means_blank() {
        check(
            json!({"@case_id": "c1", "update": {"foo": ["first", "second"], "bar": "", "baz": {"@a": "1"}}}),
            CaseVersion::V2,
            json!({"case_id": "c1", "case_type": null, "case_name": null, "owner_id": null, "user_id": null,
                "date_modified": null, "actions": ["update"],
                "properties": {"foo": "second", "bar": "", "baz": ""}, "indices": {}, "version": 2}),
        );
    }

    #[test]
    fn removed_index_keeps_an_empty_case_id() {
        check(
            json!({"@case_id": "c1", "index": {"parent": {"@case_type": "household"}}}),
            CaseVersion::V2,
            json!({"case_id": "c1", "case_type": null, "case_name": null, "owner_id": null, "user_id": null,
                "date_modified": null, "actions": ["index"], "properties": {},
                "indices": {"parent": {"case_type": "household", "case_id": "", "relationship": "child"}},
                "version": 2}),
        );
    }

    #[test]
    fn v1_block_reads_child_ids_and_maps_case_type_id() {
        check(
            json!({"case_id": "c1", "date_modified": "2011-09-19", "close": "",
                "create": {"case_type_id": "mother", "case_name": "mom", "user_id": "u1", "external_id": "e1"},
                "update": {"delivery_type": "1"}}),
            CaseVersion::V1,
            json!({"case_id": "c1", "case_type": "mother", "case_name": "mom", "owner_id": null, "user_id": "u1",
                "date_modified": "2011-09-19", "actions": ["create", "update", "close"],
                "properties": {"case_type": "mother", "case_name": "mom", "external_id": "e1", "delivery_type": "1"},
                "indices": {}, "version": 1}),
        );
    }

    #[test]
    fn missing_or_empty_case_id_is_refused_with_the_block_number() {
        let refuse =
            |block: Value, version| from_block(&block, version, 3).unwrap_err().to_string();
        assert_eq!(
            refuse(json!({"@user_id": "u"}), CaseVersion::V2),
            "case block 3 has no case_id"
        );
        assert_eq!(
            refuse(json!(""), CaseVersion::V2),
            "case block 3 has no case_id"
        );
        assert_eq!(
            refuse(json!({"@case_id": ""}), CaseVersion::V2),
            "case block 3 has an empty case_id"
        );
        assert_eq!(
            refuse(json!({"case_id": " "}), CaseVersion::V1),
            "case block 3 has an empty case_id"
        );
    }

    #[test]
    fn blocks_are_told_apart_from_other_case_elements() {
        assert!(is_v2_block(&json!({"@xmlns": CASE_V2_NAMESPACE})));
        assert!(is_v2_block(&json!({"@case_id": "c"})));
        assert!(is_v1_block(&json!({"case_id": "c"})));
        assert!(!is_v1_block(
            &json!({"patient_id": "p", "case_type": "malaria"})
        ));
        assert!(!is_v1_block(&json!("")));
    }
}
