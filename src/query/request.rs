//! What a query asks: the expression and the albums to look in. Kept apart from the answer types and
//! the engine so a caller (the command line, the daemon's argument checks) can build and check one
//! without touching the model.
use anyhow::{bail, Result};

use crate::library::search::normalize_expression;

/// A question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    pub expression: String,
    /// Keep only albums whose name contains one of these (case-insensitive), or, for an absolute path,
    /// the albums in that folder or below it; empty = every album.
    pub albums: Vec<String>,
}

impl QueryRequest {
    /// Checks the expression: an empty one asks nothing.
    pub fn new(expression: &str, albums: Vec<String>) -> Result<Self> {
        let expression = normalize_expression(expression);
        if expression.is_empty() {
            bail!("the expression is empty; say what to look for, e.g. photoseg query \"my bike\"");
        }
        Ok(Self { expression, albums })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_expressions_are_refused_and_whitespace_collapsed() {
        assert!(QueryRequest::new("  \t ", vec![]).unwrap_err().to_string().contains("empty"));
        assert_eq!(QueryRequest::new(" my   bike ", vec![]).unwrap().expression, "my bike");
    }
}
