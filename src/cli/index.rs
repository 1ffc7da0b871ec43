//! `photoseg index [PATH...] [--watch]`: watch PATHs (when given) and bring the feature cache up to date
//! with the model. Bad files are reported and skipped; they do not make the command fail. With `--watch`
//! the command then stays, following the folders' changes until SIGINT or SIGTERM.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::library::config::{Config, RootAdded};
use crate::library::indexer::{apply_event, IndexReport};
use crate::library::watch::{LibraryEvent, LibraryWatcher, DEFAULT_SETTLE};
use crate::library::{self, paths, Cache};
use crate::query::featurizer::ModelFeaturizer;
use crate::query::model::{resolve_model_dir, LoadedModel};

/// Photos per cache transaction: a killed run redoes at most this many.
const BATCH: usize = 16;

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Folders to watch and index (default: the folders already watched).
    pub paths: Vec<PathBuf>,
    /// Model directory (default: $PHOTOSEG_MODEL, else the installed model).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// After indexing, keep running and follow changes in the folders (one line per change on stderr)
    /// until interrupted (Ctrl-C or SIGTERM).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: how long a folder must be quiet, in milliseconds, before its changes are applied
    /// (a folder being copied in is indexed once the copy is done).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SETTLE.as_millis() as u64, requires = "watch")]
    pub settle: u64,
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
    let mut featurizer = ModelFeaturizer::new(&model, model.codec());

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
    super::print_out(&out)?;
    if args.watch {
        watch(&cache, &targets, &mut featurizer, Duration::from_millis(args.settle))?;
    }
    Ok(())
}

/// Follows changes under `roots` until SIGINT or SIGTERM. Each event is applied whole (its writes
/// commit in batches, as in a full run) before a signal is looked at, so the cache is left consistent.
fn watch(cache: &Cache, roots: &[PathBuf], featurizer: &mut ModelFeaturizer, settle: Duration) -> Result<()> {
    let stop = stop_on_signal()?;
    let (watcher, events) = LibraryWatcher::start(roots, settle)?;
    eprintln!(
        "watching {} for changes (settle {} ms); Ctrl-C to stop",
        plural(roots.len(), "folder", "folders"),
        settle.as_millis()
    );
    while !stop.load(Ordering::SeqCst) {
        let event = match events.recv_timeout(Duration::from_millis(100)) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match apply_event(cache, &event, featurizer, BATCH, &mut |_| {}) {
            Ok(report) => eprintln!("{}", describe(&event, &report)),
            Err(e) => eprintln!("photoseg: {}: {e:#}", event_name(&event)),
        }
    }
    drop(watcher);
    eprintln!("stopped watching");
    Ok(())
}

/// A flag set by SIGINT or SIGTERM (tokio's signal handling on a small thread of its own). Once it is
/// installed, those signals no longer end the process: the watch loop ends at the next event boundary.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
    let (mut int, mut term) = runtime.block_on(async {
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new().name("photoseg signals".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        });
        flag.store(true, Ordering::SeqCst);
    })?;
    Ok(stop)
}

fn event_name(event: &LibraryEvent) -> String {
    match event {
        LibraryEvent::Changed(p) => format!("changed {}", p.display()),
        LibraryEvent::Removed(p) => format!("removed {}", p.display()),
        LibraryEvent::Renamed(a, b) => format!("moved {} -> {}", a.display(), b.display()),
        LibraryEvent::Rescan(p) => format!("rescan {} (events were lost)", p.display()),
    }
}

/// One line per applied event: what happened on disk and what the cache did about it.
fn describe(event: &LibraryEvent, r: &IndexReport) -> String {
    let mut line = format!(
        "{}: {} featurized, {} touched, {} moved, {} removed",
        event_name(event),
        r.featurized,
        r.touched,
        r.renamed,
        r.removed
    );
    for (path, reason) in &r.problems {
        line.push_str(&format!("; {}: {reason}", path.display()));
    }
    line
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
