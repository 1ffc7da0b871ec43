//! Training on CPU: a tiny model on a tiny synthetic set. The loss falls, every parameter moves (so every
//! one receives a gradient: weight decay is off here, so nothing else could move it), and a run stopped
//! at a checkpoint and resumed ends with the same weights as one that never stopped.
use std::collections::HashMap;

use candle_core::{Device, Tensor};
use photoseg::model::grser::Config;
use photoseg::synth::{self, SynthConfig, SynthDataset};
use photoseg::train::data::TrainSet;
use photoseg::train::optim::AdamWConfig;
use photoseg::train::{vocab, Stage, TrainConfig, Trainer};

/// [`tiny_set`] with every photo's attribute labels attached (what the features stage and the
/// attribute losses need).
fn labelled_tiny_set(dir: &std::path::Path) -> TrainSet {
    let mut set = tiny_set(dir);
    let ds = SynthDataset::open(dir).unwrap();
    let grid = photoseg::train::data::mask_grid(64);
    set.attach_attributes(photoseg::train::attributes::synth_labels(&ds, "train", grid).unwrap());
    set
}

fn tiny_set(dir: &std::path::Path) -> TrainSet {
    let cfg = SynthConfig {
        seed: 7,
        albums_train: 2,
        albums_val: 0,
        albums_heldout: 1,
        image_size: 64,
        photos_min: 4,
        photos_max: 6,
        ..SynthConfig::default()
    };
    synth::generate(&cfg, dir, |_, _| {}).unwrap();
    let groups = photoseg::data::format::synth_groups(dir, "train").unwrap().into_iter().take(1).collect();
    TrainSet::new(groups, 64).unwrap()
}

fn model_config() -> (Config, tokenizers::Tokenizer) {
    let tok = vocab::wordpiece_tokenizer(&synth::vocabulary()).unwrap();
    let mut cfg = Config::tiny(tok.get_vocab_size(true));
    cfg.image_size = 64;
    (cfg, tok)
}

fn train_config(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        groups_per_step: 1,
        group_size: 4,
        optim: AdamWConfig { lr: 3e-3, weight_decay: 0.0, ..AdamWConfig::default() },
        warmup: 0.0,
        small_group_every: 0,
        seed: 1,
        ..TrainConfig::default()
    }
}

/// [`train_config`] with every optional loss term at weight 0 (the paper's CE and triplet remain), so a
/// test of one term sees that term's own loss and gradients.
fn without_optional_terms(steps: usize) -> TrainConfig {
    TrainConfig {
        lambda_mirror: 0.0,
        dice: 0.0,
        neg_ce: 0.0,
        separation: 0.0,
        language_map: 0.0,
        ..train_config(steps)
    }
}

fn weights(t: &Trainer) -> HashMap<String, Tensor> {
    t.varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap())).collect()
}

#[test]
fn loss_falls_and_every_parameter_moves() {
    let dir = tempfile::tempdir().unwrap();
    let set = tiny_set(dir.path());
    // Swin's own patch projection, and the convolutional stem (swin.conv_stem) in its place.
    for stem in [None, Some(8)] {
        let (mut cfg, tok) = model_config();
        cfg.swin.conv_stem = stem;
        loss_falls_and_every_parameter_moves_with(&set, cfg, tok);
    }
}

