//! `cargo bench --bench dbus`: what asking the daemon over D-Bus costs compared with answering
//! in-process, on the same cache and model, and the daemon's memory.
//!
//! A private bus (`dbus-daemon`), a library of generated photos indexed with the built-in model, the
//! real `photoseg daemon` binary, and this process as the client through `service::client::connect` (the path
//! `photoseg query` takes). Each side answers its own fresh expressions (no stored answers), then one
//! repeated expression (served from the search index); medians of `ROUNDS` are printed with their
//! difference. The daemon's RSS (VmRSS) is read from /proc at rest and sampled while a query runs;
//! VmHWM is its peak.
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{proc_mib, Reaper};
use photoseg::query::{Engine, QueryBackend, QueryRequest};
use photoseg::service::client::DaemonClient;

const ALBUMS: usize = 4;
const PHOTOS_PER_ALBUM: usize = 8;
const ROUNDS: usize = 9;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn timed(backend: &mut dyn QueryBackend, expression: &str) -> anyhow::Result<f64> {
    let request = QueryRequest::new(expression, Vec::new())?;
    let t = Instant::now();
    let result = backend.query(&request)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(result.albums.len(), ALBUMS);
    Ok(ms)
}

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    common::pin_user_dirs(&root)?;

    // Photos: ALBUMS folders of PHOTOS_PER_ALBUM generated 320 x 240 JPEGs.
    common::indexed_library(&root, ALBUMS, PHOTOS_PER_ALBUM)?;
    let bin = env!("CARGO_BIN_EXE_photoseg");
    println!("library: {} photos in {ALBUMS} albums, built-in model", ALBUMS * PHOTOS_PER_ALBUM);

    let bus = common::private_bus(&root)?;

    // 1. The built-in model: real compute, but it rejects every photo, so answers carry no masks.
    compare(bin, &root, "built-in model", None)?;
    // 2. A tiny random model whose margin makes every photo positive: every answer carries 32 masks.
    let tiny = root.join("tiny-model");
    tiny_model(&tiny)?;
    let out = Command::new(bin).arg("index").arg("--model").arg(&tiny).env("PHOTOSEG_NO_DAEMON", "1").output()?;
    anyhow::ensure!(out.status.success(), "photoseg index failed: {}", String::from_utf8_lossy(&out.stderr));
    compare(bin, &root, "tiny random model, every photo positive (answers carry 32 masks)", Some(&tiny))?;
    drop(bus);
    drop(tmp);
    Ok(())
}

/// Starts `photoseg daemon` (with `model`, or the default one) on the bus of `DBUS_SESSION_BUS_ADDRESS`,
/// times the same kind of query in-process and through it, prints the figures and stops it.
fn compare(bin: &str, root: &Path, label: &str, model: Option<&Path>) -> anyhow::Result<()> {
    let log = root.join("daemon.log");
    let mut daemon = Reaper(
        Command::new(bin)
            .arg("daemon")
            .args(model.iter().flat_map(|m| [Path::new("--model"), m]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let pid = daemon.0.id();
    let start = Instant::now();
    let mut client = loop {
        if let Some(c) = DaemonClient::find(model) {
            break c;
        }
        if let Some(status) = daemon.0.try_wait()? {
            anyhow::bail!("the daemon exited with {status}: {}", std::fs::read_to_string(&log)?);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the daemon did not come up: {}",
            std::fs::read_to_string(&log)?
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // service::client::connect picks the daemon now (what `photoseg query` does).
    anyhow::ensure!(
        photoseg::service::client::connect(model)?.describe().starts_with("daemon"),
        "service::client::connect did not pick the daemon"
    );
    let mut engine = Engine::open_default(model)?;
    anyhow::ensure!(engine.backbone() == client.model(), "daemon and in-process models differ");

    // Warm up both (first BERT run, page cache), then wait for the daemon to be at rest.
    timed(&mut engine, "warm up in process")?;
    timed(&mut client, "warm up the daemon")?;
    std::thread::sleep(Duration::from_secs(1));
    let rest = proc_mib(pid, "VmRSS:");

    // Fresh answers: each side its own expressions of the same length.
    let mut fresh_local = Vec::new();
    let mut fresh_daemon = Vec::new();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut max = 0.0f64;
            while sampling.load(Ordering::SeqCst) {
                max = max.max(proc_mib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(2));
            }
            max
        })
    };
    // Alternate which side goes first, so neither always runs on a warmer cache.
    for i in 0..ROUNDS {
        let local = format!("the red bike number {i} left");
        let remote = format!("the red bike number {i} right");
        if i % 2 == 0 {
            fresh_local.push(timed(&mut engine, &local)?);
            fresh_daemon.push(timed(&mut client, &remote)?);
        } else {
            fresh_daemon.push(timed(&mut client, &remote)?);
            fresh_local.push(timed(&mut engine, &local)?);
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let during = sampler.join().unwrap();
    let hwm = proc_mib(pid, "VmHWM:");

    // Repeated answers (from the search index).
    timed(&mut engine, "my blue car")?;
    let mut again_local = Vec::new();
    let mut again_daemon = Vec::new();
    for _ in 0..ROUNDS {
        again_local.push(timed(&mut engine, "my blue car")?);
        again_daemon.push(timed(&mut client, "my blue car")?);
    }

    let (fl, fd) = (median(fresh_local), median(fresh_daemon));
    let (al, ad) = (median(again_local), median(again_daemon));
    println!("{label}:");
    println!("  query, fresh answer    (median of {ROUNDS}): in-process {fl:8.1} ms   daemon over D-Bus {fd:8.1} ms   difference {:+7.1} ms", fd - fl);
    println!("  query, repeated answer (median of {ROUNDS}): in-process {al:8.1} ms   daemon over D-Bus {ad:8.1} ms   difference {:+7.1} ms", ad - al);
    let worst = (fd - fl).max(ad - al);
    println!("  target: D-Bus adds < 50 ms: {}", if worst < 50.0 { "met" } else { "NOT met" });
    println!(
        "  daemon RSS: at rest {rest:.0} MiB, during queries up to {during:.0} MiB (sampled), peak VmHWM {hwm:.0} MiB"
    );

    drop(daemon);
    Ok(())
}

/// A tiny GRSer with random weights and a hugely negative margin (tests/it/cli_query.rs does the same).
fn tiny_model(dir: &Path) -> anyhow::Result<()> {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use photoseg::model::grser::{Config, Grser};
    let tok_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).map_err(anyhow::Error::msg)?;
    let mut cfg = Config::tiny(60);
    cfg.head.margin = -1e4;
    let varmap = VarMap::new();
    Grser::new(&cfg, tok.clone(), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    photoseg::model::checkpoint::save_model_dir(&varmap, &cfg, &tok, dir)?;
    Ok(())
}
