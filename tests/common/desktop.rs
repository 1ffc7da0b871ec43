//! Helpers of the desktop-integration tests (tests/eog_plugin.rs, tests/nautilus_plugin.rs): a user's
//! world in a temp dir (HOME and XDG folders pinned), a random tiny model, `photoseg index`, a private
//! session bus config that activates nothing, and the rule for missing desktop tools.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::checkpoint::save_model_dir;
use photoseg::model::grser::{Config, Grser};
use tempfile::TempDir;

/// The system Python, which has PyGObject (`python3` on PATH may be another one).
pub const PYTHON: &str = "/usr/bin/python3";

/// True when every tool is there. When one is missing: with `CI` set the test fails (CI installs
/// them, see .ci/run), otherwise it says loudly that it is skipped and returns false.
pub fn have_tools(test: &str, programs: &[&str], python_modules: &[&str]) -> bool {
    let mut missing: Vec<String> = programs.iter().filter(|p| !on_path(p)).map(|p| p.to_string()).collect();
    for m in python_modules {
        // "Gtk:4.0" means gi.require_version("Gtk", "4.0"); anything else is a plain import.
        let code = match m.split_once(':') {
            Some((ns, v)) => format!("import gi; gi.require_version('{ns}', '{v}'); from gi.repository import {ns}"),
            None => format!("import {m}"),
        };
        let ok = Command::new(PYTHON).args(["-c", &code]).output().map(|o| o.status.success()).unwrap_or(false);
        if !ok {
            missing.push(format!("python module {m}"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing {}", missing.join(", "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI must install them: .ci/run)");
    }
    eprintln!("\n!!! SKIPPED {msg}; install them (see .ci/run) to run this test\n");
    false
}

fn on_path(program: &str) -> bool {
    if program.starts_with('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub struct World {
    pub tmp: TempDir,
}

impl World {
    pub fn new() -> Self {
        let w = World { tmp: tempfile::tempdir().unwrap() };
        for d in ["home", "config", "cache", "data", "photos", "out"] {
            std::fs::create_dir_all(w.path(d)).unwrap();
        }
        std::fs::write(w.path("bus.conf"), BUS_CONF).unwrap();
        w
    }

    /// A path in the world, canonical (photoseg stores canonical paths).
    pub fn path(&self, rel: &str) -> PathBuf {
        std::fs::canonicalize(self.tmp.path()).unwrap().join(rel)
    }

    /// HOME, the XDG folders and the model pinned; nothing of the caller's desktop session leaks in.
    pub fn env(&self, c: &mut Command) {
        c.env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_RUNTIME_DIR", self.path("home"))
            .env("PHOTOSEG_MODEL", self.path("model"))
            .env("NO_AT_BRIDGE", "1")
            .env("GTK_A11Y", "none")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("RUST_LOG");
    }

    pub fn photoseg(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_photoseg"));
        c.args(args);
        self.env(&mut c);
        c.output().unwrap()
    }

    pub fn photoseg_ok(&self, args: &[&str]) -> String {
        let out = self.photoseg(args);
        assert!(
            out.status.success(),
            "photoseg {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Saves a random tiny model in `model/`; margin -1e6 makes every photo positive, so masks are
    /// the decoder's (random, but real output of the network).
    pub fn model(&self) {
        self.save_model(&self.random_model());
    }

    /// A random tiny model (as [`World::model`]) under which at least one of `expressions` gives
    /// `photo` a mask covering 5 to 85 % of it. Random weights can give every expression an empty or a
    /// full mask, which a test that must see a mask's edge cannot use (the eog check failed so in CI
    /// once); fresh weights are drawn until one does. Returns how many draws it took.
    pub fn model_with_partial_mask(&self, photo: &Path, expressions: &[&str]) -> usize {
        use photoseg::model::grser::Pairs;
        let img = photoseg::library::photo::load(photo).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        for draw in 1..=50 {
            let model = self.random_model();
            let feats = photoseg::query::featurizer::featurize_image(&model.3, &img).unwrap();
            let partial = expressions.iter().any(|e| {
                let answer = model.3.answer(&feats, e, Pairs::TopK).unwrap();
                let logits = answer[0].mask_logits.as_ref().unwrap();
                let (gh, gw) = logits.dims2().unwrap();
                let grid: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
                let mask = photoseg::model::upsample::guided_mask(&grid, gh, gw, img.as_raw(), w, h);
                let share = mask.iter().filter(|&&m| m != 0).count() as f64 / (w * h) as f64;
                (0.05..=0.85).contains(&share)
            });
            if partial {
                self.save_model(&model);
                return draw;
            }
        }
        panic!("50 random tiny models gave no expression a mask of 5-85 % of {}", photo.display());
    }

    fn random_model(&self) -> (VarMap, Config, tokenizers::Tokenizer, Grser) {
        let varmap = VarMap::new();
        let tok = tokenizers::Tokenizer::from_file(repo("tests/fixtures/tokenizer/tokenizer.json")).unwrap();
        let mut cfg = Config::tiny(60);
        cfg.head.margin = -1e6;
        let grser = Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        (varmap, cfg, tok, grser)
    }

    fn save_model(&self, (varmap, cfg, tok, _): &(VarMap, Config, tokenizers::Tokenizer, Grser)) {
        save_model_dir(varmap, cfg, tok, &self.path("model")).unwrap();
    }

    /// Runs `argv` inside `dbus-run-session` on the world's private bus (no service activation),
    /// with the world's environment, killed after `limit_s`. Returns (success, stdout + stderr).
    pub fn on_private_bus(&self, argv: &[&str], extra_env: &[(&str, &str)], limit_s: u32) -> (bool, String) {
        let conf = self.path("bus.conf");
        let mut c = Command::new("timeout");
        c.args(["-k", "10", &limit_s.to_string(), "dbus-run-session", "--config-file"]).arg(&conf).arg("--").args(argv);
        self.env(&mut c);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

/// A session bus that serves no .service files: only what the test starts is on it.
const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#;
