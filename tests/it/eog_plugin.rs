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
