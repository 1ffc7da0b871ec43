//! The library cache: one SQLite file with albums, photos and per-backbone network features.
//!
//! Policy (see docs/library.md): WAL journal so queries read while the indexer writes;
//! `synchronous=NORMAL`, which in WAL mode can lose the last commits on power loss but never
//! corrupts the file (the cache can always be rebuilt from the photos); foreign keys on, so
//! removing a photo removes its features; a busy timeout so the daemon and a CLI run can share
//! the file. Writes are grouped with [`Cache::write_batch`]: one transaction per batch of photos.
//!
//! Paths are stored as BLOBs of the raw OS bytes, so non-UTF-8 file names round-trip exactly.
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

/// Numbered migrations; migration `i` (0-based) brings the file to `PRAGMA user_version = i + 1`.
const MIGRATIONS: &[&str] = &[include_str!("../../schema/0001_init.sql")];

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Row id of a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhotoId(pub i64);

/// Row id of an album (a folder with photos directly in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlbumId(pub i64);

/// What the cache knows about a file's content, to decide whether it is still current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoState {
    pub size: u64,
    pub mtime_ns: i64,
    /// Lowercase hex SHA-256 of the file bytes.
    pub sha256: String,
}

/// A photo to insert or update.
#[derive(Debug, Clone)]
pub struct NewPhoto<'a> {
    pub path: &'a Path,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: &'a str,
    /// Upright size, after EXIF orientation.
    pub width: u32,
    pub height: u32,
}

/// A cached photo as the indexer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPhoto {
    pub id: PhotoId,
    pub path: PathBuf,
    pub state: PhotoState,
    /// Whether features for the backbone asked about are stored.
    pub has_features: bool,
}

/// An album with its number of photos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumInfo {
    pub id: AlbumId,
    pub path: PathBuf,
    pub photos: u64,
}

/// A photo of an album with its features for one backbone, if computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumPhoto {
    pub id: PhotoId,
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub features: Option<Vec<u8>>,
}

/// A photo of an album as a query sees it: enough to fingerprint the album and place masks,
/// without reading feature blobs (a repeated query served from the search index needs none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumEntry {
    pub id: PhotoId,
    pub path: PathBuf,
    /// Lowercase hex SHA-256 of the file bytes.
    pub sha256: String,
    pub mtime_ns: i64,
    /// Upright size, after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// Whether features for the backbone asked about are stored.
    pub has_features: bool,
}

/// A stored feature blob (the `features` table's rowid): lets a query read part of it
/// ([`Cache::read_feature_prefixes`]) without loading the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeatureRow(pub i64);

/// An album with its photos as a query sees them, and each photo's feature row for one backbone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryAlbum {
    pub info: AlbumInfo,
    pub entries: Vec<AlbumEntry>,
    /// Parallel to `entries`: the photo's feature row for the backbone asked about, if any.
    pub rows: Vec<Option<FeatureRow>>,
}

/// Counts for `photoseg index --stats` and the like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub photos: u64,
    pub albums: u64,
    /// Number of (photo, backbone) feature rows.
    pub features: u64,
    pub feature_bytes: u64,
}

/// An open cache file. Not `Sync`: one thread (the daemon's indexer) owns it; readers elsewhere
/// open their own `Cache` on the same file, which WAL makes cheap.
#[derive(Debug)]
pub struct Cache {
    conn: Connection,
    /// `None` for in-memory caches; used in error messages.
    path: Option<PathBuf>,
}

