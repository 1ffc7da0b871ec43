//! The watched photo folders ("roots"), kept in a small JSON file (see [`super::paths::config_file`]).
//!
//! JSON via serde_json avoids a new dependency; the file is meant to be edited through
//! `add_root` / `remove_root`, which canonicalise so one folder is never watched twice under
//! two spellings (a symlink, `..`, a trailing slash).
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The user's library configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Canonical, absolute folders that are scanned and watched, none inside another.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
}

/// What [`Config::add_root`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootAdded {
    /// `root` is now watched; `replaced` were roots inside it, dropped because `root` covers them.
    Added { root: PathBuf, replaced: Vec<PathBuf> },
    /// Nothing changed: `root` is already watched as (or inside) `by`.
    AlreadyWatched { root: PathBuf, by: PathBuf },
}

impl Config {
    /// Reads the config at `path`; a missing file is an empty config (first run).
    pub fn load(path: &Path) -> Result<Config> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read config {}", path.display())),
        };
        let config: Config =
            serde_json::from_str(&text).with_context(|| format!("config {} is not valid", path.display()))?;
        // A relative root would mean whatever folder the daemon happens to start in.
        if let Some(root) = config.roots.iter().find(|r| !r.is_absolute()) {
            bail!(
                "config {}: the folder {:?} is relative; write it as an absolute path (or use `photoseg index FOLDER`)",
                path.display(),
                root
            );
        }
        Ok(config)
    }

    /// Writes the config atomically (temporary file + rename), so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().ok_or_else(|| anyhow!("config path {} has no parent folder", path.display()))?;
        fs::create_dir_all(dir).with_context(|| format!("cannot create config folder {}", dir.display()))?;
        let mut text =
            serde_json::to_string_pretty(self).with_context(|| format!("cannot write config {}", path.display()))?;
        text.push('\n');
        let tmp = path.with_extension("json.tmp");
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().with_context(|| format!("cannot write config {}", path.display()))
    }

    /// Starts watching `dir`: it must be a readable directory; it is stored canonicalised.
    ///
    /// A folder inside an existing root is already covered and is not added again; a folder
    /// containing existing roots replaces them, so every photo lives under exactly one root.
    pub fn add_root(&mut self, dir: &Path) -> Result<RootAdded> {
        let root = check_root(dir)?;
        if root.to_str().is_none() {
            bail!(
                "cannot watch {}: the config stores folder names as UTF-8 text and this name is not valid UTF-8",
                root.display()
            );
        }
        if let Some(by) = self.roots.iter().find(|r| root.starts_with(r)) {
            return Ok(RootAdded::AlreadyWatched { root, by: by.clone() });
        }
        let (replaced, kept): (Vec<_>, Vec<_>) = self.roots.drain(..).partition(|r| r.starts_with(&root));
        self.roots = kept;
        self.roots.push(root.clone());
        self.roots.sort();
        Ok(RootAdded::Added { root, replaced })
    }

    /// Stops watching `dir`; returns the root that was removed.
    ///
    /// Matches the canonical form when `dir` still exists, else the literal absolute path:
    /// a root whose folder was deleted or unmounted must still be removable.
    pub fn remove_root(&mut self, dir: &Path) -> Result<PathBuf> {
        let literal = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let canonical = fs::canonicalize(dir).ok();
        let pos = self.roots.iter().position(|r| Some(r) == canonical.as_ref() || *r == literal);
        match pos {
            Some(i) => Ok(self.roots.remove(i)),
            None if self.roots.is_empty() => bail!("{} is not a watched folder: no folders are watched", dir.display()),
            None => {
                let list: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
                bail!("{} is not a watched folder; watched: {}", dir.display(), list.join(", "))
            }
        }
    }
}

/// Canonicalises `dir` and checks that it is a directory we can list.
fn check_root(dir: &Path) -> Result<PathBuf> {
    let root = fs::canonicalize(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => anyhow!("cannot watch {}: no such folder", dir.display()),
        io::ErrorKind::PermissionDenied => {
            anyhow!("cannot watch {}: permission denied", dir.display())
        }
        _ => anyhow!("cannot watch {}: {e}", dir.display()),
    })?;
    if !root.is_dir() {
        bail!("cannot watch {}: not a folder", dir.display());
    }
    fs::read_dir(&root).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => {
            anyhow!("cannot watch {}: permission denied (cannot list the folder)", dir.display())
        }
        _ => anyhow!("cannot watch {}: cannot list the folder: {e}", dir.display()),
    })?;
    Ok(root)
}
