//! Helpers of the desktop-integration tests (tests/it/eog_plugin.rs, tests/it/nautilus_plugin.rs): a user's
//! world in a temp dir (HOME and XDG folders pinned), a random tiny model or one built to give a known
//! mask, `photoseg index`, a private session bus config that activates nothing, and the rule for missing
//! desktop tools.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use photoseg::model::checkpoint::save_model_dir;
use photoseg::model::grser::{Config, Grser};
use tempfile::TempDir;

/// The system Python, which has PyGObject (`python3` on PATH may be another one).
pub const PYTHON: &str = "/usr/bin/python3";

/// The stripes whose union is the mask of [`World::model_with_stripes_mask`]: (axis, from, to), axis 0
/// for x and 1 for y, in the referent head's cell coordinates, which run from -1 to 1 across the photo
/// (from the centre of the first cell of its grid to the centre of the last). On eog's screen (the test
/// photo is 200 x 120) the two bars from top to bottom stay clear of the bottom middle of the view,
/// where the plugin's status line and eog's rotate buttons cover the photo, and the bar from side to
/// side stays above them.
const MASK_STRIPES: [(usize, f32, f32); 3] = [(0, -0.6, -0.38), (0, 0.59, 0.81), (1, -0.33, 0.0)];

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

/// The test photos' coordinate code, read back by tests/desktop/mask_judge.py (keep in step): R = LO +
/// SPAN x / (W - 1), G = LO + SPAN y / (H - 1), B = BLUE, so every pixel on screen says which photo pixel
/// it shows and whether it is dimmed.
const LO: f64 = 20.0;
const SPAN: f64 = 215.0;
const BLUE: u8 = 128;

/// Writes a `width` x `height` photo in the coordinate code at `path`, creating its folder.
pub fn coded_photo(path: &Path, width: u32, height: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(width, height, |x, y| {
        let r = LO + SPAN * f64::from(x) / f64::from(width - 1);
        let g = LO + SPAN * f64::from(y) / f64::from(height - 1);
        image::Rgb([r.round() as u8, g.round() as u8, BLUE])
    })
    .save(path)
    .unwrap();
}

/// Environment variable naming a folder where the desktop tests copy their screenshots when they pass
/// (docs/desktop.md's pictures come from `PHOTOSEG_SCREENSHOTS=docs/img`).
pub const SCREENSHOTS_ENV: &str = "PHOTOSEG_SCREENSHOTS";

