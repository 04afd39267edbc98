//! `${VAR}` substitution, a pure function of (text, variables).
//!
//! It runs on parsed scalar values, not on the file's text, so every error keeps the position
//! and path of the value it is in, and a substituted value can never change the YAML structure
//! (a password holding `: ` or a newline stays one string). The caller decides where variables
//! come from; only `config::load` reads the process environment.

use std::fmt;

use crate::yaml::{Errors, Node};

/// Why a `${...}` could not be substituted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterpError {
    Unset(String),
    InvalidName(String),
    Unterminated,
}

impl fmt::Display for InterpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterpError::Unset(name) => write!(f, "environment variable `{name}` is not set"),
            InterpError::InvalidName(name) => write!(
                f,
                "`${{{name}}}` is not a variable name (letters, digits and `_`, not starting \
                 with a digit); write `$${{` for a literal `${{`"
            ),
            InterpError::Unterminated => {
                write!(
                    f,
                    "`${{` without a closing `}}`; write `$${{` for a literal `${{`"
                )
            }
        }
    }
}

/// Replaces each `${NAME}` in `text` with `vars(NAME)`; `$${` stands for a literal `${`, and
/// any other `$` is kept as is. Substituted values are not scanned again.
///
/// # Errors
///
/// Returns every problem in `text`: unset variables, bad names, a `${` never closed.
pub fn substitute(
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<InterpError>> {
    let mut output = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        output.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("$${") {
            output.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                problems.push(InterpError::Unterminated);
                break;
            };
            let name = &tail[..end];
            if !is_variable_name(name) {
                problems.push(InterpError::InvalidName(name.to_owned()));
            } else if let Some(value) = vars(name) {
                output.push_str(&value);
            } else {
                problems.push(InterpError::Unset(name.to_owned()));
            }
            rest = &tail[end + 1..];
        } else {
            output.push('$');
            rest = &after[1..];
        }
    }
    output.push_str(rest);
    if problems.is_empty() {
        Ok(output)
    } else {
        Err(problems)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
}

/// Substitutes variables in every scalar value of the tree (keys are left alone), reporting
/// each problem at its value.
pub fn interpolate(root: &mut Node, vars: &dyn Fn(&str) -> Option<String>, errors: &mut Errors) {
    root.visit_scalars_mut(&mut |scalar, span, path| {
        if !scalar.text.contains('$') {
            return;
        }
        match substitute(&scalar.text, vars) {
            Ok(text) => scalar.text = text,
            Err(problems) => {
                errors.extend(problems.into_iter().map(|problem| crate::yaml::Error {
                    span,
                    path: path.to_owned(),
                    message: problem.to_string(),
                }))
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{InterpError, substitute};

    fn check(text: &str, expected: Result<&str, Vec<InterpError>>) {
        let vars = |name: &str| match name {
            "USER" => Some("hq".to_owned()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("${USER}: a\nb".to_owned()),
            _ => None,
        };
        let actual = substitute(text, &vars);
        assert_eq!(
            actual.as_deref().map_err(Clone::clone),
            expected,
            "for {text:?}"
        );
    }

    #[test]
    fn substitutes_escapes_and_reports() {
        check("plain", Ok("plain"));
        check("${USER}", Ok("hq"));
        check("a-${USER}-${USER}-b", Ok("a-hq-hq-b"));
        check("${EMPTY}", Ok(""));
        check("${TRICKY}", Ok("${USER}: a\nb"));
        check("cost: $5, pa$$word", Ok("cost: $5, pa$$word"));
        check("$${USER}", Ok("${USER}"));
        // Read left to right: a lone `$`, then the escape.
        check("$$${USER}", Ok("$${USER}"));
        check("trailing $", Ok("trailing $"));
        check(
            "${NOPE} and ${ALSO_NOPE}",
            Err(vec![
                InterpError::Unset("NOPE".to_owned()),
                InterpError::Unset("ALSO_NOPE".to_owned()),
            ]),
        );
        check(
            "${1X}",
            Err(vec![InterpError::InvalidName("1X".to_owned())]),
        );
        check("${}", Err(vec![InterpError::InvalidName(String::new())]));
        check("${USER", Err(vec![InterpError::Unterminated]));
    }
}
