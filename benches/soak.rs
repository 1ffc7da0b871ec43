//! `cargo bench --bench soak`: the daemon under a long, mixed load while a folder churns; its latency
//! per method, its errors by kind, and whether its memory stays flat.
//!
//! A private bus, a library of generated photos indexed with the built-in model, the real `photoseg
//! daemon`, and [`CALLS`] D-Bus calls from [`CLIENTS`] concurrent clients: queries (fresh and repeated
//! expressions, some for one album), masks, status, roots, GNOME's search provider, and calls that must
//! fail (a photo outside the library, an empty expression). Meanwhile a thread adds and deletes photos
//! in one album, so the indexer works throughout. The daemon's VmRSS a tenth into the run is the
//! reference for its VmRSS at the end: the target is growth under 10 %.
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::{proc_mib, Reaper};

const NAME: &str = "org.photoseg.Photoseg1";
const PATH: &str = "/org/photoseg/Photoseg1";
const SEARCH_PATH: &str = "/org/photoseg/SearchProvider";
const SEARCH_IFACE: &str = "org.gnome.Shell.SearchProvider2";
const ALBUMS: usize = 4;
const PHOTOS_PER_ALBUM: usize = 8;
/// Calls in the run; `PHOTOSEG_SOAK_CALLS` sets another number (a longer soak).
const CALLS: usize = 2000;
const CLIENTS: usize = 2;

