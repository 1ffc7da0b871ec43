//! The model-free indexing loop: scan, find what changed, decode, featurize, store in batches.
//!
//! Crash safety comes from the batch size: results are written in one transaction per `batch`
//! photos, so a killed run loses at most the batch in flight and the next run, seeing those
//! photos without features, does them again. A photo is "current" when its size and mtime
//! match the cache and features for this backbone exist; only other photos are read.
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use image::RgbImage;

use super::cache::{Cache, CachedPhoto, NewPhoto};
use super::photo::{self, PhotoFile};
use super::scan::{self, io_reason};
use super::watch::LibraryEvent;

/// Turns a decoded photo into the bytes the cache stores. The model crate implements this; the
/// library neither knows nor cares what the bytes mean.
pub trait Featurizer {
    /// Names the network and weights, e.g. `"grser-swin-b-2023@<weights sha256>"`. Features are
    /// stored per backbone id: a new id means every photo is featurized again, never mixed.
    fn backbone_id(&self) -> String;
    /// Features of one upright RGB photo.
    fn featurize(&mut self, img: &RgbImage) -> Result<Vec<u8>>;
}

/// Reported after each photo that needed work (new or changed); current photos are not reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Photos handled so far, including this one.
    pub done: usize,
    /// Photos that need work in this run.
    pub total: usize,
    /// The photo just handled.
    pub current: PathBuf,
}

/// What an indexing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Albums found by the scan.
    pub albums: usize,
    /// Photo files found by the scan.
    pub photos: usize,
    /// Photos decoded and featurized.
    pub featurized: usize,
    /// Photos already current, not read.
    pub unchanged: usize,
    /// Photos whose mtime or size changed but whose bytes did not: metadata updated only.
    pub touched: usize,
    /// Photos found at a new path with the bytes of a vanished one: moved, features kept.
    pub renamed: usize,
    /// Cached photos that no longer exist, forgotten.
    pub removed: usize,
    /// Files and folders that could not be used, with the reason; the run went on without them.
    pub problems: Vec<(PathBuf, String)>,
    /// Where the run's time went, stage by stage.
    pub times: StageTimes,
}

/// Wall time of each stage of an indexing run, summed over its photos (the scan and the comparison
/// with the cache are the rest of the run's time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Reading each photo's bytes and hashing them.
    pub read: Duration,
    /// Decoding the image.
    pub decode: Duration,
    /// The featurizer (for the model: resize, forward pass, encoding of the features).
    pub featurize: Duration,
    /// Writing the cache's transactions.
    pub write: Duration,
}

impl StageTimes {
    fn add(&mut self, other: StageTimes) {
        self.read += other.read;
        self.decode += other.decode;
        self.featurize += other.featurize;
        self.write += other.write;
    }
}

impl IndexReport {
    /// Adds `other`'s counts and problems to this report (several watcher events applied as one change).
    pub fn merge(&mut self, other: IndexReport) {
        self.albums += other.albums;
        self.photos += other.photos;
        self.featurized += other.featurized;
        self.unchanged += other.unchanged;
        self.touched += other.touched;
        self.renamed += other.renamed;
        self.removed += other.removed;
        self.problems.extend(other.problems);
        self.times.add(other.times);
    }
}

/// After this many featurizer failures in a row the run stops: the model, not the photos, is
/// broken, and reporting it once beats reporting every photo of the library.
pub const MAX_FEATURIZER_FAILURES_IN_A_ROW: usize = 5;

