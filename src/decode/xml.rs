//! XML to JSON by CommCare HQ's conventions (`convert_xform_to_json`, commcare-forwarding.md
//! §4.2), in one streaming pass with quick-xml.
//!
//! The rules, checked against HQ's own pairs (`namespaces.xml` → `namespaces-sql.json`,
//! `meta.xml` → `meta-sql.json`):
//!
//! - The root becomes an object with its local name in `#type`, its attributes as `@name`.
//! - Child elements become keys by local name; prefixes are dropped.
//! - An element whose namespace differs from its parent's (the root: any namespace) gets
//!   `@xmlns` with that namespace, whether declared as a default or through a prefix. An
//!   element with no namespace inside a namespaced parent (`xmlns=""`) gets nothing.
//! - Namespace declarations (`xmlns`, `xmlns:p`) are not attributes. Other attributes become
//!   `@local-name`, prefix dropped; of two with the same local name the last wins.
//! - An element with neither attributes, `@xmlns` nor child elements becomes a string: its
//!   text as written, or `""` when empty or whitespace only.
//! - Otherwise it becomes an object. Text goes in `#text` when not blank: as written for an
//!   element without child elements; for mixed content, each non-blank run of text between
//!   child elements, trimmed, joined with one space (indentation never shows up).
//! - Siblings with the same name become an array in document order, at the key of the first;
//!   a single one stays an object or string.
//! - Comments and processing instructions are dropped; CDATA is text; line ends are
//!   normalised as XML 1.0 says.
//!
//! Owns well-formedness and the safety rules: DOCTYPE refused, entities other than the five
//! predefined ones and character references refused (never expanded), nesting bounded. It
//! knows nothing of CommCare: callers see each element through a `Visitor`.

use std::borrow::Cow;

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::{DecodeError, Result, line_column};

/// One element, as a visitor sees it.
pub(crate) struct Element<'a> {
    pub local_name: &'a str,
    pub namespace: Option<&'a str>,
    /// The root is at depth 1.
    pub depth: usize,
}