/// The `i`-th call of the mix: (method label, the call).
async fn call(conn: &zbus::Connection, i: usize, photo: &str, outside: &str) -> (&'static str, zbus::Result<()>) {
    // 12 expressions: after the first round most queries are repeats, served from the search index.
    let expression =
        format!("the {} {} on the left", ["red", "blue", "green"][i % 3], ["bike", "car", "cup", "dog"][i % 4]);
    let m = |method: &'static str| (Some(NAME), PATH, Some(NAME), method);
    macro_rules! run {
        ($label:expr, $dest:expr, $path:expr, $iface:expr, $method:expr, $body:expr) => {
            ($label, conn.call_method($dest, $path, $iface, $method, $body).await.map(|_| ()))
        };
    }
    match i % 10 {
        0 | 1 => {
            let (d, p, f, name) = m("Query");
            run!("Query", d, p, f, name, &(expression.as_str(), Vec::<&str>::new()))
        }
        2 => {
            let (d, p, f, name) = m("Query");
            run!("Query (one album)", d, p, f, name, &(expression.as_str(), vec!["album1"]))
        }
        3 => {
            let (d, p, f, name) = m("GetMask");
            run!("GetMask", d, p, f, name, &(photo, expression.as_str(), "png"))
        }
        4 | 5 => {
            let (d, p, f, name) = m("Status");
            run!("Status", d, p, f, name, &())
        }
        6 => {
            let (d, p, f, name) = m("ListRoots");
            run!("ListRoots", d, p, f, name, &())
        }
        7 => run!(
            "GetInitialResultSet",
            Some(NAME),
            SEARCH_PATH,
            Some(SEARCH_IFACE),
            "GetInitialResultSet",
            &(vec!["red", "bike"],)
        ),
        8 => {
            let (d, p, f, name) = m("GetMask");
            run!("GetMask (outside, must fail)", d, p, f, name, &(outside, "a bike", "png"))
        }
        _ => {
            let (d, p, f, name) = m("Query");
            run!("Query (empty, must fail)", d, p, f, name, &("   ", Vec::<&str>::new()))
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().to_path_buf();
    common::pin_user_dirs(&root)?;
    let photos = common::indexed_library(&root, ALBUMS, PHOTOS_PER_ALBUM)?;
    let outside = root.join("outside.jpg");
    common::photo(&outside, 99)?;
    let bin = env!("CARGO_BIN_EXE_photoseg");
    let _bus = common::private_bus(&root)?;
    let log = root.join("daemon.log");
    let daemon = Reaper(
        Command::new(bin)
            .args(["daemon", "--settle", "300"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?,
    );
    let pid = daemon.0.id();
    let photo = std::fs::canonicalize(photos.join("album0/p0.jpg"))?.to_string_lossy().into_owned();
    let outside = outside.to_string_lossy().into_owned();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let conn = rt.block_on(async {
        let start = Instant::now();
        loop {
            if let Ok(conn) = zbus::connection::Builder::session().build().await {
                let owned = zbus::fdo::DBusProxy::new(&conn).await?.name_has_owner(NAME.try_into()?).await?;
                if owned {
                    return anyhow::Ok(conn);
                }
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(120),
                "the daemon did not come up: {}",
                std::fs::read_to_string(&log)?
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    // Warm-up: one round of the mix, then the reference memory figure at rest.
    rt.block_on(async {
        for i in 0..10 {
            let _ = call(&conn, i, &photo, &outside).await;
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = proc_mib(pid, "VmRSS:");

    // The churn: a photo added to album3 every 150 ms, and the oldest one deleted once there are 4.
    let churning = Arc::new(AtomicBool::new(true));
    let churn = {
        let (churning, dir) = (churning.clone(), photos.join("album3"));
        std::thread::spawn(move || -> anyhow::Result<usize> {
            let mut n = 0usize;
            while churning.load(Ordering::SeqCst) {
                common::photo(&dir.join(format!("churn{n}.jpg")), 1000 + n as u32)?;
                if n >= 4 {
                    std::fs::remove_file(dir.join(format!("churn{}.jpg", n - 4)))?;
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
            Ok(n)
        })
    };

    let calls: usize = std::env::var("PHOTOSEG_SOAK_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(CALLS);
    // VmRSS every 50 ms while the calls run, to tell a leak (steady growth) from a plateau.
    let sampler = {
        let churning = churning.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while churning.load(Ordering::SeqCst) {
                samples.push(proc_mib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let started = Instant::now();
    let results: Vec<(&'static str, f64, Option<String>)> = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (conn, photo, outside) = (conn.clone(), photo.clone(), outside.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in (c..calls).step_by(CLIENTS) {
                    let t = Instant::now();
                    let (label, r) = call(&conn, i, &photo, &outside).await;
                    let kind = r.err().map(|e| match e {
                        zbus::Error::MethodError(name, _, _) => name.to_string(),
                        other => format!("{other}"),
                    });
                    out.push((label, t.elapsed().as_secs_f64() * 1e3, kind));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    });
    let wall = started.elapsed().as_secs_f64();
    churning.store(false, Ordering::SeqCst);
    let churned = churn.join().expect("churn thread")?;
    let samples = sampler.join().expect("sampler thread");
    std::thread::sleep(Duration::from_secs(1));
    let rss_end = proc_mib(pid, "VmRSS:");
    let hwm = proc_mib(pid, "VmHWM:");

    println!(
        "{calls} calls from {CLIENTS} clients in {wall:.1} s, {churned} photos added to a watched album meanwhile"
    );
    let mut by_method: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (label, ms, kind) in &results {
        by_method.entry(label).or_default().push(*ms);
        if let Some(kind) = kind {
            *errors.entry((label, kind.clone())).or_default() += 1;
        }
    }
    println!("  {:<30} {:>6} {:>10} {:>10}", "method", "calls", "p50 ms", "p99 ms");
    for (label, mut v) in by_method {
        v.sort_by(|a, b| a.total_cmp(b));
        println!("  {label:<30} {:>6} {:>10.1} {:>10.1}", v.len(), percentile(&v, 0.5), percentile(&v, 0.99));
    }
    println!("  errors by kind:");
    for ((label, kind), n) in &errors {
        println!("    {label}: {kind} x {n}");
    }
    let unexpected: usize =
        errors.iter().filter(|((label, _), _)| !label.ends_with("must fail)")).map(|(_, n)| n).sum();
    println!("  errors on calls that should succeed: {unexpected}");
    // The reference is the RSS a tenth into the run: by then every method, the search index's stored
    // answers and the indexer have run, so what follows is growth under a steady load (a leak).
    let reference = samples[samples.len() / 10];
    let growth = (rss_end / reference - 1.0) * 100.0;
    println!(
        "  daemon VmRSS: {rss_start:.1} MiB at rest before the run, {reference:.1} MiB a tenth into it (reference), \
         {rss_end:.1} MiB at the end: {growth:+.1} % from the reference (ratio {:.3}), {:+.1} % from rest; \
         peak VmHWM {hwm:.1} MiB",
        rss_end / reference,
        (rss_end / rss_start - 1.0) * 100.0
    );
    let quarters: Vec<String> =
        (1..=4).map(|q| format!("{:.1}", samples[(samples.len() * q / 4).saturating_sub(1)])).collect();
    println!("  daemon VmRSS at each quarter of the run: {} MiB", quarters.join(", "));
    println!("  target: growth < 10 %: {}", if growth < 10.0 { "met" } else { "NOT met" });
    drop(daemon);
    Ok(())
}
