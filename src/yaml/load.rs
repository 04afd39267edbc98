//! Text to [`Node`] tree, from yaml-rust2's event parser.
//!
//! yaml-rust2 0.10 has no spanned tree of its own, and its `YamlLoader` resolves aliases and
//! stops at the first duplicate key, so the tree is built here from parser events. That is
//! also where the features this module refuses (anchors, aliases, tags, several documents,
//! non-scalar keys, duplicate keys) are caught, each at its position.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::{Entry, Error, Errors, Node, Scalar, Span, Value, join_key};

/// Parses one YAML document into a spanned tree. An empty document is a null root.
///
/// # Errors
///
/// Returns every problem found: a syntax error (after which parsing stops), duplicate keys,
/// anchors, aliases, tags, a second document, and keys that are lists or maps.
pub fn parse(text: &str) -> Result<Node, Errors> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(scan_error) = parser.load(&mut builder, true) {
        builder.errors.push(Error {
            span: span(scan_error.marker()),
            path: String::new(),
            message: scan_error.info().to_owned(),
        });
    }
    let root = builder
        .root
        .take()
        .unwrap_or_else(|| null_node(Span { line: 1, column: 1 }, String::new()));
    builder.errors.into_result(root)
}

/// yaml-rust2 markers have 1-based lines and 0-based columns.
fn span(marker: &Marker) -> Span {
    Span {
        line: marker.line(),
        column: marker.col() + 1,
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    errors: Errors,
    documents: usize,
    /// Set after a second document starts: its events are not built into the tree.
    ignoring: bool,
}

struct Frame {
    span: Span,
    path: String,
    kind: FrameKind,
}

enum FrameKind {
    List(Vec<Node>),
    Map { entries: Vec<Entry>, key: KeyState },
}

enum KeyState {
    Awaiting,
    Have {
        key: String,
        span: Span,
    },
    /// The key was refused (duplicate or not a scalar): its value is dropped, not stored.
    Discard {
        path: String,
    },
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let at = span(&marker);
        if self.ignoring {
            return;
        }
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error(at, String::new(), "only one YAML document is allowed");
                    self.ignoring = true;
                }
            }
            Event::Alias(_) => {
                let path = self.child_path();
                self.error(at, path.clone(), "aliases (`*name`) are not supported");
                self.insert(null_node(at, path));
            }
            Event::Scalar(text, style, anchor, tag) => {
                let path = self.child_path();
                self.refuse_anchor_and_tag(at, &path, anchor, tag.as_ref());
                let plain = style == TScalarStyle::Plain;
                // An empty value (`rules:`) is marked at the next token; its key is a better place.
                let at = match (plain && text.is_empty(), self.pending_key_span()) {
                    (true, Some(key_span)) => key_span,
                    _ => at,
                };
                let value = Value::Scalar(Scalar { text, plain });
                self.insert(Node {
                    value,
                    span: at,
                    path,
                });
            }
            Event::SequenceStart(anchor, tag) => {
                let path = self.child_path();
                self.refuse_anchor_and_tag(at, &path, anchor, tag.as_ref());
                self.stack.push(Frame {
                    span: at,
                    path,
                    kind: FrameKind::List(Vec::new()),
                });
            }
            Event::MappingStart(anchor, tag) => {
                let path = self.child_path();
                self.refuse_anchor_and_tag(at, &path, anchor, tag.as_ref());
                self.stack.push(Frame {
                    span: at,
                    path,
                    kind: FrameKind::Map {
                        entries: Vec::new(),
                        key: KeyState::Awaiting,
                    },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self
                    .stack
                    .pop()
                    .expect("the parser balances start and end events");
                let node = match frame.kind {
                    FrameKind::List(items) => Node {
                        value: Value::List(items),
                        span: frame.span,
                        path: frame.path,
                    },
                    FrameKind::Map { entries, .. } => {
                        // A block map's start is marked at its first `:`; its first key is
                        // where a reader would look.
                        let first_key = entries.first().map(|entry| entry.key_span);
                        let span = first_key.map_or(frame.span, |key| key.min(frame.span));
                        Node {
                            value: Value::Map(entries),
                            span,
                            path: frame.path,
                        }
                    }
                };
                self.insert(node);
            }
        }
    }
}

impl Builder {
    fn error(&mut self, span: Span, path: String, message: impl Into<String>) {
        self.errors.push(Error {
            span,
            path,
            message: message.into(),
        });
    }

    fn refuse_anchor_and_tag(&mut self, at: Span, path: &str, anchor: usize, tag: Option<&Tag>) {
        if anchor > 0 {
            self.error(at, path.to_owned(), "anchors (`&name`) are not supported");
        }
        if let Some(tag) = tag {
            let shown = match tag.handle.as_str() {
                "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
                handle => format!("{handle}{}", tag.suffix),
            };
            self.error(
                at,
                path.to_owned(),
                format!("tags (`{shown}`) are not supported; quote the value to make it a string"),
            );
        }
    }

    /// The path the next node will have, from where it lands in its parent.
    fn child_path(&self) -> String {
        let Some(parent) = self.stack.last() else {
            return String::new();
        };
        match &parent.kind {
            FrameKind::List(items) => format!("{}[{}]", parent.path, items.len()),
            FrameKind::Map { key, .. } => match key {
                // The node is itself a key; only non-scalar keys ever use this path.
                KeyState::Awaiting => parent.path.clone(),
                KeyState::Have { key, .. } => join_key(&parent.path, key),
                KeyState::Discard { path } => path.clone(),
            },
        }
    }

    fn pending_key_span(&self) -> Option<Span> {
        match &self.stack.last()?.kind {
            FrameKind::Map {
                key: KeyState::Have { span, .. },
                ..
            } => Some(*span),
            _ => None,
        }
    }

    fn insert(&mut self, node: Node) {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        let parent_path = parent.path.clone();
        match &mut parent.kind {
            FrameKind::List(items) => items.push(node),
            FrameKind::Map { entries, key } => match std::mem::replace(key, KeyState::Awaiting) {
                KeyState::Awaiting => {
                    let Value::Scalar(scalar) = node.value else {
                        *key = KeyState::Discard {
                            path: parent_path.clone(),
                        };
                        let message = "keys must be strings, not lists or maps";
                        self.error(node.span, parent_path, message);
                        return;
                    };
                    let name = scalar.text;
                    if let Some(first) = entries.iter().find(|entry| entry.key == name) {
                        let message =
                            format!("duplicate key `{name}` (first at {})", first.key_span);
                        let path = join_key(&parent_path, &name);
                        *key = KeyState::Discard { path: path.clone() };
                        self.error(node.span, path, message);
                    } else {
                        *key = KeyState::Have {
                            key: name,
                            span: node.span,
                        };
                    }
                }
                KeyState::Have { key, span } => entries.push(Entry {
                    key,
                    key_span: span,
                    value: node,
                }),
                KeyState::Discard { .. } => {}
            },
        }
    }
}

fn null_node(span: Span, path: String) -> Node {
    Node {
        value: Value::Scalar(Scalar {
            text: String::new(),
            plain: true,
        }),
        span,
        path,
    }
}