/// Sees every element once its start tag is read and once it is complete, in document order.
pub(crate) trait Visitor {
    fn start(&mut self, element: &Element<'_>);
    /// `value` is the element converted by the rules above; errors stop the conversion.
    fn end(&mut self, element: &Element<'_>, value: &Value) -> Result<()>;
}

/// A converted document.
#[derive(Debug)]
pub(crate) struct Document {
    pub root_name: String,
    pub root_namespace: Option<String>,
    /// The root as an object, `#type` included.
    pub data: Map<String, Value>,
}

/// Converts a whole document, calling `visitor` on every element.
///
/// # Errors
///
/// Malformed XML, a DOCTYPE, an undefined entity, an undeclared prefix, a declared encoding
/// other than UTF-8, more or less than one root element, nesting deeper than `max_depth`, or
/// whatever the visitor returns.
pub(crate) fn to_json(
    text: &str,
    max_depth: usize,
    visitor: &mut impl Visitor,
) -> Result<Document> {
    let mut reader = NsReader::from_str(text);
    // Namespace URIs are few per document: frames refer to them by index.
    let mut namespaces: Vec<String> = Vec::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut root: Option<(String, Option<usize>, Map<String, Value>)> = None;

    loop {
        let event_start = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let at = |byte: usize| line_column(text, byte);
        let (resolved, event) = match reader.read_resolved_event() {
            Ok(read) => read,
            Err(source) => {
                let byte = usize::try_from(reader.error_position()).unwrap_or(usize::MAX);
                let (line, column) = at(byte);
                return Err(DecodeError::MalformedXml {
                    line,
                    column,
                    source,
                });
            }
        };
        let invalid = |problem: String| {
            let (line, column) = at(event_start);
            DecodeError::InvalidXml {
                line,
                column,
                problem,
            }
        };
        let malformed = |source: quick_xml::Error| {
            let (line, column) = at(event_start);
            DecodeError::MalformedXml {
                line,
                column,
                source,
            }
        };
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(invalid("a second root element".to_owned()));
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let namespace = match resolved {
                    ResolveResult::Unbound => None,
                    ResolveResult::Bound(namespace) => Some(intern(&mut namespaces, namespace.0)),
                    ResolveResult::Unknown(prefix) => {
                        return Err(invalid(format!(
                            "namespace prefix {:?} is not declared",
                            String::from_utf8_lossy(&prefix)
                        )));
                    }
                };
                if stack.len() >= max_depth {
                    let (line, column) = at(event_start);
                    return Err(DecodeError::TooDeep {
                        format: "XML",
                        limit: max_depth,
                        line,
                        column,
                    });
                }
                let frame = Frame::open(start, namespace, &namespaces, stack.last_mut())
                    .map_err(|err| locate(err, text, event_start))?;
                visitor.start(&frame.element(&namespaces, stack.len() + 1));
                stack.push(frame);
                if matches!(event, Event::Empty(_)) {
                    close(&mut stack, &namespaces, visitor, &mut root)?;
                }
            }
            Event::End(_) => close(&mut stack, &namespaces, visitor, &mut root)?,
            Event::Text(content) => {
                let content = content
                    .xml10_content()
                    .map_err(|source| malformed(source.into()))?;
                match stack.last_mut() {
                    Some(frame) => frame.push_text(content),
                    None if content.trim().is_empty() => {}
                    None => return Err(invalid("text outside the root element".to_owned())),
                }
            }
            Event::CData(content) => {
                let content = content
                    .xml10_content()
                    .map_err(|source| malformed(source.into()))?;
                match stack.last_mut() {
                    Some(frame) => frame.push_text(content),
                    None => return Err(invalid("CDATA outside the root element".to_owned())),
                }
            }
            Event::GeneralRef(reference) => {
                let Some(frame) = stack.last_mut() else {
                    return Err(invalid("a reference outside the root element".to_owned()));
                };
                let name = String::from_utf8_lossy(&reference);
                let character = match reference.resolve_char_ref() {
                    Ok(Some(character)) => Some(character),
                    Ok(None) => predefined_entity(&name),
                    Err(_) => {
                        return Err(invalid(format!("character reference &{name}; is invalid")));
                    }
                };
                match character {
                    Some(character) => frame.chunk.to_mut().push(character),
                    None => {
                        let (line, column) = at(event_start);
                        return Err(DecodeError::XmlUndefinedEntity {
                            name: name.into_owned(),
                            line,
                            column,
                        });
                    }
                }
            }
            Event::Decl(declaration) => {
                if let Some(Ok(encoding)) = declaration.encoding() {
                    let encoding = String::from_utf8_lossy(&encoding);
                    let utf8 = ["utf-8", "utf8", "us-ascii", "ascii"]
                        .iter()
                        .any(|known| encoding.eq_ignore_ascii_case(known));
                    if !utf8 {
                        return Err(DecodeError::XmlEncoding {
                            encoding: encoding.into_owned(),
                        });
                    }
                }
            }
            Event::DocType(_) => {
                let (line, column) = at(event_start);
                return Err(DecodeError::XmlDoctype { line, column });
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }

    if let Some(open) = stack.last() {
        let (line, column) = line_column(text, text.len());
        return Err(DecodeError::InvalidXml {
            line,
            column,
            problem: format!("the document ends before <{}> is closed", open.local_name),
        });
    }
    let Some((root_name, root_namespace, data)) = root else {
        let (line, column) = line_column(text, text.len());
        return Err(DecodeError::InvalidXml {
            line,
            column,
            problem: "no root element".to_owned(),
        });
    };
    Ok(Document {
        root_name,
        root_namespace: root_namespace.map(|index| namespaces[index].clone()),
        data,
    })
}

/// An element being read; `'i` is the document, which text borrows from until it must be
/// copied (most text is one slice of the input, and indentation is never copied).
struct Frame<'i> {
    local_name: String,
    namespace: Option<usize>,
    /// Attributes, `@xmlns` and children so far, in document order; made into an object
    /// only when the element closes, when their number is known (`into_value`).
    fields: Vec<(String, Value)>,
    /// Text since the last child element boundary.
    chunk: Cow<'i, str>,
    /// Mixed content: the non-blank runs of text before earlier children, trimmed and joined.
    mixed: String,
    has_children: bool,
}

impl<'i> Frame<'i> {
    fn open(
        start: &BytesStart<'_>,
        namespace: Option<usize>,
        namespaces: &[String],
        parent: Option<&mut Frame<'i>>,
    ) -> Result<Frame<'i>> {
        let local_name = std::str::from_utf8(start.local_name().into_inner())
            .expect("names of a &str document are UTF-8")
            .to_owned();
        let is_root = parent.is_none();
        let parent_namespace = match parent {
            Some(parent) => {
                parent.begin_child();
                parent.namespace
            }
            None => None,
        };
        let mut fields = Vec::new();
        if is_root {
            fields.push(("#type".to_owned(), Value::String(local_name.clone())));
        }
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|source| DecodeError::MalformedXml {
                line: 0,
                column: 0,
                source: source.into(),
            })?;
            if attribute.key.as_namespace_binding().is_some() {
                continue;
            }
            let value = attribute
                .unescape_value()
                .map_err(|source| DecodeError::MalformedXml {
                    line: 0,
                    column: 0,
                    source,
                })?;
            let name = std::str::from_utf8(attribute.key.local_name().into_inner())
                .expect("names of a &str document are UTF-8");
            let mut key = String::with_capacity(name.len() + 1);
            key.push('@');
            key.push_str(name);
            fields.push((key, Value::String(value.into_owned())));
        }
        if namespace.is_some() && namespace != parent_namespace {
            let uri = namespace.map(|index| namespaces[index].clone());
            fields.push(("@xmlns".to_owned(), Value::from(uri)));
        }
        Ok(Frame {
            local_name,
            namespace,
            fields,
            chunk: Cow::Borrowed(""),
            mixed: String::new(),
            has_children: false,
        })
    }

    fn element<'a>(&'a self, namespaces: &'a [String], depth: usize) -> Element<'a> {
        Element {
            local_name: &self.local_name,
            namespace: self.namespace.map(|index| namespaces[index].as_str()),
            depth,
        }
    }

    /// A child element starts: the text so far is one run of mixed content.
    fn begin_child(&mut self) {
        self.has_children = true;
        self.flush_chunk();
    }

    fn push_text(&mut self, text: Cow<'i, str>) {
        if self.chunk.is_empty() {
            self.chunk = text;
        } else {
            self.chunk.to_mut().push_str(&text);
        }
    }

    fn flush_chunk(&mut self) {
        let run = self.chunk.trim();
        if !run.is_empty() {
            if !self.mixed.is_empty() {
                self.mixed.push(' ');
            }
            self.mixed.push_str(run);
        }
        self.chunk = Cow::Borrowed("");
    }

    fn add_child(&mut self, name: String, value: Value) {
        self.fields.push((name, value));
    }

    fn into_value(mut self) -> Value {
        let text = if self.has_children {
            self.flush_chunk();
            self.mixed
        } else if self.chunk.trim().is_empty() {
            String::new()
        } else {
            self.chunk.into_owned()
        };
        if self.fields.is_empty() {
            return Value::String(text);
        }
        let mut object = Map::with_capacity(self.fields.len() + 1);
        for (name, value) in self.fields {
            match object.entry(name) {
                Entry::Vacant(vacant) => {
                    vacant.insert(value);
                }
                // Of two attributes with the same local name, the last wins (in the first's
                // place); element names never start with `@`.
                Entry::Occupied(mut occupied) if occupied.key().starts_with('@') => {
                    occupied.insert(value);
                }
                // Converted elements are never arrays, so an array here holds repeated
                // siblings.
                Entry::Occupied(mut occupied) => match occupied.get_mut() {
                    Value::Array(repeats) => repeats.push(value),
                    single => {
                        let first = single.take();
                        *single = Value::Array(vec![first, value]);
                    }
                },
            }
        }
        if !text.is_empty() {
            object.insert("#text".to_owned(), Value::String(text));
        }
        Value::Object(object)
    }
}

