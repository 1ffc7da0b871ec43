//! `org.photoseg.Photoseg1` at `/org/photoseg/Photoseg1`: exactly `schema/org.photoseg.Photoseg1.xml`
//! (a test compares the served introspection with that file). Each method converts its arguments,
//! runs the [`Library`] method on a blocking thread and converts the answer.
// `QueryMask` has eight arguments, and the emitting function zbus generates for it one more.
#![allow(clippy::too_many_arguments)]
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection};

use super::desktop::Desktop;
use super::error::{blocking, Error, Result};
use super::krunner::KRunner;
use super::search_provider::SearchProvider;
use crate::query::{rle, Positive, QueryProgress, QuerySummary};

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
    async fn query(
        &self,
        expression: String,
        albums: Vec<String>,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<String> {
        let library = self.library.clone();
        let caller = caller_of(&header);
        blocking(move || library.query(&caller, &expression, albums)?.to_json().map_err(super::Error::failed)).await
    }

    /// [`Photoseg1::query`], streamed: while it runs, the caller alone (the signals are unicast) gets
    /// `QueryDecided` once the albums are decided and `QueryMask` for each positive as its mask is made,
    /// all tagged with the caller's `token` and all before the reply, which is `Query`'s whole answer.
    #[zbus(out_args("answer_json"))]
    async fn query_streamed(
        &self,
        expression: String,
        albums: Vec<String>,
        token: String,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidArgument(format!(
                "the token is {} bytes long, at most {MAX_TOKEN_BYTES} are accepted",
                token.len()
            )));
        }
        let Some(caller) = header.sender() else {
            return Err(Error::InvalidArgument(
                "QueryStreamed needs a caller with a bus name to send its signals to".into(),
            ));
        };
        let caller_name = caller.to_string();
        let emitter = emitter.set_destination(caller.to_owned().into());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let library = self.library.clone();
        let delay = library.mask_delay();
        let job = tokio::spawn(blocking(move || {
            let mut forward = Forward { tx, delay };
            library.query_streaming(&caller_name, &expression, albums, &mut forward)?.to_json().map_err(Error::failed)
        }));
        // The events end when the query does (the sender is dropped with it); every signal goes out
        // before the reply, so a client has the stream in hand before the whole answer.
        while let Some(event) = rx.recv().await {
            let sent = match event {
                Event::Decided(summary) => Self::query_decided(&emitter, &token, &summary).await,
                Event::Mask { album, path, score, area, width, height, counts } => {
                    Self::query_mask(&emitter, &token, album, &path, score, area, width, height, &counts).await
                }
            };
            if let Err(e) = sent {
                tracing::warn!("cannot send a query signal to {caller}: {e}");
            }
        }
        job.await.map_err(|e| Error::Failed(format!("internal error while answering: {e}")))?
    }

    /// The mask of the object `expression` refers to in one photo: PNG bytes or a COCO RLE string.
    #[zbus(out_args("found", "width", "height", "data"))]
    async fn get_mask(
        &self,
        path: String,
        expression: String,
        format: String,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(bool, u32, u32, Vec<u8>)> {
        let library = self.library.clone();
        let caller = caller_of(&header);
        let m = blocking(move || library.mask(&caller, &path, &expression, &format)).await?;
        Ok((m.found, m.width, m.height, m.data))
    }

    /// Opens a photo of the library with the desktop's opener, remembering the expression for the photo
    /// viewer (`OpenedExpression`).
    async fn open(&self, path: String, expression: String) -> Result<()> {
        let library = self.library.clone();
        blocking(move || library.open_with_expression(&path, &expression)).await
    }

    /// The expression a photo was opened with through photoseg (a desktop search result, `Open`) in the
    /// last 5 minutes, once; `found` false otherwise. The eog plugin asks when it shows a photo.
    #[zbus(out_args("found", "expression"))]
    async fn opened_expression(&self, path: String) -> Result<(bool, String)> {
        let library = self.library.clone();
        let e = blocking(move || library.opened_expression(&path)).await?;
        Ok((e.is_some(), e.unwrap_or_default()))
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

    /// `QueryStreamed`: the albums are decided; `summary_json` is the answer without masks.
    #[zbus(signal)]
    async fn query_decided(emitter: &SignalEmitter<'_>, token: &str, summary_json: &str) -> zbus::Result<()>;

    /// `QueryStreamed`: one positive's mask (`album` indexes the summary's albums), COCO RLE counts.
    #[zbus(signal)]
    async fn query_mask(
        emitter: &SignalEmitter<'_>,
        token: &str,
        album: u32,
        path: &str,
        score: f64,
        mask_area: u64,
        width: u32,
        height: u32,
        rle_counts: &str,
    ) -> zbus::Result<()>;

    /// The model answering queries (its backbone id); changes when the daemon switches to a newly
    /// installed model.
    #[zbus(property)]
    async fn model(&self) -> String {
        self.library.backbone().to_string()
    }

    /// What users call the model answering (`builtin`, an installed model's name, or its folder).
    #[zbus(property)]
    async fn model_name(&self) -> String {
        self.library.model_name().to_string()
    }

    /// The cache file the daemon serves, so a client with another `XDG_CACHE_HOME` does not take
    /// this library's answers for its own.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn cache_file(&self) -> String {
        path_string(self.library.cache_file())
    }
}

/// Longest `QueryStreamed` token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 200;

/// What the query thread hands to the D-Bus task for `QueryStreamed`'s signals.
enum Event {
    Decided(String),
    Mask { album: u32, path: String, score: f64, area: u64, width: u32, height: u32, counts: String },
}

/// A [`QueryProgress`] that forwards the decision and each mask to the D-Bus task, converted to the
/// signals' arguments on the query's thread.
struct Forward {
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    delay: std::time::Duration,
}

impl QueryProgress for Forward {
    fn decided(&mut self, summary: &QuerySummary) -> anyhow::Result<()> {
        // A caller that went away does not stop the query: its answer is still stored for the next one.
        let _ = self.tx.send(Event::Decided(summary.to_json()?));
        Ok(())
    }

    fn mask(&mut self, album: usize, p: &Positive) -> anyhow::Result<()> {
        let rle = rle::encode(&p.mask, p.width as usize, p.height as usize)?;
        let _ = self.tx.send(Event::Mask {
            album: album as u32,
            path: path_string(&p.path),
            score: p.score as f64,
            area: p.mask_area as u64,
            width: p.width,
            height: p.height,
            counts: rle.counts,
        });
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        Ok(())
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
    let switcher = library.clone();
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
                Signal::ModelIndexed { backbone } => match switcher.model_indexed(&backbone) {
                    Some(name) => {
                        tracing::info!("now answering with the model {name} ({backbone})");
                        let me = iface.get().await;
                        let changed = me.model_changed(emitter).await;
                        changed.and(me.model_name_changed(emitter).await)
                    }
                    None => Ok(()),
                },
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

/// Who sent a call, for the engines' one-query-per-caller rule (a connection without a bus name, as
/// in peer-to-peer use, counts as one caller).
fn caller_of(header: &Header<'_>) -> String {
    header.sender().map(|s| s.to_string()).unwrap_or_default()
}
