//! The models installed in the data directory and which one answers.
//!
//! Layout, under `$XDG_DATA_HOME/photoseg/`:
//! - `models/NAME/`: an installed model (`config.json`, `model.safetensors`, `tokenizer.json`, and the
//!   `README.md` card when it came with one). Only [`Catalog::install`] writes here: it copies into a
//!   hidden `models/.NAME.partial-PID/`, syncs every file and the folder, then renames it to `NAME`, so a
//!   model folder under its name is always whole; a copy cut short by an error is removed, one cut short
//!   by a kill stays hidden and the next install removes it.
//! - `active-model`: the name of the model that answers (`builtin` for the built-in one), replaced by a
//!   rename. Without it the choice is what it was before models had names: the model placed by hand in
//!   `model/` when there is one, else the built-in model.
//!
//! Removing the active model is refused unless forced; forced, the choice falls back to that default
//! (the hand-placed `model/`, else the built-in model), which is what a user who never chose one has.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::model::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::whole_dir::{self, sync_dir};

/// Folder of the installed models inside photoseg's data directory.
pub const MODELS_DIR: &str = "models";
/// File naming the active model.
pub const ACTIVE_FILE: &str = "active-model";
/// The name that chooses the built-in model.
pub const BUILTIN: &str = "builtin";
/// The model card a model directory may carry; installed with the model.
pub const CARD_FILE: &str = "README.md";
/// Test hook: milliseconds to wait after copying each file of an install, so a test can kill it midway.
pub const INSTALL_DELAY_ENV: &str = "PHOTOSEG_INSTALL_DELAY_MS";

/// Which model answers when no `--model` or `$PHOTOSEG_MODEL` names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Active {
    /// The built-in demo model: chosen (`photoseg model use builtin`) or nothing else there.
    Builtin { chosen: bool },
    /// An installed model, by name.
    Installed(String),
    /// The model placed by hand in `$XDG_DATA_HOME/photoseg/model/`, used while no model is chosen.
    HandPlaced(PathBuf),
}

/// photoseg's data directory seen as a set of models.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
}

impl Catalog {
    /// The catalog of `$XDG_DATA_HOME/photoseg` (or `$HOME/.local/share/photoseg`).
    pub fn open() -> Result<Self> {
        let hand_placed = crate::library::paths::model_dir()?;
        Ok(Self::at(hand_placed.parent().expect("the model folder has a parent")))
    }

    /// The catalog of the data directory `root`.
    pub fn at(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    /// `models/`, where installed models live.
    pub fn models_dir(&self) -> PathBuf {
        self.root.join(MODELS_DIR)
    }

    /// The folder of the installed model `name` (whether or not it exists).
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.models_dir().join(name)
    }

    /// `model/`: where a model was placed by hand before models were installed by name.
    pub fn hand_placed_dir(&self) -> PathBuf {
        self.root.join(crate::library::paths::MODEL_DIR)
    }

