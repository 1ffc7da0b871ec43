//! What the GNOME Shell search provider and the KRunner runner share: searching as the user types,
//! remembering the last results (for their thumbnails and to open them), and opening a photo.
//!
//! Desktop searches arrive one per keystroke. Each takes a ticket; a search still waiting for the
//! engine when a newer one arrives gives up and answers nothing, so the engine only works on what
//! the user typed last.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::{Error, Result};
use super::{check_expression, lock, thumbnail, Library};
use crate::query::{render, Positive};

/// Results per search, best first.
pub const MAX_RESULTS: usize = 20;
/// Searches remembered for their results' metadata and activation.
const RECENT: usize = 8;
/// Environment variable naming a program that opens a file or folder (given as its one argument);
/// default: `gio open`, else `xdg-open`.
pub const OPENER_ENV: &str = "PHOTOSEG_OPENER";

/// One photo found by a desktop search.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The album's name (its path below the watched folder).
    pub album: String,
    pub positive: Positive,
}

impl Hit {
    /// The result id handed to the desktop: the photo's path.
    pub fn id(&self) -> String {
        super::path_string(&self.positive.path)
    }
}

#[derive(Debug)]
struct Search {
    expression: String,
    hits: Vec<Hit>,
}

/// Shared by [`super::search_provider`] and [`super::krunner`]; clones share everything.
#[derive(Debug, Clone)]
pub struct Desktop {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    library: Library,
    ticket: AtomicU64,
    recent: Mutex<VecDeque<Search>>,
}

impl Desktop {
    pub fn new(library: Library) -> Self {
        if let Ok(dir) = thumbnail::thumbnail_dir(&library.roots()) {
            thumbnail::prune(&dir, std::time::Duration::from_secs(7 * 24 * 3600));
        }
        Desktop { inner: Arc::new(Inner { library, ticket: AtomicU64::new(0), recent: Mutex::new(VecDeque::new()) }) }
    }

    pub fn library(&self) -> &Library {
        &self.inner.library
    }

    /// The photos showing what `terms` (joined by spaces) says, best first, at most [`MAX_RESULTS`];
    /// empty when a newer search arrived before this one got the engine.
    pub fn search(&self, terms: &[String]) -> Result<Vec<Hit>> {
        let request = check_expression(&terms.join(" "), Vec::new())?;
        let ticket = self.inner.ticket.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!("desktop search for {:?} waits for the engine (ticket {ticket})", request.expression);
        let still_wanted = || self.inner.ticket.load(Ordering::SeqCst) == ticket;
        let Some(result) = self.inner.library.run_query(super::DESKTOP_CALLER, &request, still_wanted)? else {
            return Ok(Vec::new());
        };
        let mut hits: Vec<Hit> = result
            .albums
            .into_iter()
            .flat_map(|a| {
                let name = a.name;
                a.positives.into_iter().map(move |positive| Hit { album: name.clone(), positive })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.positive.score.total_cmp(&a.positive.score).then_with(|| a.positive.path.cmp(&b.positive.path))
        });
        hits.truncate(MAX_RESULTS);
        let mut recent = lock(&self.inner.recent);
        recent.push_front(Search { expression: result.expression, hits: hits.clone() });
        recent.truncate(RECENT);
        Ok(hits)
    }

    /// The most recent search result with this id, and the expression that found it.
    pub fn hit(&self, id: &str) -> Option<(String, Hit)> {
        lock(&self.inner.recent)
            .iter()
            .find_map(|s| s.hits.iter().find(|h| h.id() == id).map(|h| (s.expression.clone(), h.clone())))
    }

    /// The thumbnail of a hit with its mask drawn, or `None` (with a log line) when it cannot be made.
    pub fn thumbnail(&self, expression: &str, hit: &Hit) -> Option<PathBuf> {
        let made = thumbnail::thumbnail_dir(&self.inner.library.roots())
            .and_then(|dir| thumbnail::thumbnail(&dir, &hit.positive, expression));
        match made {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::warn!("no thumbnail for {}: {e:#}", hit.positive.path.display());
                None
            }
        }
    }

    /// Opens the photo `id` (a photo of the library, nothing else) or, with `folder`, its folder. A
    /// photo found by a recent search is remembered with that search's expression, so the photo viewer
    /// draws its mask ([`Library::opened_expression`]); `typed` stands in when the search is forgotten.
    pub fn open(&self, id: &str, folder: bool, typed: Option<&str>) -> Result<()> {
        let photo = self.inner.library.known_photo(id)?;
        if folder {
            open(photo.parent().unwrap_or(Path::new("/")));
            return Ok(());
        }
        let expression = self.hit(id).map(|(expression, _)| expression).or_else(|| typed.map(str::to_string));
        if let Some(expression) = expression.filter(|e| !e.trim().is_empty()) {
            self.inner.library.remember_opened(&photo, &expression);
        }
        open(&photo);
        Ok(())
    }

    /// Writes an overlay of every result of `terms` to `$XDG_CACHE_HOME/photoseg/results/<terms>/` and
    /// opens that folder: "show me all of them".
    pub fn show_all(&self, terms: &[String]) -> Result<()> {
        let hits = self.search(terms)?;
        let roots = self.inner.library.roots();
        let name: String = terms
            .join(" ")
            .chars()
            .map(|c| if c.is_alphanumeric() || c == ' ' || c == '-' { c } else { '_' })
            .take(80)
            .collect();
        let base = thumbnail::thumbnail_dir(&roots)
            .map_err(Error::failed)?
            .with_file_name("results")
            .join(if name.trim().is_empty() { "search".to_string() } else { name });
        let dir = render::prepare_output_dir(&base, &roots).map_err(Error::failed)?;
        for h in &hits {
            let path = render::output_path(&dir, &h.album, &h.positive.path, render::OVERLAY_SUFFIX);
            if let Err(e) = render::write_overlay(&path, &h.positive) {
                tracing::warn!("no overlay for {}: {e:#}", h.positive.path.display());
            }
        }
        open(&dir);
        Ok(())
    }
}

/// Opens `target` with `$PHOTOSEG_OPENER`, `gio open` or `xdg-open`, whichever starts first; does not
/// wait for it. No opener is a log line, not an error: the caller's request was valid.
pub fn open(target: &Path) {
    let mut candidates: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(cmd) = std::env::var_os(OPENER_ENV).filter(|v| !v.is_empty()) {
        candidates.push((cmd.to_string_lossy().into_owned(), Vec::new()));
    }
    candidates.push(("gio".into(), vec!["open".into()]));
    candidates.push(("xdg-open".into(), Vec::new()));
    for (program, args) in candidates {
        let spawned = Command::new(&program)
            .args(&args)
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                // Reap it in the background; its exit status is the opener's business.
                std::thread::spawn(move || child.wait());
                return;
            }
            Err(e) => tracing::debug!("cannot run {program}: {e}"),
        }
    }
    tracing::warn!("no program to open {} (tried ${OPENER_ENV}, gio, xdg-open)", target.display());
}
