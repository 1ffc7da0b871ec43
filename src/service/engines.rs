//! The query engines and who may use them: [`ENGINES`] engines over one shared model, and a queue per
//! caller, so that one caller's long query, or a flood of them, never holds every other caller back.
//! docs/daemon.md ("Concurrency") says why a queue per caller rather than a time budget or cancellation.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use super::lock;
use crate::library::search::SearchIndex;
use crate::library::{paths, Cache};
use crate::query::model::LoadedModel;
use crate::query::Engine;

/// Query engines at once. Each is a cache connection and a search-index reader over the one shared
/// model; two let a second caller be answered beside a long query on a 2-core laptop, and more would
/// only split the same cores.
pub const ENGINES: usize = 2;

/// The query engines and the callers using them. A caller (a D-Bus sender; the desktop searches count
/// as one) runs one query at a time, and any free engine serves the next caller that has none running:
/// a caller who floods the daemon with queries, or sends one that takes minutes, occupies one engine
/// and leaves the other to everyone else. Waiting callers are woken together; the first to run takes
/// the engine (no strict order between them).
pub(super) struct Engines {
    pool: Mutex<EnginePool>,
    freed: Condvar,
}

struct EnginePool {
    /// Free engines with the roots version each was built for.
    free: Vec<(Engine, u64)>,
    /// Callers with a query running.
    busy: HashSet<String>,
}

/// An engine taken from the pool: given back (and its caller freed) when dropped, whatever happened.
pub(super) struct EngineLease<'a> {
    engines: &'a Engines,
    caller: String,
    pub(super) engine: Option<(Engine, u64)>,
}

impl Engines {
    pub(super) fn new(engines: Vec<Engine>) -> Self {
        let free = engines.into_iter().map(|e| (e, 0)).collect();
        Engines { pool: Mutex::new(EnginePool { free, busy: HashSet::new() }), freed: Condvar::new() }
    }

    /// Waits until `caller` has no query running and an engine is free, and takes it.
    pub(super) fn take(&self, caller: &str) -> EngineLease<'_> {
        let mut pool = lock(&self.pool);
        loop {
            if !pool.busy.contains(caller) {
                if let Some(engine) = pool.free.pop() {
                    pool.busy.insert(caller.to_string());
                    return EngineLease { engines: self, caller: caller.to_string(), engine: Some(engine) };
                }
            }
            pool = self.freed.wait(pool).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Drop for EngineLease<'_> {
    fn drop(&mut self) {
        let mut pool = lock(&self.engines.pool);
        if let Some(engine) = self.engine.take() {
            pool.free.push(engine);
        }
        pool.busy.remove(&self.caller);
        drop(pool);
        self.engines.freed.notify_all();
    }
}

/// The caller that desktop searches (GNOME Shell, KRunner) and their thumbnails count as: each
/// keystroke's search supersedes the last, so they queue behind each other, not beside.
pub const DESKTOP_CALLER: &str = "desktop search";

/// A query engine over the cache file and `roots` (a read-only cache is opened read-only).
pub(super) fn build_engine(model: &LoadedModel, cache_file: &Path, roots: &[PathBuf]) -> anyhow::Result<Engine> {
    Ok(Engine::new(
        model.clone(),
        model.codec(),
        Cache::open_for_reading(cache_file)?,
        SearchIndex::open_or_in_memory(&paths::search_dir()?),
        roots.to_vec(),
    ))
}
