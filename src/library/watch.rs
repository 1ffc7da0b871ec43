//! Watching the library folders: filesystem events in, a channel of [`LibraryEvent`]s out.
//!
//! Two layers of debouncing, both here and nowhere else:
//! 1. notify-debouncer-full (short timeout) merges the raw inotify stream per path and pairs the
//!    two halves of a rename, so a move is one `Renamed`, not a delete plus a create.
//! 2. A settle gate holds each event until its folder has been quiet for `settle` (activity
//!    anywhere below a folder counts as activity of that folder). A folder being copied in is
//!    therefore reported once the copy is done, not file by half-written file.
//!
//! The watcher does no decoding and no SQL: the consumer (the daemon) hands each event to
//! [`super::indexer::apply_event`]. Consumers must treat events as hints and look at the disk:
//! a `Changed` path may be gone again, and `Removed` may name a folder.
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache};

use super::photo::has_photo_extension;

/// How long a folder must be quiet before its events are reported, by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// A change in the library the cache should follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LibraryEvent {
    /// A photo or a folder was created or modified (or moved in from outside the library).
    Changed(PathBuf),
    /// A photo or a folder was deleted (or moved out of the library).
    Removed(PathBuf),
    /// A photo or a folder moved within the library: (from, to).
    Renamed(PathBuf, PathBuf),
    /// Events under this root may have been lost (the kernel queue overflowed): scan it again.
    Rescan(PathBuf),
}

impl LibraryEvent {
    fn paths(&self) -> Vec<&Path> {
        match self {
            LibraryEvent::Changed(p) | LibraryEvent::Removed(p) | LibraryEvent::Rescan(p) => {
                vec![p]
            }
            LibraryEvent::Renamed(a, b) => vec![a, b],
        }
    }
}

/// Watches the library roots until dropped; events arrive on the receiver from [`LibraryWatcher::start`].
pub struct LibraryWatcher {
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
    roots: Arc<Mutex<Vec<PathBuf>>>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LibraryWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibraryWatcher").field("roots", &self.roots).finish_non_exhaustive()
    }
}

