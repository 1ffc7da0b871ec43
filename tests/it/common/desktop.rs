//! Helpers of the desktop-integration tests (tests/it/eog_plugin.rs, tests/it/nautilus_plugin.rs): a user's
//! world in a temp dir (HOME and XDG folders pinned), a random tiny model, `photoseg index`, a private
//! session bus config that activates nothing, and the rule for missing desktop tools.
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
        self.save_model(&self.random_model(0));
    }

    /// A random tiny model (as [`World::model`]) under which the expression the eog check will choose
    /// (the first of `expressions` whose mask covers 3 to 90 % of `photo`) gives a mask whose edge
    /// shows in every view the check looks at: at least 3 % object and 3 % background within the
    /// centre that eog shows zoomed in (the middle 3/4 of the width, 5/8 of the height) and within the
    /// lower right that the drag brings into view. Random weights can give every expression an empty or
    /// a full mask, or one that lies wholly outside the zoomed view, and each of those fails the eog
    /// check; weights are drawn from seeds 1, 2, ... until one does. Returns how many draws it took.
    pub fn model_with_partial_mask(&self, photo: &Path, expressions: &[&str]) -> usize {
        use photoseg::model::grser::Pairs;
        let img = photoseg::library::photo::load(photo).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        // Share of object pixels in the window [x0, x1) x [y0, y1), given as fractions of the photo.
        let share_in = |mask: &[u8], (x0, x1, y0, y1): (f64, f64, f64, f64)| -> f64 {
            let (x0, x1) = ((x0 * w as f64) as usize, (x1 * w as f64) as usize);
            let (y0, y1) = ((y0 * h as f64) as usize, (y1 * h as f64) as usize);
            let on: usize = (y0..y1).map(|y| mask[y * w + x0..y * w + x1].iter().filter(|&&m| m != 0).count()).sum();
            on as f64 / ((x1 - x0) * (y1 - y0)).max(1) as f64
        };
        let centre = (0.125, 0.875, 0.1875, 0.8125);
        let lower_right = (0.25, 1.0, 0.375, 1.0);
        for draw in 1..=100 {
            let model = self.random_model(draw as u64);
            let feats = photoseg::query::featurizer::featurize_image(&model.3, &img).unwrap();
            let chosen = expressions.iter().find_map(|e| {
                let answer = model.3.answer(&feats, e, Pairs::TopK).unwrap();
                let logits = answer[0].mask_logits.as_ref().unwrap();
                let (gh, gw) = logits.dims2().unwrap();
                let grid: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
                let mask = photoseg::model::upsample::guided_mask(&grid, gh, gw, img.as_raw(), w, h);
                let share = share_in(&mask, (0.0, 1.0, 0.0, 1.0));
                (0.03..=0.90).contains(&share).then_some(mask)
            });
            let visible = |mask: &[u8]| {
                [centre, lower_right].into_iter().all(|window| (0.03..=0.97).contains(&share_in(mask, window)))
            };
            if chosen.is_some_and(|mask| visible(&mask)) {
                self.save_model(&model);
                return draw;
            }
        }
        panic!("100 random tiny models gave no expression a mask with an edge in every view of {}", photo.display());
    }

    /// A tiny model whose weights are drawn from `seed` ([`crate::common::seed_weights`]): the same draw, hence
    /// the same masks, on every run.
    fn random_model(&self, seed: u64) -> (VarMap, Config, tokenizers::Tokenizer, Grser) {
        let varmap = VarMap::new();
        let tok = tokenizers::Tokenizer::from_file(repo("tests/fixtures/tokenizer/tokenizer.json")).unwrap();
        let mut cfg = Config::tiny(60);
        cfg.head.margin = -1e6;
        let grser = Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        crate::common::seed_weights(&varmap, seed);
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
