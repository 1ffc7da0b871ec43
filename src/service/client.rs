//! The daemon as a [`QueryBackend`]: `photoseg query` asks a running daemon instead of loading the
//! model itself. [`DaemonClient::find`] answers quickly (at most [`FIND_TIMEOUT`]) whether a daemon
//! that serves *this* library is there; otherwise the CLI answers in-process.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use zbus::proxy;

use super::{BUS_NAME, NO_DAEMON_ENV, OBJECT_PATH};
use crate::library::paths;
use crate::query::model::{model_digest, MODEL_ENV};
use crate::query::rle::{self, CocoRle};
use crate::query::{Engine, Positive, QueryBackend, QueryProgress, QueryRequest, QueryResult, QuerySummary};

/// The backend for this process: a running `photoseg daemon` that serves this library with this model
/// (the model is then not loaded here at all), else the in-process [`Engine`]. `PHOTOSEG_NO_DAEMON=1`
/// forces in-process; see [`DaemonClient::find`].
pub fn connect(model_dir: Option<&Path>) -> Result<Box<dyn QueryBackend>> {
    if let Some(client) = DaemonClient::find(model_dir) {
        return Ok(Box::new(client));
    }
    Ok(Box::new(Engine::open_default(model_dir)?))
}

/// How long finding a daemon may take before the CLI gives up on it and answers in-process.
pub const FIND_TIMEOUT: Duration = Duration::from_secs(2);

#[proxy(
    interface = "org.photoseg.Photoseg1",
    default_service = "org.photoseg.Photoseg1",
    default_path = "/org/photoseg/Photoseg1"
)]
trait Photoseg1 {
    fn query(&self, expression: &str, albums: &[&str]) -> zbus::Result<String>;

    fn query_streamed(&self, expression: &str, albums: &[&str], token: &str) -> zbus::Result<String>;

    #[zbus(signal)]
    fn query_decided(&self, token: &str, summary_json: &str) -> zbus::Result<()>;

    #[allow(clippy::too_many_arguments)]
    #[zbus(signal)]
    fn query_mask(
        &self,
        token: &str,
        album: u32,
        path: &str,
        score: f64,
        mask_area: u64,
        width: u32,
        height: u32,
        rle_counts: &str,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn model(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn model_name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn cache_file(&self) -> zbus::Result<String>;
}

/// A connection to a running `photoseg daemon` on the session bus.
pub struct DaemonClient {
    runtime: tokio::runtime::Runtime,
    proxy: Photoseg1Proxy<'static>,
    model: String,
    /// What users call the model (empty from a daemon too old to say).
    model_name: String,
}

impl std::fmt::Debug for DaemonClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonClient").field("model", &self.model).finish_non_exhaustive()
    }
}

