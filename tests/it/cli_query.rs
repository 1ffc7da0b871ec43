//! `photoseg index` and `photoseg query` driven as a user would: the real binary, a real folder tree of
//! PNG and JPEG photos, HOME and the XDG folders pinned to a temp dir, and a tiny model with random
//! weights saved as a model directory.
//!
//! Random weights prove plumbing only (counts, schema, masks the size of the photo, files written, the
//! search index serving repeats), never that an answer is right. To reach the positive and negative
//! paths on purpose the tests set the decision margin in config.json: a hugely negative margin makes
//! every photo positive, a hugely positive one rejects every photo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use photoseg::query::rle::{self, CocoRle};
use serde_json::Value;
use tempfile::TempDir;

use crate::common;

/// A user's world in a temp dir.
struct World {
    tmp: TempDir,
}

impl World {
    fn new() -> Self {
        let w = World { tmp: tempfile::tempdir().unwrap() };
        for d in ["home", "config", "cache", "data", "photos"] {
            std::fs::create_dir_all(w.path(d)).unwrap();
        }
        w
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The photo folder, spelled as photoseg stores it (canonical).
    fn photos(&self) -> PathBuf {
        std::fs::canonicalize(self.path("photos")).unwrap()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_photoseg"));
        c.args(args)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("COLUMNS", "100")
            .env_remove("PHOTOSEG_MODEL")
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "photoseg {args:?} failed: {}\nstdout: {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "photoseg {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    fn query_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["query"];
        all.extend_from_slice(args);
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Saves a random tiny model with decision margin `margin` as `name`; returns its directory.
    fn model(&self, name: &str, margin: f64) -> String {
        self.model_with(name, margin, None)
    }

    /// [`World::model`] whose config names the codec its features are cached in.
    fn model_with(&self, name: &str, margin: f64, cache_codec: Option<&str>) -> String {
        // Weights of their own per name: two models of a test must differ (their ids do).
        common::save_tiny_model(&self.path(name), common::seed_of(name), |cfg| {
            cfg.head.margin = margin;
            cfg.cache_codec = cache_codec.map(str::to_string);
        })
    }

    /// Writes a photo of `w` x `h` (format from the extension) with a pattern that depends on `seed`.
    fn photo(&self, rel: &str, w: u32, h: u32, seed: u8) -> PathBuf {
        let path = self.path("photos").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 + u32::from(seed) * 40) as u8, (y * 11) as u8, ((x + y) * 5 + u32::from(seed)) as u8])
        });
        img.save(&path).unwrap();
        path
    }
}

/// The three photos and two bad files most tests start from.
fn library(w: &World) {
    w.photo("Paris/a.jpg", 40, 30, 1);
    w.photo("Paris/b.png", 30, 50, 2);
    w.photo("Berlin/c.jpg", 50, 20, 3);
    std::fs::write(w.path("photos/Berlin/bad.jpg"), b"this is not a picture").unwrap();
    std::fs::write(w.path("photos/Berlin/empty.png"), b"").unwrap();
}

