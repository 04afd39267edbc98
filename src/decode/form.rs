//! Forms: form XML (§4.1), form JSON (§4.2) and form stubs (§4.3) as a `Form`, with the case
//! blocks and ledger blocks they hold.
//!
//! Meta is read from `form.data`, the instance in HQ's JSON conventions, so both formats take
//! one path: `meta` (else legacy `Meta`) directly under the root, `instanceID` (legacy `uid`
//! first, as HQ's `extract_meta_instance_id`), `userID`/`user_id`, `username`,
//! `deviceID`/`DeviceID`, `timeStart`/`TimeStart`, `timeEnd`/`TimeEnd`. Blank values read as
//! absent. Values stay as sent: device times are never normalised.
//!
//! Case blocks are found anywhere in the instance, in document order: for XML while the one
//! streaming pass runs, for JSON by walking `form` in key order. A block's own subtree is not
//! searched for more blocks.

use serde_json::{Map, Value};

use super::case::{self, CASE_V2_NAMESPACE, CaseVersion};
use super::commcare::{non_blank, text_of};
use super::xml::{Element, Visitor};
use super::{DecodeError, Result};
use crate::envelope::{CaseOperation, Form};

/// The ledger namespace (`balance`, `transfer`).
pub(crate) const LEDGER_NAMESPACE: &str = "http://commcarehq.org/ledger/v1";

/// What a form holds besides itself.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    pub cases: Vec<CaseOperation>,
    /// Each `balance`/`transfer` in HQ's JSON conventions, its element name in `#type`.
    pub ledgers: Vec<Value>,
}

/// Collects case and ledger blocks while the XML converter streams.
#[derive(Debug, Default)]
pub(crate) struct BlockCollector {
    pub blocks: Blocks,
    /// Depth of the CaseXML 2.0 block being read, if any.
    open_v2_case: Option<usize>,
}

impl Visitor for BlockCollector {
    fn start(&mut self, element: &Element<'_>) {
        if self.open_v2_case.is_none()
            && element.depth > 1
            && element.local_name == "case"
            && element.namespace == Some(CASE_V2_NAMESPACE)
        {
            self.open_v2_case = Some(element.depth);
        }
    }

    fn end(&mut self, element: &Element<'_>, value: &Value) -> Result<()> {
        if element.depth == 1 {
            return Ok(());
        }
        if self.open_v2_case == Some(element.depth) {
            self.open_v2_case = None;
            return self.add_case(value, CaseVersion::V2);
        }
        if self.open_v2_case.is_some() {
            return Ok(());
        }
        if element.local_name == "case" && case::is_v1_block(value) {
            return self.add_case(value, CaseVersion::V1);
        }
        if element.namespace == Some(LEDGER_NAMESPACE)
            && matches!(element.local_name, "balance" | "transfer")
        {
            self.blocks.ledgers.push(ledger(element.local_name, value));
        }
        Ok(())
    }
}

impl BlockCollector {
    fn add_case(&mut self, value: &Value, version: CaseVersion) -> Result<()> {
        let number = self.blocks.cases.len() + 1;
        let operation = case::from_block(value, version, number)?;
        self.blocks.cases.push(operation);
        Ok(())
    }
}

/// A form XML body: `data` is the converted root, `received_on` the header.
pub(crate) fn from_xml(data: Map<String, Value>, received_on: Option<&str>) -> Form {
    let mut form = Form {
        xmlns: text_of(data.get("@xmlns")),
        name: text_of(data.get("@name")),
        received_on: received_on.map(str::to_owned),
        ..Form::default()
    };
    read_meta(&data, &mut form);
    form.data = Value::Object(data);
    form
}

