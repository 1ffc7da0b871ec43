//! `photoseg daemon`: the library served on the session bus (docs/daemon.md).
//!
//! [`Library`] is the daemon core: a cheap cloneable handle that owns the model, the query engines, a
//! reading connection to the cache and the watched folders, and talks to the indexer thread
//! ([`worker`]) that owns the file watcher and the writing cache connection. Its methods are blocking
//! (SQLite, the network) and check their arguments; the D-Bus modules ([`dbus`], [`search_provider`],
//! [`krunner`]) are thin: they convert arguments, run a `Library` method on a blocking thread and
//! convert the answer. No tensor maths here: answers come from [`crate::query::Engine`].
//!
//! Concurrency: [`ENGINES`] query engines; each caller runs one query at a time, so one caller's long
//! query never holds another caller back ([`Engines`]). `Status`, `ListRoots` and the root changes never
//! wait for a query, and the D-Bus connection keeps serving while any of them runs.
mod arguments;
pub mod client;
pub mod dbus;
pub mod desktop;
mod engines;
pub mod error;
pub mod krunner;
pub mod search_provider;
pub mod thumbnail;
mod worker;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::library::config::{Config, RootAdded};
use crate::library::{paths, Cache};
use crate::query::model::{active_model_dir, model_stamp, resolve_model_dir, LoadedModel, MODEL_ENV};
use crate::query::{self, Engine, QueryBackend, QueryProgress, QueryRequest, QueryResult};
use arguments::{absolute, lexically_normal};
pub use arguments::{
    check_expression, MAX_ALBUM_FILTERS, MAX_ALBUM_FILTER_BYTES, MAX_EXPRESSION_BYTES, MAX_PATH_BYTES,
};
use engines::{build_engine, Engines};
pub use engines::{DESKTOP_CALLER, ENGINES};
pub use error::{Error, Result};
pub use worker::Signal;

