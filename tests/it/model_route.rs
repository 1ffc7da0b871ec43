//! The whole route from public checkpoints to searching photos, through the real binary: tiny generated
//! Swin and BERT checkpoints published on a test hub (tests/it/common/hub.rs), `photoseg model init`
//! from their repo ids, `photoseg train --model` a few steps on the committed RefCOCO fixture, `photoseg
//! eval`, the trained model published as a repo, `photoseg model fetch` and `install` from the hub, then
//! `photoseg index` and `photoseg query` answering with it and saying so.
use crate::common::checkpoints;
use crate::common::fixture;
use crate::common::hub::TestHub;
use crate::model_install::Home;

/// The paper's recipe (recipes/paper.toml) with steps and groups a test can afford: one group of 4
/// photos a step, 3 steps. The fixture has groups in its train split only, so eval reads that split.
const ROUTE: &str = r#"
[model]
preset = "paper"

[[stage]]
name = "joint"
[stage.train]
stage = "joint"
steps = 3
groups_per_step = 1
group_size = 4
optim = { lr = 5e-5, weight_decay = 0.01 }
"#;

#[test]
fn model_route_from_public_checkpoints_on_a_hub_to_an_installed_model_answering_a_query() {
    let home = Home::new();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let ck = checkpoints::write(&home.path("ck"));
    let hub = TestHub::start();
    hub.put("test/swin-tiny", "model.safetensors", std::fs::read(&ck.swin).unwrap());
    hub.put_dir("test/bert-tiny", &ck.bert);
    let hf_home = s(&home.path("hf"));
    let env = [("HF_ENDPOINT", hub.endpoint.as_str()), ("HF_HOME", hf_home.as_str())];

    let init = s(&home.path("init"));
    let args = ["model", "init", "--preset", "paper", "--swin", "test/swin-tiny", "--bert", "test/bert-tiny"];
    let (out, _) = home.ok(&[&args[..], &["--image-size", "64", "--out", &init]].concat(), &env);
    assert!(out.contains("untrained"), "{out}");
    // Installing it as it is works, with a warning that it finds nothing yet.
    let (_, err) = home.ok(&["model", "install", &init, "--name", "untrained"], &[]);
    assert!(err.contains("untrained's head is untrained"), "{err}");
    home.ok(&["model", "remove", "untrained", "--force"], &[]);

    let recipe = home.path("route.toml");
    std::fs::write(&recipe, ROUTE).unwrap();
    let run = home.path("run");
    let refcoco = s(&fixture("data/refcoco"));
    let train = ["train", "--format", "refcoco", "--data", &refcoco, "--model", &init];
    let (_, err) = home.ok(&[&train[..], &["--recipe", &s(&recipe), "--out", &s(&run)]].concat(), &[]);
    assert!(err.contains("3 groups (7 positives)") && err.contains("model written to"), "{err}");
    let model = run.join("model");
    let cfg = photoseg::model::checkpoint::read_config(&model).unwrap();
    assert!(cfg.description.contains("Swin from test/swin-tiny"), "{}", cfg.description);
    assert!(cfg.description.contains("trained on the refcoco data set refcoco"), "{}", cfg.description);
    assert!(!cfg.description.contains("untrained"), "{}", cfg.description);
    assert_eq!(cfg.head.c_v, photoseg::model::grser::Config::paper().head.c_v);

    let (out, _) =
        home.ok(&["eval", "--format", "refcoco", "--data", &refcoco, "--model", &s(&model), "--split", "train"], &[]);
    assert!(out.contains("mIoU"), "{out}");

    // Published as a repo, fetched into the hub's cache, installed from there.
    hub.put_dir("test/grser-refcoco", &model);
    let (out, _) = home.ok(&["model", "fetch", "test/grser-refcoco"], &env);
    assert!(out.contains("fetched test/grser-refcoco into"), "{out}");
    let (out, _) = home.ok(&["model", "install", "test/grser-refcoco"], &env);
    assert!(out.contains("installed test--grser-refcoco"), "{out}");
    let installed = home.models().join("test--grser-refcoco");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(std::fs::read(installed.join(f)).unwrap(), std::fs::read(model.join(f)).unwrap(), "{f}");
    }
    let (list, _) = home.ok(&["model", "list"], &[]);
    assert!(
        list.lines().any(|l| l.starts_with("* test--grser-refcoco") && l.contains("trained on the refcoco")),
        "{list}"
    );

    let photos = home.photos();
    home.ok(&["index", &s(&photos)], &[]);
    let (out, err) = home.ok(&["query", "the man on the left", "--json"], &[]);
    assert!(err.contains("answered by this process with the model test--grser-refcoco (grser-64px"), "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(answer["model"].as_str().unwrap().starts_with("grser-64px"), "{answer}");
    assert_eq!(answer["albums"].as_array().unwrap().len(), 1, "{answer}");
}
