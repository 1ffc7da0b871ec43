//! Training and evaluation on real data sets' layouts through the real binary: the committed RefCOCO
//! fixture (tests/fixtures/data/refcoco: 3 G-RefC groups in its train split, 7 photos) and Co-SOD fixture
//! (tests/fixtures/data/cosod/CoCA: 2 groups), a tiny built-in-shaped model at 64 px, a few steps. Also
//! the streamed training set: nothing is decoded until a step draws it, and the head stage's frozen
//! Swin gives the same step whether its outputs are kept or computed each step.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use candle_core::{Device, Tensor};
use photoseg::data::format::{DataSource, Format};
use photoseg::data::{Group, GroupPhoto};
use photoseg::train::data::TrainSet;
use photoseg::train::{vocab, Stage, TrainConfig, Trainer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data").join(name)
}

fn refcoco() -> PathBuf {
    fixture("refcoco")
}

fn coca() -> PathBuf {
    fixture("cosod/CoCA")
}

/// A joint stage of 3 steps (a checkpoint after each) and a head stage of 2, one group of 4 photos a
/// step, in the built-in shape at 64 px.
const TINY: &str = r#"
[model]
preset = "builtin"
image_size = 64

[[stage]]
name = "joint"
[stage.train]
steps = 3
groups_per_step = 1
group_size = 4
checkpoint_every = 1

[[stage]]
name = "head"
[stage.train]
stage = "head"
steps = 2
groups_per_step = 1
group_size = 4
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn photoseg(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_photoseg")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `photoseg train --format FORMAT --data DATA --out OUT --recipe RECIPE` and `more`.
fn train(format: &str, data: &Path, out: &Path, recipe: &Path, more: &[&str]) -> Output {
    let mut args = vec!["train", "--format", format, "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--recipe", recipe.to_str().unwrap()]);
    args.extend(more);
    photoseg(&args)
}

fn weights(model: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn max_change(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// A RefCOCO run stopped twice (`--pause-after`: once inside the joint stage, once inside the head
/// stage) and resumed by the same command ends with the weights of a run never stopped; the head stage
/// leaves Swin as the joint stage left it; the model says what it was trained on.
#[test]
fn a_refcoco_run_paused_and_resumed_ends_as_one_never_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write(tmp.path(), "tiny.toml", TINY);
    // Both runs start from one set of weights (a from-scratch run draws its embeddings unseeded): the
    // checkpoint of a first run paused after one step, a model directory like any other.
    let base = tmp.path().join("base");
    let o = train("refcoco", &refcoco(), &base, &recipe, &["--pause-after", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let init = base.join("joint/ckpt-0000001");
    let init = ["--init", init.to_str().unwrap()];
    let straight = tmp.path().join("straight");
    let o = train("refcoco", &refcoco(), &straight, &recipe, &init);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("3 groups (7 positives), 7 photos from") && err.contains("(refcoco)"), "{err}");
    assert!(err.contains("stage 2/2: head") && err.contains("model written to"), "{err}");

    let paused = tmp.path().join("paused");
    let init = [init[0], init[1], "--pause-after", "2"];
    let o = train("refcoco", &refcoco(), &paused, &recipe, &init);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("paused at step 2 of 3") && err.contains("run the same command again"), "{err}");
    assert!(!paused.join("model").exists() && !paused.join("head").exists(), "a paused run wrote on: {err}");
    // One step finishes the joint stage, one more is the head stage's first.
    let o = train("refcoco", &refcoco(), &paused, &recipe, &init);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming at step 2 from") && err.contains("paused at step 1 of 2"), "{err}");
    let o = train("refcoco", &refcoco(), &paused, &recipe, &init[..2]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("resuming at step 3 from") && err.contains("resuming at step 1 from"), "{err}");

    let (a, b) = (weights(&straight.join("model")), weights(&paused.join("model")));
    assert_eq!(a.len(), b.len());
    for (name, w) in &a {
        let d = max_change(w, &b[name]);
        assert!(d < 1e-6, "{name} differs by {d} after pausing and resuming");
    }
    let joint = weights(&straight.join("joint/model"));
    for (name, w) in joint.iter().filter(|(k, _)| k.starts_with("swin.")) {
        assert_eq!(max_change(w, &a[name]), 0.0, "{name} moved in the head stage");
    }
    assert!(max_change(&joint["head.decoder.classifier.weight"], &a["head.decoder.classifier.weight"]) > 0.0);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("model/config.json")).unwrap()).unwrap();
    let description = cfg["description"].as_str().unwrap();
    assert!(
        description.contains("refcoco data set refcoco") && description.contains("built-in shape"),
        "{description}"
    );
}