/// The daemon's well-known name on the session bus.
pub const BUS_NAME: &str = "org.photoseg.Photoseg1";
/// The object serving `org.photoseg.Photoseg1`.
pub const OBJECT_PATH: &str = "/org/photoseg/Photoseg1";
/// The object serving `org.gnome.Shell.SearchProvider2`.
pub const SEARCH_PROVIDER_PATH: &str = "/org/photoseg/SearchProvider";
/// The object serving `org.kde.krunner1`.
pub const KRUNNER_PATH: &str = "/org/photoseg/krunner";
/// Set to `1` to make `photoseg query` answer in-process even when a daemon runs.
pub const NO_DAEMON_ENV: &str = "PHOTOSEG_NO_DAEMON";
/// Test hook: every query the daemon runs first sleeps this many milliseconds while holding the
/// engine, standing in for a slow model so tests can show that other clients are still served.
pub const QUERY_DELAY_ENV: &str = "PHOTOSEG_DAEMON_QUERY_DELAY_MS";
/// Test hook: `QueryStreamed` sleeps this many milliseconds after each mask it sends, standing in for
/// slow mask decoding so tests can show that the answer streams (the first lines come before the last).
pub const MASK_DELAY_ENV: &str = "PHOTOSEG_DAEMON_MASK_DELAY_MS";
/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--model DIR` (else `$PHOTOSEG_MODEL`, else the installed or built-in model).
    pub model_dir: Option<PathBuf>,
    /// How long a folder must be quiet before its changes are indexed.
    pub settle: Duration,
}

/// The daemon core; clones share everything.
#[derive(Clone)]
pub struct Library {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("backbone", &self.backbone()).finish_non_exhaustive()
    }
}

struct Inner {
    cache_file: PathBuf,
    config_file: PathBuf,
    engines: Engines,
    /// What the engines should answer with: the model and the watched folders (album names are
    /// relative to the roots), with a version number: an engine built for an older version is rebuilt
    /// by the next query that takes it, so neither a root change nor a new model waits for a running
    /// query.
    view: Mutex<View>,
    /// A model the indexer is indexing the library for; queries switch to it when that is done
    /// ([`Library::use_model`]).
    pending: Mutex<Option<LoadedModel>>,
    /// For `Status` and argument checks: never blocked by a query (WAL lets readers run alongside the
    /// indexer's writes).
    reader: Mutex<Cache>,
    /// The watched folders; the config file is written under this lock.
    roots: Mutex<Vec<PathBuf>>,
    worker: Mutex<Option<(mpsc::Sender<worker::Command>, JoinHandle<()>)>>,
    indexing: Arc<AtomicBool>,
    query_delay: Duration,
    mask_delay: Duration,
    /// Photos opened through photoseg with the expression that found them (a desktop search result,
    /// `Open`), for the photo viewer to draw that mask when it shows the photo ([`Library::opened_expression`]).
    opened: Mutex<std::collections::HashMap<PathBuf, (String, Instant)>>,
    /// The cache could not be opened for writing: no indexer, and the watched folders cannot change.
    read_only: bool,
}

/// The model answering and the folders, as of `version`.
#[derive(Clone)]
struct View {
    version: u64,
    roots: Vec<PathBuf>,
    model: LoadedModel,
    backbone: String,
}

/// How often the daemon looks for a newly installed or chosen model (when no `--model` or
/// `$PHOTOSEG_MODEL` fixed it): reading a small file and two file dates, cheap enough to do often.
pub const MODEL_POLL: Duration = Duration::from_secs(2);
/// Test hook: the indexer waits this many milliseconds before it indexes the library for a new model,
/// so tests can show that queries are answered by the old model meanwhile.
pub const SWITCH_DELAY_ENV: &str = "PHOTOSEG_DAEMON_SWITCH_DELAY_MS";

/// How long an opened photo's expression waits for the viewer to ask for it (eog's start on a busy
/// machine takes seconds, not minutes).
const OPENED_FOR: Duration = Duration::from_secs(300);

/// Status counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub photos: u32,
    pub indexed: u32,
    pub albums: u32,
    /// "idle" or "indexing".
    pub state: &'static str,
}

/// A photo's mask in the format asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskAnswer {
    pub found: bool,
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// The formats `GetMask` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFormat {
    /// 8-bit grey PNG, 255 = object.
    Png,
    /// COCO compressed RLE counts string.
    Rle,
}

impl MaskFormat {
    fn parse(format: &str) -> Result<Self> {
        match format {
            "png" => Ok(MaskFormat::Png),
            "rle" => Ok(MaskFormat::Rle),
            other => Err(Error::InvalidArgument(format!("unknown mask format {other:?}; use \"png\" or \"rle\""))),
        }
    }
}

impl Library {
    /// Loads the model, opens the cache and the config, and starts the indexer thread (which indexes
    /// every watched folder once, then follows their changes). Indexing signals arrive on the receiver.
    pub fn open(opts: &Options) -> anyhow::Result<(Library, tokio::sync::mpsc::UnboundedReceiver<Signal>)> {
        let model = LoadedModel::load(&resolve_model_dir(opts.model_dir.as_deref())?)?;
        let cache_file = paths::cache_file()?;
        let config_file = paths::config_file()?;
        let roots = Config::load(&config_file)?.roots;
        // A cache that cannot be written (a read-only medium) is still served: queries answer from it,
        // and nothing is indexed or changed.
        let engines =
            (0..ENGINES).map(|_| build_engine(&model, &cache_file, &roots)).collect::<anyhow::Result<Vec<_>>>()?;
        let backbone = engines[0].backbone().to_string();
        let reader = Cache::open_for_reading(&cache_file)?;
        let read_only = reader.is_read_only()?;
        let indexing = Arc::new(AtomicBool::new(false));
        let (signals_tx, signals_rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = if read_only {
            None
        } else {
            Some(worker::spawn(worker::Setup {
                model: model.clone(),
                cache_file: cache_file.clone(),
                roots: roots.clone(),
                settle: opts.settle,
                signals: signals_tx,
                indexing: indexing.clone(),
            })?)
        };
        let query_delay = delay_from_env(QUERY_DELAY_ENV);
        let mask_delay = delay_from_env(MASK_DELAY_ENV);
        let view = View { version: 0, roots: roots.clone(), model, backbone };
        let inner = Inner {
            cache_file,
            config_file,
            engines: Engines::new(engines),
            view: Mutex::new(view),
            pending: Mutex::new(None),
            reader: Mutex::new(reader),
            roots: Mutex::new(roots),
            worker: Mutex::new(worker),
            read_only,
            indexing,
            query_delay,
            mask_delay,
            opened: Mutex::new(Default::default()),
        };
        Ok((Library { inner: Arc::new(inner) }, signals_rx))
    }

    /// Opens the library's photo `path` with the desktop's opener, remembering `expression` for the
    /// photo viewer (the eog plugin asks [`Library::opened_expression`] when the photo appears).
    pub fn open_with_expression(&self, path: &str, expression: &str) -> Result<()> {
        let photo = self.known_photo(path)?;
        let expression = check_expression(expression, Vec::new())?.expression;
        self.remember_opened(&photo, &expression);
        desktop::open(&photo);
        Ok(())
    }

    /// Remembers that `photo` is being opened to show what `expression` finds in it.
    pub fn remember_opened(&self, photo: &Path, expression: &str) {
        let mut opened = lock(&self.inner.opened);
        opened.retain(|_, (_, at)| at.elapsed() < OPENED_FOR);
        opened.insert(photo.to_path_buf(), (expression.to_string(), Instant::now()));
    }

    /// The expression `path` was opened with through photoseg in the last [`OPENED_FOR`], once: the
    /// viewer asks when the photo appears, and a later, unrelated viewing shows no overlay.
    pub fn opened_expression(&self, path: &str) -> Result<Option<String>> {
        let photo = self.known_photo(path)?;
        let mut opened = lock(&self.inner.opened);
        Ok(opened.remove(&photo).filter(|(_, at)| at.elapsed() < OPENED_FOR).map(|(e, _)| e))
    }

    /// The backbone id of the model answering (the `Model` property).
    pub fn backbone(&self) -> String {
        lock(&self.inner.view).backbone.clone()
    }

    /// What users call the model answering (the `ModelName` property).
    pub fn model_name(&self) -> String {
        lock(&self.inner.view).model.name.clone()
    }

    /// The cache file this daemon serves (the `CacheFile` property).
    pub fn cache_file(&self) -> &Path {
        &self.inner.cache_file
    }

    /// How long `QueryStreamed` waits after each mask ([`MASK_DELAY_ENV`], tests only).
    pub fn mask_delay(&self) -> Duration {
        self.inner.mask_delay
    }

    /// The model directory.
    pub fn model_dir(&self) -> PathBuf {
        lock(&self.inner.view).model.dir.clone()
    }

    /// Starts answering with `model` once the library is indexed for it: the indexer indexes every
    /// watched folder with it in the background (the old model's features stay in the cache), and
    /// queries are answered by the current model and its features until [`Library::model_indexed`]
    /// switches. The model answering now changes nothing, unless another one is being indexed for:
    /// then the indexer goes back to it.
    pub fn use_model(&self, model: LoadedModel) -> anyhow::Result<()> {
        let backbone = model.own_backbone_id();
        // Back to the answering model while another was being indexed for: the indexer must index
        // with it again (the switch is then to the same model); with nothing pending, nothing to do.
        if backbone == self.backbone() && lock(&self.inner.pending).is_none() {
            return Ok(());
        }
        if self.inner.read_only {
            anyhow::bail!(
                "the cache {} cannot be written, so the library cannot be indexed for the model {}; the daemon \
                 keeps answering with {}",
                self.inner.cache_file.display(),
                model.name,
                self.model_name()
            );
        }
        *lock(&self.inner.pending) = Some(model.clone());
        self.tell_worker(worker::Command::NewModel(model)).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The indexer finished a full run for `backbone`: when that is the pending model's, queries are
    /// answered by it from now on. Returns its name then.
    pub fn model_indexed(&self, backbone: &str) -> Option<String> {
        let mut pending = lock(&self.inner.pending);
        if pending.as_ref().is_none_or(|m| m.own_backbone_id() != backbone) {
            return None;
        }
        let model = pending.take()?;
        let name = model.name.clone();
        let mut view = lock(&self.inner.view);
        view.version += 1;
        view.backbone = backbone.to_string();
        view.model = model;
        Some(name)
    }

    /// Answers `expression` over every album or those named by `albums` (`photoseg query`) for
    /// `caller` (its D-Bus sender: [`Engines`]).
    pub fn query(&self, caller: &str, expression: &str, albums: Vec<String>) -> Result<QueryResult> {
        let request = check_expression(expression, albums)?;
        self.run_query(caller, &request, || true)?.ok_or_else(|| Error::Failed("the query was cancelled".into()))
    }

    /// Runs `request` for `caller` once an engine is free for it; `None` when `still_wanted` says no
    /// by then (a desktop search superseded by the next keystroke).
    pub fn run_query(
        &self,
        caller: &str,
        request: &QueryRequest,
        still_wanted: impl Fn() -> bool,
    ) -> Result<Option<QueryResult>> {
        self.with_engine(caller, request, still_wanted, |engine| engine.run(request))
    }

    /// [`Library::query`], telling `progress` the decision as soon as it is made and then each mask
    /// (the D-Bus `QueryStreamed`).
    pub fn query_streaming(
        &self,
        caller: &str,
        expression: &str,
        albums: Vec<String>,
        progress: &mut dyn QueryProgress,
    ) -> Result<QueryResult> {
        let request = check_expression(expression, albums)?;
        self.with_engine(caller, &request, || true, |engine| engine.query_streaming(&request, progress))?
            .ok_or_else(|| Error::Failed("the query was cancelled".into()))
    }

    /// Runs `work` for `caller` on an engine once one is free for it ([`Engines`]; rebuilt first when
    /// the roots changed); `None` when `still_wanted` says no by then.
    fn with_engine(
        &self,
        caller: &str,
        request: &QueryRequest,
        still_wanted: impl Fn() -> bool,
        work: impl FnOnce(&mut Engine) -> anyhow::Result<QueryResult>,
    ) -> Result<Option<QueryResult>> {
        let mut lease = self.inner.engines.take(caller);
        if !still_wanted() {
            return Ok(None);
        }
        tracing::debug!("query {:?} has the engine", request.expression);
        let view = lock(&self.inner.view).clone();
        let (engine, built_for) = lease.engine.as_mut().expect("a lease holds its engine until dropped");
        if *built_for != view.version {
            *engine = build_engine(&view.model, &self.inner.cache_file, &view.roots).map_err(Error::failed)?;
            *built_for = view.version;
        }
        if !self.inner.query_delay.is_zero() {
            std::thread::sleep(self.inner.query_delay);
        }
        let started = Instant::now();
        let result = work(engine).map_err(Error::failed)?;
        tracing::debug!("query {:?} answered in {:.3} s", request.expression, started.elapsed().as_secs_f64());
        Ok(Some(result))
    }

    /// The mask of the object `expression` refers to in the photo at `path`, decided within its album.
    pub fn mask(&self, caller: &str, path: &str, expression: &str, format: &str) -> Result<MaskAnswer> {
        let mut request = check_expression(expression, Vec::new())?;
        let format = MaskFormat::parse(format)?;
        let photo = self.known_photo(path)?;
        {
            let reader = lock(&self.inner.reader);
            let id = reader
                .photo_id(&photo)
                .map_err(Error::failed)?
                .ok_or_else(|| Error::UnknownPhoto(unknown_photo(&photo)))?;
            let backbone = self.backbone();
            if !reader.has_features(id, &backbone).map_err(Error::failed)? {
                return Err(Error::NotIndexed(format!(
                    "{} has no features for the model {} yet; the daemon indexes it once its folder can be read, ask again later",
                    photo.display(),
                    backbone
                )));
            }
        }
        let album = photo.parent().unwrap_or(Path::new("/")).to_path_buf();
        request.albums = vec![query::album_name(&album, &self.roots())];
        let result = self.run_query(caller, &request, || true)?.expect("always wanted");
        let answer = result.albums.iter().find(|a| a.album == album).ok_or_else(|| {
            Error::Failed(format!("the album {} was not answered; run the query again", album.display()))
        })?;
        let Some(p) = answer.positives.iter().find(|p| p.path == photo) else {
            return Ok(MaskAnswer { found: false, width: 0, height: 0, data: Vec::new() });
        };
        let data = match format {
            MaskFormat::Png => thumbnail::mask_png(p).map_err(Error::failed)?,
            MaskFormat::Rle => query::rle::encode(&p.mask, p.width as usize, p.height as usize)
                .map_err(Error::failed)?
                .counts
                .into_bytes(),
        };
        Ok(MaskAnswer { found: true, width: p.width, height: p.height, data })
    }

    /// Photos known, photos with features for this model, albums, and whether indexing runs.
    pub fn status(&self) -> Result<Status> {
        let backbone = self.backbone();
        let reader = lock(&self.inner.reader);
        let albums = reader.albums().map_err(Error::failed)?;
        let (mut photos, mut indexed) = (0u32, 0u32);
        for a in &albums {
            let entries = reader.album_entries(a.id, &backbone).map_err(Error::failed)?;
            photos += entries.len() as u32;
            indexed += entries.iter().filter(|e| e.has_features).count() as u32;
        }
        let state = if self.inner.indexing.load(Ordering::SeqCst) { "indexing" } else { "idle" };
        Ok(Status { photos, indexed, albums: albums.len() as u32, state })
    }

    /// The watched folders.
    pub fn roots(&self) -> Vec<PathBuf> {
        lock(&self.inner.roots).clone()
    }

    /// Watches `path` (absolute, an existing readable folder) and indexes it in the background.
    pub fn add_root(&self, path: &str) -> Result<()> {
        self.check_writable()?;
        let dir = absolute(path, "folder")?;
        let mut roots = lock(&self.inner.roots);
        let mut config = Config { roots: roots.clone() };
        let added = config.add_root(&dir).map_err(|e| Error::InvalidArgument(format!("{e:#}")))?;
        let RootAdded::Added { root, replaced } = added else {
            return Ok(()); // already watched: nothing to do
        };
        config.save(&self.inner.config_file).map_err(Error::failed)?;
        *roots = config.roots.clone();
        self.roots_changed(config.roots);
        self.tell_worker(worker::Command::AddRoot { root, replaced })
    }

    /// Stops watching the root `path` and forgets its photos.
    pub fn remove_root(&self, path: &str) -> Result<()> {
        self.check_writable()?;
        let dir = absolute(path, "folder")?;
        let mut roots = lock(&self.inner.roots);
        let mut config = Config { roots: roots.clone() };
        let root = config.remove_root(&dir).map_err(|e| Error::InvalidArgument(format!("{e:#}")))?;
        config.save(&self.inner.config_file).map_err(Error::failed)?;
        *roots = config.roots.clone();
        self.roots_changed(config.roots);
        self.tell_worker(worker::Command::RemoveRoot(root))
    }

    /// The engines see `roots` from their next query on.
    fn roots_changed(&self, roots: Vec<PathBuf>) {
        let mut view = lock(&self.inner.view);
        view.version += 1;
        view.roots = roots;
    }

    /// Checks that `path` names a photo the cache knows, inside a watched folder; returns it as the
    /// cache spells it.
    pub fn known_photo(&self, path: &str) -> Result<PathBuf> {
        // `ROOT/../../etc/passwd` starts with ROOT component by component: judge the path with its
        // `..` resolved, so it is outside, and is answered the same whether or not the file exists.
        let path = lexically_normal(&absolute(path, "photo")?);
        let roots = self.roots();
        let inside = |p: &Path| roots.iter().any(|r| p.starts_with(r));
        let photo = if inside(&path) {
            path.clone()
        } else {
            // A symbolic link or `..` may still lead into a root.
            match std::fs::canonicalize(&path) {
                Ok(real) if inside(&real) => real,
                _ => {
                    let watched: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
                    return Err(Error::OutsideRoots(if watched.is_empty() {
                        format!("{} is not inside a watched folder: no folders are watched", path.display())
                    } else {
                        format!("{} is not inside a watched folder; watched: {}", path.display(), watched.join(", "))
                    }));
                }
            }
        };
        let known = lock(&self.inner.reader).photo_id(&photo).map_err(Error::failed)?.is_some();
        if !known {
            // The cache stores real paths: try the canonical spelling before giving up.
            if let Ok(real) = std::fs::canonicalize(&photo) {
                if real != photo && lock(&self.inner.reader).photo_id(&real).map_err(Error::failed)?.is_some() {
                    return Ok(real);
                }
            }
            return Err(Error::UnknownPhoto(unknown_photo(&photo)));
        }
        Ok(photo)
    }

    /// Stops the indexer thread, waiting at most `grace` for the event in hand. A run cut short loses
    /// at most its batch in flight (the cache commits per batch); the next start redoes it.
    pub fn shutdown(&self, grace: Duration) {
        let Some((tx, handle)) = lock(&self.inner.worker).take() else { return };
        let _ = tx.send(worker::Command::Stop);
        let deadline = Instant::now() + grace;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::warn!("the indexer did not stop within {grace:?}; its batch in flight will be redone next time");
        }
    }

    /// Refuses a change to the watched folders when the cache is read-only (nothing could index them).
    fn check_writable(&self) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::Failed(format!(
                "the cache {} cannot be written (a read-only disk or folder?), so this daemon answers queries but \
                 cannot watch or index folders",
                self.inner.cache_file.display()
            )));
        }
        Ok(())
    }

    fn tell_worker(&self, command: worker::Command) -> Result<()> {
        match lock(&self.inner.worker).as_ref() {
            Some((tx, _)) if tx.send(command).is_ok() => Ok(()),
            _ => Err(Error::Failed("the indexer has stopped (the daemon is shutting down)".into())),
        }
    }
}

/// A test hook's delay: milliseconds in the variable `name`, zero when unset.
fn delay_from_env(name: &str) -> Duration {
    std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis).unwrap_or_default()
}

/// A lock whose holder panicked is still usable: every guarded value stays consistent between
/// statements (a panicking query leaves the engine as it was).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unknown_photo(photo: &Path) -> String {
    let hint = if photo.exists() {
        "it is not indexed yet or is not a photo photoseg reads (see `photoseg index`)"
    } else {
        "no such file"
    };
    format!("{} is not a photo of the library: {hint}", photo.display())
}

/// Lossy UTF-8 of a path, for D-Bus strings (which must be UTF-8).
pub fn path_string(path: &Path) -> String {
    String::from_utf8_lossy(path.as_os_str().as_bytes()).into_owned()
}

/// Loads the model and serves the library on `conn` under [`BUS_NAME`] until SIGINT or SIGTERM;
/// then gives the name up and stops the indexer. The connection is the caller's (a session bus in
/// `photoseg daemon`, any bus in tests).
pub async fn run(conn: zbus::Connection, opts: Options) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    // `--model` or `$PHOTOSEG_MODEL` fix the model; otherwise the daemon follows the active one.
    let fixed_model = opts.model_dir.is_some() || std::env::var_os(MODEL_ENV).is_some_and(|v| !v.is_empty());
    let (library, signals) = tokio::task::spawn_blocking(move || Library::open(&opts)).await??;
    dbus::serve(&conn, library.clone(), signals).await.context("cannot serve on the session bus")?;
    eprintln!(
        "photoseg daemon: serving {BUS_NAME} (model {}, {}, {})",
        library.model_name(),
        library.backbone(),
        library.model_dir().display()
    );
    if !fixed_model {
        tokio::spawn(follow_active_model(library.clone()));
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = conn.closed() => eprintln!("photoseg daemon: the bus connection closed"),
    }
    let _ = conn.release_name(BUS_NAME).await;
    let lib = library.clone();
    tokio::task::spawn_blocking(move || lib.shutdown(Duration::from_secs(3))).await?;
    eprintln!("photoseg daemon: stopped");
    Ok(())
}

/// Follows the active model (`photoseg model install`, `photoseg model use`): every [`MODEL_POLL`] it
/// looks at which model is active and at its files' sizes and dates; when they change it loads that
/// model and hands it to [`Library::use_model`], which re-indexes in the background and switches when
/// done. A model that does not load is logged and the current one keeps answering.
async fn follow_active_model(library: Library) {
    let mut seen = model_stamp(&library.model_dir());
    loop {
        tokio::time::sleep(MODEL_POLL).await;
        let dir = match tokio::task::spawn_blocking(active_model_dir).await {
            Ok(Ok((dir, _))) => dir,
            Ok(Err(e)) => {
                tracing::debug!("cannot tell the active model: {e:#}");
                continue;
            }
            Err(_) => continue,
        };
        let files = model_stamp(&dir);
        if files == seen {
            continue;
        }
        seen = files;
        let lib = library.clone();
        let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let model = LoadedModel::load(&dir)?;
            tracing::info!("the active model is now {} ({}); indexing the library for it", model.name, dir.display());
            lib.use_model(model)
        })
        .await;
        match loaded {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("not switching to the new active model: {e:#}"),
            Err(e) => tracing::warn!("not switching to the new active model: {e}"),
        }
    }
}
