//! The daemon's indexer thread: owns the file watcher, the writing cache connection and a featurizer.
//! It indexes every watched folder once at start, then applies each settled watcher event (as
//! `photoseg index --watch` does) and each root change the D-Bus side sends, reporting progress as
//! [`Signal`]s. One thread does all writes, so the cache sees one writer.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::library::indexer::{apply_event, IndexReport, Progress};
use crate::library::watch::{LibraryEvent, LibraryWatcher};
use crate::library::{self, Cache};
use crate::query::featurizer::ModelFeaturizer;
use crate::query::model::LoadedModel;

/// Photos per cache transaction in the daemon's indexer (as `photoseg index`).
const BATCH: usize = 16;

/// At most this many `IndexProgress` signals a second (the last photo of a run is always reported).
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// The first wait before a failed run is retried; each further failure doubles it, up to
/// [`RETRY_MAX`]. Short enough that a freed disk is noticed soon, long enough that a broken disk is not
/// hammered.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How long the indexer waits for the next of a run of watcher events released together.
const GATHER: Duration = Duration::from_millis(20);
/// At most this many events in one change, so that an endless stream still reports.
const GATHER_MAX: usize = 4096;

/// What the indexer reports; the D-Bus side turns these into the `IndexProgress` and `IndexFinished`
/// signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Progress {
        done: u32,
        total: u32,
        path: PathBuf,
    },
    Finished {
        featurized: u32,
        failed: u32,
    },
    /// Every watched folder is indexed for the model of this backbone id, handed over by
    /// [`Command::NewModel`].
    ModelIndexed {
        backbone: String,
    },
}

/// Orders from the D-Bus side.
#[derive(Debug)]
pub(super) enum Command {
    /// A new root (already in the config): watch it and index it; `replaced` roots were inside it.
    AddRoot {
        root: PathBuf,
        replaced: Vec<PathBuf>,
    },
    /// A root removed from the config: stop watching it and forget its photos.
    RemoveRoot(PathBuf),
    /// Index with this model from now on, every watched folder first ([`Signal::ModelIndexed`] once
    /// they all are).
    NewModel(LoadedModel),
    Stop,
}

pub(super) struct Setup {
    pub model: LoadedModel,
    pub cache_file: PathBuf,
    pub roots: Vec<PathBuf>,
    pub settle: Duration,
    pub signals: tokio::sync::mpsc::UnboundedSender<Signal>,
    pub indexing: Arc<AtomicBool>,
}

pub(super) fn spawn(setup: Setup) -> Result<(mpsc::Sender<Command>, JoinHandle<()>)> {
    let cache = Cache::open(&setup.cache_file)?;
    // A root that cannot be watched (an unplugged disk) is logged, not fatal: the others are served.
    let (mut watcher, events) = LibraryWatcher::start(&[], setup.settle)?;
    for root in &setup.roots {
        if let Err(e) = watcher.watch(root) {
            tracing::warn!("{e:#}");
        }
    }
    let (tx, rx) = mpsc::channel();
    // Indexing runs from the start: Status says so before the thread gets going.
    setup.indexing.store(!setup.roots.is_empty(), Ordering::SeqCst);
    let handle = std::thread::Builder::new()
        .name("photoseg indexer".into())
        .spawn(move || {
            let mut w = Worker {
                featurizer: ModelFeaturizer::new(&setup.model, setup.model.codec()),
                cache,
                roots: setup.roots,
                signals: setup.signals,
                indexing: setup.indexing,
                retry: None,
                pending_model: None,
            };
            w.run(watcher, events, rx);
        })
        .context("cannot start the indexer thread")?;
    Ok((tx, handle))
}

struct Worker {
    featurizer: ModelFeaturizer,
    cache: Cache,
    roots: Vec<PathBuf>,
    signals: tokio::sync::mpsc::UnboundedSender<Signal>,
    indexing: Arc<AtomicBool>,
    /// After a failed run (a full disk, a cache it could not write): when to index every root again,
    /// and the wait after that one if it fails too. The watcher's events of a failed run are lost, so
    /// only a full run brings the library back in line.
    retry: Option<(Instant, Duration)>,
    /// The backbone id of a new model whose full run has not succeeded yet.
    pending_model: Option<String>,
}

