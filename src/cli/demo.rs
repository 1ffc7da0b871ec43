//! `photoseg demo`: the whole product on a library whose truth is known. Generates a small synthetic
//! photo library (albums never seen in training, some with colour-shape combinations never seen at all),
//! indexes it with the model into a private cache, asks each album's expressions over the whole library,
//! and prints what was found and rejected against the truth, with overlays a person can open.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::data::Mask;
use crate::library::cache::Cache;
use crate::library::indexer;
use crate::library::search::SearchIndex;
use crate::query::featurizer::ModelFeaturizer;
use crate::query::model::{resolve_model_dir, LoadedModel};
use crate::query::render::{self, OVERLAY_SUFFIX};
use crate::query::{Engine, QueryRequest};
use crate::synth::{self, SynthConfig, SynthDataset};

/// Options of `photoseg demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo library, its cache and the overlays (default: a folder under the system's
    /// temporary directory). Replaced if it holds an earlier demo.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Seed of the generated library (the built-in model was trained on seed 0's training split).
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Albums with combinations seen in training, and with combinations never seen.
    #[arg(long, default_value_t = 3)]
    pub albums: usize,
    /// Model directory (default: $PHOTOSEG_MODEL, the installed model, else the built-in model).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
}

/// What the demo measured, over every (expression, album) pair.
#[derive(Debug, Default)]
struct Tally {
    true_pos: usize,
    false_neg: usize,
    true_neg: usize,
    false_pos: usize,
    iou_sum: f64,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("photoseg-demo"));
    if dir.exists() {
        if !dir.join(".photoseg-demo").exists() && std::fs::read_dir(&dir)?.next().is_some() {
            anyhow::bail!("refusing to use {}: it is not empty and holds no earlier demo", dir.display());
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing the earlier demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(".photoseg-demo"), "photoseg demo folder\n")?;
    let truth_dir = dir.join("truth");
    let library = dir.join("library");
    let overlays = dir.join("overlays");

    // 1. A library with known truth: photos only in `library/`, masks and expressions kept apart.
    let cfg = SynthConfig {
        seed: args.seed,
        albums_train: 0,
        albums_val: args.albums,
        albums_heldout: args.albums,
        ..SynthConfig::default()
    };
    synth::generate(&cfg, &truth_dir, |_, _| {})?;
    let ds = SynthDataset::open(&truth_dir)?;
    let mut groups = Vec::new();
    for split in ["val", "heldout"] {
        for g in ds.split(split)? {
            let album = library.join(format!("{split}-{}", g.album.file_name().unwrap_or_default().to_string_lossy()));
            std::fs::create_dir_all(&album)?;
            for p in &g.photos {
                let dst = album.join(p.path.file_name().context("photo without a name")?);
                if !dst.exists() {
                    std::fs::copy(&p.path, &dst)?;
                }
            }
            groups.push((split, album, g));
        }
    }

    // 2. The model and a private index of the library.
    let model_dir = resolve_model_dir(args.model.as_deref())?;
    let model = LoadedModel::load(&model_dir)?;
    println!("model: {} ({})", model.name, model_dir.display());
    if !model.grser.cfg.description.is_empty() {
        println!("       {}", model.grser.cfg.description);
    }
    let cache = Cache::open(&dir.join("cache.sqlite3"))?;
    let codec = model.codec();
    let mut featurizer = ModelFeaturizer::new(&model, codec);
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("indexing {pos}/{len} photos {wide_bar} {per_sec} {eta}")?);
    let start = Instant::now();
    let report = indexer::index(&cache, std::slice::from_ref(&library), &mut featurizer, 32, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
    })?;
    bar.finish_and_clear();
    println!(
        "indexed {} photos in {} albums in {:.1} s",
        report.featurized,
        report.albums,
        start.elapsed().as_secs_f64()
    );

    // 3. Each album's expressions, asked over the whole library, checked against the truth.
    let search = SearchIndex::open(&dir.join("search"))?;
    let mut engine = Engine::new(model, codec, cache, search, vec![library.clone()]);
    std::fs::create_dir_all(&overlays)?;
    let mut tally = Tally::default();
    for (split, album, g) in &groups {
        let truth: HashMap<PathBuf, Option<PathBuf>> =
            g.photos.iter().map(|p| (album.join(p.path.file_name().unwrap_or_default()), p.mask.clone())).collect();
        let album_name = album.file_name().unwrap_or_default().to_string_lossy().to_string();
        let start = Instant::now();
        let result = engine.run(&QueryRequest::new(&g.expression, vec![album_name.clone()])?)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let Some(a) = result.albums.iter().find(|a| &a.album == album) else { continue };
        let found: HashMap<&Path, &crate::query::Positive> =
            a.positives.iter().map(|p| (p.path.as_path(), p)).collect();
        let mut lines = Vec::new();
        let (mut tp, mut fp, mut fneg, mut tn) = (0, 0, 0, 0);
        for (photo, mask) in &truth {
            let hit = found.get(photo.as_path());
            match (mask, hit) {
                (Some(m), Some(p)) => {
                    tp += 1;
                    let iou = mask_iou(m, p)?;
                    tally.iou_sum += iou;
                    lines.push(format!("    found     {}  IoU {:.2}", short(photo), iou));
                    render::write_overlay(&render::output_path(&overlays, &a.name, &p.path, OVERLAY_SUFFIX), p)?;
                }
                (Some(_), None) => {
                    fneg += 1;
                    lines.push(format!("    MISSED    {}", short(photo)));
                }
                (None, Some(p)) => {
                    fp += 1;
                    lines.push(format!("    WRONG     {}  (not there)", short(photo)));
                    render::write_overlay(&render::output_path(&overlays, &a.name, &p.path, OVERLAY_SUFFIX), p)?;
                }
                (None, None) => tn += 1,
            }
        }
        lines.sort();
        let kind = if *split == "heldout" { "never-seen combination" } else { "seen combination" };
        println!(
            "\n\"{}\" in {album_name} ({kind}): {tp} of {} found, {tn} of {} rightly rejected ({ms:.0} ms)",
            g.expression,
            tp + fneg,
            tn + fp
        );
        for l in lines {
            println!("{l}");
        }
        tally.true_pos += tp;
        tally.false_pos += fp;
        tally.false_neg += fneg;
        tally.true_neg += tn;
    }
    let pct = |a: usize, b: usize| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    println!(
        "\nsummary: {:.0}% of photos with the object found (mean mask IoU {:.2}), {:.0}% of photos without it rejected",
        pct(tally.true_pos, tally.true_pos + tally.false_neg),
        if tally.true_pos == 0 { 0.0 } else { tally.iou_sum / tally.true_pos as f64 },
        pct(tally.true_neg, tally.true_neg + tally.false_pos)
    );
    println!("overlays (object outlined, the rest dimmed): {}", overlays.display());
    println!("library: {}", library.display());
    Ok(())
}

fn short(p: &Path) -> String {
    let album = p.parent().and_then(|a| a.file_name()).unwrap_or_default().to_string_lossy();
    format!("{album}/{}", p.file_name().unwrap_or_default().to_string_lossy())
}

/// IoU of a found mask with the truth mask file.
fn mask_iou(truth: &Path, found: &crate::query::Positive) -> Result<f64> {
    let gt = Mask::from_png(truth)?;
    let pred = Mask::from_data(found.width, found.height, found.mask.clone())?;
    crate::eval::iou(&pred, &gt)
}