impl Cache {
    /// Opens (creating if needed) the cache at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Cache> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create cache folder {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("cannot open cache {}", path.display()))?;
        let cache = Cache { conn, path: Some(path.to_path_buf()) };
        cache.setup().with_context(|| format!("cannot open cache {}", path.display()))?;
        Ok(cache)
    }

    /// [`Cache::open`], or, when the cache cannot be written (a read-only medium or folder), the same
    /// file read-only: what a query needs. The read-only cache must already be at the current schema.
    pub fn open_for_reading(path: &Path) -> Result<Cache> {
        match Cache::open(path) {
            Ok(cache) => Ok(cache),
            Err(e) if path.is_file() => {
                let cache =
                    Cache::open_read_only(path).map_err(|ro| e.context(format!("read-only as well: {ro:#}")))?;
                tracing::warn!("cache {} is not writable; reading it as it is", path.display());
                Ok(cache)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens `path` without writing anything: read-only, and `immutable` when SQLite cannot make the
    /// write-ahead log's shared-memory file beside it (nothing else can write there either).
    fn open_read_only(path: &Path) -> Result<Cache> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let try_open = |uri: &str| -> Result<Cache> {
            let conn = Connection::open_with_flags(uri, flags)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let cache = Cache { conn, path: Some(path.to_path_buf()) };
            let (version, latest) = (cache.schema_version()?, MIGRATIONS.len() as i64);
            if version != latest {
                bail!("cache {} is at schema {version}, this photoseg needs {latest}", path.display());
            }
            Ok(cache)
        };
        let mut uri = String::from("file:");
        for b in path.as_os_str().as_bytes() {
            match b {
                b'/' | b'.' | b'-' | b'_' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => uri.push(*b as char),
                _ => uri.push_str(&format!("%{b:02X}")),
            }
        }
        try_open(&format!("{uri}?mode=ro")).or_else(|_| try_open(&format!("{uri}?immutable=1")))
    }

    /// Starts a read snapshot on this connection: until [`Cache::end_snapshot`], every read sees the
    /// cache as it was at the first one, whatever the indexer commits meanwhile (WAL keeps the old
    /// pages for it). A query takes one, so an album listed at its start still has its features when its
    /// masks are made, even if the folder was removed in between. A snapshot still open is ended first.
    pub fn begin_snapshot(&self) -> Result<()> {
        self.end_snapshot();
        self.conn.execute_batch("BEGIN DEFERRED")?;
        Ok(())
    }

    /// Ends the snapshot [`Cache::begin_snapshot`] started, if any.
    pub fn end_snapshot(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("COMMIT") {
                tracing::warn!("cannot end a read snapshot of the cache: {e}");
            }
        }
    }

    /// A private in-memory cache, for tests.
    pub fn open_in_memory() -> Result<Cache> {
        let cache = Cache { conn: Connection::open_in_memory()?, path: None };
        cache.setup()?;
        Ok(cache)
    }

    fn setup(&self) -> Result<()> {
        self.conn.busy_timeout(BUSY_TIMEOUT)?;
        // Returns the mode in effect: "wal" for files, "memory" for in-memory databases.
        let _: String = self.conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        self.migrate()
    }

    fn migrate(&self) -> Result<()> {
        let latest = MIGRATIONS.len() as i64;
        let version = self.schema_version()?;
        if version > latest {
            bail!(
                "the cache has schema version {version} but this photoseg knows only up to {latest}: it was written by a newer photoseg"
            );
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            // Another process may have migrated while we waited for the write lock.
            let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if current > i as i64 {
                continue;
            }
            tx.execute_batch(sql).with_context(|| format!("migration {} failed", i + 1))?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// `PRAGMA user_version`: the number of migrations applied.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Whether this connection can only read ([`Cache::open_for_reading`] fell back to read-only).
    pub fn is_read_only(&self) -> Result<bool> {
        Ok(self.conn.is_readonly(rusqlite::MAIN_DB)?)
    }

    /// The journal mode in effect ("wal" for a file cache).
    pub fn journal_mode(&self) -> Result<String> {
        Ok(self.conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?)
    }

    /// The file this cache lives in, `None` when in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs `f` in one write transaction: all of its writes commit together or not at all.
    ///
    /// The transaction is `IMMEDIATE` (takes the write lock up front) so two writers queue on the
    /// busy timeout instead of failing with a deadlock. Nested calls join the outer transaction.
    pub fn write_batch<T>(&self, f: impl FnOnce(&Cache) -> Result<T>) -> Result<T> {
        self.atomically(|| f(self))
    }

    fn atomically<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.conn.is_autocommit() {
            return f();
        }
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        let value = f()?;
        tx.commit()?;
        Ok(value)
    }

    /// Inserts or updates a photo (and its album). If the content hash changed, the photo's
    /// features for every backbone are dropped: they described other pixels.
    pub fn upsert_photo(&self, photo: &NewPhoto<'_>) -> Result<PhotoId> {
        self.atomically(|| {
            let album = self.ensure_album(album_of(photo.path))?;
            let path = blob(photo.path);
            let existing: Option<(i64, String)> = self
                .conn
                .query_row("SELECT id, sha256 FROM photos WHERE path = ?1", [path], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let now = unix_now();
            match existing {
                Some((id, old_hash)) => {
                    if old_hash != photo.sha256 {
                        self.conn.execute("DELETE FROM features WHERE photo_id = ?1", [id])?;
                    }
                    self.conn.execute(
                        "UPDATE photos SET album_id = ?2, size = ?3, mtime_ns = ?4, sha256 = ?5,
                             width = ?6, height = ?7, indexed_at = ?8 WHERE id = ?1",
                        params![
                            id,
                            album.0,
                            photo.size as i64,
                            photo.mtime_ns,
                            photo.sha256,
                            photo.width,
                            photo.height,
                            now
                        ],
                    )?;
                    self.prune_albums()?;
                    Ok(PhotoId(id))
                }
                None => {
                    self.conn.execute(
                        "INSERT INTO photos (album_id, path, size, mtime_ns, sha256, width, height, indexed_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![
                            album.0,
                            path,
                            photo.size as i64,
                            photo.mtime_ns,
                            photo.sha256,
                            photo.width,
                            photo.height,
                            now
                        ],
                    )?;
                    Ok(PhotoId(self.conn.last_insert_rowid()))
                }
            }
        })
    }

    /// Records a new size and mtime for a photo whose content (hash) is unchanged, e.g. after
    /// `touch` or a copy that preserved bytes. Returns whether the photo was known.
    pub fn touch_photo(&self, path: &Path, size: u64, mtime_ns: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE photos SET size = ?2, mtime_ns = ?3 WHERE path = ?1",
            params![blob(path), size as i64, mtime_ns],
        )?;
        Ok(n > 0)
    }

    /// The stored (size, mtime, hash) of the photo at `path`, if cached.
    pub fn photo_state(&self, path: &Path) -> Result<Option<PhotoState>> {
        Ok(self
            .conn
            .query_row("SELECT size, mtime_ns, sha256 FROM photos WHERE path = ?1", [blob(path)], |r| {
                Ok(PhotoState { size: r.get::<_, i64>(0)? as u64, mtime_ns: r.get(1)?, sha256: r.get(2)? })
            })
            .optional()?)
    }

    /// The id of the photo at `path`, if cached.
    pub fn photo_id(&self, path: &Path) -> Result<Option<PhotoId>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM photos WHERE path = ?1", [blob(path)], |r| r.get(0))
            .optional()?
            .map(PhotoId))
    }

    /// Stores (replacing) the features `backbone` computed for `photo`.
    pub fn put_features(&self, photo: PhotoId, backbone: &str, data: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO features (photo_id, backbone, data, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (photo_id, backbone) DO UPDATE SET data = excluded.data, created_at = excluded.created_at",
            params![photo.0, backbone, data, unix_now()],
        )?;
        Ok(())
    }

    /// The features `backbone` computed for `photo`; `None` if not computed (by this backbone).
    pub fn features(&self, photo: PhotoId, backbone: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn
            .query_row(
                "SELECT data FROM features WHERE photo_id = ?1 AND backbone = ?2",
                params![photo.0, backbone],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether features by `backbone` are stored for `photo`, without reading them.
    pub fn has_features(&self, photo: PhotoId, backbone: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM features WHERE photo_id = ?1 AND backbone = ?2",
                params![photo.0, backbone],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// All albums, by path.
    pub fn albums(&self) -> Result<Vec<AlbumInfo>> {
        let mut stmt = self.conn.prepare(
            "SELECT a.id, a.path, count(p.id) FROM albums a LEFT JOIN photos p ON p.album_id = a.id
             GROUP BY a.id ORDER BY a.path",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AlbumInfo { id: AlbumId(r.get(0)?), path: path_of(r.get(1)?), photos: r.get::<_, i64>(2)? as u64 })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The album for folder `dir`, if it has cached photos.
    pub fn album_id(&self, dir: &Path) -> Result<Option<AlbumId>> {
        Ok(self
            .conn
            .query_row("SELECT id FROM albums WHERE path = ?1", [blob(dir)], |r| r.get(0))
            .optional()?
            .map(AlbumId))
    }

    /// The photos of `album`, by path, each with its `backbone` features if computed.
    pub fn photos_in_album(&self, album: AlbumId, backbone: &str) -> Result<Vec<AlbumPhoto>> {
        let mut stmt = self.conn.prepare(
            "SELECT p.id, p.path, p.width, p.height, f.data FROM photos p
             LEFT JOIN features f ON f.photo_id = p.id AND f.backbone = ?2
             WHERE p.album_id = ?1 ORDER BY p.path",
        )?;
        let rows = stmt.query_map(params![album.0, backbone], |r| {
            Ok(AlbumPhoto {
                id: PhotoId(r.get(0)?),
                path: path_of(r.get(1)?),
                width: r.get(2)?,
                height: r.get(3)?,
                features: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The photos of `album`, by path, with whether `backbone` features exist (blobs not read).
    pub fn album_entries(&self, album: AlbumId, backbone: &str) -> Result<Vec<AlbumEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT p.id, p.path, p.sha256, p.mtime_ns, p.width, p.height,
                    EXISTS (SELECT 1 FROM features f WHERE f.photo_id = p.id AND f.backbone = ?2)
             FROM photos p WHERE p.album_id = ?1 ORDER BY p.path",
        )?;
        let rows = stmt.query_map(params![album.0, backbone], |r| {
            Ok(AlbumEntry {
                id: PhotoId(r.get(0)?),
                path: path_of(r.get(1)?),
                sha256: r.get(2)?,
                mtime_ns: r.get(3)?,
                width: r.get(4)?,
                height: r.get(5)?,
                has_features: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every album (by path) with its photos (by path) and their `backbone` feature rows, in one
    /// statement: what a query over the whole library starts from.
    pub fn query_albums(&self, backbone: &str) -> Result<Vec<QueryAlbum>> {
        let mut stmt = self.conn.prepare(
            "SELECT a.id, a.path, p.id, p.path, p.sha256, p.mtime_ns, p.width, p.height, f.rowid
             FROM albums a JOIN photos p ON p.album_id = a.id
             LEFT JOIN features f ON f.photo_id = p.id AND f.backbone = ?1
             ORDER BY a.path, p.path",
        )?;
        let mut rows = stmt.query([backbone])?;
        let mut out: Vec<QueryAlbum> = Vec::new();
        while let Some(r) = rows.next()? {
            let album = AlbumId(r.get(0)?);
            if out.last().is_none_or(|a| a.info.id != album) {
                out.push(QueryAlbum {
                    info: AlbumInfo { id: album, path: path_of(r.get(1)?), photos: 0 },
                    entries: Vec::new(),
                    rows: Vec::new(),
                });
            }
            let a = out.last_mut().expect("pushed above");
            let row: Option<i64> = r.get(8)?;
            a.info.photos += 1;
            a.entries.push(AlbumEntry {
                id: PhotoId(r.get(2)?),
                path: path_of(r.get(3)?),
                sha256: r.get(4)?,
                mtime_ns: r.get(5)?,
                width: r.get(6)?,
                height: r.get(7)?,
                has_features: row.is_some(),
            });
            a.rows.push(row.map(FeatureRow));
        }
        Ok(out)
    }

    /// The first `len` bytes of each feature blob in `rows` (all of it when shorter), in order. Reads
    /// only the pages holding those bytes: the decision needs V, which [`crate::model::codec`] puts
    /// first, and not the lateral maps after it. `None` for a row deleted since it was listed.
    pub fn read_feature_prefixes(&self, rows: &[FeatureRow], len: usize) -> Result<Vec<Option<Vec<u8>>>> {
        let mut buf = Vec::new();
        let ranges = self.read_feature_prefixes_into(rows, len, &mut buf)?;
        Ok(ranges.into_iter().map(|r| r.map(|r| buf[r].to_vec())).collect())
    }

    /// [`Cache::read_feature_prefixes`] into one buffer: appends each prefix to `out` and returns where
    /// each lies in it (`None` for a row deleted since it was listed). No allocation per photo.
    pub fn read_feature_prefixes_into(
        &self,
        rows: &[FeatureRow],
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<Vec<Option<std::ops::Range<usize>>>> {
        let mut ranges = Vec::with_capacity(rows.len());
        let Some(first) = rows.first() else { return Ok(ranges) };
        let mut blob = match self.conn.blob_open(rusqlite::MAIN_DB, "features", "data", first.0, true) {
            Ok(b) => Some(b),
            Err(rusqlite::Error::SqliteFailure(..)) => None,
            Err(e) => return Err(e.into()),
        };
        out.reserve(rows.len() * len);
        for (i, row) in rows.iter().enumerate() {
            // A handle is reopened, not opened, for each row: no statement is compiled per photo.
            let open = match (&mut blob, i) {
                (Some(_), 0) => true,
                (Some(b), _) => b.reopen(row.0).is_ok(),
                (None, _) => match self.conn.blob_open(rusqlite::MAIN_DB, "features", "data", row.0, true) {
                    Ok(b) => {
                        blob = Some(b);
                        true
                    }
                    Err(rusqlite::Error::SqliteFailure(..)) => false,
                    Err(e) => return Err(e.into()),
                },
            };
            if !open {
                // A failed reopen leaves the handle unusable; the next row opens a fresh one.
                blob = None;
                ranges.push(None);
                continue;
            }
            let b = blob.as_ref().expect("opened above");
            let at = out.len();
            out.resize(at + len.min(b.len()), 0);
            b.read_at_exact(&mut out[at..], 0)?;
            ranges.push(Some(at..out.len()));
        }
        Ok(ranges)
    }

    /// Every cached photo at or under `dir`, with whether `backbone` features exist: what the
    /// indexer compares a fresh scan against.
    pub fn photos_under(&self, dir: &Path, backbone: &str) -> Result<Vec<CachedPhoto>> {
        let (lo, hi) = prefix_range(dir);
        let mut stmt = self.conn.prepare(
            "SELECT p.id, p.path, p.size, p.mtime_ns, p.sha256,
                    EXISTS (SELECT 1 FROM features f WHERE f.photo_id = p.id AND f.backbone = ?3)
             FROM photos p WHERE p.path >= ?1 AND p.path < ?2 ORDER BY p.path",
        )?;
        let rows = stmt.query_map(params![lo, hi, backbone], |r| {
            Ok(CachedPhoto {
                id: PhotoId(r.get(0)?),
                path: path_of(r.get(1)?),
                state: PhotoState { size: r.get::<_, i64>(2)? as u64, mtime_ns: r.get(3)?, sha256: r.get(4)? },
                has_features: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets the photo at `path` (and its features). Returns whether it was cached.
    pub fn remove_photo(&self, path: &Path) -> Result<bool> {
        self.atomically(|| {
            let n = self.conn.execute("DELETE FROM photos WHERE path = ?1", [blob(path)])?;
            self.prune_albums()?;
            Ok(n > 0)
        })
    }

    /// Forgets every photo under folder `dir` (a deleted or unwatched folder). Returns how many.
    pub fn remove_under(&self, dir: &Path) -> Result<usize> {
        let (lo, hi) = prefix_range(dir);
        self.atomically(|| {
            let n = self.conn.execute("DELETE FROM photos WHERE path >= ?1 AND path < ?2", params![lo, hi])?;
            self.prune_albums()?;
            Ok(n)
        })
    }

    /// Follows a rename of a photo file or of a whole folder: rows move to the new path and keep
    /// their features. A cached photo already at the destination is replaced (the rename
    /// overwrote it). Returns how many photos moved; 0 if `old` was not cached.
    pub fn rename_path(&self, old: &Path, new: &Path) -> Result<usize> {
        if old == new {
            return Ok(0);
        }
        self.atomically(|| {
            let moves: Vec<(i64, PathBuf)> = match self.photo_id(old)? {
                Some(id) => vec![(id.0, new.to_path_buf())],
                None => {
                    let (lo, hi) = prefix_range(old);
                    let mut stmt = self.conn.prepare("SELECT id, path FROM photos WHERE path >= ?1 AND path < ?2")?;
                    let rows = stmt.query_map(params![lo, hi], |r| Ok((r.get::<_, i64>(0)?, path_of(r.get(1)?))))?;
                    let mut moves = Vec::new();
                    for row in rows {
                        let (id, path) = row?;
                        let rest = path.strip_prefix(old).expect("path is under old by the range query");
                        moves.push((id, new.join(rest)));
                    }
                    moves
                }
            };
            for (id, to) in &moves {
                self.conn.execute("DELETE FROM photos WHERE path = ?1 AND id != ?2", params![blob(to), id])?;
                let album = self.ensure_album(album_of(to))?;
                self.conn.execute(
                    "UPDATE photos SET path = ?2, album_id = ?3 WHERE id = ?1",
                    params![id, blob(to), album.0],
                )?;
            }
            self.prune_albums()?;
            Ok(moves.len())
        })
    }

    /// Runs SQLite's integrity and foreign-key checks; an error lists what they found.
    pub fn integrity_check(&self) -> Result<()> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let problems: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<_>>()?;
        if problems != ["ok"] {
            bail!("cache {} is damaged: {}", self.describe(), problems.join("; "));
        }
        let mut stmt = self.conn.prepare("PRAGMA foreign_key_check")?;
        let orphans = stmt.query_map([], |r| r.get::<_, String>(0))?.count();
        if orphans > 0 {
            bail!("cache {} is damaged: {orphans} rows point at missing rows", self.describe());
        }
        Ok(())
    }

    /// Row counts and the bytes of stored features.
    pub fn stats(&self) -> Result<Stats> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM photos), (SELECT count(*) FROM albums),
                    (SELECT count(*) FROM features), (SELECT coalesce(sum(length(data)), 0) FROM features)",
            [],
            |r| {
                Ok(Stats {
                    photos: r.get::<_, i64>(0)? as u64,
                    albums: r.get::<_, i64>(1)? as u64,
                    features: r.get::<_, i64>(2)? as u64,
                    feature_bytes: r.get::<_, i64>(3)? as u64,
                })
            },
        )?)
    }

    fn ensure_album(&self, dir: &Path) -> Result<AlbumId> {
        let path = blob(dir);
        self.conn.execute("INSERT INTO albums (path) VALUES (?1) ON CONFLICT (path) DO NOTHING", [path])?;
        Ok(AlbumId(self.conn.query_row("SELECT id FROM albums WHERE path = ?1", [path], |r| r.get(0))?))
    }

    /// Albums exist only while they hold photos.
    fn prune_albums(&self) -> Result<()> {
        self.conn
            .execute("DELETE FROM albums WHERE NOT EXISTS (SELECT 1 FROM photos p WHERE p.album_id = albums.id)", [])?;
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "(in memory)".into(),
        }
    }
}

fn album_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn blob(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// `[dir + "/", dir + "0")`: every path strictly under `dir` in byte order (`'0'` follows `'/'`),
/// a range the unique index on `path` answers without scanning the table.
fn prefix_range(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let mut base = blob(dir).to_vec();
    while base.last() == Some(&b'/') {
        base.pop();
    }
    let mut lo = base.clone();
    lo.push(b'/');
    let mut hi = base;
    hi.push(b'0');
    (lo, hi)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_brackets_children_only() {
        let (lo, hi) = prefix_range(Path::new("/a/b/"));
        assert_eq!(lo, b"/a/b/");
        assert_eq!(hi, b"/a/b0");
        for inside in ["/a/b/x.jpg", "/a/b/c/d.png"] {
            assert!(inside.as_bytes() >= &lo[..] && inside.as_bytes() < &hi[..], "{inside}");
        }
        for outside in ["/a/b", "/a/b.jpg", "/a/bc/x.jpg", "/a/b-1/x.jpg", "/a/c/x.jpg"] {
            assert!(!(outside.as_bytes() >= &lo[..] && outside.as_bytes() < &hi[..]), "{outside}");
        }
        let (lo, hi) = prefix_range(Path::new("/"));
        assert_eq!((lo.as_slice(), hi.as_slice()), (&b"/"[..], &b"0"[..]));
    }
}
