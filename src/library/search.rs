//! The search index (tantivy): albums and photos by name, and answered queries, so `--album paris` finds
//! albums by name and a repeated query is served without running the network.
//!
//! Everything here is derived from the SQLite cache and can be thrown away: an index written by another
//! schema version, or one tantivy cannot open, is deleted and rebuilt. Four kinds of documents share one
//! schema (tantivy has no tables; a `kind` field tells them apart):
//!
//! - `album`: name (path relative to its watched root), path, first and last photo modification dates;
//! - `photo`: file name, path, album path;
//! - `answer`: one per (model, album, expression): the result JSON and the album's content fingerprint
//!   it was computed for; served only while the fingerprint still matches;
//! - `meta`: the fingerprint of the album list the `album` and `photo` documents were built from.
//!
//! Paths are stored as raw bytes (exact keys, non-UTF-8 safe) and as lossy text (for words).
use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{BooleanQuery, Query, RegexQuery, TermQuery};
use tantivy::schema::{
    BytesOptions, DateOptions, Field, IndexRecordOption, Schema, Value, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{DateTime, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError, Term};

/// Bumped whenever the schema changes; an index of another version is rebuilt.
const SCHEMA_VERSION: &str = "1";
const VERSION_FILE: &str = "photoseg-search-version";
/// tantivy's minimum per-thread arena is 15 MB; the documents here are few and small.
const WRITER_MEMORY: usize = 20_000_000;
/// How long to wait for another process's writer (a concurrent `photoseg query`) before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// An album as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlbumDoc {
    pub path: PathBuf,
    /// What users call it: the path relative to its watched root, e.g. `2019/Paris`.
    pub name: String,
    pub photos: Vec<PathBuf>,
    /// Oldest and newest photo modification time (ns since the epoch), if any photo.
    pub first_mtime_ns: Option<i64>,
    pub last_mtime_ns: Option<i64>,
}

/// What an answer is stored under.
#[derive(Debug, Clone, Copy)]
pub struct AnswerKey<'a> {
    /// The backbone id of the model that answered.
    pub model: &'a str,
    pub album: &'a Path,
    /// The expression as asked (normalised by [`normalize_expression`] here).
    pub expression: &'a str,
}

impl AnswerKey<'_> {
    fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in
            [self.model.as_bytes(), self.album.as_os_str().as_bytes(), normalize_expression(self.expression).as_bytes()]
        {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        hex(&h.finalize())
    }
}

/// Trims and collapses whitespace: the tokenizer ignores it, so "my  bike " is the same question as "my bike".
pub fn normalize_expression(expression: &str) -> String {
    expression.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    kind: Field,
    key: Field,
    name: Field,
    name_lc: Field,
    path: Field,
    path_bytes: Field,
    album_bytes: Field,
    first_date: Field,
    last_date: Field,
    expression: Field,
    fingerprint: Field,
    result: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let date = DateOptions::from(INDEXED).set_stored();
    let bytes = BytesOptions::default().set_indexed().set_stored();
    let f = Fields {
        kind: b.add_text_field("kind", STRING),
        key: b.add_text_field("key", STRING | STORED),
        name: b.add_text_field("name", TEXT | STORED),
        name_lc: b.add_text_field("name_lc", STRING),
        path: b.add_text_field("path", TEXT | STORED),
        path_bytes: b.add_bytes_field("path_bytes", bytes.clone()),
        album_bytes: b.add_bytes_field("album_bytes", bytes),
        first_date: b.add_date_field("first_date", date.clone()),
        last_date: b.add_date_field("last_date", date),
        expression: b.add_text_field("expression", TEXT | STORED),
        fingerprint: b.add_text_field("fingerprint", STRING | STORED),
        result: b.add_text_field("result", STORED),
    };
    (b.build(), f)
}

/// An open search index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    f: Fields,
    dir: PathBuf,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").field("dir", &self.dir).finish()
    }
}

impl SearchIndex {
    /// Opens the index at the default place (`$XDG_CACHE_HOME/photoseg/search`).
    pub fn open_default() -> Result<Self> {
        Self::open(&super::paths::search_dir()?)
    }

