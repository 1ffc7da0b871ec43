//! Writing a whole data set: refusing foreign folders, seeding albums, running them on all cores.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use image::{GrayImage, ImageFormat, Luma};
use serde::Deserialize;

use super::compose::{self, AlbumSpec};
use super::dataset::{
    AlbumFile, ExpressionEntry, Manifest, SceneEntry, SplitCounts, ALBUM_FILE, FORMAT, MANIFEST_FILE, MASKS_DIR, SPLITS,
};
use super::language::{vocabulary, Color, Combo, Shape};
use super::rng::{hash_str, mix, Rng};
use super::{Look, SynthConfig};

/// The held-out (colour, shape) combinations for a seed: `count` pairs, no two sharing a colour or a
/// shape, so every colour and every shape still appears in training with other partners. Sorted.
pub fn heldout_combinations(seed: u64, count: usize) -> Vec<Combo> {
    let mut rng = Rng::new(mix(&[seed, hash_str("heldout-combinations")]));
    let mut colors = Color::ALL.to_vec();
    let mut shapes = Shape::ALL.to_vec();
    rng.shuffle(&mut colors);
    rng.shuffle(&mut shapes);
    let mut combos: Vec<Combo> =
        colors.into_iter().zip(shapes).take(count).map(|(color, shape)| Combo { color, shape }).collect();
    combos.sort();
    combos
}

/// The part of an older manifest needed to clear it away.
#[derive(Deserialize)]
struct ManifestHead {
    format: String,
    splits: BTreeMap<String, Vec<String>>,
}