impl Worker {
    fn run(
        &mut self,
        mut watcher: LibraryWatcher,
        events: mpsc::Receiver<LibraryEvent>,
        commands: mpsc::Receiver<Command>,
    ) {
        if !self.roots.is_empty() {
            let roots = self.roots.clone();
            self.index(&roots);
        }
        loop {
            match commands.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => break,
                Ok(Command::AddRoot { root, replaced }) => {
                    for r in &replaced {
                        if let Err(e) = watcher.unwatch(r) {
                            tracing::warn!("{e:#}");
                        }
                    }
                    self.roots.retain(|r| !replaced.contains(r));
                    if let Err(e) = watcher.watch(&root) {
                        tracing::warn!("{e:#}");
                    }
                    self.roots.push(root.clone());
                    self.index(&[root]);
                    continue;
                }
                Ok(Command::NewModel(model)) => {
                    let backbone = model.own_backbone_id();
                    if let Some(ms) = std::env::var(super::SWITCH_DELAY_ENV).ok().and_then(|v| v.parse().ok()) {
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                    tracing::info!("indexing every watched folder for the model {} ({backbone})", model.name);
                    self.featurizer = ModelFeaturizer::new(&model, model.codec());
                    self.pending_model = Some(backbone);
                    let roots = self.roots.clone();
                    self.index(&roots);
                    continue;
                }
                Ok(Command::RemoveRoot(root)) => {
                    if let Err(e) = watcher.unwatch(&root) {
                        tracing::warn!("{e:#}");
                    }
                    self.roots.retain(|r| *r != root);
                    match self.cache.write_batch(|c| c.remove_under(&root)) {
                        Ok(n) => tracing::info!("stopped watching {}: forgot {n} photos", root.display()),
                        Err(e) => tracing::warn!("cannot forget the photos of {}: {e:#}", root.display()),
                    }
                    continue;
                }
                Err(TryRecvError::Empty) => {}
            }
            if self.retry.is_some_and(|(at, _)| Instant::now() >= at) {
                tracing::info!("indexing every watched folder again after the failure");
                let roots = self.roots.clone();
                self.index(&roots);
                continue;
            }
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(event) => {
                    // What the settle gate releases together (a folder copied in, photos pasted) is one
                    // change with one IndexFinished, not one per file. The gate sends its events one
                    // after another, so take what follows within a moment.
                    let mut batch = vec![event];
                    while batch.len() < GATHER_MAX {
                        let Ok(next) = events.recv_timeout(GATHER) else { break };
                        batch.push(next);
                    }
                    self.apply(&batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        drop(watcher);
    }

    /// A full indexing run over `roots`.
    fn index(&mut self, roots: &[PathBuf]) {
        self.indexing.store(true, Ordering::SeqCst);
        let signals = self.signals.clone();
        let mut progress = throttled(signals);
        let result = library::index(&self.cache, roots, &mut self.featurizer, BATCH, &mut progress);
        let complete = roots.len() == self.roots.len() && result.is_ok();
        self.finish(result, "indexing");
        if complete {
            self.retry = None; // every root is in line again
            if let Some(backbone) = self.pending_model.take() {
                let _ = self.signals.send(Signal::ModelIndexed { backbone });
            }
        }
    }

    /// Watcher events released together, applied as one change.
    fn apply(&mut self, events: &[LibraryEvent]) {
        self.indexing.store(true, Ordering::SeqCst);
        let mut progress = throttled(self.signals.clone());
        let mut total = IndexReport::default();
        let mut result = Ok(());
        for event in events {
            match apply_event(&self.cache, event, &mut self.featurizer, BATCH, &mut progress) {
                Ok(r) => total.merge(r),
                Err(e) => {
                    result = Err(e);
                    break; // the retry's full run covers the rest
                }
            }
        }
        let result = result.map(|()| total);
        match &result {
            Ok(r) if r.featurized == 0 && r.problems.is_empty() => {
                self.indexing.store(false, Ordering::SeqCst);
                tracing::debug!("{} events: {r:?}", events.len());
            }
            _ => self.finish(result, "following a change"),
        }
    }

    fn finish(&mut self, result: Result<IndexReport>, what: &str) {
        self.indexing.store(false, Ordering::SeqCst);
        match result {
            Ok(r) => {
                for (path, reason) in &r.problems {
                    tracing::info!("{}: {reason}", path.display());
                }
                let _ = self
                    .signals
                    .send(Signal::Finished { featurized: r.featurized as u32, failed: r.problems.len() as u32 });
            }
            Err(e) => {
                let wait = self.retry.map_or(RETRY_FIRST, |(_, last)| (last * 2).min(RETRY_MAX));
                tracing::error!("{what} failed: {e:#}; indexing everything again in {} s", wait.as_secs());
                self.retry = Some((Instant::now() + wait, wait));
                let _ = self.signals.send(Signal::Finished { featurized: 0, failed: 1 });
            }
        }
    }
}

/// A progress callback that sends at most one signal per [`PROGRESS_EVERY`], and always the last.
fn throttled(signals: tokio::sync::mpsc::UnboundedSender<Signal>) -> impl FnMut(Progress) {
    let mut last: Option<Instant> = None;
    move |p: Progress| {
        let due = last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || p.done == p.total;
        if due {
            last = Some(Instant::now());
            let _ = signals.send(Signal::Progress { done: p.done as u32, total: p.total as u32, path: p.current });
        }
    }
}
