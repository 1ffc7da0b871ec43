//! `photoseg model init --preset paper` through the real binary: a paper-headed model from tiny
//! generated checkpoints, given as files, folders or repos of a test hub (tests/it/common/hub.rs); every
//! bad input refused with a sentence naming it, and never a half-written model folder; the hub offline,
//! a connection dropped midway and a download killed midway.
use std::path::{Path, PathBuf};

use candle_core::Device;
use photoseg::model::checkpoint::{load_model_dir, read_config, WEIGHTS_FILE};

use crate::common::checkpoints::{self, names_in, photoseg, stderr, Checkpoints};
use crate::common::hub::{offline_endpoint, Fault, TestHub, COMMIT};

fn init(swin: &str, bert: &str, out: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let args = ["model", "init", "--preset", "paper", "--swin", swin, "--bert", bert, "--image-size", "64"];
    let mut args = args.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    photoseg(&args, env)
}

/// Runs an init that must fail: its error holds every one of `words`, and `out`'s parent holds nothing
/// but what it held before (no model folder, no hidden partial copy).
fn refused(swin: &str, bert: &str, out: &Path, env: &[(&str, &str)], words: &[&str]) {
    let before = names_in(out.parent().unwrap());
    let o = init(swin, bert, out, env);
    let err = stderr(&o);
    assert!(!o.status.success(), "accepted: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    assert_eq!(names_in(out.parent().unwrap()), before, "left behind after: {err}");
}

fn setup() -> (tempfile::TempDir, Checkpoints, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoints::write(&tmp.path().join("ck"));
    let outs = tmp.path().join("outs");
    std::fs::create_dir_all(&outs).unwrap();
    (tmp, ck, outs)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The model loads, has the paper's head and the checkpoints' backbones (Swin's shape read from its
/// weights, BERT's from its config), and its config and card say that its head is untrained.
#[test]
fn model_init_makes_a_paper_headed_model_whose_card_says_its_head_is_untrained() {
    let (_tmp, ck, outs) = setup();
    let out = outs.join("grser");
    let o = init(s(&ck.swin), s(&ck.bert), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = read_config(&out).unwrap();
    let paper = photoseg::model::grser::Config::paper();
    let tiny = photoseg::model::grser::Config::tiny(checkpoints::VOCAB);
    assert_eq!((cfg.head.c_v, cfg.head.k, cfg.head.lateral), (paper.head.c_v, paper.head.k, paper.head.lateral));
    assert_eq!(
        (cfg.swin.embed_dim, &cfg.swin.depths, &cfg.swin.num_heads),
        (24, &tiny.swin.depths, &tiny.swin.num_heads)
    );
    assert_eq!((cfg.swin.window_size, cfg.swin.mlp_ratio), (tiny.swin.window_size, tiny.swin.mlp_ratio));
    assert_eq!(cfg.bert, tiny.bert);
    assert!(
        cfg.description.contains("freshly initialised") && cfg.description.contains("untrained"),
        "{}",
        cfg.description
    );
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("NOT trained") && card.contains("random weights"), "{card}");
    load_model_dir(&out, &Device::Cpu).unwrap();
    // The backbones are the checkpoints', exactly; BERT's `bert.` prefix is gone.
    let model = candle_core::safetensors::load(out.join(WEIGHTS_FILE), &Device::Cpu).unwrap();
    let swin = candle_core::safetensors::load(&ck.swin, &Device::Cpu).unwrap();
    let bert = candle_core::safetensors::load(ck.bert.join("model.safetensors"), &Device::Cpu).unwrap();
    for (ours, theirs) in [
        ("swin.layers.1.blocks.0.attn.qkv.weight", &swin["layers.1.blocks.0.attn.qkv.weight"]),
        ("text.encoder.layer.1.output.dense.weight", &bert["bert.encoder.layer.1.output.dense.weight"]),
    ] {
        assert_eq!(crate::common::max_abs_diff(&model[ours], theirs), 0.0, "{ours}");
    }
    assert!(model.contains_key("neck.v.weight") && model.keys().all(|k| !k.starts_with("text.cls")));
    // An existing folder is never written over.
    refused(s(&ck.swin), s(&ck.bert), &out, &[], &["already exists"]);
}

/// A missing file, a checkpoint of another architecture (a BERT given as Swin, a Swin with a tensor of
/// another shape, a BERT without a layer), a corrupt safetensors file, a config of another model type and
/// a tokenizer of another vocabulary: each is named, and nothing is left.
#[test]
fn model_init_refuses_bad_checkpoints_and_leaves_nothing() {
    let (tmp, ck, outs) = setup();
    let out = outs.join("grser");
    let bert_weights = ck.bert.join("model.safetensors");
    refused(
        "/nonexistent/swin.safetensors",
        s(&ck.bert),
        &out,
        &[],
        &["/nonexistent/swin.safetensors", "does not exist"],
    );
    refused(s(&ck.swin), "/nonexistent/bert", &out, &[], &["/nonexistent/bert", "does not exist"]);
    refused(s(&bert_weights), s(&ck.bert), &out, &[], &["not a Swin Transformer", "patch_embed.proj.weight"]);

    let edit = |from: &Path, name: &str, edit: &dyn Fn(&mut std::collections::HashMap<String, candle_core::Tensor>)| {
        let mut t = candle_core::safetensors::load(from, &Device::Cpu).unwrap();
        edit(&mut t);
        let path = tmp.path().join(name);
        candle_core::safetensors::save(&t, &path).unwrap();
        path
    };
    let wide = edit(&ck.swin, "wide.safetensors", &|t| {
        t.insert(
            "layers.2.blocks.1.mlp.fc2.weight".into(),
            candle_core::Tensor::zeros((96, 48), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    refused(s(&wide), s(&ck.bert), &out, &[], &["does not fit", "layers.2.blocks.1.mlp.fc2.weight is [96, 48]"]);

    let short_bert = tmp.path().join("short-bert");
    std::fs::create_dir_all(&short_bert).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(ck.bert.join(f), short_bert.join(f)).unwrap();
    }
    let w = edit(&bert_weights, "short-bert/model.safetensors", &|t| t.retain(|k, _| !k.contains("layer.1.")));
    assert!(w.is_file());
    refused(s(&ck.swin), s(&short_bert), &out, &[], &["does not fit", "encoder.layer.1.", "is missing"]);

    let corrupt = tmp.path().join("corrupt.safetensors");
    let bytes = std::fs::read(&ck.swin).unwrap();
    std::fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    refused(s(&corrupt), s(&ck.bert), &out, &[], &["the Swin checkpoint", "corrupt.safetensors"]);

    let gpt = tmp.path().join("gpt");
    std::fs::create_dir_all(&gpt).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(ck.bert.join(f), gpt.join(f)).unwrap();
    }
    std::fs::write(gpt.join("config.json"), r#"{"model_type": "gpt2", "n_embd": 32}"#).unwrap();
    refused(s(&ck.swin), s(&gpt), &out, &[], &["\"gpt2\" model, not BERT"]);

    // The config claims one more word than the tokenizer has.
    let other = tmp.path().join("other-vocab");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(ck.bert.join("tokenizer.json"), other.join("tokenizer.json")).unwrap();
    std::fs::copy(&bert_weights, other.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.bert.join("config.json")).unwrap()).unwrap();
    config["vocab_size"] = (checkpoints::VOCAB + 1).into();
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    refused(s(&ck.swin), s(&other), &out, &[], &["60 tokens", "61", "another checkpoint"]);
}

fn publish(hub: &TestHub, ck: &Checkpoints) {
    hub.put("test/swin-tiny", "model.safetensors", std::fs::read(&ck.swin).unwrap());
    hub.put_dir("test/bert-tiny", &ck.bert);
}

/// Repo ids are fetched from `HF_ENDPOINT` into the hub's cache layout under `HF_HOME`; a second init
/// reads them from the cache without asking the hub.
#[test]
fn model_init_fetches_repo_ids_into_the_hub_cache() {
    let (tmp, ck, outs) = setup();
    let hub = TestHub::start();
    publish(&hub, &ck);
    let hf_home = tmp.path().join("hf");
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", s(&hf_home))];
    let o = init("test/swin-tiny", "test/bert-tiny", &outs.join("a"), &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let snapshot = hf_home.join("hub/models--test--bert-tiny/snapshots").join(COMMIT);
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert_eq!(std::fs::read(snapshot.join(f)).unwrap(), std::fs::read(ck.bert.join(f)).unwrap(), "{f}");
    }
    assert_eq!(std::fs::read_to_string(hf_home.join("hub/models--test--bert-tiny/refs/main")).unwrap(), COMMIT);
    assert!(hub.log().iter().any(|l| l.starts_with("/test/swin-tiny/resolve/main/model.safetensors")));
    assert!(read_config(&outs.join("a")).unwrap().description.contains("Swin from test/swin-tiny"));
    // Offline now, and the cache answers.
    let offline = offline_endpoint();
    let o = init(
        "test/swin-tiny",
        "test/bert-tiny",
        &outs.join("b"),
        &[("HF_ENDPOINT", &offline), ("HF_HOME", s(&hf_home))],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A hub that cannot be reached, and a repo without the file, are said so; nothing is written.
#[test]
fn model_init_says_when_the_hub_is_offline_or_lacks_the_repo() {
    let (tmp, ck, outs) = setup();
    let hf_home = tmp.path().join("hf");
    let offline = offline_endpoint();
    let env = [("HF_ENDPOINT", offline.as_str()), ("HF_HOME", s(&hf_home))];
    refused("test/swin-tiny", s(&ck.bert), &outs.join("a"), &env, &["cannot reach the Hugging Face hub", &offline]);
    let hub = TestHub::start();
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", s(&hf_home))];
    refused("test/nothing", s(&ck.bert), &outs.join("a"), &env, &["test/nothing", "has no model.safetensors"]);
}

/// The hub drops the connection halfway through BERT's weights: the download goes on from where it
/// stopped (a range request) and the file is whole.
#[test]
fn model_init_resumes_a_download_the_hub_cut_short() {
    let (tmp, ck, outs) = setup();
    let hub = TestHub::start();
    publish(&hub, &ck);
    let size = std::fs::metadata(ck.bert.join("model.safetensors")).unwrap().len() as usize;
    hub.set_fault(Some(Fault::Drop { file: "model.safetensors".into(), after: size / 2 }));
    let hf_home = tmp.path().join("hf");
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", s(&hf_home))];
    let o = init(s(&ck.swin), "test/bert-tiny", &outs.join("a"), &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = format!("/test/bert-tiny/resolve/main/model.safetensors range=bytes={}-", size / 2);
    assert!(hub.log().contains(&resumed), "no {resumed:?} in {:?}", hub.log());
    let got = hf_home.join("hub/models--test--bert-tiny/snapshots").join(COMMIT).join("model.safetensors");
    assert_eq!(std::fs::read(got).unwrap(), std::fs::read(ck.bert.join("model.safetensors")).unwrap());
}

/// photoseg killed in the middle of a download leaves the part in the hub's cache and no model; the
/// same command then asks only for the rest and finishes.
#[test]
fn model_init_killed_midway_through_a_download_goes_on_from_the_part() {
    let (tmp, ck, outs) = setup();
    let hub = TestHub::start();
    publish(&hub, &ck);
    let size = std::fs::metadata(ck.bert.join("model.safetensors")).unwrap().len() as usize;
    hub.set_fault(Some(Fault::Stall { file: "model.safetensors".into(), after: size / 3 }));
    let hf_home = tmp.path().join("hf");
    let out = outs.join("a");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_photoseg"))
        .args(["model", "init", "--preset", "paper", "--swin", s(&ck.swin), "--bert", "test/bert-tiny"])
        .args(["--image-size", "64", "--out", s(&out)])
        .env("HF_ENDPOINT", &hub.endpoint)
        .env("HF_HOME", &hf_home)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let blobs = hf_home.join("hub/models--test--bert-tiny/blobs");
    let part_len = || -> u64 {
        std::fs::read_dir(&blobs)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
                    .map(|e| e.metadata().unwrap().len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while part_len() < (size / 3) as u64 {
        assert!(start.elapsed().as_secs() < 60, "the download never reached a third (sent {})", hub.sent());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists() && names_in(&outs).is_empty(), "{:?}", names_in(&outs));
    hub.set_fault(None);
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", s(&hf_home))];
    let o = init(s(&ck.swin), "test/bert-tiny", &out, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = format!("/test/bert-tiny/resolve/main/model.safetensors range=bytes={}-", size / 3);
    assert!(hub.log().contains(&resumed), "no {resumed:?} in {:?}", hub.log());
    load_model_dir(&out, &Device::Cpu).unwrap();
}

/// A hub that breaks every connection to BERT's weights: after its retries photoseg says the download
/// broke off and writes no model; the part it kept is where the next run, on a hub that works again,
/// starts.
#[test]
fn model_init_says_when_a_download_keeps_breaking_off_and_goes_on_later() {
    let (tmp, ck, outs) = setup();
    let hub = TestHub::start();
    publish(&hub, &ck);
    let size = std::fs::metadata(ck.bert.join("model.safetensors")).unwrap().len() as usize;
    hub.set_fault(Some(Fault::Cut { file: "model.safetensors".into(), after: size / 10 }));
    let hf_home = tmp.path().join("hf");
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", s(&hf_home))];
    let out = outs.join("a");
    refused(
        s(&ck.swin),
        "test/bert-tiny",
        &out,
        &env,
        &["model.safetensors of test/bert-tiny", "broke off", "goes on from it"],
    );
    let kept = hub.sent();
    assert!(kept >= 2 * (size / 10), "only {kept} bytes sent: no retry from where it stopped");
    hub.set_fault(None);
    let o = init(s(&ck.swin), "test/bert-tiny", &out, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = format!("/test/bert-tiny/resolve/main/model.safetensors range=bytes={kept}-");
    assert!(hub.log().contains(&resumed), "no {resumed:?} in {:?}", hub.log());
    load_model_dir(&out, &Device::Cpu).unwrap();
}
