//! The photo library without the model: which folders are watched, how photos are found,
//! decoded and cached with their features, and how the cache follows the disk.
//!
//! `config` and `paths` say where things are; `scan` walks folders; `photo` reads one file;
//! `cache` is the SQLite store; `indexer` ties them together around a [`indexer::Featurizer`]
//! that the model implements; `watch` turns filesystem events into [`watch::LibraryEvent`]s;
//! `search` is the tantivy index of album names and answered queries.
//! See docs/library.md for the schema and policies.
pub mod cache;
pub mod config;
pub mod indexer;
pub mod paths;
pub mod photo;
pub mod scan;
pub mod search;
pub mod watch;

pub use cache::{Cache, PhotoId};
pub use indexer::{index, Featurizer, IndexReport, Progress};
pub use watch::{LibraryEvent, LibraryWatcher};
