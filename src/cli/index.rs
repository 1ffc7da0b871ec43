//! `photoseg index [PATH...]`: watch PATHs (when given) and bring the feature cache up to date with the
//! model. Bad files are reported and skipped; they do not make the command fail.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::library::config::{Config, RootAdded};
use crate::library::{self, paths, Cache};
use crate::query::featurizer::ModelFeaturizer;
use crate::query::model::{resolve_model_dir, LoadedModel};
use crate::query::DEFAULT_CODEC;

/// Photos per cache transaction: a killed run redoes at most this many.
const BATCH: usize = 16;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folders to watch and index (default: the folders already watched).
    pub paths: Vec<PathBuf>,
    /// Model directory (default: $PHOTOSEG_MODEL, else the installed model).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
}

pub fn run(args: IndexArgs) -> Result<()> {
    let config_path = paths::config_file()?;
    let mut config = Config::load(&config_path)?;
    let mut targets = Vec::new();
    let mut messages = Vec::new();
    for path in &args.paths {
        match config.add_root(path)? {
            RootAdded::Added { root, replaced } => {
                messages.push(format!("now watching {}", root.display()));
                for r in replaced {
                    messages.push(format!("  (replaces {}, which is inside it)", r.display()));
                }
                targets.push(root);
            }
            RootAdded::AlreadyWatched { root, .. } => targets.push(root),
        }
    }
    if args.paths.is_empty() {
        targets = config.roots.clone();
        if targets.is_empty() {
            bail!("no folders are watched yet; run `photoseg index PATH` with your photo folder");
        }
    }
    // Load the model before saving the config: a missing model should change nothing.
    let model = LoadedModel::load(&resolve_model_dir(args.model.as_deref())?)?;
    if !args.paths.is_empty() {
        config.save(&config_path)?;
    }
    for m in messages {
        eprintln!("{m}");
    }
    let cache = Cache::open(&paths::cache_file()?)?;
    let mut featurizer = ModelFeaturizer::new(&model, DEFAULT_CODEC);

    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} photos  {per_sec}  eta {eta}  {wide_msg}")
            .expect("valid progress template"),
    );
    let start = Instant::now();
    let report = library::index(&cache, &targets, &mut featurizer, BATCH, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.current.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    });
    bar.finish_and_clear();
    let report = report?;
    let secs = start.elapsed().as_secs_f64();

    let mut out = format!(
        "{} photos in {} albums: {} featurized, {} unchanged, {} touched, {} moved, {} removed ({:.1} s{})\n",
        report.photos,
        report.albums,
        report.featurized,
        report.unchanged,
        report.touched,
        report.renamed,
        report.removed,
        secs,
        if report.featurized > 0 && secs > 0.0 {
            format!(", {:.1} photos/s", report.featurized as f64 / secs)
        } else {
            String::new()
        }
    );
    if !report.problems.is_empty() {
        out.push_str(&format!(
            "{} could not be used:\n",
            plural(report.problems.len(), "file or folder", "files or folders")
        ));
        for (path, reason) in &report.problems {
            out.push_str(&format!("  {}: {reason}\n", path.display()));
        }
    }
    super::print_out(&out)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
