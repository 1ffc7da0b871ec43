//! The Nautilus extension (plugins/nautilus) with the real nautilus-python 4 bindings: its menu
//! items, its D-Bus calls and its result window (tests/desktop/nautilus_check.py).
//!
//! Two daemons: a stand-in that serves the interface parsed from schema/org.photoseg.Photoseg1.xml
//! and logs every call (GDBus refuses any signature the XML does not declare, and the log shows the
//! exact arguments), and the real `photoseg daemon` over an indexed library.

use image::{Rgb, RgbImage};

use crate::common::desktop::{have_tools, repo, World, PYTHON};

const TOOLS: &[&str] = &["dbus-run-session", "gdbus", "timeout", "Xvfb", PYTHON];
const MODULES: &[&str] = &["Nautilus:4.0", "Gtk:4.0"];

fn library(w: &World) {
    for (rel, seed) in [("Paris/a.png", 1u32), ("Paris/b.png", 2), ("Paris 2019/c.png", 3), ("Berlin/d.png", 4)] {
        let p = w.path("photos").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        RgbImage::from_fn(48, 36, |x, y| Rgb([(x * 5 + seed * 40) as u8, (y * 7) as u8, ((x + y) * 3 + seed) as u8]))
            .save(&p)
            .unwrap();
    }
}

/// The check script under Xvfb (started by the shell, on a display number it picks).
fn check_argv(w: &World, extra: &[&str]) -> Vec<String> {
    let script = String::from(
        "Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp 3>\"$1/display\" >/dev/null 2>&1 & x=$!; \
         for i in $(seq 100); do [ -s \"$1/display\" ] && break; sleep 0.1; done; \
         export DISPLAY=:$(cat \"$1/display\") GDK_BACKEND=x11 GSK_RENDERER=cairo; shift; \
         \"$@\" --display \"$DISPLAY\"; s=$?; kill $x; exit $s",
    );
    let mut argv = vec!["sh".to_string(), "-c".into(), script, "sh".into(), w.path("out").display().to_string()];
    argv.push(PYTHON.into());
    argv.push(repo("tests/desktop/nautilus_check.py").display().to_string());
    argv.extend(
        [
            "--folder",
            w.path("photos/Paris").to_str().unwrap(),
            "--sibling",
            w.path("photos/Paris 2019").to_str().unwrap(),
            "--expression",
            "my bike",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

#[test]
fn nautilus_extension_calls_match_the_schema() {
    if !have_tools("nautilus_plugin", TOOLS, MODULES) {
        return;
    }
    let w = World::new();
    library(&w);
    let calls = w.path("out/calls.log");
    let fake = repo("tests/desktop/fake_photoseg.py");
    // The stand-in daemon in the background, then the check; the bus ends with the shell.
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        format!(
            "{PYTHON} \"$0\" >\"$1\" 2>&1 & \
             for i in $(seq 100); do grep -q serving \"$1\" && break; sleep 0.1; done; shift; exec \"$@\""
        ),
        fake.display().to_string(),
        w.path("out/fake.out").display().to_string(),
    ];
    argv.extend(check_argv(&w, &["--calls", calls.to_str().unwrap()]));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let roots = w.path("photos");
    let (ok, text) = w.on_private_bus(
        &argv,
        &[("FAKE_PHOTOSEG_ROOTS", roots.to_str().unwrap()), ("FAKE_PHOTOSEG_LOG", calls.to_str().unwrap())],
        300,
    );
    eprintln!("{text}");
    assert!(ok && text.contains("PASS"), "nautilus check against the schema's stand-in failed:\n{text}");
}

#[test]
fn nautilus_extension_finds_in_a_folder_with_the_real_daemon() {
    if !have_tools("nautilus_plugin", TOOLS, MODULES) {
        return;
    }
    let w = World::new();
    library(&w);
    w.model();
    w.photoseg_ok(&["index", w.path("photos").to_str().unwrap()]);
    // The daemon in the background; the check waits for nothing: its first call finds the name or
    // fails, so wait for the name here.
    let script = String::from(
        "\"$0\" daemon >\"$1\" 2>&1 & d=$!; \
         for i in $(seq 600); do gdbus call --session -d org.freedesktop.DBus -o /org/freedesktop/DBus \
           -m org.freedesktop.DBus.NameHasOwner org.photoseg.Photoseg1 2>/dev/null | grep -q true && break; \
           kill -0 $d 2>/dev/null || { echo 'photoseg daemon exited:'; cat \"$1\"; exit 1; }; sleep 0.1; done; \
         shift; \"$@\"; s=$?; kill $d; exit $s",
    );
    let mut argv = vec![
        "sh".to_string(),
        "-c".into(),
        script,
        env!("CARGO_BIN_EXE_photoseg").into(),
        w.path("out/daemon.log").display().to_string(),
    ];
    argv.extend(check_argv(&w, &[]));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // The daemon's opener is a no-op: the check activates a found photo, which the daemon opens.
    let (ok, text) = w.on_private_bus(&argv, &[("PHOTOSEG_OPENER", "true")], 600);
    eprintln!("{text}");
    assert!(ok && text.contains("PASS"), "nautilus check against the real daemon failed:\n{text}");
}
