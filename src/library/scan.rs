//! Walking the watched folders to find albums: folders with photos directly in them.
//!
//! Candidates are picked by extension (cheap: no file is opened here); whether a candidate is
//! really an image is decided when it is decoded. Hidden files and folders (name starting with
//! `.`) are skipped: they hold thumbnails, `._IMG.jpg` resource forks and other tools' state.
//! Symbolic links are followed, but each real folder is walked once, so a link back to an
//! ancestor (a loop) or a second link to the same folder is reported instead of walked again.
use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::photo::has_photo_extension;

/// A folder with photos directly in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Album {
    pub path: PathBuf,
    /// Files with a photo extension directly in `path`, sorted.
    pub photos: Vec<PathBuf>,
}

/// What a walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Albums sorted by path.
    pub albums: Vec<Album>,
    /// Paths that could not be walked or used, with a short reason.
    pub problems: Vec<(PathBuf, String)>,
    /// Folders (including roots) that could not be listed. What the cache holds under them is
    /// unknown, not deleted: an unmounted disk must not wipe its photos' features.
    pub unlisted: Vec<PathBuf>,
}

impl ScanReport {
    /// Number of photos in all albums.
    pub fn photo_count(&self) -> usize {
        self.albums.iter().map(|a| a.photos.len()).sum()
    }

    /// Whether `path` lies at or under a folder that could not be listed.
    pub fn is_unlisted(&self, path: &Path) -> bool {
        self.unlisted.iter().any(|d| path.starts_with(d))
    }
}

/// Walks every root. Paths keep the root's spelling (made absolute, not resolved): the config
/// stores canonical roots and the watcher reports paths under those same roots, so a scan of a
/// subfolder named by an event files its photos under the same paths as a full scan.
pub fn scan(roots: &[PathBuf]) -> ScanReport {
    let mut report = ScanReport::default();
    let mut visited = HashSet::new();
    for root in roots {
        let root = absolute(root);
        match fs::canonicalize(&root) {
            Ok(canon) if canon.is_dir() => walk(&root, &canon, &mut visited, &mut report),
            Ok(_) => {
                report.problems.push((root.clone(), "not a folder".into()));
                report.unlisted.push(root);
            }
            Err(e) => {
                let reason = format!("cannot open folder: {}", io_reason(&e));
                report.problems.push((root.clone(), reason));
                report.unlisted.push(root);
            }
        }
    }
    report.albums.sort_by(|a, b| a.path.cmp(&b.path));
    report
}

/// `path` made absolute against the current directory, without resolving links.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn walk(root: &Path, root_canon: &Path, visited: &mut HashSet<PathBuf>, report: &mut ScanReport) {
    if !visited.insert(root_canon.to_path_buf()) {
        return; // a root inside another root, already walked
    }
    // (path as walked, canonical path): the walked path keeps symlinked folder names.
    let mut stack = vec![(root.to_path_buf(), root_canon.to_path_buf())];
    // Symlinked folders wait until every real folder is walked, so a folder reachable both
    // directly and through a link is filed under its real path.
    let mut links: VecDeque<(PathBuf, PathBuf)> = VecDeque::new();
    loop {
        let (dir, canon) = match stack.pop() {
            Some(next) => next,
            None => match links.pop_front() {
                Some((link, parent_canon)) => match follow_link(&link, &parent_canon, visited) {
                    Ok(target) => (link, target),
                    Err(reason) => {
                        report.problems.push((link, reason));
                        continue;
                    }
                },
                None => break,
            },
        };
        let entries = match list(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                report.problems.push((dir.clone(), format!("cannot list folder: {}", io_reason(&e))));
                report.unlisted.push(dir);
                continue;
            }
        };
        let mut photos = Vec::new();
        let mut subdirs = Vec::new();
        for (path, file_type) in entries {
            let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            if name.first() == Some(&b'.') {
                continue;
            }
            let (is_dir, is_file) = if file_type.is_symlink() {
                match fs::metadata(&path) {
                    Ok(meta) => (meta.is_dir(), meta.is_file()),
                    Err(e) => {
                        let reason = if e.raw_os_error() == Some(ELOOP) {
                            "symbolic link loop".to_string()
                        } else {
                            format!("broken symbolic link: {}", io_reason(&e))
                        };
                        report.problems.push((path, reason));
                        continue;
                    }
                }
            } else {
                (file_type.is_dir(), file_type.is_file())
            };
            if is_dir && file_type.is_symlink() {
                links.push_back((path, canon.clone()));
            } else if is_dir {
                let target = canon.join(path.file_name().unwrap_or_default());
                if visited.insert(target.clone()) {
                    subdirs.push((path, target));
                }
            } else if has_photo_extension(&path) {
                if is_file {
                    photos.push(path);
                } else {
                    report.problems.push((path, "not a regular file".into()));
                }
            }
        }
        if !photos.is_empty() {
            photos.sort();
            report.albums.push(Album { path: dir, photos });
        }
        // Reverse so the stack pops subfolders in name order.
        stack.extend(subdirs.into_iter().rev());
    }
}

/// `ELOOP`: too many levels of symbolic links (links pointing at each other).
#[cfg(target_os = "linux")]
const ELOOP: i32 = 40;
#[cfg(not(target_os = "linux"))]
const ELOOP: i32 = 62; // macOS and the BSDs

/// Resolves a symlinked folder found in folder `parent_canon`; refuses one already walked.
fn follow_link(link: &Path, parent_canon: &Path, visited: &mut HashSet<PathBuf>) -> Result<PathBuf, String> {
    let target = fs::canonicalize(link).map_err(|e| format!("cannot resolve symbolic link: {}", io_reason(&e)))?;
    if visited.insert(target.clone()) {
        Ok(target)
    } else if parent_canon.starts_with(&target) {
        Err(format!("symbolic link loop: leads back to {}", target.display()))
    } else {
        Err(format!("not walked again: same folder as {}", target.display()))
    }
}

fn list(dir: &Path) -> io::Result<Vec<(PathBuf, fs::FileType)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        entries.push((entry.path(), entry.file_type()?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Short lowercase reason for an I/O error ("permission denied", "no such file or directory").
pub(crate) fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        _ => {
            let s = e.to_string();
            // Drop std's " (os error N)" suffix: the text before it says it all.
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s.to_lowercase(),
            }
        }
    }
}