/// Indexes everything under `roots` (see the module docs). `batch` photos per transaction (0 is
/// taken as 1); `progress` is called after each photo that needed work.
pub fn index(
    cache: &Cache,
    roots: &[PathBuf],
    f: &mut dyn Featurizer,
    batch: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<IndexReport> {
    let backbone = f.backbone_id();
    let mut scanned = scan::scan(roots);
    let mut report = IndexReport {
        albums: scanned.albums.len(),
        photos: scanned.photo_count(),
        problems: scanned.problems.clone(),
        ..Default::default()
    };
    let mut cached = HashMap::new();
    for root in roots {
        for photo in cache.photos_under(&scan::absolute(root), &backbone)? {
            cached.insert(photo.path.clone(), photo);
        }
    }
    let candidates: Vec<PathBuf> = std::mem::take(&mut scanned.albums).into_iter().flat_map(|a| a.photos).collect();
    let present: HashSet<&PathBuf> = candidates.iter().collect();
    let vanished: Vec<CachedPhoto> =
        cached.values().filter(|c| !present.contains(&c.path) && !scanned.is_unlisted(&c.path)).cloned().collect();
    let mut run =
        Run { cache, f, backbone, batch: batch.max(1), pending: Vec::new(), pending_photos: 0, report: &mut report };
    run.update(&candidates, &cached, vanished, progress)?;
    Ok(report)
}

/// Brings the cache up to date with one watcher event (see [`super::watch`]).
///
/// `Changed` of a file re-checks that file; of a folder, indexes the folder's subtree.
/// `Removed` forgets the photo or every photo under the folder. `Renamed` moves rows (features
/// kept) and then re-checks the destination. `Rescan` indexes the root again.
pub fn apply_event(
    cache: &Cache,
    event: &LibraryEvent,
    f: &mut dyn Featurizer,
    batch: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<IndexReport> {
    let mut report = IndexReport::default();
    let changed = match event {
        LibraryEvent::Removed(path) => {
            report.removed = cache.write_batch(|c| Ok(usize::from(c.remove_photo(path)?) + c.remove_under(path)?))?;
            return Ok(report);
        }
        LibraryEvent::Renamed(from, to) => {
            report.renamed = cache.rename_path(from, to)?;
            to
        }
        LibraryEvent::Changed(path) | LibraryEvent::Rescan(path) => path,
    };
    let meta = match fs::metadata(changed) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Gone again before we looked: same as removed.
            report.removed =
                cache.write_batch(|c| Ok(usize::from(c.remove_photo(changed)?) + c.remove_under(changed)?))?;
            return Ok(report);
        }
        Err(e) => {
            report.problems.push((changed.clone(), io_reason(&e)));
            return Ok(report);
        }
    };
    if meta.is_dir() {
        let mut sub = index(cache, std::slice::from_ref(changed), f, batch, progress)?;
        sub.renamed += report.renamed;
        return Ok(sub);
    }
    if !photo::has_photo_extension(changed) {
        return Ok(report);
    }
    report.photos = 1;
    let backbone = f.backbone_id();
    let mut cached = HashMap::new();
    if let Some(id) = cache.photo_id(changed)? {
        let state = cache.photo_state(changed)?.expect("photo_id found the row");
        let has_features = cache.has_features(id, &backbone)?;
        cached.insert(changed.clone(), CachedPhoto { id, path: changed.clone(), state, has_features });
    }
    let mut run =
        Run { cache, f, backbone, batch: batch.max(1), pending: Vec::new(), pending_photos: 0, report: &mut report };
    run.update(std::slice::from_ref(changed), &cached, Vec::new(), progress)?;
    Ok(report)
}

/// A write waiting for the next batch commit.
enum Op {
    Upsert { file: FileState, width: u32, height: u32, features: Vec<u8> },
    Touch(FileState),
    Rename { from: PathBuf, to: PathBuf },
    Remove(PathBuf),
}

struct FileState {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    sha256: String,
}

impl From<&PhotoFile> for FileState {
    fn from(f: &PhotoFile) -> Self {
        FileState { path: f.path.clone(), size: f.size, mtime_ns: f.mtime_ns, sha256: f.sha256.clone() }
    }
}

struct Run<'a> {
    cache: &'a Cache,
    f: &'a mut dyn Featurizer,
    backbone: String,
    batch: usize,
    pending: Vec<Op>,
    pending_photos: usize,
    report: &'a mut IndexReport,
}