/// A form JSON body (the Form API object, §4.2).
///
/// # Errors
///
/// `WrongFieldType` when `form` is not an object or `id` is neither a string nor null; case
/// block errors.
pub(crate) fn from_json(
    mut payload: Map<String, Value>,
    received_on_header: Option<&str>,
) -> Result<(Form, Blocks)> {
    let Some(Value::Object(data)) = payload.remove("form") else {
        return Err(DecodeError::WrongFieldType {
            field: "form",
            expected: "an object",
        });
    };
    let id = match payload.get("id") {
        Some(Value::String(id)) => Some(id.clone()).filter(|id| !id.trim().is_empty()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(DecodeError::WrongFieldType {
                field: "id",
                expected: "a string",
            });
        }
    };
    let mut form = Form {
        xmlns: text_of(data.get("@xmlns")),
        name: text_of(data.get("@name")),
        app_id: text_of(payload.get("app_id")),
        build_id: text_of(payload.get("build_id")),
        received_on: text_of(payload.get("received_on"))
            .or_else(|| received_on_header.map(str::to_owned)),
        edited_on: text_of(payload.get("edited_on")),
        ..Form::default()
    };
    read_meta(&data, &mut form);
    // The payload's own id is the form id; meta/instanceID says the same for real forms.
    form.id = id.or(form.id);
    let mut blocks = Blocks::default();
    collect_json_blocks(&data, &mut blocks)?;
    form.data = Value::Object(data);
    Ok((form, blocks))
}

/// A form stub body (§4.3): `{form_id, received_on, case_ids}`.
///
/// # Errors
///
/// `WrongFieldType` when `form_id` is not a non-empty string or `case_ids` not an array of
/// strings.
pub(crate) fn from_stub(
    payload: &Map<String, Value>,
    received_on_header: Option<&str>,
) -> Result<(Form, Vec<String>)> {
    let Some(Value::String(form_id)) = payload
        .get("form_id")
        .filter(|id| id.as_str().is_some_and(|id| !id.trim().is_empty()))
    else {
        return Err(DecodeError::WrongFieldType {
            field: "form_id",
            expected: "a non-empty string",
        });
    };
    let case_ids = match payload.get("case_ids") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>(),
        _ => None,
    };
    let Some(case_ids) = case_ids else {
        return Err(DecodeError::WrongFieldType {
            field: "case_ids",
            expected: "an array of strings",
        });
    };
    let form = Form {
        id: Some(form_id.clone()),
        received_on: text_of(payload.get("received_on"))
            .or_else(|| received_on_header.map(str::to_owned)),
        ..Form::default()
    };
    Ok((form, case_ids))
}

fn read_meta(data: &Map<String, Value>, form: &mut Form) {
    let meta = ["Meta", "meta"]
        .iter()
        .filter_map(|name| data.get(*name))
        .find_map(|meta| match meta {
            Value::Object(meta) => Some(meta),
            Value::Array(repeats) => repeats.first().and_then(Value::as_object),
            _ => None,
        });
    let Some(meta) = meta else {
        return;
    };
    let field = |names: &[&str]| names.iter().find_map(|name| non_blank(meta.get(*name)));
    form.id = field(&["uid", "instanceID"]);
    form.user_id = field(&["userID", "user_id"]);
    form.username = field(&["username"]);
    form.device_id = field(&["deviceID", "DeviceID"]);
    form.time_start = field(&["timeStart", "TimeStart"]);
    form.time_end = field(&["timeEnd", "TimeEnd"]);
}

fn collect_json_blocks(object: &Map<String, Value>, blocks: &mut Blocks) -> Result<()> {
    for (name, value) in object {
        let items: &[Value] = match value {
            Value::Array(items) => items,
            single => std::slice::from_ref(single),
        };
        for item in items {
            if name == "case" && case::is_v2_block(item) {
                let number = blocks.cases.len() + 1;
                blocks
                    .cases
                    .push(case::from_block(item, CaseVersion::V2, number)?);
            } else if name == "case" && case::is_v1_block(item) {
                let number = blocks.cases.len() + 1;
                blocks
                    .cases
                    .push(case::from_block(item, CaseVersion::V1, number)?);
            } else if matches!(name.as_str(), "balance" | "transfer")
                && item.get("@xmlns").and_then(Value::as_str) == Some(LEDGER_NAMESPACE)
            {
                blocks.ledgers.push(ledger(name, item));
            } else if let Value::Object(child) = item {
                collect_json_blocks(child, blocks)?;
            }
        }
    }
    Ok(())
}

fn ledger(name: &str, value: &Value) -> Value {
    let mut entry = Map::new();
    entry.insert("#type".to_owned(), Value::String(name.to_owned()));
    if let Value::Object(fields) = value {
        entry.extend(
            fields
                .iter()
                .map(|(key, value)| (key.clone(), value.clone())),
        );
    }
    Value::Object(entry)
}
