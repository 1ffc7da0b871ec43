//! What the daemon accepts from a caller: an expression, album filters and paths, each checked and
//! bounded before any work is done. A caller on the bus is not trusted to be reasonable, so a size
//! limit sets what one call can cost, and a refusal for size says how large the argument was and never
//! echoes it.
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use crate::library::search::normalize_expression;
use crate::query::QueryRequest;

/// Longest expression accepted, in bytes after whitespace is collapsed (the schema says 500).
pub const MAX_EXPRESSION_BYTES: usize = 500;
/// Most album filters one query may carry. Each filter is a substring search over the album names, so
/// their number sets the query's cost before any photo is looked at; a caller who wants more albums
/// than this asks for all of them (no filter).
pub const MAX_ALBUM_FILTERS: usize = 64;
/// Longest album filter accepted, in bytes.
pub const MAX_ALBUM_FILTER_BYTES: usize = 256;
/// Longest path accepted in a call, in bytes (Linux's PATH_MAX): no file has a longer one, and an
/// error never echoes more than this back.
pub const MAX_PATH_BYTES: usize = 4096;

/// Checks an expression (not empty, at most [`MAX_EXPRESSION_BYTES`] after whitespace is collapsed)
/// and its album filters (at most [`MAX_ALBUM_FILTERS`], each at most [`MAX_ALBUM_FILTER_BYTES`]).
/// The errors say how large the argument was, never echo it.
pub fn check_expression(expression: &str, albums: Vec<String>) -> Result<QueryRequest> {
    if albums.len() > MAX_ALBUM_FILTERS {
        return Err(Error::InvalidArgument(format!(
            "{} album filters; at most {MAX_ALBUM_FILTERS} are accepted (give none to search every album)",
            albums.len()
        )));
    }
    if let Some(long) = albums.iter().find(|a| a.len() > MAX_ALBUM_FILTER_BYTES) {
        return Err(Error::InvalidArgument(format!(
            "an album filter is {} bytes long; at most {MAX_ALBUM_FILTER_BYTES} are accepted",
            long.len()
        )));
    }
    let normal = normalize_expression(expression);
    if normal.is_empty() {
        return Err(Error::InvalidArgument("the expression is empty; say what to look for, e.g. \"my bike\"".into()));
    }
    if normal.len() > MAX_EXPRESSION_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the expression is {} bytes long; at most {MAX_EXPRESSION_BYTES} are accepted",
            normal.len()
        )));
    }
    QueryRequest::new(&normal, albums).map_err(|e| Error::InvalidArgument(format!("{e:#}")))
}

/// `path` as a path, refused unless absolute and free of NUL bytes.
pub(super) fn absolute(path: &str, what: &str) -> Result<PathBuf> {
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!("the {what} path is empty; give an absolute path")));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the {what} path is {} bytes long; no file has a path over {MAX_PATH_BYTES} bytes",
            path.len()
        )));
    }
    if path.as_bytes().contains(&0) {
        return Err(Error::InvalidArgument(format!("the {what} path {path:?} contains a NUL byte")));
    }
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "the {what} path {path:?} is relative; give an absolute path (the daemon has no working folder of yours)"
        )));
    }
    Ok(p)
}

/// `path` with `.` dropped and each `..` removing the component before it, without touching the disk
/// (symbolic links are judged separately, by `canonicalize`). `..` at the root stays at the root.
pub(super) fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
