//! The eog overlay plugin (plugins/eog) tested for real: Xvfb, eog 43 with the plugin installed in a
//! temporary `$XDG_DATA_HOME/eog/plugins` and enabled through a GSettings keyfile, the real
//! `photoseg daemon` on a private session bus over a library indexed with a tiny model built to give
//! a known mask (three stripes), and screenshots compared pixel by pixel with the daemon's own mask at
//! the fitted zoom, zoomed in and scrolled. tests/desktop/eog_overlay_check.py does the screen work and
//! says how a screenshot is judged without trusting the plugin's geometry.

use crate::common::desktop::{coded_photo, have_tools, keep_screenshot, repo, World, PYTHON};

#[test]
fn eog_overlay_matches_the_daemons_mask_when_fitted_zoomed_and_scrolled() {
    if !have_tools(
        "eog_plugin",
        &["eog", "Xvfb", "xdotool", "dbus-run-session", "timeout", PYTHON],
        &["Gdk:3.0", "GdkPixbuf:2.0", "cairo"],
    ) {
        return;
    }
    let w = World::new();
    let (pw, ph) = (200u32, 120u32);
    let photo = w.path("photos/Walk/p.png");
    coded_photo(&photo, pw, ph);
    // Every expression gets the same mask from this model, so the screenshots judge the overlay; the
    // check reads in eog's log that the plugin asked for this expression, the one the photo is opened with.
    let expression = "the red ball on the left";
    w.model_with_stripes_mask(&photo);
    let photos = w.path("photos");
    w.photoseg_ok(&["index", photos.to_str().unwrap()]);

    let daemon = env!("CARGO_BIN_EXE_photoseg");
    let check = repo("tests/desktop/eog_overlay_check.py");
    let plugin = repo("plugins/eog");
    let out = w.path("out");
    let (ok, text) = w.on_private_bus(
        &[
            PYTHON,
            check.to_str().unwrap(),
            "--photo",
            photo.to_str().unwrap(),
            "--expression",
            expression,
            "--plugin-dir",
            plugin.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--",
            daemon,
            "daemon",
        ],
        &[("PHOTOSEG_OPENER", "true")],
        600,
    );
    eprintln!("{text}");
    if !ok {
        let kept = w.tmp.keep();
        panic!("eog overlay check failed (screenshots and logs kept in {})", kept.join("out").display());
    }
    assert!(text.contains("PASS: the overlay matches"), "no PASS line:\n{text}");
    keep_screenshot(&out.join("1-fit.png"), "eog-overlay.png");
}

/// A search result opened as a person opens it, from the Nautilus results window or a KRunner match,
/// shows in eog with the mask drawn: tests/desktop/open_in_eog_check.py with `--via`, on the private bus
/// with the real daemon, whose opener starts eog under Xvfb. The screenshot is kept as `screenshot`.
fn opened_in_eog(via: &str, screenshot: &str) {
    let mut tools = vec!["eog", "Xvfb", "dbus-run-session", "timeout", PYTHON];
    let mut modules = vec!["Gdk:3.0", "GdkPixbuf:2.0", "cairo"];
    if via == "nautilus" {
        tools.push("gdbus");
        modules.extend(["Nautilus:4.0", "Gtk:4.0", "GdkX11:4.0", "GdkX11:3.0"]);
    }
    if via == "krunner-framework" {
        tools.extend(["g++", "pkg-config", KRUNNER_HEADER]);
    }
    if !have_tools("eog_plugin", &tools, &modules) {
        return;
    }
    let w = World::new();
    let harness = w.path("krunner_harness");
    if via == "krunner-framework" {
        build_krunner_harness(&harness);
    }
    let walk = w.path("photos/Walk");
    coded_photo(&walk.join("p.png"), 200, 120);
    w.model_with_stripes_mask(&walk.join("p.png"));
    w.photoseg_ok(&["index", w.path("photos").to_str().unwrap()]);
    let (check, plugin, xml, runner) = (
        repo("tests/desktop/open_in_eog_check.py"),
        repo("plugins/eog"),
        repo("tests/fixtures/krunner/kf5_org.kde.krunner1.xml"),
        repo("packaging/photoseg-krunner.desktop"),
    );
    let out = w.path("out");
    let (ok, text) = w.on_private_bus(
        &[
            PYTHON,
            check.to_str().unwrap(),
            "--via",
            via,
            "--folder",
            walk.to_str().unwrap(),
            "--expression",
            "the stripes",
            "--plugin-dir",
            plugin.to_str().unwrap(),
            "--krunner-xml",
            xml.to_str().unwrap(),
            "--krunner-desktop",
            runner.to_str().unwrap(),
            "--krunner-harness",
            harness.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--",
            env!("CARGO_BIN_EXE_photoseg"),
            "daemon",
        ],
        &[],
        600,
    );
    eprintln!("{text}");
    if !ok || !text.contains("PASS: ") {
        // The kept folder says what happened on its own.
        let _ = std::fs::write(out.join("check.log"), &text);
        let kept = w.tmp.keep();
        panic!(
            "opening from {via} into eog failed (screenshots and logs kept in {}):\n{text}",
            kept.join("out").display()
        );
    }
    keep_screenshot(&out.join(format!("{via}-eog.png")), screenshot);
}

#[test]
fn eog_overlay_when_opened_from_the_nautilus_results_window() {
    opened_in_eog("nautilus", "nautilus-eog.png");
}

#[test]
fn eog_overlay_when_opened_from_a_krunner_match() {
    opened_in_eog("krunner", "krunner-calls-eog.png");
}

/// Running a match through KRunner's own framework (libKF5Runner's RunnerManager, which the krunner
/// program is built on: it loads the runner from its installed `.desktop` file, calls `Match` and `Run`
/// and turns the matches' properties, icon data included, into what KRunner shows) opens eog with the
/// mask drawn.
#[test]
fn eog_overlay_when_opened_through_krunners_framework() {
    opened_in_eog("krunner-framework", "krunner-eog.png");
}

/// A header of libkf5runner-dev: KRunner's framework is there to build against.
const KRUNNER_HEADER: &str = "/usr/include/KF5/KRunner/KRunner/RunnerManager";

/// Builds tests/desktop/krunner_harness.cpp against KRunner's framework (libKF5Runner 5, Qt 5) at `to`.
fn build_krunner_harness(to: &std::path::Path) {
    use std::process::Command;
    let qt = Command::new("pkg-config").args(["--cflags", "--libs", "Qt5Core", "Qt5Gui", "Qt5DBus"]).output().unwrap();
    assert!(qt.status.success(), "pkg-config finds no Qt 5: {}", String::from_utf8_lossy(&qt.stderr));
    let qt = String::from_utf8(qt.stdout).unwrap();
    let kf5: Vec<String> = ["KRunner", "", "KCoreAddons", "KService", "Plasma", "KConfigCore", "KI18n"]
        .iter()
        .map(|d| format!("-I/usr/include/KF5/{d}"))
        .collect();
    let out = Command::new("g++")
        .args(["-std=c++17", "-fPIC", "-o"])
        .arg(to)
        .arg(repo("tests/desktop/krunner_harness.cpp"))
        .args(&kf5)
        .args(qt.split_whitespace())
        .args(["-lKF5Runner", "-lKF5CoreAddons", "-lKF5Service", "-lKF5Plasma", "-lKF5ConfigCore"])
        .output()
        .unwrap();
    assert!(out.status.success(), "building krunner_harness failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