fn loss_falls_and_every_parameter_moves_with(set: &TrainSet, cfg: Config, tok: tokenizers::Tokenizer) {
    let steps = 24;
    // One group, one expression: the mirror term (anti-expression against the complement) pulls the
    // decoder the other way until BERT has learnt to tell "<no> x" from "x", which takes far longer
    // than a test; the paper's other terms are on.
    let tc = TrainConfig { lambda_mirror: 0.0, ..train_config(steps) };
    let mut trainer = Trainer::new(&cfg, tok, &tc, None, &Device::Cpu).unwrap();
    let before = weights(&trainer);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let s = trainer.train_step(set).unwrap();
        assert!(s.loss.is_finite(), "loss is {}", s.loss);
        // The cross entropy: the triplet weight grows with t / T, so the total alone need not fall.
        losses.push(s.ce);
    }
    let first = losses[..4].iter().sum::<f32>() / 4.0;
    let last = losses[steps - 4..].iter().sum::<f32>() / 4.0;
    assert!(last < 0.6 * first, "cross entropy did not fall (stem {:?}): {losses:?}", cfg.swin.conv_stem);
    let after = weights(&trainer);
    let mut still: Vec<&String> = before
        .iter()
        .filter(|(k, v)| {
            let d = (*v - &after[*k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            d == 0.0
        })
        .map(|(k, _)| k)
        .collect();
    still.sort();
    assert!(
        still.is_empty(),
        "{} of {} parameters never moved (stem {:?}): {still:?}",
        still.len(),
        before.len(),
        cfg.swin.conv_stem
    );
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let set = tiny_set(&dir.path().join("data"));
    let (cfg, tok) = model_config();
    let tc = train_config(6);

    let mut straight = Trainer::new(&cfg, tok.clone(), &tc, None, &Device::Cpu).unwrap();
    // Same initial weights for both runs: start the second from the first's initial state.
    let init = weights(&straight);
    for _ in 0..6 {
        straight.train_step(&set).unwrap();
    }

    let out = dir.path().join("run");
    let mut first = Trainer::new(&cfg, tok.clone(), &tc, Some(&init), &Device::Cpu).unwrap();
    for _ in 0..3 {
        first.train_step(&set).unwrap();
    }
    first.save(&out).unwrap();
    drop(first);
    // A checkpoint whose settings name a field this build does not know still resumes: only the steps
    // and the seed identify the run.
    let state = out.join(std::fs::read_to_string(out.join("latest")).unwrap().trim()).join("state.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    json["train"]["retired_knob"] = 1.0.into();
    std::fs::write(&state, json.to_string()).unwrap();
    let mut resumed = Trainer::new(&cfg, tok, &tc, Some(&init), &Device::Cpu).unwrap();
    assert!(resumed.resume(&out).unwrap(), "no checkpoint found in {}", out.display());
    assert_eq!(resumed.step, 3);
    for _ in 0..3 {
        resumed.train_step(&set).unwrap();
    }
    let (a, b) = (weights(&straight), weights(&resumed));
    for (k, v) in &a {
        let d = (v - &b[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-6, "{k} differs by {d} after resuming");
    }
}

#[test]
fn resume_refuses_a_checkpoint_of_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let set = tiny_set(&dir.path().join("data"));
    let (cfg, tok) = model_config();
    let mut t = Trainer::new(&cfg, tok.clone(), &train_config(4), None, &Device::Cpu).unwrap();
    t.train_step(&set).unwrap();
    t.save(&dir.path().join("run")).unwrap();
    let mut other = Trainer::new(&cfg, tok, &train_config(8), None, &Device::Cpu).unwrap();
    let err = other.resume(&dir.path().join("run")).unwrap_err().to_string();
    assert!(err.contains("4 steps") && err.contains("another --out"), "{err}");
}

/// The dense attribute supervision (`attributes`): labels for every photo of the synthetic set, a loss
/// that falls when it alone trains, and a gradient for its heads and for the backbone under them.
#[test]
fn attribute_supervision_labels_every_photo_falls_and_moves_its_heads() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = tiny_set(dir.path());
    let ds = SynthDataset::open(dir.path()).unwrap();
    let grid = photoseg::train::data::mask_grid(64);
    let labels = photoseg::train::attributes::synth_labels(&ds, "train", grid).unwrap();
    let n = set.len();
    assert_eq!(set.attach_attributes(labels), n, "every photo of the pool has labels");
    // Labels agree with the masks: where a positive's mask is on, the colour label is that of an object.
    let g = &set.groups[0];
    for (slot, (i, _)) in g.positives.iter().enumerate() {
        let color = set.attributes[*i].as_ref().unwrap().color.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let m = set.mask(0, slot, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let on: Vec<u32> = m.iter().zip(&color).filter(|(m, _)| **m == 1).map(|(_, c)| *c).collect();
        let object = on.iter().filter(|&&c| c > 0).count();
        assert!(object * 10 >= on.len() * 9, "mask cells labelled background: {on:?}");
    }
    let (cfg, tok) = model_config();
    let steps = 20;
    // The attribute term alone (every other weight 0), so the test sees its own loss and gradients.
    let tc = TrainConfig { attributes: 1.0, ..without_optional_terms(steps) };
    let mut trainer = Trainer::new(&cfg, tok, &tc, None, &Device::Cpu).unwrap();
    let before = weights(&trainer);
    assert!(before.keys().any(|k| k.starts_with("aux.attributes.")), "attribute heads are trained");
    let mut losses = Vec::new();
    for _ in 0..steps {
        losses.push(trainer.train_step(&set).unwrap().attributes);
    }
    assert!(losses[steps - 1] < 0.7 * losses[0], "attribute loss did not fall: {losses:?}");
    let after = weights(&trainer);
    for name in [
        "aux.attributes.coarse.weight",
        "aux.attributes.fine.weight",
        "aux.attributes.mid.weight",
        "neck.v.weight",
        "neck.lat0.weight",
        "neck.lat1.weight",
    ] {
        let d = (&before[name] - &after[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d > 0.0, "{name} never moved");
    }
    // Without labels the run refuses rather than silently skipping the term.
    // The photos are read by the step that draws them: their folder outlives the set.
    let bare_dir = tempfile::tempdir().unwrap();
    let mut bare = tiny_set(bare_dir.path());
    bare.attributes.iter_mut().for_each(|a| *a = None);
    let err = format!("{:#}", trainer.train_step(&bare).unwrap_err());
    assert!(err.contains("attribute labels"), "{err}");
}

/// A one-stage recipe for the CLI tests: the built-in shape with `model` added under `[model]`, one
/// step of one group of 4 photos, with `train` added to the stage's settings.
fn write_recipe(dir: &std::path::Path, name: &str, model: &str, train: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[model]\npreset = \"builtin\"\n{model}\n\n[[stage]]\nname = \"joint\"\n[stage.train]\n\
         steps = 1\ngroups_per_step = 1\ngroup_size = 4\n{train}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `photoseg train --data DATA --out OUT` with `args` after them.
fn photoseg_train(data: &std::path::Path, out: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_photoseg"))
        .args(["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn read_config(model: &std::path::Path) -> Config {
    serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap()
}

#[test]
fn a_recipe_sets_the_lateral_width_and_the_cache_codec_of_the_model_it_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("synth");
    tiny_set(&data);
    let recipe = write_recipe(tmp.path(), "a.toml", "lateral = 4\ncache_codec = \"lr8\"", "");
    let out = photoseg_train(&data, &tmp.path().join("a"), &["--recipe", recipe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = read_config(&tmp.path().join("a/model"));
    assert_eq!((cfg.head.lateral, cfg.cache_codec.as_deref()), (4, Some("lr8")));
    assert_eq!(cfg.cache_codec().unwrap(), photoseg::model::codec::FeatureCodec::LowRank8);

    let recipe = write_recipe(tmp.path(), "b.toml", "cache_codec = \"zip\"", "");
    let out = photoseg_train(&data, &tmp.path().join("b"), &["--recipe", recipe.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown codec") && err.contains("lr8"), "{err}");
    assert!(err.contains("b.toml") && err.contains("cache_codec"), "the file and the key are named: {err}");
    assert!(!tmp.path().join("b").exists(), "a refused run writes nothing");
}

#[test]
fn a_recipe_sets_the_input_side_and_one_swin_cannot_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("synth");
    tiny_set(&data);
    let train = |out: &str, size: &str| {
        let recipe =
            write_recipe(tmp.path(), &format!("{out}.toml"), &format!("position = true\nimage_size = {size}"), "");
        photoseg_train(&data, &tmp.path().join(out), &["--recipe", recipe.to_str().unwrap()])
    };
    let out = train("a", "96");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = read_config(&tmp.path().join("a/model"));
    // 96 px: V is the 1/16 grid, 6 x 6, and the position embedding follows it.
    assert_eq!((cfg.image_size, cfg.swin.img_size, cfg.head.position_grid), (96, Some(96), Some(6)));
    photoseg::model::checkpoint::load_model_dir(&tmp.path().join("a/model"), &candle_core::Device::Cpu).unwrap();

    let out = train("b", "100");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("multiple of 32") && err.contains("image_size"), "{err}");
    assert!(!tmp.path().join("b").exists(), "a refused run writes nothing");
}

/// Two stages of one step each, the second from the first one's weights.
const TWO_STAGES: &str = r#"
[model]
preset = "builtin"

[[stage]]
name = "joint"
[stage.train]
steps = 1
groups_per_step = 1
group_size = 4

[[stage]]
name = "again"
[stage.train]
steps = 1
groups_per_step = 1
group_size = 4
"#;

/// A recipe's stages run in order, each in its own folder under OUT; the same command run again
/// resumes each stage from its checkpoints (here every stage is done, so no step runs again);
/// `--steps` sets the steps of a one-stage recipe and is refused for one of several stages.
#[test]
fn the_stages_of_a_recipe_run_in_order_and_a_second_run_resumes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("synth");
    tiny_set(&data);
    let recipe = tmp.path().join("two.toml");
    std::fs::write(&recipe, TWO_STAGES).unwrap();
    let out = tmp.path().join("run");
    let args = ["--recipe", recipe.to_str().unwrap()];
    let first = photoseg_train(&data, &out, &args);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(err.contains("stage 1/2: joint") && err.contains("stage 2/2: again"), "{err}");
    let classifier = |dir: &str| {
        let w = candle_core::safetensors::load(out.join(dir).join("model.safetensors"), &Device::Cpu).unwrap();
        w["head.decoder.classifier.weight"].clone()
    };
    // The second stage trained the first one's weights one step further; OUT/model is the last stage's.
    let (a, b) = (classifier("joint/model"), classifier("again/model"));
    assert!(max_change(&a, &b) > 0.0, "the second stage did not train");
    assert_eq!(max_change(&b, &classifier("model")), 0.0);

    let again = photoseg_train(&data, &out, &args);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert_eq!(err.matches("resuming at step 1 from").count(), 2, "{err}");
    assert_eq!(max_change(&b, &classifier("model")), 0.0, "a finished run trained again");

    let steps = photoseg_train(&data, &tmp.path().join("r"), &["--recipe", recipe.to_str().unwrap(), "--steps", "2"]);
    let err = String::from_utf8_lossy(&steps.stderr);
    assert!(!steps.status.success() && err.contains("2 stages (joint, again)"), "{err}");
    let one = write_recipe(tmp.path(), "one.toml", "", "");
    let steps = photoseg_train(&data, &tmp.path().join("s"), &["--recipe", one.to_str().unwrap(), "--steps", "2"]);
    let err = String::from_utf8_lossy(&steps.stderr);
    assert!(steps.status.success() && err.contains("stage 1/1: joint (Joint, 2 steps)"), "{err}");
}

/// Without `--recipe` the built-in model's recipe runs; what the command line gives is refused where the
/// recipe contradicts it, before anything is read or written.
#[test]
fn the_command_line_refuses_what_the_recipe_contradicts() {
    let tmp = tempfile::tempdir().unwrap();
    // Never read: every refusal comes first.
    let data = tmp.path().join("no-data");
    let out = tmp.path().join("run");
    let refused = |args: &[&str], want: &[&str]| {
        let o = photoseg_train(&data, &out, args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success() && want.iter().all(|w| err.contains(w)), "{args:?}: {err}");
    };
    refused(&["--steps", "5"], &["built-in recipe", "2 stages (features, head)"]);
    refused(&["--swin-weights", "swin.pth"], &["preset is \"paper\""]);
    let plain = std::fs::read_to_string(write_recipe(tmp.path(), "plain.toml", "", "")).unwrap();
    let with_init = tmp.path().join("init.toml");
    std::fs::write(&with_init, format!("init = \"base\"\n{plain}")).unwrap();
    refused(&["--recipe", with_init.to_str().unwrap(), "--init", "other"], &["--init other", "give one"]);
    let paper = tmp.path().join("paper.toml");
    std::fs::write(&paper, plain.replace("\"builtin\"", "\"paper\"")).unwrap();
    refused(&["--recipe", paper.to_str().unwrap(), "--bert-weights", "bert.safetensors"], &["--tokenizer"]);
    let typo = write_recipe(tmp.path(), "typo.toml", "", "gray_shape = 1.0");
    refused(&["--recipe", typo.to_str().unwrap()], &["typo.toml", "gray_shape"]);
    assert!(!out.exists(), "a refused run writes nothing");
}

fn max_change(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

/// The features stage (`stage = "features"`): the dense attribute loss alone falls on turned photos, and
/// it trains the backbone and its own decoder (which reads Swin's stage outputs); the neck and the
/// referring head are left alone (they are not in the loss); photos without labels are refused.
#[test]
fn the_features_stage_trains_the_backbone_on_every_object() {
    let dir = tempfile::tempdir().unwrap();
    let set = labelled_tiny_set(dir.path());
    let (cfg, tok) = model_config();
    let steps = 30;
    let tc = TrainConfig { stage: Stage::Features, ..without_optional_terms(steps) };
    let mut trainer = Trainer::new(&cfg, tok, &tc, None, &Device::Cpu).unwrap();
    let before = weights(&trainer);
    assert!(before.keys().any(|k| k.starts_with("aux.dense.")), "the features stage has its decoder");
    let losses: Vec<f32> = (0..steps).map(|_| trainer.train_step(&set).unwrap().loss).collect();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&losses[steps - 5..]) < 0.7 * mean(&losses[..5]), "dense loss did not fall: {losses:?}");
    let after = weights(&trainer);
    for name in ["swin.patch_embed.proj.weight", "swin.layers.2.blocks.0.mlp.fc1.weight", "aux.dense.classifier.weight"]
    {
        assert!(max_change(&before[name], &after[name]) > 0.0, "{name} never moved");
    }
    for name in ["neck.v.weight", "head.decoder.classifier.weight", "head.tqm.w_l.weight"] {
        assert_eq!(max_change(&before[name], &after[name]), 0.0, "{name} moved without being in the loss");
    }
    // The photos are read by the step that draws them: their folder outlives the set.
    let bare_dir = tempfile::tempdir().unwrap();
    let mut bare = tiny_set(bare_dir.path());
    bare.attributes.iter_mut().for_each(|a| *a = None);
    let err = format!("{:#}", trainer.train_step(&bare).unwrap_err());
    assert!(err.contains("attribute labels"), "{err}");
}

/// The stem's BatchNorm (`swin.stem_batch_norm`): trained by gradient in the features stage, its
/// running statistics averaged from the batches (not by AdamW), and used once the model is loaded.
#[test]
fn the_stem_batch_norm_trains_and_keeps_running_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let set = labelled_tiny_set(dir.path());
    let (mut cfg, tok) = model_config();
    cfg.swin.conv_stem = Some(8);
    cfg.swin.stem_batch_norm = true;
    let tc = TrainConfig { stage: Stage::Features, ..without_optional_terms(6) };
    let mut trainer = Trainer::new(&cfg, tok, &tc, None, &Device::Cpu).unwrap();
    let before = weights(&trainer);
    for _ in 0..6 {
        trainer.train_step(&set).unwrap();
    }
    let after = weights(&trainer);
    for name in ["swin.patch_embed.stem_bn.0.weight", "swin.patch_embed.stem_bn.1.bias"] {
        assert!(max_change(&before[name], &after[name]) > 0.0, "{name} never moved");
    }
    // 6 steps of momentum 0.1 from (0, 1): 1 - 0.9^6 = 47 % of the way to the batches' statistics.
    let mean: Vec<f32> = after["swin.patch_embed.stem_bn.0.running_mean"].to_vec1().unwrap();
    let var: Vec<f32> = after["swin.patch_embed.stem_bn.0.running_var"].to_vec1().unwrap();
    assert!(mean.iter().any(|m| m.abs() > 1e-3), "running mean never moved: {mean:?}");
    assert!(var.iter().all(|v| *v > 0.0) && var.iter().any(|v| (v - 1.0).abs() > 1e-3), "{var:?}");
    // Indexing normalises with the running statistics: a photo's features do not depend on the photos
    // beside it in the batch, as they do while training.
    let photos = crate::common::seeded_normal(&[2, 3, 64, 64], 1);
    let v_of_first = |batch: &Tensor| trainer.model.featurize(batch).unwrap().v.get(0).unwrap();
    let first = photos.narrow(0, 0, 1).unwrap();
    trainer.model.swin.set_training(false);
    assert_eq!(max_change(&v_of_first(&first), &v_of_first(&photos)), 0.0, "indexing used batch statistics");
    trainer.model.swin.set_training(true);
    assert!(max_change(&v_of_first(&first), &v_of_first(&photos)) > 1e-4, "training did not use batch statistics");
    // A model without the option has no such weights, and one with it needs a stem.
    let (plain, tok) = model_config();
    let t = Trainer::new(&plain, tok.clone(), &tc, None, &Device::Cpu).unwrap();
    assert!(!weights(&t).keys().any(|k| k.contains("stem_bn")));
    let mut stemless = plain.clone();
    stemless.swin.stem_batch_norm = true;
    let err = Trainer::new(&stemless, tok, &tc, None, &Device::Cpu).err().expect("refused").to_string();
    assert!(err.contains("conv_stem"), "{err}");
}

/// The head stage (`stage = "head"`): Swin is frozen (its weights do not move at all), the neck, text
/// encoder and head learn, and the referring cross entropy falls as in a joint run.
#[test]
fn the_head_stage_keeps_swin_frozen_and_trains_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let set = tiny_set(dir.path());
    let (cfg, tok) = model_config();
    let steps = 24;
    let tc = TrainConfig { stage: Stage::Head, lambda_mirror: 0.0, ..train_config(steps) };
    let mut trainer = Trainer::new(&cfg, tok, &tc, None, &Device::Cpu).unwrap();
    let before = weights(&trainer);
    let ce: Vec<f32> = (0..steps).map(|_| trainer.train_step(&set).unwrap().ce).collect();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&ce[steps - 4..]) < 0.6 * mean(&ce[..4]), "cross entropy did not fall: {ce:?}");
    let after = weights(&trainer);
    let swin: Vec<&String> = before.keys().filter(|k| k.starts_with("swin.")).collect();
    assert!(!swin.is_empty());
    for name in swin {
        assert_eq!(max_change(&before[name], &after[name]), 0.0, "{name} moved in the head stage");
    }
    for name in ["neck.v.weight", "text.embeddings.word_embeddings.weight", "head.decoder.classifier.weight"] {
        assert!(max_change(&before[name], &after[name]) > 0.0, "{name} never moved");
    }
}

/// A referent model (`referent` in its config): the features stage trains Swin and the model's own dense
/// trunk; the head stage keeps both frozen, sets the trunk's BatchNorm to the pool's statistics, and
/// trains the text encoder and the referent head until the referring loss falls; the trained model
/// then answers through the same calls as the query engine, with masks on the trunk's 1/4 grid.
#[test]
fn a_referent_model_trains_in_two_stages_and_answers() {
    use photoseg::model::grser::ReferentConfig;
    let dir = tempfile::tempdir().unwrap();
    let set = labelled_tiny_set(dir.path());
    let (mut cfg, tok) = model_config();
    cfg.referent = Some(ReferentConfig::default());
    // Not jointly: the head reads what the features stage taught the trunk.
    let err = Trainer::new(&cfg, tok.clone(), &train_config(2), None, &Device::Cpu).err().expect("refused").to_string();
    assert!(err.contains("stages"), "{err}");

    let features = TrainConfig { stage: Stage::Features, ..without_optional_terms(4) };
    let mut trainer = Trainer::new(&cfg, tok.clone(), &features, None, &Device::Cpu).unwrap();
    let before = weights(&trainer);
    for _ in 0..4 {
        trainer.train_step(&set).unwrap();
    }
    let after = weights(&trainer);
    assert!(!after.keys().any(|k| k.starts_with("aux.dense.d3")), "the decoder reads the model's trunk");
    for name in [
        "dense.d3.conv.weight",
        "dense.d2.norm.weight",
        "aux.dense.classifier.weight",
        "swin.layers.0.blocks.0.mlp.fc1.weight",
    ] {
        assert!(max_change(&before[name], &after[name]) > 0.0, "{name} never moved in the features stage");
    }
    for name in ["referent.phi1.weight", "referent.words.weight"] {
        assert_eq!(max_change(&before[name], &after[name]), 0.0, "{name} moved in the features stage");
    }

    let steps = 40;
    let head = TrainConfig { stage: Stage::Head, ..train_config(steps) };
    let mut trainer = Trainer::new(&cfg, tok, &head, Some(&after), &Device::Cpu).unwrap();
    let losses: Vec<f32> = (0..steps).map(|_| trainer.train_step(&set).unwrap().loss).collect();
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&losses[steps - 5..]) < 0.7 * mean(&losses[..5]), "referent loss did not fall: {losses:?}");
    let trained = weights(&trainer);
    for (name, w) in &after {
        if name.starts_with("swin.") || (name.starts_with("dense.") && !name.contains("running_")) {
            assert_eq!(max_change(w, &trained[name]), 0.0, "{name} moved in the head stage");
        }
    }
    for name in ["referent.phi1.weight", "referent.words.weight", "text.embeddings.word_embeddings.weight"] {
        assert!(max_change(&after[name], &trained[name]) > 0.0, "{name} never moved in the head stage");
    }
    let var: Vec<f32> = trained["dense.d2.norm.running_var"].to_vec1().unwrap();
    assert!(var.iter().any(|v| (v - 1.0).abs() > 1e-3), "the trunk's statistics were never measured: {var:?}");

    // Answering: E through the feature codec (no lateral but the first), the decision, the masks.
    let model = &trainer.model;
    let photos = set.images(&[0, 1, 2]).unwrap();
    let feats = model.featurize(&photos).unwrap();
    assert_eq!(feats.lat0.dims4().unwrap(), (3, 32, 16, 16), "E at 1/4 of 64 px");
    assert_eq!(feats.v.dims4().unwrap(), (3, 32, 8, 8), "E averaged to 1/8 for the decision");
    let bytes = photoseg::model::codec::encode(&feats, photoseg::model::codec::FeatureCodec::F16).unwrap();
    let back = photoseg::model::codec::decode(&bytes, &Device::Cpu).unwrap();
    assert!(max_change(&back.lat0, &feats.lat0) < 1e-2);
    let text = model.encode_expression(&set.groups[0].expression).unwrap();
    let (v, dims) = (back.v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [3, 32, 8, 8]);
    let mut decision = model.decide_values(v, dims, &text).unwrap();
    // Every photo positive at a threshold below every score: masks for all three.
    let low = decision.d_pos.iter().map(|d| -d).fold(f32::INFINITY, f32::min) - 1.0;
    let mut model_low = Trainer::new(
        &cfg,
        vocab::wordpiece_tokenizer(&synth::vocabulary()).unwrap(),
        &head,
        Some(&trained),
        &Device::Cpu,
    )
    .unwrap()
    .model;
    model_low.set_threshold(low as f64);
    decision = model_low.decide(&back.v, &text, photoseg::model::grser::Pairs::TopK).unwrap();
    assert_eq!(decision.positives, vec![0, 1, 2]);
    let logits = model_low.mask_logits(decision.z_positives.as_ref().unwrap(), &back.laterals()).unwrap();
    assert_eq!(logits.dims3().unwrap(), (3, 16, 16));
    // The decision's score is the peak of the mask's map averaged over 2 x 2 cells (up to the cache's
    // f16 rounding: the decision reads the stored average, the mask the stored cells).
    let peak: Vec<f32> =
        logits.unsqueeze(1).unwrap().avg_pool2d(2).unwrap().flatten_from(1).unwrap().max(1).unwrap().to_vec1().unwrap();
    for (p, d) in peak.iter().zip(&decision.d_pos) {
        assert!((p + d).abs() < 1e-2 * p.abs().max(1.0), "peak {p} vs score {}", -d);
    }
}

