-- photoseg library cache, version 1.
-- Paths are stored as BLOBs of the raw OS bytes: file names need not be UTF-8.
-- Applied by src/library/cache.rs inside one transaction that also sets PRAGMA user_version = 1.

-- A folder with photos directly in it.
CREATE TABLE albums (
    id   INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE
);

-- One row per photo file; (size, mtime_ns) say cheaply whether the file may have changed,
-- sha256 says whether it really did (a touched but identical file keeps its features).
CREATE TABLE photos (
    id         INTEGER PRIMARY KEY,
    album_id   INTEGER NOT NULL REFERENCES albums(id) ON DELETE CASCADE,
    path       BLOB NOT NULL UNIQUE,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    indexed_at INTEGER NOT NULL -- unix seconds
);
CREATE INDEX photos_album ON photos(album_id);
CREATE INDEX photos_sha256 ON photos(sha256);

-- Network features of a photo. `backbone` names the network (and weights) that made them:
-- features of different backbones are never mixed, a new model simply has none yet.
CREATE TABLE features (
    photo_id   INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
    backbone   TEXT NOT NULL,
    data       BLOB NOT NULL,
    created_at INTEGER NOT NULL, -- unix seconds
    PRIMARY KEY (photo_id, backbone)
);
