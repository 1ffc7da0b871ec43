//! Helpers of the D-Bus tests: a private bus (`dbus-daemon` with a config of our own: nothing is
//! auto-started on it), the real `photoseg daemon` binary on it with HOME and the XDG folders in a temp
//! dir, and real D-Bus clients: `busctl --json` for answers, `gdbus` for error names and introspection.
//! No zbus on the client side: the daemon is talked to as GNOME, KDE or a script would.
//!
//! Without `dbus-daemon` the tests say so loudly and pass, unless `CI` is set: CI installs it
//! (`.ci/run`), so there it fails. Without `busctl` or `gdbus` (but with a bus) they fail.
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use serde_json::Value;
use tempfile::TempDir;

pub const NAME: &str = "org.photoseg.Photoseg1";
pub const PATH: &str = "/org/photoseg/Photoseg1";
pub const SEARCH_PATH: &str = "/org/photoseg/SearchProvider";
pub const SEARCH_IFACE: &str = "org.gnome.Shell.SearchProvider2";
pub const KRUNNER_PATH: &str = "/org/photoseg/krunner";
pub const KRUNNER_IFACE: &str = "org.kde.krunner1";

/// How long the daemon may take to come up or to index a handful of photos on a busy machine.
pub const WITHIN: Duration = Duration::from_secs(60);

/// Whether the tests can run: without `dbus-daemon` they are skipped with a loud message, except under
/// CI (`CI` set), where that fails. `dbus-daemon` present but `busctl` or `gdbus` missing always fails.
pub fn tools_present() -> bool {
    let have = |t: &str| {
        Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().is_ok_and(|o| o.status.success())
    };
    let hint = "Debian: apt-get install dbus libglib2.0-bin systemd; .ci/run installs them";
    if !have("dbus-daemon") {
        if std::env::var_os("CI").is_some() {
            panic!("dbus-daemon is missing; under CI the D-Bus tests must run ({hint})");
        }
        // Straight to the stderr handle: libtest captures eprintln! of passing tests, and this must show.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: no dbus-daemon, so no D-Bus test ran ({hint})\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return false;
    }
    for client in ["busctl", "gdbus"] {
        assert!(have(client), "{client} is missing: the D-Bus tests call the daemon with it ({hint})");
    }
    true
}

/// A private message bus; killed on drop.
pub struct Bus {
    child: Child,
    pub address: String,
    _dir: TempDir,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.path().display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            // It complains that an unprivileged user cannot raise its fd limit; nothing else to say.
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Bus { child, address, _dir: dir }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user's world in a temp dir, with a private bus.
pub struct World {
    pub tmp: TempDir,
    pub bus: Bus,
}

impl World {
    pub fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["home", "config", "cache", "data", "photos", "bin"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        World { tmp, bus: Bus::start() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The photo folder, spelled as photoseg stores it (canonical).
    pub fn photos(&self) -> PathBuf {
        std::fs::canonicalize(self.path("photos")).unwrap()
    }

    /// `photoseg ARGS` with the world's environment (and its bus).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_photoseg"));
        c.args(args)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus.address)
            .env("COLUMNS", "100")
            .env_remove("PHOTOSEG_MODEL")
            .env_remove("PHOTOSEG_NO_DAEMON")
            .env_remove("PHOTOSEG_OPENER")
            .env_remove("PHOTOSEG_DAEMON_QUERY_DELAY_MS")
            .env_remove("PHOTOSEG_DAEMON_MASK_DELAY_MS")
            .env_remove("PHOTOSEG_DAEMON_SWITCH_DELAY_MS")
            .env_remove("RUST_LOG");
        c
    }

    /// Runs `photoseg ARGS`, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd(args).output().unwrap(), &format!("photoseg {args:?}"))
    }

    /// Saves a random tiny model with decision margin `margin` (hugely negative: every photo positive).
    pub fn model(&self, name: &str, margin: f64) -> String {
        // Weights of their own per name: two models of a test must differ (their ids do).
        crate::common::save_tiny_model(&self.path(name), crate::common::seed_of(name), |cfg| cfg.head.margin = margin)
    }

