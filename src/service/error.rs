//! The daemon's D-Bus errors: the names `schema/org.photoseg.Photoseg1.xml` lists, each with a message
//! that says what was wrong and with which value. Every interface the daemon serves (its own, GNOME's
//! and KDE's) answers with these.
use zbus::DBusError;

/// An error a method of the daemon answers with. The variant is the last part of the D-Bus error name
/// (`org.photoseg.Photoseg1.Error.InvalidArgument`, ...); the string is the message.
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.photoseg.Photoseg1.Error")]
pub enum Error {
    /// An error of the D-Bus layer itself (keeps its own name).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Empty or over-long expression, unknown format, non-absolute path, bad folder.
    InvalidArgument(String),
    /// A path that is not inside a watched folder.
    OutsideRoots(String),
    /// A path inside the watched folders that the cache does not know.
    UnknownPhoto(String),
    /// A known photo without features for the current model yet.
    NotIndexed(String),
    /// Anything else (the message says what).
    Failed(String),
}

impl Error {
    /// [`Error::Failed`] with an error chain as its message.
    pub fn failed(err: impl Into<anyhow::Error>) -> Self {
        Error::Failed(format!("{:#}", err.into()))
    }
}

/// What a daemon method returns.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs blocking work (SQLite, the model, image files) off the D-Bus connection's tasks, so a slow call
/// never holds up other clients. A panic in `work` is answered as [`Error::Failed`], never a crash.
pub async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(Error::Failed(format!("internal error while answering: {e}"))),
    }
}