impl LibraryWatcher {
    /// Starts watching `roots` recursively; events are reported once their folder has been
    /// quiet for `settle` ([`DEFAULT_SETTLE`] for the daemon, a fraction of a second in tests).
    pub fn start(roots: &[PathBuf], settle: Duration) -> Result<(LibraryWatcher, Receiver<LibraryEvent>)> {
        let (raw_tx, raw_rx) = mpsc::channel::<DebounceEventResult>();
        let (out_tx, out_rx) = mpsc::channel();
        let merge = (settle / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
        let debouncer = new_debouncer(merge, None, move |res: DebounceEventResult| {
            let _ = raw_tx.send(res);
        })
        .context("cannot start the file watcher")?;
        let shared_roots = Arc::new(Mutex::new(Vec::new()));
        let worker_roots = shared_roots.clone();
        let worker = std::thread::Builder::new()
            .name("photoseg watch".into())
            .spawn(move || worker_loop(raw_rx, out_tx, worker_roots, settle))
            .context("cannot start the file watcher thread")?;
        let mut watcher = LibraryWatcher { debouncer: Some(debouncer), roots: shared_roots, worker: Some(worker) };
        for root in roots {
            watcher.watch(root)?;
        }
        Ok((watcher, out_rx))
    }

    /// Adds a root (after `photoseg` is told to watch another folder).
    pub fn watch(&mut self, root: &Path) -> Result<()> {
        let debouncer = self.debouncer.as_mut().expect("debouncer lives until drop");
        debouncer.watch(root, RecursiveMode::Recursive).map_err(|e| match e.kind {
            notify::ErrorKind::MaxFilesWatch => anyhow::anyhow!(
                "cannot watch {}: the system limit on watched folders is reached (raise the sysctl fs.inotify.max_user_watches)",
                root.display()
            ),
            _ => anyhow::anyhow!("cannot watch {}: {e}", root.display()),
        })?;
        self.roots.lock().expect("roots lock").push(root.to_path_buf());
        Ok(())
    }

    /// Stops watching a root.
    pub fn unwatch(&mut self, root: &Path) -> Result<()> {
        let debouncer = self.debouncer.as_mut().expect("debouncer lives until drop");
        debouncer.unwatch(root).with_context(|| format!("cannot stop watching {}", root.display()))?;
        self.roots.lock().expect("roots lock").retain(|r| r != root);
        Ok(())
    }
}

impl Drop for LibraryWatcher {
    /// Stops the debouncer; the worker then reports what it still holds and ends, which closes
    /// the receiver.
    fn drop(&mut self) {
        if let Some(d) = self.debouncer.take() {
            d.stop();
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn worker_loop(
    raw: Receiver<DebounceEventResult>,
    out: Sender<LibraryEvent>,
    roots: Arc<Mutex<Vec<PathBuf>>>,
    settle: Duration,
) {
    let tick = (settle / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut gate = SettleGate::new(settle);
    loop {
        match raw.recv_timeout(tick) {
            Ok(Ok(events)) => {
                let roots = roots.lock().expect("roots lock").clone();
                for ev in events {
                    for lib in translate(&ev, &roots) {
                        gate.add(lib, Instant::now(), &roots);
                    }
                }
            }
            Ok(Err(errors)) => {
                for e in errors {
                    tracing::warn!("file watcher: {e}");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for ev in gate.drain_all() {
                    let _ = out.send(ev);
                }
                return;
            }
        }
        for ev in gate.ready(Instant::now()) {
            if out.send(ev).is_err() {
                return; // nobody listens any more
            }
        }
    }
}

/// Maps one debounced notify event to library events, dropping what cannot matter to photos.
fn translate(ev: &DebouncedEvent, roots: &[PathBuf]) -> Vec<LibraryEvent> {
    if ev.need_rescan() {
        let hit: Vec<_> = roots
            .iter()
            .filter(|r| ev.paths.is_empty() || ev.paths.iter().any(|p| p.starts_with(r) || r.starts_with(p)))
            .map(|r| LibraryEvent::Rescan(r.clone()))
            .collect();
        return hit;
    }
    let Some(path) = ev.paths.first() else {
        return Vec::new();
    };
    let changed = |p: &Path| -> Vec<LibraryEvent> {
        if !hidden(p, roots) && (p.is_dir() || has_photo_extension(p)) {
            vec![LibraryEvent::Changed(p.to_path_buf())]
        } else {
            Vec::new()
        }
    };
    let removed = |p: &Path| -> Vec<LibraryEvent> {
        // Cannot stat a deleted path: folders and photos alike are reported.
        if hidden(p, roots) {
            Vec::new()
        } else {
            vec![LibraryEvent::Removed(p.to_path_buf())]
        }
    };
    match ev.kind {
        EventKind::Access(_) => Vec::new(),
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => removed(path),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
            let (from, to) = (&ev.paths[0], &ev.paths[1]);
            let to_dir = to.is_dir();
            let from_ok = !hidden(from, roots) && (to_dir || has_photo_extension(from));
            let to_ok = !hidden(to, roots) && (to_dir || has_photo_extension(to));
            match (from_ok, to_ok) {
                (true, true) => vec![LibraryEvent::Renamed(from.clone(), to.clone())],
                (false, true) => vec![LibraryEvent::Changed(to.clone())], // e.g. IMG_1.jpg.part -> IMG_1.jpg
                (true, false) => vec![LibraryEvent::Removed(from.clone())],
                (false, false) => Vec::new(),
            }
        }
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Any | EventKind::Other => {
            if path.exists() {
                changed(path)
            } else {
                removed(path)
            }
        }
        EventKind::Create(_) | EventKind::Modify(_) => changed(path),
    }
}

/// Whether any component of `p` below its root (or its name, outside roots) starts with a dot.
fn hidden(p: &Path, roots: &[PathBuf]) -> bool {
    let rel = roots.iter().find_map(|r| p.strip_prefix(r).ok());
    match rel {
        Some(rel) => rel.components().any(|c| c.as_os_str().as_bytes().first() == Some(&b'.')),
        None => p.file_name().is_some_and(|n| n.as_bytes().first() == Some(&b'.')),
    }
}

/// Holds events until the folders they touch have been quiet for `settle`, merging events on
/// the same path so the consumer sees the net change.
struct SettleGate {
    settle: Duration,
    pending: Vec<LibraryEvent>,
    /// Last activity of each path and of each folder above it (up to its root).
    activity: HashMap<PathBuf, Instant>,
}

impl SettleGate {
    fn new(settle: Duration) -> Self {
        SettleGate { settle, pending: Vec::new(), activity: HashMap::new() }
    }

    fn add(&mut self, ev: LibraryEvent, now: Instant, roots: &[PathBuf]) {
        for p in ev.paths() {
            let root = roots.iter().find(|r| p.starts_with(r));
            for (i, anc) in p.ancestors().enumerate() {
                if i > 1 && !root.is_some_and(|r| anc.starts_with(r)) {
                    break; // outside the roots only the path and its folder count
                }
                self.activity.insert(anc.to_path_buf(), now);
            }
        }
        match ev {
            LibraryEvent::Changed(ref p) => {
                self.pending.retain(|e| !matches!(e, LibraryEvent::Changed(q) | LibraryEvent::Removed(q) if q == p));
                self.pending.push(ev);
            }
            LibraryEvent::Removed(ref p) => {
                let mut also = Vec::new();
                self.pending.retain(|e| match e {
                    LibraryEvent::Changed(q) | LibraryEvent::Removed(q) => !q.starts_with(p),
                    // Moved and then deleted: the consumer must forget the old path.
                    LibraryEvent::Renamed(from, to) if to.starts_with(p) => {
                        also.push(LibraryEvent::Removed(from.clone()));
                        false
                    }
                    _ => true,
                });
                self.pending.extend(also);
                self.pending.push(ev);
            }
            LibraryEvent::Renamed(from, to) => {
                let mut origin = from.clone();
                self.pending.retain(|e| match e {
                    // Re-checked at `to` anyway; a removal of `from` cannot precede its move.
                    LibraryEvent::Changed(q) | LibraryEvent::Removed(q) if *q == from => false,
                    LibraryEvent::Changed(q) | LibraryEvent::Removed(q) => *q != to,
                    LibraryEvent::Renamed(a, b) if *b == from => {
                        origin = a.clone(); // a -> from -> to is a -> to
                        false
                    }
                    _ => true,
                });
                self.pending.push(LibraryEvent::Renamed(origin, to));
            }
            LibraryEvent::Rescan(_) => {
                if !self.pending.contains(&ev) {
                    self.pending.push(ev);
                }
            }
        }
    }

    fn quiet(&self, p: &Path, now: Instant) -> bool {
        let calm = |q: &Path| self.activity.get(q).is_none_or(|t| now.saturating_duration_since(*t) >= self.settle);
        calm(p) && p.parent().is_none_or(calm)
    }

    /// Events whose paths and folders have settled, in arrival order.
    fn ready(&mut self, now: Instant) -> Vec<LibraryEvent> {
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.pending).into_iter().partition(|e| e.paths().iter().all(|p| self.quiet(p, now)));
        self.pending = waiting;
        let settle = self.settle;
        self.activity.retain(|_, t| now.saturating_duration_since(*t) < settle);
        ready
    }

    fn drain_all(&mut self) -> Vec<LibraryEvent> {
        self.activity.clear();
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn gate_waits_for_the_folder_to_settle() {
        let roots = vec![p("/r")];
        let settle = Duration::from_secs(2);
        let mut gate = SettleGate::new(settle);
        let t0 = Instant::now();
        gate.add(LibraryEvent::Changed(p("/r/new/a.jpg")), t0, &roots);
        // Another file lands in the same folder a second later: a.jpg must wait for it too.
        gate.add(LibraryEvent::Changed(p("/r/new/b.jpg")), t0 + Duration::from_secs(1), &roots);
        assert!(gate.ready(t0 + Duration::from_millis(2500)).is_empty());
        let ready = gate.ready(t0 + Duration::from_millis(3100));
        assert_eq!(ready, vec![LibraryEvent::Changed(p("/r/new/a.jpg")), LibraryEvent::Changed(p("/r/new/b.jpg"))]);
        assert!(gate.activity.is_empty());
    }

    #[test]
    fn gate_merges_events_on_one_path() {
        let roots = vec![p("/r")];
        let mut gate = SettleGate::new(Duration::from_millis(10));
        let t0 = Instant::now();
        gate.add(LibraryEvent::Changed(p("/r/a/x.jpg")), t0, &roots);
        gate.add(LibraryEvent::Changed(p("/r/a/x.jpg")), t0, &roots);
        gate.add(LibraryEvent::Renamed(p("/r/a/x.jpg"), p("/r/a/y.jpg")), t0, &roots);
        gate.add(LibraryEvent::Renamed(p("/r/a/y.jpg"), p("/r/b/y.jpg")), t0, &roots);
        gate.add(LibraryEvent::Changed(p("/r/c/z.jpg")), t0, &roots);
        gate.add(LibraryEvent::Removed(p("/r/c")), t0, &roots);
        let ready = gate.ready(t0 + Duration::from_secs(1));
        assert_eq!(
            ready,
            vec![LibraryEvent::Renamed(p("/r/a/x.jpg"), p("/r/b/y.jpg")), LibraryEvent::Removed(p("/r/c"))]
        );
    }

    #[test]
    fn hidden_is_judged_below_the_root() {
        let roots = vec![p("/home/u/.photos")];
        assert!(!hidden(Path::new("/home/u/.photos/2024/a.jpg"), &roots));
        assert!(hidden(Path::new("/home/u/.photos/2024/.thumbs/a.jpg"), &roots));
        assert!(hidden(Path::new("/home/u/.photos/._a.jpg"), &roots));
    }
}