/// A features stage trained without the referent head keeps its trunk under `aux.dense.`; a referent
/// model started from it takes that trunk as its own.
#[test]
fn a_referent_model_takes_its_trunk_from_a_features_stage_trained_without_one() {
    use photoseg::model::grser::ReferentConfig;
    let dir = tempfile::tempdir().unwrap();
    let set = labelled_tiny_set(dir.path());
    let (plain, tok) = model_config();
    let features = TrainConfig { stage: Stage::Features, ..without_optional_terms(1) };
    let mut trainer = Trainer::new(&plain, tok.clone(), &features, None, &Device::Cpu).unwrap();
    trainer.train_step(&set).unwrap();
    let trained = weights(&trainer);
    let mut cfg = plain.clone();
    cfg.referent = Some(ReferentConfig::default());
    let head = TrainConfig { stage: Stage::Head, ..train_config(1) };
    let referent = weights(&Trainer::new(&cfg, tok, &head, Some(&trained), &Device::Cpu).unwrap());
    for part in ["d3.conv.weight", "d2.conv.bias", "d2.norm.weight"] {
        let (from, to) = (&trained[&format!("aux.dense.{part}")], &referent[&format!("dense.{part}")]);
        assert_eq!(max_change(from, to), 0.0, "dense.{part} is not the features stage's");
    }
}
