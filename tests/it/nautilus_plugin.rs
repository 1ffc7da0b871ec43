//! The Nautilus extension (plugins/nautilus) with the real nautilus-python 4 bindings: its menu
//! items, its D-Bus calls and its result window (tests/desktop/nautilus_check.py).
//!
//! Two daemons: a stand-in that serves the interface parsed from schema/org.photoseg.Photoseg1.xml
//! and logs every call (GDBus refuses any signature the XML does not declare, and the log shows the
//! exact arguments), and the real `photoseg daemon` over an indexed library.

use image::{Rgb, RgbImage};

use crate::common::desktop::{coded_photo, have_tools, keep_screenshot, repo, World, PYTHON};

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

/// The check script with `args` under Xvfb (started by the shell, on a display number it picks).
fn under_xvfb(w: &World, args: &[&str]) -> Vec<String> {
    let script = String::from(
        "Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp 3>\"$1/display\" >/dev/null 2>&1 & x=$!; \
         for i in $(seq 100); do [ -s \"$1/display\" ] && break; sleep 0.1; done; \
         export DISPLAY=:$(cat \"$1/display\") GDK_BACKEND=x11 GSK_RENDERER=cairo; shift; \
         \"$@\" --display \"$DISPLAY\"; s=$?; kill $x; exit $s",
    );
    let mut argv = vec!["sh".to_string(), "-c".into(), script, "sh".into(), w.path("out").display().to_string()];
    argv.push(PYTHON.into());
    argv.push(repo("tests/desktop/nautilus_check.py").display().to_string());
    argv.extend(args.iter().map(|s| s.to_string()));
    argv
}

/// The check script under Xvfb, on the library of [`library`].
fn check_argv(w: &World, extra: &[&str]) -> Vec<String> {
    let (folder, sibling) = (w.path("photos/Paris"), w.path("photos/Paris 2019"));
    let mut args =
        vec!["--folder", folder.to_str().unwrap(), "--sibling", sibling.to_str().unwrap(), "--expression", "my bike"];
    args.extend(extra);
    under_xvfb(w, &args)
}

/// `check` run on the world's private bus once the real `photoseg daemon` has taken its name there (the
/// check's first call finds the name or fails, so the shell waits for it); the daemon's opener is a
/// no-op, so a photo the check opens through it opens nothing.
fn with_real_daemon(w: &World, check: Vec<String>) -> (bool, String) {
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
    argv.extend(check);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    w.on_private_bus(&argv, &[("PHOTOSEG_OPENER", "true")], 600)
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
    let (ok, text) = with_real_daemon(&w, check_argv(&w, &[]));
    eprintln!("{text}");
    assert!(ok && text.contains("PASS"), "nautilus check against the real daemon failed:\n{text}");
}

/// The result window as a person sees it: a screenshot shows each found photo's thumbnail with the
/// daemon's mask drawn (the object as it is, the rest dimmed), and activating a row opens the photo
/// through the daemon with the expression. The photos encode their coordinates in their colour and the
/// model gives them a known mask (three stripes), as in the eog test (tests/desktop/mask_judge.py).
#[test]
fn nautilus_results_window_thumbnails_show_the_mask() {
    if !have_tools("nautilus_plugin", TOOLS, &["Nautilus:4.0", "Gtk:4.0", "GdkX11:4.0", "Gdk:3.0", "GdkX11:3.0"]) {
        return;
    }
    let w = World::new();
    // Landscape and portrait, both larger than the thumbnails (160 x 120), so each is scaled down.
    let walk = w.path("photos/Walk");
    coded_photo(&walk.join("p.png"), 200, 120);
    coded_photo(&walk.join("q.png"), 150, 200);
    w.model_with_stripes_mask(&walk.join("p.png"));
    w.photoseg_ok(&["index", w.path("photos").to_str().unwrap()]);
    let out = w.path("out");
    let check = under_xvfb(
        &w,
        &[
            "--thumbnails",
            "--folder",
            walk.to_str().unwrap(),
            "--expression",
            "the stripes",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let (ok, text) = with_real_daemon(&w, check);
    eprintln!("{text}");
    if !ok || !text.contains("PASS") {
        let kept = w.tmp.keep();
        panic!(
            "nautilus thumbnails check failed (screenshot and logs kept in {}):\n{text}",
            kept.join("out").display()
        );
    }
    keep_screenshot(&out.join("nautilus-results.png"), "nautilus-results.png");
}
