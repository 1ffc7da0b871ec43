//! Where photoseg keeps its config and cache, following the XDG base directory spec.
//!
//! Resolved from environment variables rather than a platform crate so tests (and users) can pin
//! both places with `XDG_CONFIG_HOME` / `XDG_CACHE_HOME`. The `*_from` variants take the lookup
//! as a closure so tests need not mutate the process environment (racy across test threads).
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// Directory name under the XDG base directories.
pub const APP_DIR: &str = "photoseg";
/// File name of the config inside the config directory.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the SQLite cache inside the cache directory.
pub const CACHE_FILE: &str = "library.sqlite3";
/// Folder of the search index (tantivy) inside the cache directory.
pub const SEARCH_DIR: &str = "search";
/// Folder of the installed model inside the data directory.
pub const MODEL_DIR: &str = "model";

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// `$XDG_CONFIG_HOME/photoseg/config.json`, or `$HOME/.config/photoseg/config.json`.
pub fn config_file() -> Result<PathBuf> {
    config_file_from(env)
}

/// `$XDG_CACHE_HOME/photoseg/library.sqlite3`, or `$HOME/.cache/photoseg/library.sqlite3`.
pub fn cache_file() -> Result<PathBuf> {
    cache_file_from(env)
}

/// `$XDG_CACHE_HOME/photoseg/search`, or `$HOME/.cache/photoseg/search`: derived data, like the cache.
pub fn search_dir() -> Result<PathBuf> {
    search_dir_from(env)
}

/// `$XDG_DATA_HOME/photoseg/model`, or `$HOME/.local/share/photoseg/model`: the installed model.
pub fn model_dir() -> Result<PathBuf> {
    model_dir_from(env)
}

/// [`search_dir`] with an explicit environment lookup.
pub fn search_dir_from(get: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    Ok(base_dir(&get, "XDG_CACHE_HOME", ".cache")?.join(APP_DIR).join(SEARCH_DIR))
}

/// [`model_dir`] with an explicit environment lookup.
pub fn model_dir_from(get: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    Ok(base_dir(&get, "XDG_DATA_HOME", ".local/share")?.join(APP_DIR).join(MODEL_DIR))
}

/// [`config_file`] with an explicit environment lookup.
pub fn config_file_from(get: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    Ok(base_dir(&get, "XDG_CONFIG_HOME", ".config")?.join(APP_DIR).join(CONFIG_FILE))
}

/// [`cache_file`] with an explicit environment lookup.
pub fn cache_file_from(get: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    Ok(base_dir(&get, "XDG_CACHE_HOME", ".cache")?.join(APP_DIR).join(CACHE_FILE))
}

/// The XDG spec says a relative or empty `XDG_*_HOME` is invalid and must be ignored,
/// so those fall back to `$HOME/<fallback>` too.
fn base_dir(get: &dyn Fn(&str) -> Option<OsString>, var: &str, fallback: &str) -> Result<PathBuf> {
    if let Some(dir) = get(var).map(PathBuf::from) {
        if dir.is_absolute() {
            return Ok(dir);
        }
    }
    match get("HOME").map(PathBuf::from) {
        Some(home) if home.is_absolute() => Ok(home.join(fallback)),
        _ => bail!("cannot find where to keep photoseg's files: neither {var} nor HOME is set to an absolute path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn xdg_wins_over_home() {
        let get = lookup(&[("XDG_CONFIG_HOME", "/x/conf"), ("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/h")]);
        assert_eq!(config_file_from(&get).unwrap(), PathBuf::from("/x/conf/photoseg/config.json"));
        assert_eq!(cache_file_from(&get).unwrap(), PathBuf::from("/x/cache/photoseg/library.sqlite3"));
    }

    #[test]
    fn home_fallback_and_relative_xdg_ignored() {
        let get = lookup(&[("XDG_CONFIG_HOME", "relative"), ("XDG_CACHE_HOME", ""), ("HOME", "/h")]);
        assert_eq!(config_file_from(&get).unwrap(), PathBuf::from("/h/.config/photoseg/config.json"));
        assert_eq!(cache_file_from(&get).unwrap(), PathBuf::from("/h/.cache/photoseg/library.sqlite3"));
    }

    #[test]
    fn search_index_and_model_locations() {
        let get = lookup(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/h")]);
        assert_eq!(search_dir_from(&get).unwrap(), PathBuf::from("/x/cache/photoseg/search"));
        assert_eq!(model_dir_from(&get).unwrap(), PathBuf::from("/h/.local/share/photoseg/model"));
        let get = lookup(&[("XDG_DATA_HOME", "/x/data"), ("HOME", "/h")]);
        assert_eq!(model_dir_from(&get).unwrap(), PathBuf::from("/x/data/photoseg/model"));
    }

    #[test]
    fn nothing_set_is_a_clear_error() {
        let err = config_file_from(lookup(&[])).unwrap_err().to_string();
        assert!(err.contains("XDG_CONFIG_HOME") && err.contains("HOME"), "{err}");
    }
}