/// Copies the screenshot `from` to `$PHOTOSEG_SCREENSHOTS/name` when that variable is set, without the
/// X server's black root window around the windows.
pub fn keep_screenshot(from: &Path, name: &str) {
    let Some(dir) = std::env::var_os(SCREENSHOTS_ENV).filter(|d| !d.is_empty()) else { return };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let shot = image::open(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display())).to_rgb8();
    let shown: Vec<(u32, u32)> =
        shot.enumerate_pixels().filter(|(_, _, p)| p.0 != [0, 0, 0]).map(|(x, y, _)| (x, y)).collect();
    let x0 = shown.iter().map(|p| p.0).min().unwrap_or(0);
    let y0 = shown.iter().map(|p| p.1).min().unwrap_or(0);
    let x1 = shown.iter().map(|p| p.0 + 1).max().unwrap_or(shot.width());
    let y1 = shown.iter().map(|p| p.1 + 1).max().unwrap_or(shot.height());
    let to = dir.join(name);
    image::imageops::crop_imm(&shot, x0, y0, x1 - x0, y1 - y0)
        .to_image()
        .save(&to)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", to.display()));
    eprintln!("screenshot: {}", to.display());
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

    /// Saves in `model/` a tiny model with a referent head (the built-in model's kind) whose mask of
    /// `photo` is, for every expression, the same pattern, built rather than drawn: the union of the
    /// stripes [`MASK_STRIPES`], two bars from top to bottom and one from side to side. The head reads
    /// only the cell's position: φ's first layer has four ReLUs a stripe, which its second layer sums
    /// into a trapezoid (1/2 on the stripe's edges, 1 from 0.05 inside them, 0 from 0.05 outside), and
    /// E adds up the stripes; every token's query is 4 with bias -2, so a cell's logit is the number of
    /// tokens times 4 (E - 1/2). The rest of the network (weights drawn from seed 0) has zero weight in
    /// it.
    ///
    /// The eog check needs what this asserts: a mask that covers 3 to 90 % of the photo, whose edge
    /// shows in every view it looks at (at least 3 % object and 3 % background within the centre that
    /// eog shows zoomed in, the middle 3/4 of the width and 5/8 of the height, and within the lower right
    /// that the drag brings into view), and that differs from its mirror images, so a flipped overlay
    /// fails. The stripes' long edges along both axes make an overlay shifted either way fail.
    pub fn model_with_stripes_mask(&self, photo: &Path) {
        self.save_model(&self.stripes_model(photo).0);
    }

    /// [`Self::model_with_stripes_mask`] with a decision threshold that makes a photo positive for
    /// `phrase` and negative for `prefix` (a start of it): what a person types first finds nothing, the
    /// whole phrase finds every photo. Each token (words, `[CLS]` and `[SEP]`) adds the same amount to a
    /// photo's score in this model, so the score grows with the number of tokens, and the threshold is
    /// set halfway between the prefix's score and the phrase's.
    pub fn model_with_stripes_mask_found_from(&self, photo: &Path, phrase: &str, prefix: &str) {
        use photoseg::model::grser::Pairs;
        let (mut model, feats) = self.stripes_model(photo);
        let score = |model: &(VarMap, Config, tokenizers::Tokenizer, Grser), e: &str| -> f32 {
            -model.3.answer(&feats, e, Pairs::TopK).unwrap()[0].d_pos
        };
        let (low, high) = (score(&model, prefix), score(&model, phrase));
        assert!(high > low + 1.0, "the stripes model scores {prefix:?} {low} and {phrase:?} {high}");
        let threshold = f64::from((low + high) / 2.0);
        model.1.referent.as_mut().unwrap().threshold = threshold;
        model.3.set_threshold(threshold);
        for (e, positive) in [(prefix, false), (phrase, true)] {
            let answer = model.3.answer(&feats, e, Pairs::TopK).unwrap();
            assert_eq!(answer[0].positive, positive, "{e:?} with threshold {threshold}");
        }
        self.save_model(&model);
    }

    /// The stripes model of [`Self::model_with_stripes_mask`] (threshold 0: every expression finds every
    /// photo) and `photo`'s features, after checking its mask of `photo`.
    fn stripes_model(
        &self,
        photo: &Path,
    ) -> ((VarMap, Config, tokenizers::Tokenizer, Grser), photoseg::model::neck::VisualFeatures) {
        use photoseg::model::grser::{Pairs, ReferentConfig};
        let mut cfg = Config::tiny(60);
        cfg.referent = Some(ReferentConfig { dim: 1, threshold: 0.0, ..Default::default() });
        let model = self.build_model(cfg, 0);
        {
            let data = model.0.data().lock().unwrap();
            let set = |name: &str, edit: &dyn Fn(&[usize], &mut [f32])| {
                let var = &data[name];
                let mut values = vec![0f32; var.elem_count()];
                edit(var.dims(), &mut values);
                var.set(&candle_core::Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap()).unwrap();
            };
            // Stripe i's units 4i..4i + 4 are ReLU(t - a), t being x or y, at a = from - 0.05, from + 0.05,
            // to - 0.05 and to + 0.05; weighted 10, -10, -10, 10 they make the trapezoid.
            let ramp = 0.05f32;
            let units = || {
                MASK_STRIPES.iter().flat_map(move |&(axis, from, to)| {
                    [(from - ramp, 1.0), (from + ramp, -1.0), (to - ramp, -1.0), (to + ramp, 1.0)]
                        .map(|(at, weight)| (axis, at, weight / (2.0 * ramp)))
                })
            };
            // phi1: [hidden, dense channels + 2 (x, y), 1, 1].
            set("referent.phi1.weight", &|dims, w| {
                for (unit, (axis, _, _)) in units().enumerate() {
                    w[unit * dims[1] + dims[1] - 2 + axis] = 1.0;
                }
            });
            set("referent.phi1.bias", &|_, b| units().enumerate().for_each(|(unit, (_, at, _))| b[unit] = -at));
            // phi2: [1, hidden, 1, 1].
            set("referent.phi2.weight", &|_, w| {
                units().enumerate().for_each(|(unit, (_, _, weight))| w[unit] = weight)
            });
            set("referent.phi2.bias", &|_, _| {});
            set("referent.words.weight", &|_, _| {});
            set("referent.words.bias", &|_, b| b.copy_from_slice(&[4.0, -2.0]));
            set("referent.bias", &|_, _| {});
        }
        let img = photoseg::library::photo::load(photo).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let feats = photoseg::query::featurizer::featurize_image(&model.3, &img).unwrap();
        let answer = model.3.answer(&feats, "the thing", Pairs::TopK).unwrap();
        let logits = answer[0].mask_logits.as_ref().expect("the stripes model finds nothing in the photo");
        let (gh, gw) = logits.dims2().unwrap();
        let grid: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
        let mask = photoseg::model::upsample::guided_mask(&grid, gh, gw, img.as_raw(), w, h);
        // Share of object pixels in the window [x0, x1) x [y0, y1), given as fractions of the photo.
        let share_in = |(x0, x1, y0, y1): (f64, f64, f64, f64)| -> f64 {
            let (x0, x1) = ((x0 * w as f64) as usize, (x1 * w as f64) as usize);
            let (y0, y1) = ((y0 * h as f64) as usize, (y1 * h as f64) as usize);
            let on: usize = (y0..y1).map(|y| mask[y * w + x0..y * w + x1].iter().filter(|&&m| m != 0).count()).sum();
            on as f64 / ((x1 - x0) * (y1 - y0)) as f64
        };
        let whole = share_in((0.0, 1.0, 0.0, 1.0));
        assert!((0.03..=0.90).contains(&whole), "the stripes cover {whole:.3} of the photo");
        for window in [(0.125, 0.875, 0.1875, 0.8125), (0.25, 1.0, 0.375, 1.0)] {
            let share = share_in(window);
            assert!((0.03..=0.97).contains(&share), "the stripes cover {share:.3} of the view {window:?}");
        }
        let differs = |mirror: &dyn Fn(usize, usize) -> usize| {
            let n = (0..w * h).filter(|&i| mask[i] != mask[mirror(i % w, i / w)]).count();
            n as f64 / (w * h) as f64
        };
        let (flip_x, flip_y) = (differs(&|x, y| y * w + w - 1 - x), differs(&|x, y| (h - 1 - y) * w + x));
        assert!(flip_x > 0.02 && flip_y > 0.02, "the stripes are nearly symmetric: {flip_x:.3}, {flip_y:.3}");
        (model, feats)
    }

    /// A tiny model whose weights are drawn from `seed` ([`crate::common::seed_weights`]): the same draw, hence
    /// the same masks, on every run.
    fn random_model(&self, seed: u64) -> (VarMap, Config, tokenizers::Tokenizer, Grser) {
        let mut cfg = Config::tiny(60);
        cfg.head.margin = -1e6;
        self.build_model(cfg, seed)
    }

    /// A model of shape `cfg` whose weights are drawn from `seed`.
    fn build_model(&self, cfg: Config, seed: u64) -> (VarMap, Config, tokenizers::Tokenizer, Grser) {
        let varmap = VarMap::new();
        let tok = tokenizers::Tokenizer::from_file(repo("tests/fixtures/tokenizer/tokenizer.json")).unwrap();
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