impl Run<'_> {
    /// Checks `candidates` against `cached`, does the work, then forgets `vanished` photos that
    /// did not turn out to be renamed.
    fn update(
        &mut self,
        candidates: &[PathBuf],
        cached: &HashMap<PathBuf, CachedPhoto>,
        vanished: Vec<CachedPhoto>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let mut work = Vec::new();
        for path in candidates {
            let meta = match fs::metadata(path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.report.problems.push((path.clone(), io_reason(&e)));
                    continue;
                }
            };
            match cached.get(path) {
                Some(c)
                    if c.has_features && c.state.size == meta.len() && c.state.mtime_ns == photo::mtime_ns(&meta) =>
                {
                    self.report.unchanged += 1;
                }
                c => work.push((path, c)),
            }
        }
        let mut vanished_by_hash: HashMap<String, Vec<CachedPhoto>> = HashMap::new();
        for v in vanished {
            vanished_by_hash.entry(v.state.sha256.clone()).or_default().push(v);
        }

        let total = work.len();
        let mut failures_in_a_row = 0;
        for (i, (path, cached)) in work.into_iter().enumerate() {
            let result = self.one(path, cached, &mut vanished_by_hash, &mut failures_in_a_row);
            if let Err(e) = result {
                self.flush()?; // keep what was done before the model broke
                return Err(e);
            }
            if self.pending_photos >= self.batch {
                self.flush()?;
            }
            progress(Progress { done: i + 1, total, current: path.clone() });
        }
        self.flush()?;

        let gone: Vec<PathBuf> = vanished_by_hash.into_values().flatten().map(|v| v.path).collect();
        if !gone.is_empty() {
            self.report.removed += self.cache.write_batch(|c| {
                let mut n = 0;
                for path in &gone {
                    n += usize::from(c.remove_photo(path)?);
                }
                Ok(n)
            })?;
        }
        Ok(())
    }

    /// Handles one photo that is new or may have changed. Per-file problems are reported, not
    /// returned; an `Err` means the run must stop.
    fn one(
        &mut self,
        path: &Path,
        cached: Option<&CachedPhoto>,
        vanished_by_hash: &mut HashMap<String, Vec<CachedPhoto>>,
        failures_in_a_row: &mut usize,
    ) -> Result<()> {
        let start = Instant::now();
        let file = photo::read_file(path);
        self.report.times.read += start.elapsed();
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                self.report.problems.push((path.to_path_buf(), e.reason()));
                return Ok(());
            }
        };
        match cached {
            Some(c) if c.state.sha256 == file.sha256 && c.has_features => {
                self.push(Op::Touch(FileState::from(&file)));
                self.report.touched += 1;
                return Ok(());
            }
            Some(_) => {}
            None => {
                // Same bytes as a photo that vanished in this scan: a move, keep its row.
                if let Some(old) = take_one(vanished_by_hash, &file.sha256) {
                    self.push(Op::Rename { from: old.path, to: path.to_path_buf() });
                    self.report.renamed += 1;
                    if old.has_features {
                        self.push(Op::Touch(FileState::from(&file)));
                        return Ok(());
                    }
                }
            }
        }
        let start = Instant::now();
        let img = file.decode();
        self.report.times.decode += start.elapsed();
        let img = match img {
            Ok(img) => img,
            Err(e) => {
                self.report.problems.push((path.to_path_buf(), e.reason()));
                // The cached row described other bytes: forget it rather than serve stale features.
                if cached.is_some_and(|c| c.state.sha256 != file.sha256) {
                    self.push(Op::Remove(path.to_path_buf()));
                    self.report.removed += 1;
                }
                return Ok(());
            }
        };
        let start = Instant::now();
        let features = self.f.featurize(&img);
        self.report.times.featurize += start.elapsed();
        match features {
            Ok(features) => {
                *failures_in_a_row = 0;
                let (width, height) = img.dimensions();
                self.push(Op::Upsert { file: FileState::from(&file), width, height, features });
                self.report.featurized += 1;
                Ok(())
            }
            Err(e) => {
                *failures_in_a_row += 1;
                if *failures_in_a_row >= MAX_FEATURIZER_FAILURES_IN_A_ROW {
                    bail!(
                        "the featurizer ({}) failed on {} photos in a row, last on {}: {e:#}",
                        self.backbone,
                        *failures_in_a_row,
                        path.display()
                    );
                }
                self.report.problems.push((path.to_path_buf(), format!("featurizer failed: {e:#}")));
                Ok(())
            }
        }
    }

    fn push(&mut self, op: Op) {
        if !matches!(op, Op::Rename { .. }) {
            self.pending_photos += 1;
        }
        self.pending.push(op);
    }

    /// Commits the pending writes in one transaction.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        self.pending_photos = 0;
        let backbone = &self.backbone;
        let start = Instant::now();
        let written = self.cache.write_batch(|c| {
            for op in &ops {
                match op {
                    Op::Upsert { file, width, height, features } => {
                        let id = c.upsert_photo(&NewPhoto {
                            path: &file.path,
                            size: file.size,
                            mtime_ns: file.mtime_ns,
                            sha256: &file.sha256,
                            width: *width,
                            height: *height,
                        })?;
                        c.put_features(id, backbone, features)?;
                    }
                    Op::Touch(file) => {
                        c.touch_photo(&file.path, file.size, file.mtime_ns)?;
                    }
                    Op::Rename { from, to } => {
                        c.rename_path(from, to)?;
                    }
                    Op::Remove(path) => {
                        c.remove_photo(path)?;
                    }
                }
            }
            Ok(())
        });
        self.report.times.write += start.elapsed();
        written
    }
}

fn take_one(map: &mut HashMap<String, Vec<CachedPhoto>>, hash: &str) -> Option<CachedPhoto> {
    let list = map.get_mut(hash)?;
    let one = list.pop();
    if list.is_empty() {
        map.remove(hash);
    }
    one
}