/// Makes `out` ready: creates it, accepts it empty, or clears an earlier synth data set from it
/// (only the albums its manifest lists, and the manifest). Anything else is refused.
fn prepare_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()));
    }
    if !out.is_dir() {
        bail!("refusing to write into {}: it is not a folder", out.display());
    }
    let empty = fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?.next().is_none();
    if empty {
        return Ok(());
    }
    let manifest = out.join(MANIFEST_FILE);
    let head: Option<ManifestHead> = fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .filter(|h: &ManifestHead| h.format.starts_with("photoseg-synth/"));
    let Some(head) = head else {
        bail!("refusing to write into {}: the folder is not empty and holds no photoseg synth data set", out.display());
    };
    for (split, albums) in &head.splits {
        // Names come from a file: only plain names are followed.
        let plain = |s: &str| !s.is_empty() && !s.contains(['/', '\\']) && s != "." && s != "..";
        if !plain(split) {
            continue;
        }
        for album in albums.iter().filter(|a| plain(a)) {
            let dir = out.join(split).join(album);
            if dir.is_dir() {
                fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        let _ = fs::remove_dir(out.join(split)); // only if now empty
    }
    fs::remove_file(&manifest).with_context(|| format!("cannot remove {}", manifest.display()))?;
    Ok(())
}

fn write_manifest(out: &Path, manifest: &Manifest) -> Result<()> {
    let path = out.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(manifest)? + "\n";
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// One album to generate.
struct Job {
    split: &'static str,
    name: String,
    seed: u64,
}

/// Generates and writes one album; returns its totals.
fn write_album(out: &Path, job: &Job, spec: &AlbumSpec) -> Result<SplitCounts> {
    let mut rng = Rng::new(job.seed);
    let album = compose::album(&mut rng, spec)?;
    let dir: PathBuf = out.join(job.split).join(&job.name);
    fs::create_dir_all(dir.join(MASKS_DIR)).with_context(|| format!("cannot create {}", dir.display()))?;
    let names: Vec<String> = (0..album.photos.len()).map(|i| format!("photo_{i:03}.png")).collect();
    let mut entries: Vec<ExpressionEntry> = album
        .expressions
        .iter()
        .map(|e| ExpressionEntry {
            text: e.text.clone(),
            color: e.color,
            shape: e.shape,
            size: e.size,
            position: e.position,
            positives: BTreeMap::new(),
            negatives: Vec::new(),
        })
        .collect();
    let mut scenes = BTreeMap::new();
    for (photo, name) in album.photos.iter().zip(&names) {
        let (w, h) = (photo.width, photo.height);
        let path = dir.join(name);
        photo
            .image
            .save_with_format(&path, ImageFormat::Png)
            .with_context(|| format!("cannot write {}", path.display()))?;
        for (k, target) in photo.targets.iter().enumerate() {
            match *target {
                Some(t) => {
                    let mask = GrayImage::from_fn(w, h, |x, y| {
                        let label = photo.labels[(y * w + x) as usize];
                        Luma([if usize::from(label) == t { 255 } else { 0 }])
                    });
                    let rel = format!("{MASKS_DIR}/e{k}_{name}");
                    let path = dir.join(&rel);
                    mask.save_with_format(&path, ImageFormat::Png)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    entries[k].positives.insert(name.clone(), rel);
                }
                None => entries[k].negatives.push(name.clone()),
            }
        }
        scenes.insert(
            name.clone(),
            SceneEntry {
                background: photo.texture,
                objects: photo.objects.clone(),
                targets: photo.targets.clone(),
                // Classic square sets keep the older, shorter records.
                size: (!spec.square || spec.look != Look::Classic).then_some([w, h]),
                drawings: photo.drawings.clone(),
                effects: photo.effects,
            },
        );
    }
    let counts = SplitCounts {
        albums: 1,
        photos: names.len(),
        groups: entries.len(),
        positives: entries.iter().map(|e| e.positives.len()).sum(),
        negatives: entries.iter().map(|e| e.negatives.len()).sum(),
    };
    let file = AlbumFile { photos: names, expressions: entries, scenes };
    let path = dir.join(ALBUM_FILE);
    fs::write(&path, serde_json::to_string_pretty(&file)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(counts)
}

/// Writes a data set into `out` and returns its manifest. `out` must be missing, empty, or hold an
/// earlier synth data set (which is replaced); any other folder is refused. `progress(done, total)`
/// is called (on the calling thread) after each album. Albums are generated on all cores; the files
/// do not depend on how many.
pub fn generate(cfg: &SynthConfig, out: &Path, mut progress: impl FnMut(usize, usize)) -> Result<Manifest> {
    cfg.validate()?;
    prepare_out(out)?;
    let heldout = heldout_combinations(cfg.seed, cfg.heldout_combos);
    let seen: Vec<Combo> = Combo::all().into_iter().filter(|c| !heldout.contains(c)).collect();
    let counts_per_split = [cfg.albums_train, cfg.albums_val, cfg.albums_heldout];
    let mut jobs = Vec::new();
    let mut splits = BTreeMap::new();
    for (split, &count) in SPLITS.iter().zip(&counts_per_split) {
        let first = cfg.first_album;
        let names: Vec<String> = (first..first + count).map(|i| format!("album_{i:04}")).collect();
        for (i, name) in (first..).zip(&names) {
            jobs.push(Job { split, name: name.clone(), seed: mix(&[cfg.seed, hash_str(split), i as u64]) });
        }
        splits.insert(split.to_string(), names);
    }
    let mut manifest = Manifest {
        format: FORMAT.to_string(),
        complete: false,
        seed: cfg.seed,
        image_size: cfg.image_size,
        config: cfg.clone(),
        colors: Color::ALL.to_vec(),
        shapes: Shape::ALL.to_vec(),
        heldout_combinations: heldout.clone(),
        vocabulary: vocabulary().into_iter().map(String::from).collect(),
        splits,
        counts: BTreeMap::new(),
    };
    // Written first, marked incomplete: an interrupted run leaves a folder that a rerun may replace.
    write_manifest(out, &manifest)?;

    let spec_for = |split: &str| AlbumSpec {
        image_size: cfg.image_size,
        square: cfg.square,
        look: cfg.look,
        photos_min: cfg.photos_min,
        photos_max: cfg.photos_max,
        expressions_max: cfg.expressions_max,
        objects_max: cfg.objects_max,
        target_combos: if split == "heldout" { &heldout } else { &seen },
        forbidden: if split == "heldout" { &[] } else { &heldout },
    };
    let total = jobs.len();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(total.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<SplitCounts>)>();
    let mut results: Vec<Option<SplitCounts>> = vec![None; total];
    let mut first_error: Option<(usize, anyhow::Error)> = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (jobs, next, failed, spec_for) = (&jobs, &next, &failed, &spec_for);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() || failed.load(Ordering::Relaxed) {
                    break;
                }
                let job = &jobs[i];
                let result = write_album(out, job, &spec_for(job.split))
                    .with_context(|| format!("album {}/{}", job.split, job.name));
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                if tx.send((i, result)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut done = 0;
        for (i, result) in rx {
            match result {
                Ok(counts) => {
                    results[i] = Some(counts);
                    done += 1;
                    progress(done, total);
                }
                Err(err) => {
                    if first_error.as_ref().is_none_or(|(j, _)| i < *j) {
                        first_error = Some((i, err));
                    }
                }
            }
        }
    });
    if let Some((_, err)) = first_error {
        return Err(err);
    }
    for split in SPLITS {
        manifest.counts.insert(split.to_string(), SplitCounts::default());
    }
    for (job, counts) in jobs.iter().zip(results) {
        let counts = counts.expect("every album either succeeded or reported an error");
        *manifest.counts.get_mut(job.split).expect("split inserted above") += counts;
    }
    manifest.complete = true;
    write_manifest(out, &manifest)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heldout_combinations_use_each_colour_and_shape_once_and_follow_the_seed() {
        let a = heldout_combinations(1, 6);
        assert_eq!(a.len(), 6);
        let mut colors: Vec<Color> = a.iter().map(|c| c.color).collect();
        let mut shapes: Vec<Shape> = a.iter().map(|c| c.shape).collect();
        colors.dedup();
        shapes.sort();
        shapes.dedup();
        assert_eq!((colors.len(), shapes.len()), (6, 6));
        assert_eq!(a, heldout_combinations(1, 6));
        assert_ne!(a, heldout_combinations(2, 6));
        assert!(heldout_combinations(1, 0).is_empty());
    }
}
