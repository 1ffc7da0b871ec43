//! The daemon follows the active model: `photoseg model install` while `photoseg daemon` (started
//! without `--model`) serves the library makes it index every photo for the new model in the background
//! while queries are still answered by the old model from its features; then it switches, its `Model`
//! and `ModelName` properties change, and `photoseg query` says which model answered each time.
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dbus_support::{tools_present, World, NAME, PATH, WITHIN};

fn property(w: &World, name: &str) -> String {
    w.busctl(&["get-property", NAME, PATH, NAME, name])["data"].as_str().unwrap().to_string()
}

/// `photoseg query EXPR --json` through the daemon: the answer's `model` and what stderr says.
fn query(w: &World) -> (String, String) {
    let o = w.cmd(&["query", "a photo", "--json"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    let answer: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["albums"].as_array().map(Vec::len), Some(1), "{answer}");
    (answer["model"].as_str().unwrap().to_string(), err)
}

#[test]
fn dbus_model_switch_the_daemon_reindexes_for_a_newly_installed_model_and_answers_meanwhile() {
    if !tools_present() {
        return;
    }
    let w = World::new();
    for i in 0..3 {
        w.photo(&format!("trip/{i}.png"), 64, 48, i);
    }
    let photos = w.photos();
    w.ok(&["index", photos.to_str().unwrap(), "--model", &w.model("first", -1e9)]);
    w.ok(&["model", "install", &w.path("first").to_string_lossy(), "--name", "first"]);
    // The index above was made with the same files, so nothing is left to index for "first".
    let mut daemon = w.daemon_with(&[], &[("PHOTOSEG_DAEMON_SWITCH_DELAY_MS", "8000")]);
    w.wait_indexed(3);
    let first = property(&w, "Model");
    assert_eq!(property(&w, "ModelName"), "first");
    let (model, err) = query(&w);
    assert_eq!(model, first);
    assert!(err.contains("answered by the daemon org.photoseg.Photoseg1 with the model first"), "{err}");

    let second = w.model("second", -1e9);
    let out = w.ok(&["model", "install", &second, "--name", "second"]);
    assert!(out.contains("installed second"), "{out}");
    daemon.wait_for_log("the active model is now second", WITHIN);
    // The indexer waits (the test hook) before it indexes for "second": queries meanwhile are answered
    // by "first" from its features, and Status counts them.
    let (model, err) = query(&w);
    assert_eq!(model, first, "{err}");
    assert!(err.contains("with the model first"), "{err}");
    assert_eq!(property(&w, "Model"), first);
    daemon.wait_for_log("now answering with the model second", WITHIN);
    let now = property(&w, "Model");
    assert_ne!(now, first);
    assert_eq!(property(&w, "ModelName"), "second");
    w.wait_indexed(3);
    let (model, err) = query(&w);
    assert_eq!(model, now);
    assert!(err.contains("with the model second"), "{err}");

    // Back to the first: its features are still in the cache, so the switch needs no new features.
    w.ok(&["model", "use", "first"]);
    let start = Instant::now();
    while property(&w, "ModelName") != "first" {
        assert!(start.elapsed() < WITHIN, "the daemon did not go back to the first model");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(property(&w, "Model"), first);
    let (model, _) = query(&w);
    assert_eq!(model, first);
}

/// Going back to the answering model while the daemon indexes for a new one: the indexer goes back to
/// the old model too, so the photos that come later get its features, and the old model keeps
/// answering throughout.
#[test]
fn dbus_model_switch_back_before_the_new_model_is_ready_indexes_with_the_old_one_again() {
    if !tools_present() {
        return;
    }
    let w = World::new();
    for i in 0..3 {
        w.photo(&format!("trip/{i}.png"), 64, 48, i);
    }
    let photos = w.photos();
    w.ok(&["index", photos.to_str().unwrap(), "--model", &w.model("first", -1e9)]);
    w.ok(&["model", "install", &w.path("first").to_string_lossy(), "--name", "first"]);
    let mut daemon = w.daemon_with(&[], &[("PHOTOSEG_DAEMON_SWITCH_DELAY_MS", "3000")]);
    w.wait_indexed(3);
    w.ok(&["model", "install", &w.model("second", -1e9), "--name", "second"]);
    daemon.wait_for_log("the active model is now second", WITHIN);
    w.ok(&["model", "use", "first"]);
    daemon.wait_for_log("the active model is now first", WITHIN);
    daemon.wait_for_log("now answering with the model first", WITHIN);
    assert_eq!(property(&w, "ModelName"), "first");
    // A photo added now is indexed for the first model (Status counts its features).
    w.photo("trip/new.png", 64, 48, 9);
    w.wait_indexed(4);
    let (_, err) = query(&w);
    assert!(err.contains("with the model first"), "{err}");
}
