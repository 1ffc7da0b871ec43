//! `kill -9` in the middle of `photoseg index` (the real binary, a real random tiny model, a library of
//! 480 photos): the cache must stay sound, hold no photo twice and no photo without features, and the next
//! `photoseg index` must featurize exactly the photos the killed run had not committed.
//!
//! The library-level version of this test (tests/it/library.rs, `kill_9_mid_index_loses_at_most_one_batch`)
//! uses a fake featurizer; this one runs the whole command as a user would.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use photoseg::library::Cache;

use crate::common;

const PHOTOS: usize = 480;
const ALBUMS: usize = 12;
/// Photos per transaction in `photoseg index` (src/cli/index.rs).
const BATCH: u64 = 16;

fn cmd(tmp: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_photoseg"));
    c.args(args)
        .env("HOME", tmp.join("home"))
        .env("XDG_CONFIG_HOME", tmp.join("config"))
        .env("XDG_CACHE_HOME", tmp.join("cache"))
        .env("XDG_DATA_HOME", tmp.join("data"))
        .env_remove("PHOTOSEG_MODEL")
        .env_remove("RUST_LOG");
    c
}

/// "N photos in A albums: F featurized, U unchanged, ..." -> (N, F, U).
fn summary(stdout: &str) -> (usize, usize, usize) {
    let line = stdout.lines().find(|l| l.contains(" featurized, ")).unwrap_or_else(|| panic!("no summary: {stdout}"));
    let num = |after: &str| -> usize {
        let words: Vec<&str> = line.split([' ', ',', ':']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == after).unwrap_or_else(|| panic!("no {after:?} in {line}"));
        words[i - 1].parse().unwrap()
    };
    (num("photos"), num("featurized"), num("unchanged"))
}

#[test]
fn kill_9_mid_index_then_the_next_run_does_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let photos = tmp.join("photos");
    for i in 0..PHOTOS {
        let path = photos.join(format!("album{:02}/{i:04}.png", i % ALBUMS));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let seed = i as u32;
        RgbImage::from_fn(48, 36, |x, y| Rgb([(x * 5 + seed) as u8, (y * 7 + seed * 3) as u8, (seed * 11) as u8]))
            .save(&path)
            .unwrap();
    }
    let model = common::save_tiny_model(&tmp.join("model"), 7, |_| {});
    let model = model.as_str();

    let db: PathBuf = tmp.join("cache/photoseg/library.sqlite3");
    let mut child = cmd(tmp, &["index", photos.to_str().unwrap(), "--model", model])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once two batches are committed: well inside the run, never before it wrote anything.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the run never committed a batch");
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed; add photos");
        if db.exists() {
            if let Ok(reader) = Cache::open(&db) {
                if reader.stats().map(|s| s.features >= 2 * BATCH).unwrap_or(false) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let cache = Cache::open(&db).unwrap();
    cache.integrity_check().unwrap();
    let stats = cache.stats().unwrap();
    assert!(stats.features < PHOTOS as u64, "killed after the end: {stats:?}");
    assert_eq!(stats.photos, stats.features, "a photo row without its features: {stats:?}");
    assert_eq!(stats.features % BATCH, 0, "a batch was half committed: {stats:?}");
    let mut paths = Vec::new();
    for album in cache.albums().unwrap() {
        paths.extend(cache.album_entries(album.id, "unused").unwrap().into_iter().map(|e| e.path));
    }
    let all = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!((all, paths.len() as u64), (paths.len(), stats.photos), "a photo is in the cache twice");
    drop(cache);

    // The next run does exactly what the killed one had not committed.
    let out = cmd(tmp, &["index", "--model", model]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (found, featurized, unchanged) = summary(&stdout);
    assert_eq!(found, PHOTOS, "{stdout}");
    assert_eq!((featurized as u64, unchanged as u64), (PHOTOS as u64 - stats.features, stats.features), "{stdout}");

    let cache = Cache::open(&db).unwrap();
    cache.integrity_check().unwrap();
    let after = cache.stats().unwrap();
    assert_eq!((after.photos, after.features, after.albums), (PHOTOS as u64, PHOTOS as u64, ALBUMS as u64));
    // And a third run finds everything current.
    let out = cmd(tmp, &["index", "--model", model]).output().unwrap();
    let (_, featurized, unchanged) = summary(&String::from_utf8(out.stdout).unwrap());
    assert_eq!((featurized, unchanged), (0, PHOTOS));
    eprintln!("killed after {} of {PHOTOS} photos", stats.features);
}
