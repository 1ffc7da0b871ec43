//! `photoseg daemon`: serve the library on the session bus (docs/daemon.md) until SIGINT or SIGTERM.
//! The service itself is `crate::service`; this file parses, sets up logging and the runtime.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::library::watch::DEFAULT_SETTLE;
use crate::service::{self, Options, BUS_NAME};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Model directory (default: $PHOTOSEG_MODEL, else the active installed model, else the built-in one;
    /// without either the daemon follows `photoseg model install` and `use`, docs/daemon.md).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// How long a folder must be quiet, in milliseconds, before its changes are indexed.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SETTLE.as_millis() as u64)]
    pub settle: u64,
}

pub fn run(args: DaemonArgs) -> Result<()> {
    limit_malloc_arenas();
    // Logs go to stderr (the journal under systemd); RUST_LOG overrides the level.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("photoseg=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("photoseg daemon")
        .enable_all()
        .build()?;
    let opts = Options { model_dir: args.model, settle: Duration::from_millis(args.settle) };
    let result = runtime.block_on(async {
        let conn = zbus::connection::Builder::session()
            .build()
            .await
            .context("cannot connect to the session bus (is DBUS_SESSION_BUS_ADDRESS set?)")?;
        // Say so before loading the model when another daemon already serves the name.
        let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
        if dbus.name_has_owner(BUS_NAME.try_into()?).await? {
            anyhow::bail!("another photoseg daemon already serves {BUS_NAME} on this bus; stop it first");
        }
        service::run(conn, opts).await
    });
    // A query still running on a blocking thread is not waited for past this.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Two malloc arenas for the whole process. glibc gives each thread that allocates while another holds
/// the lock an arena of its own (up to 8 per core), and memory freed in one is not reused by the others:
/// under a long mixed load (tokio's blocking threads, the indexer, the query worker) the daemon's
/// resident memory rose from 70 to 133 MiB and stayed there; with two arenas it stays within a few
/// percent of its size after warm-up (`cargo bench --bench soak`). `MALLOC_ARENA_MAX` in the
/// environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's tuning; it is called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
