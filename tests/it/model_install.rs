//! `photoseg model install / list / use / remove` through the real binary, in a data directory of the
//! test's own: a model is checked before it is copied, the copy is never seen half written (an error, a
//! kill midway), the installed model answers `photoseg query` and the query says so; removing the
//! active model needs --force and falls back to the built-in one.
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::checkpoints::{names_in, stderr, stdout};
use crate::common::{fixture, save_tiny_model};

/// A user's home: data, cache and config folders of its own.
pub struct Home {
    pub tmp: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Self {
        let home = Home { tmp: tempfile::tempdir().unwrap() };
        for d in ["home", "config", "cache", "data", "photos"] {
            std::fs::create_dir_all(home.path(d)).unwrap();
        }
        home
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn models(&self) -> PathBuf {
        self.path("data/photoseg/models")
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_photoseg"));
        c.args(args)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("PHOTOSEG_NO_DAEMON", "1")
            .env_remove("PHOTOSEG_MODEL")
            .env_remove("HF_ENDPOINT")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    /// Runs and expects success; returns stdout and stderr.
    pub fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let o = self.run(args, env);
        assert!(o.status.success(), "photoseg {args:?}: {}\n{}", stderr(&o), stdout(&o));
        (stdout(&o), stderr(&o))
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let o = self.run(args, env);
        assert!(!o.status.success(), "photoseg {args:?} succeeded: {}", stdout(&o));
        stderr(&o)
    }

    /// Copies the RefCOCO fixture's photos into `photos/album` (the fixture is never indexed in place).
    pub fn photos(&self) -> PathBuf {
        let album = self.path("photos/album");
        std::fs::create_dir_all(&album).unwrap();
        for entry in std::fs::read_dir(fixture("data/refcoco/images")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, album.join(p.file_name().unwrap())).unwrap();
        }
        self.path("photos")
    }
}

