//! A folder written whole or not at all. It is filled under a hidden `.NAME.partial-PID` beside its
//! final place, every file and the folder are synced, and only then is it renamed to `NAME`: a folder
//! under its name is always complete. An error removes the hidden copy; a kill leaves it hidden, and
//! the next write beside it removes it once its process no longer runs.
use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// Writes the folder `dest` (which must not exist) through `fill`, which is handed the hidden folder,
/// already created, to write its files into.
pub fn write(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().ok_or_else(|| anyhow!("{} names no folder", dest.display()))?.to_string_lossy();
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    remove_stale(parent, Some(&name))?;
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let written = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        fill(&tmp)?;
        for entry in std::fs::read_dir(&tmp)?.flatten() {
            if entry.file_type()?.is_file() {
                let path = entry.path();
                std::fs::File::open(&path)?.sync_all().with_context(|| format!("syncing {}", path.display()))?;
            }
        }
        sync_dir(&tmp).with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, dest).with_context(|| format!("moving the folder into {}", dest.display()))?;
        sync_dir(parent).with_context(|| format!("syncing {}", parent.display()))
    })();
    if written.is_err() {
        std::fs::remove_dir_all(&tmp).ok();
    }
    written
}

/// Removes the hidden folders `.NAME.partial-PID` and `.NAME.removing-PID` in `parent` whose process no
/// longer runs: of the folder `name`, or of any name when `None` (a folder only photoseg writes in).
pub fn remove_stale(parent: &Path, name: Option<&str>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(parent) else { return Ok(()) };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let pid = file
            .strip_prefix('.')
            .and_then(|n| n.rsplit_once(".partial-").or_else(|| n.rsplit_once(".removing-")))
            .filter(|(n, _)| name.is_none_or(|name| *n == name))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists()) {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing the stale copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Syncs a folder, so the names created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_writers_copy_is_removed_and_a_running_ones_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp.path().join(".grser.partial-4294967");
        let alive = tmp.path().join(format!(".grser.partial-{}", std::process::id()));
        let other = tmp.path().join(".other.partial-4294967");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        remove_stale(tmp.path(), Some("grser")).unwrap();
        assert!(!dead.exists() && alive.exists() && other.exists());
        remove_stale(tmp.path(), None).unwrap();
        assert!(alive.exists() && !other.exists());
    }

    #[test]
    fn a_failed_fill_leaves_nothing_and_a_good_one_the_whole_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("out");
        let err = write(&dest, |d| {
            std::fs::write(d.join("a"), "1")?;
            Err(anyhow!("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        write(&dest, |d| Ok(std::fs::write(d.join("a"), "1")?)).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