fn album<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["albums"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no album {name} in {result:#}"))
}

fn count(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// Every album's counts add up, and every positive's mask is consistent with its photo.
fn check_schema(result: &Value, photos_root: &Path) {
    assert_eq!(result["version"], 1);
    let model = result["model"].as_str().unwrap();
    assert!(model.starts_with("grser-64px-f16@") || model.starts_with("grser-64px-lr8@"), "{model}");
    for a in result["albums"].as_array().unwrap() {
        let positives = a["positives"].as_array().unwrap();
        assert_eq!(count(&a["photos"]), positives.len() + count(&a["rejected"]) + count(&a["unindexed"]), "{a:#}");
        assert!(Path::new(a["album"].as_str().unwrap()).starts_with(photos_root));
        assert!(a["from_index"].is_boolean());
        for p in positives {
            let path = Path::new(p["path"].as_str().unwrap());
            let (w, h) = image::image_dimensions(path).unwrap();
            assert_eq!((count(&p["width"]), count(&p["height"])), (w as usize, h as usize), "{p:#}");
            assert!(p["score"].as_f64().unwrap() > 0.0, "positives have a positive score: {p:#}");
            let rle: CocoRle = serde_json::from_value(p["mask"].clone()).unwrap();
            assert_eq!(rle.size, [h as usize, w as usize]);
            let mask = rle::decode(&rle).unwrap();
            assert_eq!(mask.iter().filter(|&&m| m == 1).count(), count(&p["mask_area"]));
        }
    }
}

#[test]
fn index_reports_bad_files_and_skips_current_photos() {
    let w = World::new();
    library(&w);
    let model = w.model("model", 1.0);
    let photos = w.path("photos");
    let out = w.ok(&["index", photos.to_str().unwrap(), "--model", &model]);
    assert!(out.contains("5 photos in 2 albums: 3 featurized, 0 unchanged"), "{out}");
    assert!(out.contains("2 files or folders could not be used"), "{out}");
    assert!(out.contains(&format!("{}: not an image", w.photos().join("Berlin/bad.jpg").display())), "{out}");
    assert!(out.contains(&format!("{}: empty file", w.photos().join("Berlin/empty.png").display())), "{out}");

    // The folder is now watched: a bare `index` covers it and reads nothing that is current.
    let config = std::fs::read_to_string(w.path("config/photoseg/config.json")).unwrap();
    assert!(config.contains(w.photos().to_str().unwrap()), "{config}");
    let out = w.ok(&["index", "--model", &model]);
    assert!(out.contains("0 featurized, 3 unchanged"), "{out}");

    // One changed photo is the only one featurized again.
    w.photo("Paris/b.png", 30, 50, 9);
    let out = w.ok(&["index", "--model", &model]);
    assert!(out.contains("1 featurized, 2 unchanged"), "{out}");
}

#[test]
fn query_json_masks_and_overlays_fit_the_photos() {
    let w = World::new();
    library(&w);
    let model = w.model("model", -1e4); // every photo positive
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);
    let masks = w.path("out/masks");
    let overlays = w.path("out/overlays");
    let result = w.query_json(&[
        "the red bike",
        "--model",
        &model,
        "--masks",
        masks.to_str().unwrap(),
        "--overlays",
        overlays.to_str().unwrap(),
    ]);
    check_schema(&result, &w.photos());
    assert_eq!(result["expression"], "the red bike");
    assert_eq!(result["albums"].as_array().unwrap().len(), 2);
    let paris = album(&result, "Paris");
    assert_eq!((count(&paris["photos"]), paris["positives"].as_array().unwrap().len()), (2, 2), "{paris:#}");
    assert_eq!(count(&album(&result, "Berlin")["photos"]), 1, "bad files are not photos of the album");

    for a in result["albums"].as_array().unwrap() {
        for p in a["positives"].as_array().unwrap() {
            let file = Path::new(p["path"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
            let name = a["name"].as_str().unwrap();
            let mask = image::open(masks.join(name).join(format!("{file}.mask.png"))).unwrap().to_luma8();
            assert_eq!((mask.width() as usize, mask.height() as usize), (count(&p["width"]), count(&p["height"])));
            assert!(mask.pixels().all(|px| px[0] == 0 || px[0] == 255));
            assert_eq!(mask.pixels().filter(|px| px[0] == 255).count(), count(&p["mask_area"]));
            let overlay = image::open(overlays.join(name).join(format!("{file}.overlay.jpg"))).unwrap();
            assert_eq!(
                (overlay.width() as usize, overlay.height() as usize),
                (count(&p["width"]), count(&p["height"]))
            );
        }
    }
    // Nothing was written next to the photos.
    let mut names: Vec<String> = std::fs::read_dir(w.path("photos/Paris"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.jpg", "b.png"]);

    // The text output names every positive with its mask area.
    let text = w.ok(&["query", "the red bike", "--model", &model]);
    assert!(text.contains("found in 3 of 3 photos, 2 albums"), "{text}");
    assert!(text.contains(&w.photos().join("Paris/a.jpg").display().to_string()), "{text}");
    assert!(text.contains("mask "), "{text}");
}

#[test]
fn rejections_are_counted() {
    let w = World::new();
    library(&w);
    let model = w.model("model", 1e4); // no photo positive
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);
    let result = w.query_json(&["my bike", "--model", &model]);
    check_schema(&result, &w.photos());
    let paris = album(&result, "Paris");
    assert_eq!((count(&paris["rejected"]), paris["positives"].as_array().unwrap().len()), (2, 0));
    let text = w.ok(&["query", "my bike", "--model", &model]);
    assert!(text.contains("found in 0 of 3 photos"), "{text}");
    assert!(text.contains("0 found, 2 rejected"), "{text}");

    // `photoseg query ... | head`: a reader that goes away is not an error (nor a panic).
    let mut child =
        w.cmd(&["query", "my bike", "--model", &model, "--json"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn album_filter_and_repeated_queries_served_from_the_index() {
    let w = World::new();
    library(&w);
    w.photo("Trips/Paris Day 2/d.png", 20, 20, 4);
    let model = w.model("model", -1e4);
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);

    let first = w.query_json(&["a dog", "--album", "paris", "--model", &model]);
    let names: Vec<&str> = first["albums"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Paris", "Trips/Paris Day 2"], "case-insensitive substring of the name below the root");
    assert!(first["albums"].as_array().unwrap().iter().all(|a| a["from_index"] == false));

    // The same question again: served from the search index, with the same answer.
    let again = w.query_json(&["a  dog ", "--album", "paris", "--model", &model]);
    assert!(again["albums"].as_array().unwrap().iter().all(|a| a["from_index"] == true), "{again:#}");
    let strip = |v: &Value| {
        let mut v = v.clone();
        for a in v["albums"].as_array_mut().unwrap() {
            a.as_object_mut().unwrap().remove("from_index");
        }
        v
    };
    assert_eq!(strip(&first), strip(&again));

    let both = w.query_json(&["a dog", "--album", "BERLIN", "--album", "day", "--model", &model]);
    assert_eq!(both["albums"].as_array().unwrap().len(), 2);

    let err = w.fails(&["query", "a dog", "--album", "rome", "--model", &model]);
    assert!(err.contains("no album name contains \"rome\"") && err.contains("Paris"), "{err}");

    // A folder, by its path: every album in it or below it, though none is named after it (the
    // watched root itself holds no photo, so no album is called "photos").
    let trips = w.query_json(&["a dog", "--album", w.photos().join("Trips").to_str().unwrap(), "--model", &model]);
    let names: Vec<&str> = trips["albums"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Trips/Paris Day 2"]);
    let root = w.query_json(&["a dog", "--album", w.photos().to_str().unwrap(), "--model", &model]);
    assert_eq!(root["albums"].as_array().unwrap().len(), 3, "{root:#}");
    let err = w.fails(&["query", "a dog", "--album", "/no/such/folder", "--model", &model]);
    assert!(err.contains("no album is in the folder \"/no/such/folder\" or below it"), "{err}");

    // A photo of Paris changes: that album is answered afresh, the other still from the index.
    w.photo("Paris/b.png", 30, 50, 7);
    w.ok(&["index", "--model", &model]);
    let after = w.query_json(&["a dog", "--album", "paris", "--model", &model]);
    assert_eq!(album(&after, "Paris")["from_index"], false);
    assert_eq!(album(&after, "Trips/Paris Day 2")["from_index"], true);
    check_schema(&after, &w.photos());
}

#[test]
fn a_new_model_never_reads_another_models_features() {
    let w = World::new();
    library(&w);
    let a = w.model("model-a", -1e4);
    let b = w.model("model-b", -1e4);
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &a]);

    // Model B (other weights) finds no features of its own: everything is unindexed, nothing answered.
    let result = w.query_json(&["a cat", "--model", &b]);
    check_schema(&result, &w.photos());
    for al in result["albums"].as_array().unwrap() {
        assert_eq!(count(&al["unindexed"]), count(&al["photos"]), "{al:#}");
    }
    let text = w.ok(&["query", "a cat", "--model", &b]);
    assert!(text.contains("not indexed for this model yet; run `photoseg index`"), "{text}");

    // $PHOTOSEG_MODEL selects the model when --model is absent.
    let out = w.cmd(&["index"]).env("PHOTOSEG_MODEL", &b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 featurized"));
    let result = w.query_json(&["a cat", "--model", &b]);
    assert_eq!(album(&result, "Paris")["unindexed"], 0);
}

#[test]
fn the_model_chooses_the_codec_its_features_are_cached_in() {
    let w = World::new();
    library(&w);
    let photos = w.path("photos");
    let lr8 = w.model_with("model-lr8", -1e4, Some("lr8"));
    w.ok(&["index", photos.to_str().unwrap(), "--model", &lr8]);
    let result = w.query_json(&["a cat", "--model", &lr8]);
    check_schema(&result, &w.photos());
    assert_eq!(album(&result, "Paris")["positives"].as_array().unwrap().len(), 2, "{result:#}");

    // Every cached blob says lr8, under a backbone id that says so too.
    let db = rusqlite::Connection::open(w.path("cache/photoseg/library.sqlite3")).unwrap();
    let mut stmt = db.prepare("SELECT backbone, data FROM features").unwrap();
    let rows: Vec<(String, Vec<u8>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    for (backbone, data) in &rows {
        assert!(backbone.contains("-lr8@"), "{backbone}");
        assert_eq!(photoseg::model::codec::codec_of(data).unwrap(), photoseg::model::codec::FeatureCodec::LowRank8);
    }

    // A codec photoseg does not know is refused at load, with the known ones named.
    let bad = w.model_with("model-bad", 1.0, Some("zip9"));
    let err = w.fails(&["index", "--model", &bad]);
    assert!(err.contains("\"zip9\"") && err.contains("f16") && err.contains("lr8"), "{err}");
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let w = World::new();
    library(&w);
    let photos = w.path("photos");
    let err = w.fails(&["query", "  "]);
    assert!(err.starts_with("photoseg: the expression is empty"), "{err}");
    // No model installed: the built-in demo model answers, and says it only knows the synthetic world.
    let err = w.fails(&["query", "my bike"]);
    assert!(err.contains("using the built-in demo model") && err.contains("synthetic"), "{err}");
    assert!(err.contains("library is empty"), "{err}");
    assert!(!w.path("config/photoseg/config.json").exists(), "a failed query watches nothing");

    let model = w.model("model", 1.0);
    let err = w.fails(&["index", w.path("nowhere").to_str().unwrap(), "--model", &model]);
    assert!(err.contains("nowhere") && err.contains("no such folder"), "{err}");
    let err = w.fails(&["query", "my bike", "--model", &model]);
    assert!(err.contains("library is empty") && err.contains("photoseg index"), "{err}");

    w.ok(&["index", photos.to_str().unwrap(), "--model", &model]);
    let inside = photos.join("Paris/masks");
    let err = w.fails(&["query", "my bike", "--model", &model, "--masks", inside.to_str().unwrap()]);
    assert!(err.contains("refusing to write into") && err.contains("photo folder"), "{err}");
    assert!(!inside.exists());

    // The model installed in $XDG_DATA_HOME/photoseg/model is found without --model; moved, it is the
    // same model (the id hashes its files, not its path), so the features are still current.
    let installed = w.path("data/photoseg/model");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::rename(&model, &installed).unwrap();
    let result = w.query_json(&["my bike"]);
    assert!(result["albums"].as_array().unwrap().iter().all(|a| a["unindexed"] == 0), "{result:#}");
}

/// The library indexed with a model that makes every photo positive, queried once (which creates the
/// search index), then a photo added and indexed: the index's album documents are stale. Returns the
/// world and the model.
fn stale_search_index() -> (World, String) {
    let w = World::new();
    library(&w);
    let model = w.model("model", -1e4);
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);
    w.query_json(&["a dog", "--model", &model]); // creates the search index
    w.photo("Paris/new.png", 20, 20, 5);
    w.ok(&["index", "--model", &model]); // the album list changed: the album documents are stale
    (w, model)
}

#[test]
fn a_busy_search_index_still_answers() {
    let (w, model) = stale_search_index();

    // Another process (here: this one) holds the index writer for the whole query.
    let index = tantivy::Index::open_in_dir(w.path("cache/photoseg/search")).unwrap();
    let writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 20_000_000).unwrap();
    let result = w.query_json(&["a cat", "--album", "paris", "--model", &model]);
    check_schema(&result, &w.photos());
    let paris = album(&result, "Paris");
    assert_eq!((count(&paris["photos"]), paris["from_index"].as_bool()), (3, Some(false)), "{paris:#}");
    assert_eq!(result["albums"].as_array().unwrap().len(), 1);
    drop(writer);
}

/// A search index that cannot be written (a full disk, a read-only folder) is a cache that cannot be
/// updated, not a reason to refuse a query: album names are matched from the cache's list, the album is
/// answered from its features, and nothing is stored.
#[test]
fn an_unwritable_search_index_still_answers() {
    let (w, model) = stale_search_index();

    let _frozen = common::ReadOnly::new(&w.path("cache/photoseg/search"));
    let result = w.query_json(&["a cat", "--album", "paris", "--model", &model]);
    check_schema(&result, &w.photos());
    let paris = album(&result, "Paris");
    assert_eq!((count(&paris["photos"]), paris["from_index"].as_bool()), (3, Some(false)), "{paris:#}");
    // Asked again, it is answered again (nothing could be stored).
    let again = w.query_json(&["a cat", "--album", "paris", "--model", &model]);
    assert_eq!(album(&again, "Paris")["from_index"].as_bool(), Some(false));
}

/// A populated cache on a read-only medium (a backup disk, a locked-down account) answers queries
/// from the features it holds.
#[test]
fn a_read_only_cache_still_answers() {
    let w = World::new();
    library(&w);
    let model = w.model("model", -1e4);
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);
    w.query_json(&["a dog", "--model", &model]);

    let _frozen = common::ReadOnly::new(&w.path("cache/photoseg"));
    let result = w.query_json(&["a cat", "--model", &model]);
    check_schema(&result, &w.photos());
    assert_eq!(count(&album(&result, "Paris")["photos"]), 2, "{result:#}");
}