    /// The installed models' names, sorted (hidden folders, partial copies among them, are not models).
    pub fn installed(&self) -> Result<Vec<String>> {
        let dir = self.models_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing the installed models in {}", dir.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().join(CONFIG_FILE).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The model that answers by default.
    pub fn active(&self) -> Result<Active> {
        let file = self.root.join(ACTIVE_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let name = text.trim();
                if name == BUILTIN {
                    return Ok(Active::Builtin { chosen: true });
                }
                check_name(name).with_context(|| format!("{} names no model", file.display()))?;
                if !self.model_dir(name).join(CONFIG_FILE).is_file() {
                    bail!(
                        "the active model {name:?} ({}) is not installed; choose one with `photoseg model use NAME` \
                         (`photoseg model list` shows them)",
                        file.display()
                    );
                }
                Ok(Active::Installed(name.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let hand = self.hand_placed_dir();
                if hand.join(CONFIG_FILE).is_file() {
                    Ok(Active::HandPlaced(hand))
                } else {
                    Ok(Active::Builtin { chosen: false })
                }
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// Makes `name` (an installed model, or [`BUILTIN`]) the one that answers.
    pub fn set_active(&self, name: &str) -> Result<()> {
        if name != BUILTIN {
            check_name(name)?;
            if !self.model_dir(name).join(CONFIG_FILE).is_file() {
                bail!("no installed model is named {name:?}; `photoseg model list` shows them");
            }
        }
        std::fs::create_dir_all(&self.root).with_context(|| format!("creating {}", self.root.display()))?;
        let tmp = self.root.join(format!(".{ACTIVE_FILE}.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{name}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.root.join(ACTIVE_FILE))?;
            sync_dir(&self.root)
        };
        write().with_context(|| format!("recording the active model in {}", self.root.display()))
    }

    /// The name a command shows for the model in `dir`: `builtin`, an installed model's name, or the
    /// folder itself.
    pub fn name_of(&self, dir: &Path) -> String {
        let builtin = self.root.join(BUILTIN);
        if dir.starts_with(&builtin) {
            return BUILTIN.to_string();
        }
        if dir.parent() == Some(self.models_dir().as_path()) {
            if let Some(name) = dir.file_name() {
                return name.to_string_lossy().into_owned();
            }
        }
        dir.display().to_string()
    }

    /// Copies the model directory `src` into `models/NAME/` (see the module's doc for how it is never
    /// seen half written), after `check` accepted it. Refuses a name already installed.
    pub fn install(&self, src: &Path, name: &str, check: impl Fn(&Path) -> Result<()>) -> Result<PathBuf> {
        check_name(name)?;
        let dest = self.model_dir(name);
        if dest.exists() {
            bail!(
                "a model named {name:?} is already installed ({}); remove it first (`photoseg model remove {name}`) \
                 or give another --name",
                dest.display()
            );
        }
        check(src)?;
        let models = self.models_dir();
        std::fs::create_dir_all(&models).with_context(|| format!("creating {}", models.display()))?;
        whole_dir::remove_stale(&models, None)?;
        whole_dir::write(&dest, |tmp| copy_model_files(src, tmp))
            .with_context(|| format!("installing {} as {name:?}", src.display()))?;
        Ok(dest)
    }

    /// Removes the installed model `name`. The active one only with `force`, and the choice then falls
    /// back to the default (module doc). Returns whether it was the active one.
    pub fn remove(&self, name: &str, force: bool) -> Result<bool> {
        check_name(name)?;
        let dir = self.model_dir(name);
        if !dir.join(CONFIG_FILE).is_file() {
            bail!("no installed model is named {name:?}; `photoseg model list` shows them");
        }
        let active = matches!(self.active(), Ok(Active::Installed(ref a)) if a == name);
        if active && !force {
            bail!(
                "{name:?} is the active model; choose another first (`photoseg model use NAME`, or `builtin`), or \
                 remove it with --force and go back to the default model"
            );
        }
        // Out of sight first, so no half-removed model is ever listed or loaded.
        let gone = self.models_dir().join(format!(".{name}.removing-{}", std::process::id()));
        std::fs::rename(&dir, &gone).with_context(|| format!("removing {}", dir.display()))?;
        if active {
            let file = self.root.join(ACTIVE_FILE);
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
        }
        std::fs::remove_dir_all(&gone).with_context(|| format!("removing {}", gone.display()))?;
        Ok(active)
    }
}

/// A model's name: letters, digits, `-`, `_` and `.`, not starting with a dot, at most 100 bytes, and
/// not [`BUILTIN`].
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("{name:?} is not a model name: use letters, digits, '-', '_' and '.', not starting with '.'");
    }
    if name == BUILTIN {
        bail!("{BUILTIN:?} is the built-in model's name; give another");
    }
    Ok(())
}

/// The name a model gets when none is given: a folder's own name (its parent's when it is called
/// `model`, as `photoseg train`'s `OUT/model` is), a repo id with `/` as `--` (the hub cache's way).
pub fn default_name(source: &str, is_dir: bool) -> String {
    let name = if is_dir {
        let path = Path::new(source);
        let path = if path.file_name().is_some_and(|n| n == "model") { path.parent().unwrap_or(path) } else { path };
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        path.file_name().map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned())
    } else {
        source.replace('/', "--")
    };
    let name: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    name.trim_start_matches('.').to_string()
}

/// Copies a model's files into the folder `to` ([`whole_dir::write`] syncs them).
fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    let delay = std::env::var(INSTALL_DELAY_ENV).ok().and_then(|v| v.parse::<u64>().ok());
    for name in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, CARD_FILE] {
        let src = from.join(name);
        if name == CARD_FILE && !src.is_file() {
            continue;
        }
        let dst = to.join(name);
        std::fs::copy(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        if let Some(ms) = delay {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for f in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
            std::fs::write(dir.join(f), f).unwrap();
        }
    }

    #[test]
    fn install_choose_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::at(&tmp.path().join("data"));
        assert_eq!(cat.active().unwrap(), Active::Builtin { chosen: false });
        let src = tmp.path().join("run/model");
        fake_model(&src);
        assert_eq!(default_name(src.to_str().unwrap(), true), "run");
        assert_eq!(default_name("owner/grser-refcoco", false), "owner--grser-refcoco");
        let dir = cat.install(&src, "a", |_| Ok(())).unwrap();
        assert_eq!(std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(), WEIGHTS_FILE.as_bytes());
        cat.set_active("a").unwrap();
        assert_eq!(cat.active().unwrap(), Active::Installed("a".into()));
        assert_eq!(cat.name_of(&dir), "a");
        // A second install of the name, a refused check and a bad name leave nothing behind.
        assert!(cat.install(&src, "a", |_| Ok(())).unwrap_err().to_string().contains("already installed"));
        let err = cat.install(&src, "b", |_| bail!("broken")).unwrap_err();
        assert!(format!("{err:#}").contains("broken"));
        assert!(cat.install(&src, "../x", |_| Ok(())).is_err());
        assert_eq!(cat.installed().unwrap(), vec!["a".to_string()]);
        let err = cat.remove("a", false).unwrap_err().to_string();
        assert!(err.contains("active model") && err.contains("--force"), "{err}");
        assert!(cat.remove("a", true).unwrap());
        assert_eq!(cat.active().unwrap(), Active::Builtin { chosen: false });
        assert!(cat.installed().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(cat.models_dir()).unwrap().count(), 0, "nothing hidden is left");
    }

    #[test]
    fn a_copy_cut_short_is_removed_and_never_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::at(tmp.path());
        let src = tmp.path().join("src");
        fake_model(&src);
        std::fs::remove_file(src.join(WEIGHTS_FILE)).unwrap();
        let err = cat.install(&src, "m", |_| Ok(())).unwrap_err();
        assert!(format!("{err:#}").contains(WEIGHTS_FILE), "{err:#}");
        assert_eq!(std::fs::read_dir(cat.models_dir()).unwrap().count(), 0);
        // A killed install's hidden copy (a pid that does not run) is not a model and is cleaned up.
        let stale = cat.models_dir().join(".m.partial-4294967");
        fake_model(&stale);
        assert!(cat.installed().unwrap().is_empty());
        fake_model(&src);
        cat.install(&src, "m", |_| Ok(())).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn the_hand_placed_model_answers_until_one_is_chosen() {
        let tmp = tempfile::tempdir().unwrap();
        let cat = Catalog::at(tmp.path());
        fake_model(&cat.hand_placed_dir());
        assert_eq!(cat.active().unwrap(), Active::HandPlaced(cat.hand_placed_dir()));
        cat.set_active(BUILTIN).unwrap();
        assert_eq!(cat.active().unwrap(), Active::Builtin { chosen: true });
        assert!(cat.set_active("missing").is_err());
    }
}
