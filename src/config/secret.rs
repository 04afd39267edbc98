//! Secrets: values that must never reach a log, an error message or a response.

use std::fmt;
use std::path::Path;

use super::read::Context;
use crate::yaml::{Errors, Node, Value};

/// A password, token, key or signing secret. `Debug` and `Display` print `[redacted]`; the
/// value is reachable only through [`Secret::expose`], which is easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for comparison or signing. Never log or format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret written as a string (after `${VAR}` substitution) or as `{ file: PATH }`, whose
/// contents are used without their trailing newline. Messages never include the value.
pub(super) fn read_secret(node: &Node, context: &Context, errors: &mut Errors) -> Option<Secret> {
    let value = match &node.value {
        Value::Scalar(_) => node.as_text(errors)?.to_owned(),
        Value::Map(_) => {
            let mut map = node.as_map(errors)?;
            let file = map.required("file", errors);
            map.finish(errors);
            let file = file?.as_str(errors)?;
            let path = context.base_dir.join(Path::new(file));
            match (context.read_file)(&path) {
                Ok(contents) => contents.trim_end_matches(['\n', '\r']).to_owned(),
                Err(error) => {
                    let message = format!("cannot read secret file `{}`: {error}", path.display());
                    errors.push(node.error(message));
                    return None;
                }
            }
        }
        Value::List(_) => return node.mismatch("a secret string or { file: PATH }", errors),
    };
    if value.is_empty() {
        errors.push(node.error("secret must not be empty"));
        return None;
    }
    Some(Secret(value))
}