/// `photoseg eval --format refcoco`: the split's G-RefC groups (1:1), `val` by default (empty in the
/// fixture: said plainly), an unknown split named with the ones there are.
#[test]
fn eval_scores_a_refcoco_split_and_says_when_one_is_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe =
        write(tmp.path(), "one.toml", &TINY.replace("steps = 3", "steps = 1").replace("steps = 2", "steps = 1"));
    let out = tmp.path().join("run");
    let o = train("refcoco", &refcoco(), &out, &recipe, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = out.join("model");
    let data = refcoco();
    let eval = |more: &[&str]| {
        let mut args = vec!["eval", "--format", "refcoco", "--data", data.to_str().unwrap()];
        args.extend(["--model", model.to_str().unwrap()]);
        args.extend(more);
        photoseg(&args)
    };
    let o = eval(&["--split", "train", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // "man on left" 3 + 3, "red car" 2 + 2, "white dog" 2 + 2.
    assert_eq!((report["groups"].as_u64(), report["photos"].as_u64()), (Some(3), Some(14)), "{report}");
    assert_eq!(report["largest_group"].as_u64(), Some(6));
    for key in ["miou_all", "accuracy_positives", "accuracy_negatives", "oiou"] {
        let v = report[key].as_f64().unwrap_or_else(|| panic!("{key} in {report}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    let o = eval(&[]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("no groups in split \"val\"") && err.contains("refcoco"), "{err}");
    let o = eval(&["--split", "testA"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("testA") && err.contains("\"train\", \"val\""), "{err}");
    // The refs pickle itself names the data set as well as its folder; a wrong image folder is named.
    let o = eval(&["--split", "train", "--images", "/no/such/train2014"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("/no/such/train2014"), "{err}");
    let pickle = refcoco().join("refs(unc).p");
    let o = photoseg(&[
        "eval",
        "--format",
        "refcoco",
        "--data",
        pickle.to_str().unwrap(),
        "--split",
        "train",
        "--model",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("3 groups, 14 photos"), "{}", stderr(&o));
}

/// A Co-SOD root trains (every group, as many negatives from other groups as positives) and evaluates.
#[test]
fn a_cosod_root_trains_joint_and_head_stages_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write(tmp.path(), "tiny.toml", TINY);
    let out = tmp.path().join("run");
    let o = train("cosod", &coca(), &out, &recipe, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("2 groups (5 positives), 5 photos from") && err.contains("(cosod)"), "{err}");
    let o = photoseg(&[
        "eval",
        "--format",
        "cosod",
        "--data",
        coca().to_str().unwrap(),
        "--model",
        out.join("model").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Accordion 2 + 2, Teddy_Bear 3 + the 2 accordions (all there are).
    assert_eq!((report["groups"].as_u64(), report["photos"].as_u64()), (Some(2), Some(9)), "{report}");
    assert!(report["s_measure"].as_f64().is_some(), "{report}");
}

/// Real data has no attribute labels: a stage that learns from them is refused with a sentence that says
/// so, before anything is read or written; so is an image folder for a format that holds its photos.
#[test]
fn a_stage_that_needs_attribute_labels_refuses_real_data_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // The built-in recipe: a features stage first.
    let o = photoseg(&[
        "train",
        "--format",
        "refcoco",
        "--data",
        refcoco().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    for want in
        ["stage \"features\"", "attribute labels", "only `photoseg synth`", "a refcoco data set has none", "`joint`"]
    {
        assert!(err.contains(want), "{want:?} missing: {err}");
    }
    // A joint stage with the attribute term on, on Co-SOD.
    let recipe =
        write(tmp.path(), "attr.toml", &TINY.replace("checkpoint_every = 1", "checkpoint_every = 1\nattributes = 1.0"));
    let o = train("cosod", &coca(), &out, &recipe, &[]);
    let err = stderr(&o);
    assert!(
        !o.status.success() && err.contains("stage \"joint\"") && err.contains("a cosod data set has none"),
        "{err}"
    );
    let plain = write(tmp.path(), "plain.toml", TINY);
    let o = train("cosod", &coca(), &out, &plain, &["--images", "train2014"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("--images") && err.contains("cosod"), "{err}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

/// The training set indexes groups without reading a file: a photo that does not exist (or does not
/// decode) is found by the step that draws it, and the error names it.
#[test]
fn the_training_set_decodes_a_photo_only_when_a_step_draws_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut groups = DataSource::new(Format::Refcoco, &refcoco(), None).unwrap().train_groups().unwrap();
    let missing = tmp.path().join("gone.jpg");
    let corrupt = write(tmp.path(), "corrupt.jpg", "not a jpeg");
    groups.push(Group {
        expression: "thing that is not there".into(),
        photos: vec![
            GroupPhoto { image: missing.clone(), mask: groups[0].photos[0].mask.clone() },
            GroupPhoto { image: corrupt.clone(), mask: None },
        ],
    });
    let set = TrainSet::new(groups, 64).unwrap();
    assert_eq!((set.groups.len(), set.len()), (4, 9));
    let i = set.paths.iter().position(|p| p == &missing).unwrap();
    let err = format!("{:#}", set.images(&[0, i]).unwrap_err());
    assert!(err.contains("gone.jpg"), "{err}");
    let j = set.paths.iter().position(|p| p == &corrupt).unwrap();
    assert!(format!("{:#}", set.image(j).unwrap_err()).contains("corrupt.jpg"));
    let photos = set.images(&[0, 1, 2]).unwrap();
    assert_eq!(photos.dims4().unwrap(), (3, 3, 64, 64));
    // A positive's run-length mask, on the decoder's 1/4 grid: the object, not all of the photo.
    let mask = set.mask(0, 0, &Device::Cpu).unwrap();
    assert_eq!(mask.dims2().unwrap(), (16, 16));
    let on = mask.sum_all().unwrap().to_scalar::<u32>().unwrap();
    assert!(on > 0 && on < 256, "{on} of 256 cells");
}

/// The head stage keeps Swin's outputs of the pool when they fit its budget and runs the frozen Swin on
/// each step's photos when they do not; both take the same steps.
#[test]
fn the_head_stage_streams_a_pool_too_large_to_keep_and_takes_the_same_steps() {
    let groups = DataSource::new(Format::Refcoco, &refcoco(), None).unwrap().train_groups().unwrap();
    let set = TrainSet::new(groups, 64).unwrap();
    let tok = vocab::wordpiece_tokenizer(&photoseg::synth::vocabulary()).unwrap();
    let mut cfg = photoseg::model::grser::Config::tiny(tok.get_vocab_size(true));
    cfg.image_size = 64;
    let tc = TrainConfig { steps: 3, groups_per_step: 1, group_size: 4, stage: Stage::Head, ..TrainConfig::default() };
    let mut kept = Trainer::new(&cfg, tok.clone(), &tc, None, &Device::Cpu).unwrap();
    let init: HashMap<String, Tensor> =
        kept.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect();
    let mut streamed = Trainer::new(&cfg, tok, &tc, Some(&init), &Device::Cpu).unwrap();
    streamed.cache_bytes = 0;
    for t in 0..3 {
        let (a, b) = (kept.train_step(&set).unwrap(), streamed.train_step(&set).unwrap());
        assert!((a.loss - b.loss).abs() < 1e-5, "step {t}: loss {} kept, {} streamed", a.loss, b.loss);
    }
    let name = "head.decoder.classifier.weight";
    let w = |t: &Trainer| t.varmap.data().lock().unwrap()[name].as_tensor().copy().unwrap();
    assert!(max_change(&w(&kept), &w(&streamed)) < 1e-5);
    assert!(max_change(&w(&kept), &init[name]) > 0.0, "the head did not train");
}
