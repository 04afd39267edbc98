//! Located problems, collected rather than returned one at a time.

use std::fmt;

use super::Span;

/// One problem in the text, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub span: Span,
    /// Empty for problems with the document as a whole (syntax errors, the root's type).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.span, self.message)
        } else {
            write!(f, "{}: {}: {}", self.span, self.path, self.message)
        }
    }
}

impl std::error::Error for Error {}

/// Problems collected while reading; displayed one per line in text order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Errors {
    list: Vec<Error>,
}

impl Errors {
    pub fn push(&mut self, error: Error) {
        self.list.push(error);
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.list.iter()
    }

    /// The errors in text order (stable, so one position keeps the order they were found in).
    pub fn into_sorted_vec(mut self) -> Vec<Error> {
        self.list.sort_by_key(|error| error.span);
        self.list
    }

    /// `Ok(value)` when nothing was reported, else every error in text order.
    ///
    /// # Errors
    ///
    /// Returns `self`, sorted, when it holds at least one error.
    pub fn into_result<T>(self, value: T) -> Result<T, Errors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(Errors {
                list: self.into_sorted_vec(),
            })
        }
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.list.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl IntoIterator for Errors {
    type Item = Error;
    type IntoIter = std::vec::IntoIter<Error>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl Extend<Error> for Errors {
    fn extend<I: IntoIterator<Item = Error>>(&mut self, iter: I) {
        self.list.extend(iter);
    }
}
