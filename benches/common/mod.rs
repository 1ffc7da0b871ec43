//! What the daemon benchmarks share: a user's folders in a temp dir, generated photos, a private bus,
//! child processes reaped on drop, and /proc memory figures.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};

/// Points HOME and the XDG folders into `root` (created) and clears photoseg's own variables.
pub fn pin_user_dirs(root: &Path) -> anyhow::Result<()> {
    for (var, dir) in
        [("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")]
    {
        std::fs::create_dir_all(root.join(dir))?;
        std::env::set_var(var, root.join(dir));
    }
    std::env::remove_var("PHOTOSEG_MODEL");
    std::env::remove_var("PHOTOSEG_NO_DAEMON");
    Ok(())
}

/// A 320 x 240 JPEG whose pattern depends on `seed`.
pub fn photo(path: &Path, seed: u32) -> anyhow::Result<()> {
    let img = RgbImage::from_fn(320, 240, |x, y| {
        Rgb([(x * 3 + seed * 17) as u8, (y * 5 + seed * 29) as u8, ((x ^ y) + seed * 7) as u8])
    });
    std::fs::create_dir_all(path.parent().unwrap())?;
    img.save(path)?;
    Ok(())
}

/// Writes `albums` folders of `per_album` generated photos under `root/photos` (album`a`/p`p`.jpg) and
/// indexes them with the built-in model in-process (`photoseg index`, which also watches the folder).
/// Returns the photo folder.
pub fn indexed_library(root: &Path, albums: usize, per_album: usize) -> anyhow::Result<PathBuf> {
    let photos = root.join("photos");
    for a in 0..albums {
        for p in 0..per_album {
            photo(&photos.join(format!("album{a}")).join(format!("p{p}.jpg")), (a * per_album + p) as u32)?;
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_photoseg"))
        .arg("index")
        .arg(&photos)
        .env("PHOTOSEG_NO_DAEMON", "1")
        .output()?;
    anyhow::ensure!(out.status.success(), "photoseg index failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(photos)
}

/// Starts a private `dbus-daemon` listening in `root` and points DBUS_SESSION_BUS_ADDRESS at it.
pub fn private_bus(root: &Path) -> anyhow::Result<Reaper> {
    let conf = root.join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            "<busconfig><type>session</type><listen>unix:dir={}</listen><auth>EXTERNAL</auth>\
             <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
             <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>",
            root.display()
        ),
    )?;
    let mut bus = Reaper(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start dbus-daemon ({e}); install the dbus package"))?,
    );
    let mut address = String::new();
    BufReader::new(bus.0.stdout.take().unwrap()).read_line(&mut address)?;
    std::env::set_var("DBUS_SESSION_BUS_ADDRESS", address.trim());
    Ok(bus)
}

/// A field of /proc/PID/status in MiB.
pub fn proc_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped, also on an early `?` return.
pub struct Reaper(pub std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let start = Instant::now();
        while matches!(self.0.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
