//! GNOME Shell's overview search in the real GNOME Shell 43, headless with one virtual monitor, on a
//! private session bus with the real `photoseg daemon` (tests/desktop/gnome_shell_check.py does the
//! work and says how): typing an expression one character at a time lists the same photos as pasting
//! it and as the daemon's own answer, and Enter opens the first one in eog (a Wayland client of the
//! shell) with that expression's mask drawn, judged on a screenshot of the shell's screen by the mask's
//! pixels as the eog test judges its own.

use crate::common::desktop::{coded_photo, have_tools, keep_screenshot, repo, World, PYTHON};

#[test]
fn gnome_shell_typed_search_lists_the_pasted_results_and_opens_eog_with_the_mask() {
    if !have_tools(
        "gnome_shell",
        &["gnome-shell", "eog", "dbus-daemon", "dbus-monitor", "dbus-run-session", "timeout", PYTHON],
        &["Gdk:3.0", "GdkPixbuf:2.0", "cairo"],
    ) {
        return;
    }
    let w = World::new();
    // Three photos in the eog test's coordinate code; the model finds all three for the whole
    // expression and none for what is typed first (its first three words).
    let expression = "the red circle on the left";
    let walk = w.path("photos/Walk");
    coded_photo(&walk.join("p.png"), 200, 120);
    coded_photo(&walk.join("q.png"), 180, 120);
    coded_photo(&walk.join("r.png"), 160, 120);
    w.model_with_stripes_mask_found_from(&walk.join("p.png"), expression, "the red circle");
    w.photoseg_ok(&["index", w.path("photos").to_str().unwrap()]);

    let check = repo("tests/desktop/gnome_shell_check.py");
    let (plugin, packaging, extension) =
        (repo("plugins/eog"), repo("packaging"), repo("tests/desktop/gnome-shell-extension"));
    // One retry in a fresh shell: about one run in 35 failed once, fast, between the typed and the pasted
    // step, and never twice in a row. A product fault fails every run, so it fails both; the first
    // failure's log is printed either way.
    let mut first_failure = None;
    for attempt in 0..2 {
        let out = w.path(&format!("out{attempt}"));
        let (ok, text) = w.on_private_bus(
            &[
                PYTHON,
                check.to_str().unwrap(),
                "--expression",
                expression,
                "--plugin-dir",
                plugin.to_str().unwrap(),
                "--packaging",
                packaging.to_str().unwrap(),
                "--extension-dir",
                extension.to_str().unwrap(),
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
        if ok && text.contains("PASS: ") {
            keep_screenshot(&out.join("gnome-search-typed.png"), "gnome-search.png");
            keep_screenshot(&out.join("gnome-eog.png"), "gnome-eog.png");
            if let Some(first) = first_failure {
                eprintln!("GNOME Shell check passed on its second run; the first failed:\n{first}");
            }
            return;
        }
        // The kept folder says what happened on its own.
        let _ = std::fs::write(out.join("check.log"), &text);
        if first_failure.is_none() {
            first_failure = Some(text);
            continue;
        }
        let kept = w.tmp.keep();
        panic!(
            "GNOME Shell check failed twice (screenshots and logs kept in {}):\n{}\n--- second run:\n{text}",
            kept.display(),
            first_failure.unwrap_or_default()
        );
    }
}