    /// Writes a `w` x `h` photo (format from the extension) with a pattern that depends on `seed`.
    pub fn photo(&self, rel: &str, w: u32, h: u32, seed: u8) -> PathBuf {
        let path = self.path("photos").join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 + u32::from(seed) * 40) as u8, (y * 11) as u8, ((x + y) * 5 + u32::from(seed)) as u8])
        });
        img.save(&path).unwrap();
        std::fs::canonicalize(path).unwrap()
    }

    /// A script that records each argument it is called with (one per line) in `opened.txt`: the
    /// daemon's `$PHOTOSEG_OPENER` in tests.
    pub fn opener(&self) -> PathBuf {
        let script = self.path("bin/record-open");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$1\" >> '{}'\n", self.path("opened.txt").display()))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    /// What the opener recorded so far, waiting up to a few seconds for `n` lines.
    pub fn opened(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(self.path("opened.txt")).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(String::from).collect();
            if lines.len() >= n || start.elapsed() > Duration::from_secs(10) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `photoseg daemon --model MODEL --settle 300` with `env` added; waits until it owns its name.
    pub fn daemon(&self, model: &str, env: &[(&str, &str)]) -> Daemon {
        self.daemon_with(&["--model", model], env)
    }

    /// Starts `photoseg daemon ARGS --settle 300` with `env` added; waits until it owns its name.
    pub fn daemon_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = self.cmd(&[&["daemon"], args, &["--settle", "300"]].concat());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut d = Daemon { child: Some(child), address: self.bus.address.clone(), lines: None };
        let start = Instant::now();
        while !d.owns_name() {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("photoseg daemon exited with {status} before serving: {}", d.stderr());
            }
            assert!(start.elapsed() < WITHIN, "photoseg daemon did not take its name within {WITHIN:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// `busctl --json=short ARGS` on the world's bus; expects success and returns the JSON.
    pub fn busctl(&self, args: &[&str]) -> Value {
        busctl(&self.bus.address, args)
    }

    /// `busctl call NAME PATH IFACE METHOD SIG ARGS...`; returns the reply's `data` array.
    pub fn call(&self, path: &str, iface: &str, method: &str, signature_and_args: &[&str]) -> Vec<Value> {
        let mut args = vec!["call", NAME, path, iface, method];
        args.extend_from_slice(signature_and_args);
        match self.busctl(&args)["data"].clone() {
            Value::Array(a) => a,
            other => panic!("busctl data {other}"),
        }
    }

    /// `gdbus call` of `iface.method` with GVariant text arguments; expects a D-Bus error and returns
    /// its (name, message).
    pub fn call_fails(&self, path: &str, iface: &str, method: &str, args: &[&str]) -> (String, String) {
        let out = Command::new("gdbus")
            .args(["call", "--address", &self.bus.address, "--dest", NAME, "--object-path", path, "--method"])
            .arg(format!("{iface}.{method}"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{method} {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        let rest = stderr
            .trim()
            .strip_prefix("Error: GDBus.Error:")
            .unwrap_or_else(|| panic!("gdbus printed no D-Bus error: {stderr}"));
        let (name, message) = rest.split_once(": ").unwrap_or((rest, ""));
        (name.to_string(), message.to_string())
    }

    /// Polls `Status` until the daemon is idle with `photos` photos all indexed.
    pub fn wait_indexed(&self, photos: u64) {
        self.wait_status(photos, photos)
    }

    /// Polls `Status` until the daemon is idle with `photos` photos known, `indexed` of them indexed.
    pub fn wait_status(&self, photos: u64, indexed: u64) {
        let start = Instant::now();
        loop {
            let s = self.call(PATH, NAME, "Status", &[]);
            if s[0] == photos && s[1] == indexed && s[3] == "idle" {
                return;
            }
            assert!(start.elapsed() < WITHIN, "not indexed within {WITHIN:?}: Status {s:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn busctl(address: &str, args: &[&str]) -> Value {
    let out =
        Command::new("busctl").arg(format!("--address={address}")).arg("--json=short").args(args).output().unwrap();
    let stdout = ok(out, &format!("busctl {args:?}"));
    if stdout.trim().is_empty() {
        return serde_json::json!({ "data": [] }); // a reply without arguments
    }
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("busctl {args:?} printed no JSON ({e}): {stdout}"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `gdbus monitor` on the daemon's object, subscribed (it has printed that the name has an owner)
/// when [`Monitor::start`] returns; killed on drop.
pub struct Monitor {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    pub fn start(w: &World) -> Monitor {
        let mut child = Command::new("gdbus")
            .args(["monitor", "--address", &w.bus.address, "--dest", NAME, "--object-path", PATH])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = crate::common::lines_on_channel(child.stdout.take().unwrap());
        let m = Monitor { child, lines };
        m.until(|l| l.contains("is owned by"), WITHIN);
        m
    }

    /// Lines until one satisfies `done` (included); panics after `limit`.
    pub fn until(&self, mut done: impl FnMut(&str) -> bool, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while let Some(left) = limit.checked_sub(start.elapsed()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            let stop = done(&line);
            seen.push(line);
            if stop {
                return seen;
            }
        }
        panic!("gdbus monitor: the awaited line did not come within {limit:?}: {seen:#?}");
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running daemon; SIGTERM and then SIGKILL on drop.
pub struct Daemon {
    child: Option<Child>,
    address: String,
    /// Its stderr, line by line, once [`Daemon::wait_for_log`] started reading it.
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Daemon {
    pub fn owns_name(&self) -> bool {
        let v = busctl(
            &self.address,
            &[
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                NAME,
            ],
        );
        v["data"][0] == true
    }

    /// Reads the daemon's log until a line contains `needle` (at most `limit`); returns the lines read.
    pub fn wait_for_log(&mut self, needle: &str, limit: Duration) -> String {
        if self.lines.is_none() {
            let stderr = self.child.as_mut().and_then(|c| c.stderr.take()).expect("stderr not read yet");
            self.lines = Some(crate::common::lines_on_channel(stderr));
        }
        let rx = self.lines.as_ref().unwrap();
        let start = Instant::now();
        let mut seen = String::new();
        while let Some(left) = limit.checked_sub(start.elapsed()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(needle) {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        panic!("the daemon logged no {needle:?} within {limit:?} (exit: {status:?}): {seen}");
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit; returns (exited cleanly, stderr).
    pub fn terminate(&mut self, limit: Duration) -> (bool, String) {
        let mut child = self.child.take().expect("daemon still running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        // Once `wait_for_log` has taken stderr, the rest of it arrives on its channel (until EOF).
        if let Some(rx) = self.lines.take() {
            for line in rx.iter() {
                err.push_str(&line);
                err.push('\n');
            }
        }
        (status.is_some_and(|s| s.success()), err)
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate(Duration::from_secs(5));
        }
    }
}

/// `photoseg query EXPR --json` answers compared field by field, `from_index` left out (it says where
/// an answer came from, not what it is).
pub fn without_from_index(mut v: Value) -> Value {
    for a in v["albums"].as_array_mut().unwrap() {
        a.as_object_mut().unwrap().remove("from_index");
    }
    v
}

/// The positives of a query answer as (path, album name, score), best first as the desktop lists them.
pub fn ranked(answer: &Value) -> Vec<(String, String, f64)> {
    let mut all: Vec<(String, String, f64)> = answer["albums"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| {
            a["positives"].as_array().unwrap().iter().map(move |p| {
                (
                    p["path"].as_str().unwrap().to_string(),
                    a["name"].as_str().unwrap().to_string(),
                    p["score"].as_f64().unwrap(),
                )
            })
        })
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    all
}