    /// Opens (creating, or rebuilding when of another version or unreadable) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let (schema, f) = schema();
        let version = std::fs::read_to_string(dir.join(VERSION_FILE)).ok();
        let index = match version.as_deref().map(str::trim) {
            Some(SCHEMA_VERSION) => Index::open_in_dir(dir).ok().filter(|i| i.schema() == schema),
            _ => None,
        };
        let index = match index {
            Some(index) => index,
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .with_context(|| format!("cannot clear the old search index {}", dir.display()))?;
                }
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create search index folder {}", dir.display()))?;
                let index = Index::create_in_dir(dir, schema)
                    .with_context(|| format!("cannot create search index in {}", dir.display()))?;
                std::fs::write(dir.join(VERSION_FILE), SCHEMA_VERSION)
                    .with_context(|| format!("cannot write {}", dir.join(VERSION_FILE).display()))?;
                index
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .with_context(|| format!("cannot read search index {}", dir.display()))?;
        Ok(Self { index, reader, f, dir: dir.to_path_buf() })
    }

    /// [`SearchIndex::open`], or, when the folder cannot be used (read-only, full), an empty index in
    /// memory: the index is a cache of album names and answers, and a query is right without it.
    pub fn open_or_in_memory(dir: &Path) -> Self {
        Self::open(dir).unwrap_or_else(|e| {
            tracing::warn!("search index unusable, answering without stored answers: {e:#}");
            let (schema, f) = schema();
            let index = Index::create_in_ram(schema);
            let reader =
                index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().expect("a RAM index reads");
            Self { index, reader, f, dir: dir.to_path_buf() }
        })
    }

    /// The folder the index lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fingerprint passed to the last [`SearchIndex::replace_albums`], if any.
    pub fn albums_fingerprint(&self) -> Result<Option<String>> {
        let q = self.and(&[("kind", "meta"), ("key", "albums")]);
        Ok(self.first(&q)?.and_then(|d| d.get_first(self.f.fingerprint).and_then(|v| v.as_str().map(String::from))))
    }

    /// Replaces every album and photo document with `albums`, remembering `fingerprint`. Returns false
    /// (and changes nothing) when another process holds the writer: the index is a cache.
    pub fn replace_albums(&mut self, albums: &[AlbumDoc], fingerprint: &str) -> Result<bool> {
        let f = self.f;
        self.write(|w| {
            for kind in ["album", "photo", "meta"] {
                w.delete_term(Term::from_field_text(f.kind, kind));
            }
            for a in albums {
                let mut doc = TantivyDocument::default();
                doc.add_text(f.kind, "album");
                doc.add_text(f.name, &a.name);
                doc.add_text(f.name_lc, a.name.to_lowercase());
                doc.add_text(f.path, a.path.to_string_lossy());
                doc.add_bytes(f.path_bytes, a.path.as_os_str().as_bytes());
                if let (Some(first), Some(last)) = (a.first_mtime_ns, a.last_mtime_ns) {
                    doc.add_date(f.first_date, DateTime::from_timestamp_nanos(first));
                    doc.add_date(f.last_date, DateTime::from_timestamp_nanos(last));
                }
                w.add_document(doc)?;
                for p in &a.photos {
                    let mut doc = TantivyDocument::default();
                    doc.add_text(f.kind, "photo");
                    let file = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    doc.add_text(f.name, &file);
                    doc.add_text(f.path, p.to_string_lossy());
                    doc.add_bytes(f.path_bytes, p.as_os_str().as_bytes());
                    doc.add_bytes(f.album_bytes, a.path.as_os_str().as_bytes());
                    w.add_document(doc)?;
                }
            }
            let mut meta = TantivyDocument::default();
            meta.add_text(f.kind, "meta");
            meta.add_text(f.key, "albums");
            meta.add_text(f.fingerprint, fingerprint);
            w.add_document(meta)?;
            Ok(())
        })
    }

    /// Albums whose name contains `pattern`, ignoring case (any characters; nothing is a wildcard).
    pub fn albums_matching(&self, pattern: &str) -> Result<Vec<PathBuf>> {
        let escaped: String = pattern
            .to_lowercase()
            .chars()
            .map(|c| if c.is_alphanumeric() { c.to_string() } else { format!("\\x{{{:x}}}", c as u32) })
            .collect();
        let regex = RegexQuery::from_pattern(&format!("(?s).*{escaped}.*"), self.f.name_lc)
            .with_context(|| format!("cannot search album names for {pattern:?}"))?;
        let q = BooleanQuery::intersection(vec![Box::new(regex), self.term("kind", "album")]);
        self.paths_of(&q, self.f.path_bytes)
    }

    /// Photos whose file name contains the word `word` (tokenized as tantivy's default: lowercase words).
    pub fn photos_named(&self, word: &str) -> Result<Vec<PathBuf>> {
        let q = BooleanQuery::intersection(vec![self.term("kind", "photo"), self.term("name", &word.to_lowercase())]);
        self.paths_of(&q, self.f.path_bytes)
    }

    /// The stored answer for `key`, if it was computed for an album with this `fingerprint`.
    pub fn answer(&self, key: &AnswerKey<'_>, fingerprint: &str) -> Result<Option<String>> {
        let q = self.and(&[("kind", "answer"), ("key", &key.digest())]);
        let Some(doc) = self.first(&q)? else { return Ok(None) };
        let stored_fp = doc.get_first(self.f.fingerprint).and_then(|v| v.as_str().map(String::from));
        if stored_fp.as_deref() != Some(fingerprint) {
            return Ok(None);
        }
        Ok(doc.get_first(self.f.result).and_then(|v| v.as_str().map(String::from)))
    }

    /// Stores (replacing) the answer for `key`. Returns false when another process holds the writer.
    pub fn store_answer(&mut self, key: &AnswerKey<'_>, fingerprint: &str, result_json: &str) -> Result<bool> {
        self.store_answers(&[(*key, fingerprint, result_json)])
    }

    /// Stores (replacing) several answers, each `(key, fingerprint, result JSON)`, in one commit: a query
    /// over many albums pays for one writer and one commit, not one per album. Returns false when
    /// another process holds the writer.
    pub fn store_answers(&mut self, answers: &[(AnswerKey<'_>, &str, &str)]) -> Result<bool> {
        let f = self.f;
        self.write(|w| {
            for (key, fingerprint, result_json) in answers {
                let digest = key.digest();
                w.delete_term(Term::from_field_text(f.key, &digest));
                let mut doc = TantivyDocument::default();
                doc.add_text(f.kind, "answer");
                doc.add_text(f.key, &digest);
                doc.add_text(f.expression, normalize_expression(key.expression));
                doc.add_bytes(f.album_bytes, key.album.as_os_str().as_bytes());
                doc.add_text(f.fingerprint, *fingerprint);
                doc.add_text(f.result, *result_json);
                w.add_document(doc)?;
            }
            Ok(())
        })
    }

    /// Runs `edit` in one writer and commits. False when the writer lock stayed busy for [`LOCK_WAIT`].
    fn write(&mut self, edit: impl FnOnce(&mut IndexWriter) -> Result<()>) -> Result<bool> {
        let start = Instant::now();
        let mut writer: IndexWriter = loop {
            match self.index.writer_with_num_threads(1, WRITER_MEMORY) {
                Ok(w) => break w,
                Err(TantivyError::LockFailure(..)) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(TantivyError::LockFailure(..)) => {
                    tracing::warn!("search index {} is locked by another writer; not updated", self.dir.display());
                    return Ok(false);
                }
                Err(e) => return Err(e).with_context(|| format!("cannot write search index {}", self.dir.display())),
            }
        };
        edit(&mut writer)?;
        writer.commit().with_context(|| format!("cannot commit search index {}", self.dir.display()))?;
        // Let merges finish now: a CLI run exits right after, and the lock is released on drop.
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(true)
    }

    fn term(&self, field: &str, text: &str) -> Box<dyn Query> {
        let field = self.index.schema().get_field(field).expect("field of our schema");
        Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic))
    }

    fn and(&self, terms: &[(&str, &str)]) -> BooleanQuery {
        BooleanQuery::intersection(terms.iter().map(|(f, t)| self.term(f, t)).collect())
    }

    fn first(&self, q: &dyn Query) -> Result<Option<TantivyDocument>> {
        let searcher = self.reader.searcher();
        let top = searcher.search(q, &TopDocs::with_limit(1).order_by_score())?;
        Ok(match top.first() {
            Some((_, addr)) => Some(searcher.doc(*addr)?),
            None => None,
        })
    }

    fn paths_of(&self, q: &dyn Query, field: Field) -> Result<Vec<PathBuf>> {
        let searcher = self.reader.searcher();
        let mut out: Vec<PathBuf> = Vec::new();
        let mut seen = HashSet::new();
        for addr in searcher.search(q, &DocSetCollector)? {
            let doc: TantivyDocument = searcher.doc(addr)?;
            if let Some(bytes) = doc.get_first(field).and_then(|v| v.as_bytes().map(<[u8]>::to_vec)) {
                if seen.insert(bytes.clone()) {
                    out.push(PathBuf::from(OsString::from_vec(bytes)));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn album(path: &str, name: &str, photos: &[&str]) -> AlbumDoc {
        AlbumDoc {
            path: PathBuf::from(path),
            name: name.into(),
            photos: photos.iter().map(|p| Path::new(path).join(p)).collect(),
            first_mtime_ns: Some(1_500_000_000_000_000_000),
            last_mtime_ns: Some(1_600_000_000_000_000_000),
        }
    }

    #[test]
    fn albums_match_by_name_substring_ignoring_case() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(idx.albums_fingerprint().unwrap(), None);
        let albums = [
            album("/p/2019/Paris", "2019/Paris", &["a.jpg", "Bike Ride.png"]),
            album("/p/Compare (1)", "Compare (1)", &["b.jpg"]),
            album("/p/berlin", "berlin", &[]),
        ];
        assert!(idx.replace_albums(&albums, "fp1").unwrap());
        assert_eq!(idx.albums_fingerprint().unwrap().as_deref(), Some("fp1"));
        let find = |idx: &SearchIndex, p: &str| idx.albums_matching(p).unwrap();
        assert_eq!(find(&idx, "paris"), [PathBuf::from("/p/2019/Paris")]);
        assert_eq!(find(&idx, "PAR"), [PathBuf::from("/p/2019/Paris"), PathBuf::from("/p/Compare (1)")]);
        assert_eq!(find(&idx, "(1)"), [PathBuf::from("/p/Compare (1)")]);
        assert_eq!(find(&idx, "2019/"), [PathBuf::from("/p/2019/Paris")]);
        assert!(find(&idx, ".*").is_empty(), "regex characters are literal");
        assert!(find(&idx, "rome").is_empty());
        assert_eq!(find(&idx, "").len(), 3);
        assert_eq!(idx.photos_named("bike").unwrap(), [PathBuf::from("/p/2019/Paris/Bike Ride.png")]);

        // Replacing drops albums that are gone.
        assert!(idx.replace_albums(&albums[1..], "fp2").unwrap());
        assert!(find(&idx, "paris").is_empty());
        assert!(idx.photos_named("bike").unwrap().is_empty());
        // Reopening keeps everything.
        drop(idx);
        let idx = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(idx.albums_fingerprint().unwrap().as_deref(), Some("fp2"));
        assert_eq!(idx.albums_matching("berlin").unwrap(), [PathBuf::from("/p/berlin")]);
    }

    #[test]
    fn answers_are_served_only_for_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = SearchIndex::open(dir.path()).unwrap();
        let key = AnswerKey { model: "m1", album: Path::new("/p/a"), expression: "my bike" };
        assert_eq!(idx.answer(&key, "f1").unwrap(), None);
        assert!(idx.store_answer(&key, "f1", "{\"x\":1}").unwrap());
        assert_eq!(idx.answer(&key, "f1").unwrap().as_deref(), Some("{\"x\":1}"));
        let spaced = AnswerKey { expression: "  my   bike ", ..key };
        assert_eq!(idx.answer(&spaced, "f1").unwrap().as_deref(), Some("{\"x\":1}"), "whitespace is normalised");
        assert_eq!(idx.answer(&key, "f2").unwrap(), None, "album changed");
        assert_eq!(idx.answer(&AnswerKey { model: "m2", ..key }, "f1").unwrap(), None, "other model");
        assert_eq!(idx.answer(&AnswerKey { album: Path::new("/p/b"), ..key }, "f1").unwrap(), None);
        // Replacing keeps one document per key.
        assert!(idx.store_answer(&key, "f2", "{\"x\":2}").unwrap());
        assert_eq!(idx.answer(&key, "f2").unwrap().as_deref(), Some("{\"x\":2}"));
        assert_eq!(idx.answer(&key, "f1").unwrap(), None);
        let searcher = idx.reader.searcher();
        assert_eq!(searcher.search(&idx.and(&[("kind", "answer")]), &DocSetCollector).unwrap().len(), 1);
    }

    #[test]
    fn an_index_of_another_version_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = SearchIndex::open(dir.path()).unwrap();
        assert!(idx.replace_albums(&[album("/p/a", "a", &[])], "fp").unwrap());
        drop(idx);
        std::fs::write(dir.path().join(VERSION_FILE), "0").unwrap();
        let idx = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(idx.albums_fingerprint().unwrap(), None);
        // Garbage where the index should be is rebuilt too.
        drop(idx);
        std::fs::write(dir.path().join("meta.json"), "not json").unwrap();
        let idx = SearchIndex::open(dir.path()).unwrap();
        assert!(idx.albums_matching("a").unwrap().is_empty());
    }
}