impl DaemonClient {
    /// The daemon on the session bus, when one runs, serves the cache this process would use and
    /// answers with the model `model_dir` (or `$PHOTOSEG_MODEL`) names, if one is named. `None` (with
    /// the reason in the debug log) otherwise, or when `$PHOTOSEG_NO_DAEMON` is `1`.
    pub fn find(model_dir: Option<&Path>) -> Option<DaemonClient> {
        if std::env::var_os(NO_DAEMON_ENV).is_some_and(|v| v == "1") {
            return None;
        }
        match Self::try_find(model_dir) {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!("not using a daemon: {e:#}");
                None
            }
        }
    }

    fn try_find(model_dir: Option<&Path>) -> Result<Option<DaemonClient>> {
        // No bus address at all: nothing to try (and no socket to wait on).
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && !std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists())
        {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let found = runtime.block_on(async {
            tokio::time::timeout(FIND_TIMEOUT, async {
                let conn = zbus::connection::Builder::session().build().await?;
                let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
                if !dbus.name_has_owner(BUS_NAME.try_into()?).await? {
                    return Ok::<_, anyhow::Error>(None);
                }
                let proxy =
                    Photoseg1Proxy::builder(&conn).cache_properties(zbus::proxy::CacheProperties::No).build().await?;
                let model = proxy.model().await?;
                let model_name = proxy.model_name().await.unwrap_or_default();
                let cache = proxy.cache_file().await?;
                Ok(Some((proxy, model, model_name, cache)))
            })
            .await
            .map_err(|_| anyhow!("the session bus did not answer within {FIND_TIMEOUT:?}"))?
        })?;
        let Some((proxy, model, model_name, cache)) = found else { return Ok(None) };
        let ours = paths::cache_file()?;
        if !same_file(Path::new(&cache), &ours) {
            bail!("the daemon serves the cache {cache}, this process uses {}", ours.display());
        }
        let named = model_dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(MODEL_ENV).filter(|v| !v.is_empty()).map(PathBuf::from));
        if let Some(dir) = named {
            let digest = model_digest(&dir)?;
            if model.rsplit('@').next() != Some(&digest[..16]) {
                bail!("the daemon answers with the model {model}, not {}", dir.display());
            }
        }
        Ok(Some(DaemonClient { runtime, proxy, model, model_name }))
    }

    /// The backbone id of the daemon's model.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl QueryBackend for DaemonClient {
    fn describe(&self) -> String {
        format!("the daemon {BUS_NAME} with the model {} ({})", self.model_name, self.model)
    }

    fn query(&mut self, request: &QueryRequest) -> Result<QueryResult> {
        let albums: Vec<&str> = request.albums.iter().map(String::as_str).collect();
        let json = self.runtime.block_on(self.proxy.query(&request.expression, &albums)).map_err(daemon_error)?;
        QueryResult::from_json(&json).context("the daemon's answer is not photoseg's query JSON")
    }

    /// Through `QueryStreamed`: the decision and each mask are passed on as their signals arrive (they
    /// all precede the reply). The reply is the whole answer; anything the signals did not bring (none
    /// should be missing) is passed on from it, so `progress` sees every positive exactly once. A daemon
    /// without `QueryStreamed` (an older build) answers through `Query`.
    fn query_streaming(&mut self, request: &QueryRequest, progress: &mut dyn QueryProgress) -> Result<QueryResult> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let token = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let albums: Vec<&str> = request.albums.iter().map(String::as_str).collect();
        let proxy = &self.proxy;
        let mut seen = Seen::default();
        let json = self.runtime.block_on(async {
            let mut decided = proxy.receive_query_decided().await?;
            let mut masks = proxy.receive_query_mask().await?;
            let call = proxy.query_streamed(&request.expression, &albums, &token);
            tokio::pin!(call);
            loop {
                // Signals first: a reply never overtakes the signals sent before it.
                tokio::select! {
                    biased;
                    Some(signal) = decided.next() => {
                        let args = signal.args()?;
                        if args.token == token && seen.summary.is_none() {
                            let summary = QuerySummary::from_json(args.summary_json)?;
                            progress.decided(&summary)?;
                            seen.summary = Some(summary);
                        }
                    }
                    Some(signal) = masks.next() => {
                        let a = signal.args()?;
                        if a.token == token {
                            let album = a.album as usize;
                            let rle = CocoRle { size: [a.height as usize, a.width as usize], counts: a.rle_counts.to_string() };
                            let positive = Positive {
                                path: PathBuf::from(a.path),
                                score: a.score as f32,
                                mask_area: a.mask_area as usize,
                                width: a.width,
                                height: a.height,
                                mask: rle::decode(&rle)?,
                            };
                            if seen.summary.is_some() {
                                progress.mask(album, &positive)?;
                                seen.masks.push((album, positive.path));
                            }
                        }
                    }
                    reply = &mut call => break Ok::<_, anyhow::Error>(reply),
                }
            }
        });
        let json = match json? {
            Ok(json) => json,
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
            {
                let result = self.query(request)?;
                seen.replay(&result, progress)?;
                return Ok(result);
            }
            Err(e) => return Err(daemon_error(e)),
        };
        let result = QueryResult::from_json(&json).context("the daemon's answer is not photoseg's query JSON")?;
        seen.replay(&result, progress)?;
        Ok(result)
    }
}

/// What `QueryStreamed`'s signals have passed on so far.
#[derive(Default)]
struct Seen {
    summary: Option<QuerySummary>,
    masks: Vec<(usize, PathBuf)>,
}

impl Seen {
    /// Passes on from the whole answer what the signals did not.
    fn replay(&self, result: &QueryResult, progress: &mut dyn QueryProgress) -> Result<()> {
        if self.summary.is_none() {
            progress.decided(&result.summary())?;
        }
        for (i, a) in result.albums.iter().enumerate() {
            for p in &a.positives {
                if !self.masks.iter().any(|(album, path)| *album == i && *path == p.path) {
                    progress.mask(i, p)?;
                }
            }
        }
        Ok(())
    }
}

fn daemon_error(e: zbus::Error) -> anyhow::Error {
    match e {
        // The daemon's message is already the whole story (e.g. "the library is empty: ...").
        zbus::Error::MethodError(_, Some(message), _) => anyhow!("{message}"),
        e => anyhow!("the daemon ({BUS_NAME} at {OBJECT_PATH}) failed to answer: {e}"),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| {
        // The cache file may not exist yet; its folder usually does.
        match (p.parent().and_then(|d| std::fs::canonicalize(d).ok()), p.file_name()) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => p.to_path_buf(),
        }
    };
    a == b || canon(a) == canon(b)
}
