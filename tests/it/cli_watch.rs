//! `photoseg index --watch` driven as a user would: the real binary runs in the background on a real
//! folder tree while photos are added, changed and deleted and a folder is copied in; `photoseg query
//! --json` (another process, as a user would run it) must see each change within seconds. Then SIGTERM
//! must end the watcher cleanly with the cache intact.
//!
//! The tiny random model has a hugely negative decision margin, so every indexed photo is a positive
//! and the query's positives are exactly the photos the cache holds features for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use photoseg::library::Cache;
use serde_json::Value;
use tempfile::TempDir;

use crate::common;

/// How long one change may take to show in a query (settle 0.3 s + featurizing, on a busy machine).
const WITHIN: Duration = Duration::from_secs(30);

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

    /// A random tiny model whose margin makes every photo positive.
    fn model(&self) -> String {
        common::save_tiny_model(&self.path("model"), 7, |cfg| cfg.head.margin = -1e4)
    }

    /// Writes a `w` x `h` photo below the photo folder (format from the extension).
    fn photo(&self, rel: &str, w: u32, h: u32, seed: u8) {
        let path = self.path("photos").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 + u32::from(seed) * 40) as u8, (y * 11) as u8, ((x + y) * 5 + u32::from(seed)) as u8])
        });
        img.save(&path).unwrap();
    }

    /// Every positive of a query as (path below the photo folder) -> (width, height), and the number of
    /// photos the cache knows without features.
    fn library(&self, model: &str) -> (BTreeMap<String, (u64, u64)>, u64) {
        let out = self.cmd(&["query", "anything", "--json", "--model", model]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // An empty library is an error; anything else is a failure of the test.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("library is empty"), "query failed: {err}");
            return (BTreeMap::new(), 0);
        }
        let v: Value = serde_json::from_str(&stdout).unwrap();
        let root = std::fs::canonicalize(self.path("photos")).unwrap();
        let mut seen = BTreeMap::new();
        let mut unindexed = 0;
        for a in v["albums"].as_array().unwrap() {
            unindexed += a["unindexed"].as_u64().unwrap();
            for p in a["positives"].as_array().unwrap() {
                let path = PathBuf::from(p["path"].as_str().unwrap());
                let rel = path.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
                seen.insert(rel, (p["width"].as_u64().unwrap(), p["height"].as_u64().unwrap()));
            }
        }
        (seen, unindexed)
    }

    /// Polls the library until `want` holds; fails with the last state after [`WITHIN`].
    fn wait_for(&self, model: &str, what: &str, want: impl Fn(&BTreeMap<String, (u64, u64)>) -> bool) {
        let start = Instant::now();
        loop {
            let (seen, unindexed) = self.library(model);
            if want(&seen) && unindexed == 0 {
                eprintln!("{what}: seen after {:.1} s", start.elapsed().as_secs_f64());
                return;
            }
            assert!(start.elapsed() < WITHIN, "{what}: not seen within {WITHIN:?}; library: {seen:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The child's stderr, line by line, on a channel ([`common::lines_on_channel`]).
fn stderr_lines(child: &mut Child) -> Receiver<String> {
    common::lines_on_channel(child.stderr.take().unwrap())
}

/// Kills the child if the test fails before it is stopped on purpose.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn index_watch_follows_the_folders_until_sigterm() {
    let w = World::new();
    w.photo("Paris/a.png", 40, 30, 1);
    w.photo("Paris/b.png", 30, 50, 2);
    w.photo("Berlin/c.png", 50, 20, 3);
    let model = w.model();
    let photos = w.path("photos");
    let child = w
        .cmd(&["index", photos.to_str().unwrap(), "--watch", "--settle", "300", "--model", &model])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaper(child);
    let lines = stderr_lines(&mut child.0);
    let mut log = Vec::new();
    let start = Instant::now();
    while !log.iter().any(|l: &String| l.starts_with("watching ")) {
        match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => log.push(line),
            Err(_) => {
                assert!(child.0.try_wait().unwrap().is_none(), "photoseg index --watch exited: {log:#?}");
                assert!(start.elapsed() < Duration::from_secs(180), "the initial index never finished: {log:#?}");
            }
        }
    }
    let (initial, _) = w.library(&model);
    assert_eq!(initial.keys().collect::<Vec<_>>(), ["Berlin/c.png", "Paris/a.png", "Paris/b.png"]);

    // A new photo.
    w.photo("Paris/new.png", 20, 20, 4);
    w.wait_for(&model, "added photo", |s| s.contains_key("Paris/new.png"));

    // A named pipe posing as a photo is skipped, not opened for a read that waits for a writer: a
    // photo added after it is still indexed, and SIGTERM below still ends the watcher.
    assert!(Command::new("mkfifo").arg(photos.join("Paris/trap.png")).status().unwrap().success());
    // The watcher's report on the pipe, before the next photo arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.iter().any(|l: &String| l.contains("trap.png")) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("no line on the named pipe: {log:#?}"));
        if let Ok(line) = lines.recv_timeout(left) {
            log.push(line);
        }
    }
    w.photo("Paris/after.png", 22, 22, 5);
    w.wait_for(&model, "photo after a named pipe", |s| s.contains_key("Paris/after.png"));

    // A changed photo (new bytes and a new size: the positive's size says which version is cached).
    w.photo("Paris/b.png", 36, 24, 9);
    w.wait_for(&model, "changed photo", |s| s.get("Paris/b.png") == Some(&(36, 24)));

    // A photo overwritten with bytes that are no photo: its row goes, and the line says it was removed.
    w.photo("Paris/broken.png", 20, 20, 6);
    w.wait_for(&model, "photo to break", |s| s.contains_key("Paris/broken.png"));
    std::fs::write(photos.join("Paris/broken.png"), b"not a png at all").unwrap();
    w.wait_for(&model, "broken photo", |s| !s.contains_key("Paris/broken.png"));

    // A deleted photo: its album (it was the only photo) goes too.
    std::fs::remove_file(photos.join("Berlin/c.png")).unwrap();
    w.wait_for(&model, "deleted photo", |s| !s.contains_key("Berlin/c.png"));

    // A folder copied in, photo after photo.
    for (i, name) in ["r1.png", "r2.jpg", "r3.png"].iter().enumerate() {
        w.photo(&format!("Rome/{name}"), 24, 18, 10 + i as u8);
        std::thread::sleep(Duration::from_millis(50));
    }
    w.wait_for(&model, "added folder", |s| {
        ["Rome/r1.png", "Rome/r2.jpg", "Rome/r3.png"].iter().all(|p| s.contains_key(*p))
    });

    // A photo moved to another album keeps being found at its new path.
    std::fs::rename(photos.join("Paris/a.png"), photos.join("Rome/a.png")).unwrap();
    w.wait_for(&model, "moved photo", |s| s.contains_key("Rome/a.png") && !s.contains_key("Paris/a.png"));

    let (end, _) = w.library(&model);
    assert_eq!(
        end.keys().collect::<Vec<_>>(),
        ["Paris/after.png", "Paris/b.png", "Paris/new.png", "Rome/a.png", "Rome/r1.png", "Rome/r2.jpg", "Rome/r3.png"]
    );

    // SIGTERM: the watcher stops cleanly (exit 0) and leaves a sound cache.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "photoseg index --watch ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    log.extend(lines.iter());
    assert!(status.success(), "{status:?}: {log:#?}");
    assert!(log.iter().any(|l| l == "stopped watching"), "{log:#?}");
    // One line per change, saying what the cache did.
    let new = photos.canonicalize().unwrap().join("Paris/new.png");
    assert!(log.iter().any(|l| l.starts_with(&format!("changed {}: 1 featurized", new.display()))), "{log:#?}");
    assert!(log.iter().any(|l| l.starts_with("removed ") && l.contains("Berlin/c.png")), "{log:#?}");
    let broken = photos.canonicalize().unwrap().join("Paris/broken.png");
    assert!(
        log.iter()
            .any(|l| l
                .starts_with(&format!("changed {}: 0 featurized, 0 touched, 0 moved, 1 removed; ", broken.display()))),
        "{log:#?}"
    );

    let cache = Cache::open(&w.path("cache/photoseg/library.sqlite3")).unwrap();
    cache.integrity_check().unwrap();
    let stats = cache.stats().unwrap();
    assert_eq!((stats.photos, stats.features, stats.albums), (7, 7, 2), "{stats:?}");
}
