//! `org.photoseg.Photoseg1` at `/org/photoseg/Photoseg1`: exactly `schema/org.photoseg.Photoseg1.xml`
//! (a test compares the served introspection with that file). Each method converts its arguments,
//! runs the [`Library`] method on a blocking thread and converts the answer.
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection};

use super::desktop::Desktop;
use super::error::{blocking, Result};
use super::krunner::KRunner;
use super::search_provider::SearchProvider;
use super::{path_string, Library, Signal, BUS_NAME, KRUNNER_PATH, OBJECT_PATH, SEARCH_PROVIDER_PATH};

/// The photoseg interface.
#[derive(Debug)]
pub struct Photoseg1 {
    library: Library,
}

#[interface(name = "org.photoseg.Photoseg1")]
impl Photoseg1 {
    /// Answers an expression over every album (or those whose name contains one of `albums`) as
    /// `photoseg query EXPR --json` does.
    #[zbus(out_args("answer_json"))]
    async fn query(&self, expression: String, albums: Vec<String>) -> Result<String> {
        let library = self.library.clone();
        blocking(move || library.query(&expression, albums)?.to_json().map_err(super::Error::failed)).await
    }

    /// The mask of the object `expression` refers to in one photo: PNG bytes or a COCO RLE string.
    #[zbus(out_args("found", "width", "height", "data"))]
    async fn get_mask(&self, path: String, expression: String, format: String) -> Result<(bool, u32, u32, Vec<u8>)> {
        let library = self.library.clone();
        let m = blocking(move || library.mask(&path, &expression, &format)).await?;
        Ok((m.found, m.width, m.height, m.data))
    }

    /// Photos known, photos indexed for the current model, albums, "idle" or "indexing".
    #[zbus(out_args("photos", "indexed", "albums", "state"))]
    async fn status(&self) -> Result<(u32, u32, u32, String)> {
        let library = self.library.clone();
        let s = blocking(move || library.status()).await?;
        Ok((s.photos, s.indexed, s.albums, s.state.to_string()))
    }

    /// Watches a folder and indexes it in the background.
    async fn add_root(&self, path: String) -> Result<()> {
        let library = self.library.clone();
        blocking(move || library.add_root(&path)).await
    }

    /// Stops watching a folder and forgets its photos.
    async fn remove_root(&self, path: String) -> Result<()> {
        let library = self.library.clone();
        blocking(move || library.remove_root(&path)).await
    }

    /// The watched folders.
    #[zbus(out_args("roots"))]
    async fn list_roots(&self) -> Vec<String> {
        self.library.roots().iter().map(|r| path_string(r)).collect()
    }

    /// Photos done of total, and the photo in hand.
    #[zbus(signal)]
    async fn index_progress(emitter: &SignalEmitter<'_>, done: u32, total: u32, path: &str) -> zbus::Result<()>;

    /// An indexing run ended: photos featurized and bad files skipped.
    #[zbus(signal)]
    async fn index_finished(emitter: &SignalEmitter<'_>, featurized: u32, failed: u32) -> zbus::Result<()>;

    /// The model answering queries (its backbone id).
    #[zbus(property(emits_changed_signal = "const"))]
    async fn model(&self) -> String {
        self.library.backbone().to_string()
    }

    /// The cache file the daemon serves, so a client with another `XDG_CACHE_HOME` does not take
    /// this library's answers for its own.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn cache_file(&self) -> String {
        path_string(self.library.cache_file())
    }
}

/// Serves the three objects on `conn`, forwards indexing signals, then takes [`BUS_NAME`] (objects
/// first, so a client that sees the name finds them). Fails when another daemon holds the name.
pub async fn serve(
    conn: &Connection,
    library: Library,
    mut signals: tokio::sync::mpsc::UnboundedReceiver<Signal>,
) -> anyhow::Result<()> {
    let server = conn.object_server();
    server.at(OBJECT_PATH, Photoseg1 { library: library.clone() }).await?;
    let desktop = Desktop::new(library);
    server.at(SEARCH_PROVIDER_PATH, SearchProvider::new(desktop.clone())).await?;
    server.at(KRUNNER_PATH, KRunner::new(desktop)).await?;
    let iface = server.interface::<_, Photoseg1>(OBJECT_PATH).await?;
    tokio::spawn(async move {
        while let Some(signal) = signals.recv().await {
            let emitter = iface.signal_emitter();
            let sent = match signal {
                Signal::Progress { done, total, path } => {
                    Photoseg1::index_progress(emitter, done, total, &path_string(&path)).await
                }
                Signal::Finished { featurized, failed } => Photoseg1::index_finished(emitter, featurized, failed).await,
            };
            if let Err(e) = sent {
                tracing::warn!("cannot emit an indexing signal: {e}");
            }
        }
    });
    conn.request_name(BUS_NAME).await.map_err(|e| match e {
        zbus::Error::NameTaken => {
            anyhow::anyhow!("another photoseg daemon already serves {BUS_NAME} on this bus; stop it first")
        }
        e => anyhow::anyhow!("cannot take the name {BUS_NAME}: {e}"),
    })?;
    Ok(())
}