fn close(
    stack: &mut Vec<Frame<'_>>,
    namespaces: &[String],
    visitor: &mut impl Visitor,
    root: &mut Option<(String, Option<usize>, Map<String, Value>)>,
) -> Result<()> {
    let mut frame = stack
        .pop()
        .expect("quick-xml checks that every end tag has a start tag");
    let depth = stack.len() + 1;
    let name = std::mem::take(&mut frame.local_name);
    let namespace = frame.namespace;
    let value = frame.into_value();
    let element = Element {
        local_name: &name,
        namespace: namespace.map(|index| namespaces[index].as_str()),
        depth,
    };
    visitor.end(&element, &value)?;
    match stack.last_mut() {
        Some(parent) => parent.add_child(name, value),
        None => {
            let Value::Object(data) = value else {
                unreachable!("the root frame always holds an object with #type");
            };
            *root = Some((name, namespace, data));
        }
    }
    Ok(())
}

fn intern(namespaces: &mut Vec<String>, uri: &[u8]) -> usize {
    if let Some(index) = namespaces.iter().position(|known| known.as_bytes() == uri) {
        return index;
    }
    namespaces.push(String::from_utf8_lossy(uri).into_owned());
    namespaces.len() - 1
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

/// Attribute errors are found before the event's position is known to `Frame::open`.
fn locate(error: DecodeError, text: &str, byte: usize) -> DecodeError {
    let (line, column) = line_column(text, byte);
    match error {
        DecodeError::MalformedXml { source, .. } => DecodeError::MalformedXml {
            line,
            column,
            source,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct NoVisitor;

    impl Visitor for NoVisitor {
        fn start(&mut self, _element: &Element<'_>) {}
        fn end(&mut self, _element: &Element<'_>, _value: &Value) -> Result<()> {
            Ok(())
        }
    }

    /// Converts `input` and compares the whole root object with `expected`.
    fn check(input: &str, expected: Value) {
        let document = to_json(input, 64, &mut NoVisitor).expect("input converts");
        assert_eq!(Value::Object(document.data), expected, "converting {input}");
    }

    fn check_error(input: &str, expected_message: &str) {
        let error = to_json(input, 8, &mut NoVisitor).expect_err("input is refused");
        assert_eq!(error.to_string(), expected_message, "converting {input}");
    }

    #[test]
    fn root_gets_type_attributes_and_namespace() {
        check(
            r#"<data xmlns="urn:form" xmlns:jrm="urn:jrm" uiVersion="1" version="7" name="Visit"/>"#,
            json!({"#type": "data", "@uiVersion": "1", "@version": "7", "@name": "Visit", "@xmlns": "urn:form"}),
        );
    }

    #[test]
    fn root_without_namespace_has_no_xmlns() {
        check("<form><a>1</a></form>", json!({"#type": "form", "a": "1"}));
    }

    #[test]
    fn leaves_are_strings_and_empty_leaves_are_empty_strings() {
        check(
            "<f><a>x</a><b/><c></c><d>\n    </d></f>",
            json!({"#type": "f", "a": "x", "b": "", "c": "", "d": ""}),
        );
    }

    #[test]
    fn leaf_text_is_kept_as_written() {
        check(
            "<f><a> padded </a><b>two\n  lines</b></f>",
            json!({"#type": "f", "a": " padded ", "b": "two\n  lines"}),
        );
    }

    #[test]
    fn prefixes_are_dropped_and_a_namespace_change_shows_as_xmlns() {
        check(
            r#"<f xmlns="urn:f"><n0:meta xmlns:n0="urn:meta"><n0:id>1</n0:id><cc:v xmlns:cc="urn:cc">2</cc:v></n0:meta></f>"#,
            json!({"#type": "f", "@xmlns": "urn:f", "meta": {
                "@xmlns": "urn:meta", "id": "1", "v": {"@xmlns": "urn:cc", "#text": "2"}}}),
        );
    }

    #[test]
    fn a_child_repeating_its_parents_default_namespace_has_no_xmlns() {
        check(
            r#"<f xmlns="urn:f"><g xmlns="urn:f">x</g><p:h xmlns:p="urn:f">y</p:h></f>"#,
            json!({"#type": "f", "@xmlns": "urn:f", "g": "x", "h": "y"}),
        );
    }

    #[test]
    fn an_element_undeclaring_the_namespace_gets_no_xmlns() {
        check(
            r#"<f xmlns="urn:f"><g xmlns="">x</g></f>"#,
            json!({"#type": "f", "@xmlns": "urn:f", "g": "x"}),
        );
    }

    #[test]
    fn attributes_become_at_keys_and_text_goes_in_hash_text() {
        check(
            r#"<f><idx case_type="mother" relationship="child">abc</idx><e a="1"/><w a="1"> </w></f>"#,
            json!({"#type": "f",
                "idx": {"@case_type": "mother", "@relationship": "child", "#text": "abc"},
                "e": {"@a": "1"}, "w": {"@a": "1"}}),
        );
    }

    #[test]
    fn prefixed_attributes_lose_their_prefix() {
        check(
            r#"<f xmlns:jr="urn:jr"><g jr:template="">x</g></f>"#,
            json!({"#type": "f", "g": {"@template": "", "#text": "x"}}),
        );
    }

    #[test]
    fn repeated_siblings_become_an_array_at_the_first_ones_place() {
        check(
            "<f><m><n>1</n></m><x/><m><n>2</n></m><m/></f>",
            json!({"#type": "f", "m": [{"n": "1"}, {"n": "2"}, ""], "x": ""}),
        );
        let document = to_json("<f><m/><x/><m/></f>", 64, &mut NoVisitor).unwrap();
        let keys: Vec<&str> = document.data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["#type", "m", "x"]);
    }

    #[test]
    fn mixed_content_joins_trimmed_runs_with_one_space() {
        check(
            "<f><p>\n  Hello <b>big</b>\n  world  <i/>!</p></f>",
            json!({"#type": "f", "p": {"b": "big", "i": "", "#text": "Hello world !"}}),
        );
    }

    #[test]
    fn indentation_around_children_is_not_text() {
        check(
            "<f>\n\t<g>\n\t\t<h>1</h>\n\t</g>\n</f>\n",
            json!({"#type": "f", "g": {"h": "1"}}),
        );
    }

    #[test]
    fn references_cdata_and_line_ends_become_plain_text() {
        check(
            "<f><a>&lt;&amp;&gt;&apos;&quot;&#65;&#x42;</a><b><![CDATA[<raw>]]></b><c>x\r\ny</c><d q=\"&amp;&#67;\"/></f>",
            json!({"#type": "f", "a": "<&>'\"AB", "b": "<raw>", "c": "x\ny", "d": {"@q": "&C"}}),
        );
    }

    #[test]
    fn comments_and_processing_instructions_are_dropped() {
        check(
            "<?xml version='1.0'?><!-- hi --><f><?pi x?><a>1<!-- c -->2</a></f>",
            json!({"#type": "f", "a": "12"}),
        );
    }

    #[test]
    fn unicode_text_and_names_pass_through() {
        check(
            "<f><ስም>ሰላም 统一码 🎉</ስም></f>",
            json!({"#type": "f", "ስም": "ሰላም 统一码 🎉"}),
        );
    }

    #[test]
    fn visitor_sees_elements_in_document_order_with_depth_and_namespace() {
        struct Recorder(Vec<String>);
        impl Visitor for Recorder {
            fn start(&mut self, element: &Element<'_>) {
                self.0
                    .push(format!("start {} {}", element.local_name, element.depth));
            }
            fn end(&mut self, element: &Element<'_>, value: &Value) -> Result<()> {
                let namespace = element.namespace.unwrap_or("-");
                self.0
                    .push(format!("end {} {namespace} {value}", element.local_name));
                Ok(())
            }
        }
        let mut recorder = Recorder(Vec::new());
        to_json(
            r#"<f><p:a xmlns:p="urn:p">1</p:a><b/></f>"#,
            64,
            &mut recorder,
        )
        .unwrap();
        assert_eq!(
            recorder.0,
            [
                "start f 1",
                "start a 2",
                r##"end a urn:p {"@xmlns":"urn:p","#text":"1"}"##,
                "start b 2",
                r#"end b - """#,
                r##"end f - {"#type":"f","a":{"@xmlns":"urn:p","#text":"1"},"b":""}"##,
            ]
        );
    }

    #[test]
    fn malformed_xml_is_refused_with_its_position() {
        check_error(
            "<form>\n\t<foo>bar</foo\n</form>",
            "malformed XML at line 2, column 10: ill-formed document: expected `</foo>`, but `</foo\n</form>` was found",
        );
        check_error(
            "<f><a></b></f>",
            "malformed XML at line 1, column 7: ill-formed document: expected `</a>`, but `</b>` was found",
        );
    }

    #[test]
    fn structural_problems_are_refused() {
        check_error(
            "<f/><g/>",
            "malformed XML at line 1, column 5: a second root element",
        );
        check_error(
            "<f>",
            "malformed XML at line 1, column 4: the document ends before <f> is closed",
        );
        check_error(
            "<?xml version='1.0'?>",
            "malformed XML at line 1, column 22: no root element",
        );
        check_error(
            "<f/>tail",
            "malformed XML at line 1, column 5: text outside the root element",
        );
        check_error(
            "<f><n0:a>1</n0:a></f>",
            "malformed XML at line 1, column 4: namespace prefix \"n0\" is not declared",
        );
        check_error(
            r#"<f a="1" a="2"/>"#,
            "malformed XML at line 1, column 1: error while parsing attribute: position 8: duplicated attribute, previous declaration at position 2",
        );
    }

    #[test]
    fn doctype_and_custom_entities_are_refused_never_expanded() {
        check_error(
            "<?xml version='1.0'?>\n<!DOCTYPE f [<!ENTITY x \"boom\">]>\n<f>&x;</f>",
            "XML DOCTYPE at line 2, column 1 is refused: DTDs and entity declarations are never read",
        );
        check_error(
            "<f>a&x;b</f>",
            "XML entity &x; at line 1, column 5 is not defined: only &lt; &gt; &amp; &apos; &quot; and character references are read",
        );
        let error = to_json(r#"<f a="&x;"/>"#, 8, &mut NoVisitor).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::MalformedXml {
                    line: 1,
                    column: 1,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn declared_encodings_other_than_utf8_are_refused() {
        check(
            "<?xml version='1.0' encoding='UTF-8'?><f/>",
            json!({"#type": "f"}),
        );
        check_error(
            "<?xml version='1.0' encoding='ISO-8859-1'?><f/>",
            "XML declares encoding \"ISO-8859-1\": only UTF-8 is read",
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let at_limit = format!("{}{}", "<a>".repeat(8), "</a>".repeat(8));
        assert!(to_json(&at_limit, 8, &mut NoVisitor).is_ok());
        let over = format!("{}<b/>{}", "<a>".repeat(8), "</a>".repeat(8));
        check_error(
            &over,
            "XML nesting is deeper than 8 levels at line 1, column 25",
        );
    }
}