/// The line of `photoseg model list` for `name`.
fn line<'a>(list: &'a str, name: &str) -> &'a str {
    list.lines()
        .find(|l| l[2..].split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

fn tiny_model(dir: &Path, seed: u64) -> String {
    std::fs::create_dir_all(dir).unwrap();
    save_tiny_model(dir, seed, |c| c.description = format!("tiny model {seed}"))
}

#[test]
fn model_install_makes_the_model_active_and_the_query_says_which_answered() {
    let home = Home::new();
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(line(&list, "builtin").starts_with('*'), "{list}");
    let run = tiny_model(&home.path("run-a/model"), 1);
    let (out, _) = home.ok(&["model", "install", &run], &[]);
    assert!(out.contains("installed run-a") && out.contains("tiny model 1"), "{out}");
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(line(&list, "run-a").starts_with('*') && line(&list, "run-a").contains("tiny model 1"), "{list}");
    assert!(line(&list, "builtin").starts_with(' '), "{list}");

    let photos = home.photos();
    let (_, err) = home.ok(&["index", photos.to_str().unwrap()], &[]);
    assert!(!err.contains("built-in demo model"), "{err}");
    let (_, err) = home.ok(&["query", "the man on the left"], &[]);
    assert!(err.contains("answered by this process with the model run-a (grser-64px"), "{err}");

    // A second model, chosen by name; then the built-in one.
    let other = tiny_model(&home.path("other"), 2);
    home.ok(&["model", "install", &other, "--name", "second"], &[]);
    home.ok(&["index"], &[]);
    let (_, err) = home.ok(&["query", "the man on the left"], &[]);
    assert!(err.contains("with the model second "), "{err}");
    home.ok(&["model", "use", "run-a"], &[]);
    let (_, err) = home.ok(&["query", "the man on the left"], &[]);
    assert!(err.contains("with the model run-a "), "{err}");
    home.ok(&["model", "use", "builtin"], &[]);
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(line(&list, "builtin").starts_with('*'), "{list}");
    home.ok(&["model", "use", "second"], &[]);

    // The active model is removed only with --force, and the built-in one answers after it.
    let err = home.fails(&["model", "remove", "second"], &[]);
    assert!(err.contains("is the active model") && err.contains("--force"), "{err}");
    assert!(home.models().join("second").is_dir());
    home.ok(&["model", "remove", "run-a"], &[]);
    home.ok(&["model", "remove", "second", "--force"], &[]);
    assert!(names_in(&home.models()).is_empty(), "{:?}", names_in(&home.models()));
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(line(&list, "builtin").starts_with('*') && list.lines().count() == 1, "{list}");
    let err = home.fails(&["model", "use", "second"], &[]);
    assert!(err.contains("no installed model is named \"second\""), "{err}");
}

/// The model placed by hand in `$XDG_DATA_HOME/photoseg/model/` still answers while no model was
/// installed, and is listed as active.
#[test]
fn model_the_hand_placed_model_answers_until_one_is_installed() {
    let home = Home::new();
    tiny_model(&home.path("data/photoseg/model"), 3);
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(line(&list, "model").starts_with('*') && list.contains("placed by hand"), "{list}");
    let photos = home.photos();
    home.ok(&["index", photos.to_str().unwrap()], &[]);
    let (_, err) = home.ok(&["query", "the man"], &[]);
    assert!(err.contains("photoseg/model (grser-64px"), "{err}");
}

/// Broken models are refused with the reason and leave no folder: files missing, weights of another
/// shape than the config says, a tokenizer of another vocabulary; a name already taken is refused.
#[test]
fn model_install_refuses_a_broken_model_and_leaves_nothing() {
    let home = Home::new();
    let refuse = |dir: &Path, words: &[&str]| {
        let err = home.fails(&["model", "install", dir.to_str().unwrap()], &[]);
        for w in words {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
        assert!(names_in(&home.models()).is_empty(), "{:?}", names_in(&home.models()));
        assert!(!home.path("data/photoseg/active-model").exists());
    };
    refuse(&home.path("nowhere"), &["no folder", "nowhere"]);
    // A repo id with the hub offline.
    let offline = crate::common::hub::offline_endpoint();
    let hf_home = home.path("hf");
    let env = [("HF_ENDPOINT", offline.as_str()), ("HF_HOME", hf_home.to_str().unwrap())];
    let err = home.fails(&["model", "install", "test/grser"], &env);
    assert!(err.contains("cannot reach the Hugging Face hub") && err.contains(&offline), "{err}");
    assert!(names_in(&home.models()).is_empty() && !home.path("data/photoseg/active-model").exists());
    let dir = home.path("m");
    tiny_model(&dir, 4);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    refuse(&dir, &["tokenizer.json"]);
    tiny_model(&dir, 4);
    let cfg_path = dir.join("config.json");
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&good).unwrap();
    cfg["head"]["c_v"] = 48.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    refuse(&dir, &["cannot be installed", "neck.v.weight"]);
    // The tokenizer of a vocabulary of another size than BERT's (weights and config agree with each other).
    let other = home.path("other-vocab");
    std::fs::create_dir_all(&other).unwrap();
    crate::common::save_tiny_model(&other, 5, |c| c.bert.vocab_size = 61);
    refuse(&other, &["60 tokens", "61", "another checkpoint"]);
    // A whole model installs; the name cannot be taken twice.
    std::fs::write(&cfg_path, good).unwrap();
    home.ok(&["model", "install", dir.to_str().unwrap()], &[]);
    let err = home.fails(&["model", "install", dir.to_str().unwrap()], &[]);
    assert!(err.contains("already installed"), "{err}");
    assert_eq!(names_in(&home.models()), vec!["m".to_string()]);
}

/// An install killed while it copies leaves only a hidden partial copy, which is no model (not listed,
/// not active), and the next install removes it.
#[test]
fn model_install_killed_midway_leaves_no_model() {
    let home = Home::new();
    let dir = home.path("m");
    tiny_model(&dir, 6);
    let mut child = home
        .command(&["model", "install", dir.to_str().unwrap()], &[("PHOTOSEG_INSTALL_DELAY_MS", "5000")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !names_in(&home.models()).iter().any(|n| n.starts_with(".m.partial-")) {
        assert!(start.elapsed().as_secs() < 60, "the copy never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = names_in(&home.models());
    assert!(left.len() == 1 && left[0].starts_with(".m.partial-"), "{left:?}");
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(line(&list, "builtin").starts_with('*') && list.lines().count() == 1, "{list}");
    home.ok(&["model", "install", dir.to_str().unwrap()], &[]);
    assert_eq!(names_in(&home.models()), vec!["m".to_string()]);
}
