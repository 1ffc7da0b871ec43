//! The desktop searches end to end: GNOME Shell's `org.gnome.Shell.SearchProvider2` and KRunner's
//! `org.kde.krunner1`, called with `busctl` / `gdbus` on a private bus as the shell and KRunner call
//! them, served by the real `photoseg daemon`. Opening is checked with a recording `$PHOTOSEG_OPENER`.
//! The tiny random model makes every photo positive: the lists must be the in-process answer's
//! positives, best score first, never a judgement of the model.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dbus_support::*;

struct Setup {
    w: World,
    photos: Vec<PathBuf>,
    /// (path, album, score) of every positive for "the red bike", best first, from `photoseg query --json`.
    want: Vec<(String, String, f64)>,
    /// That query's JSON.
    answer: Value,
    daemon: Daemon,
}

fn setup(daemon_env: &[(&str, &str)]) -> Option<Setup> {
    if !tools_present() {
        return None;
    }
    let w = World::new();
    let photos = vec![
        w.photo("Paris/a.jpg", 40, 30, 1),
        w.photo("Paris/b.png", 30, 50, 2),
        w.photo("Berlin/c.jpg", 300, 120, 3),
    ];
    let model = w.model("model", -1e4); // every photo positive
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);
    let out =
        w.cmd(&["query", "the red bike", "--json", "--model", &model]).env("PHOTOSEG_NO_DAEMON", "1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = ranked(&answer);
    assert_eq!(want.len(), 3);
    let opener = w.opener();
    let mut env = vec![("PHOTOSEG_OPENER", opener.to_str().unwrap())];
    env.extend_from_slice(daemon_env);
    let daemon = w.daemon(&model, &env);
    w.wait_indexed(3);
    Some(Setup { w, photos, want, answer, daemon })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn gnome_search_provider_lists_describes_and_opens_photos() {
    let Some(s) = setup(&[]) else { return };
    let w = &s.w;
    let ids: Vec<String> = s.want.iter().map(|(p, _, _)| p.clone()).collect();

    let got = w.call(SEARCH_PATH, SEARCH_IFACE, "GetInitialResultSet", &["as", "3", "the", "red", "bike"]);
    assert_eq!(strings(&got[0]), ids, "results are the query's positives, best first");

    // Metas: id, file name, album and score, and a thumbnail with the mask, under the cache folder.
    let metas = w.call(SEARCH_PATH, SEARCH_IFACE, "GetResultMetas", &["as", "3", &ids[0], &ids[1], &ids[2]]);
    let metas = metas[0].as_array().unwrap();
    assert_eq!(metas.len(), 3);
    let thumbs = w.path("cache/photoseg/thumbnails");
    let mut checked_exactly = 0;
    for (meta, (path, album, score)) in metas.iter().zip(&s.want) {
        let field =
            |k: &str| meta[k]["data"].as_str().unwrap_or_else(|| panic!("meta without {k}: {meta}")).to_string();
        assert_eq!(field("id"), *path);
        assert_eq!(field("name"), Path::new(path).file_name().unwrap().to_str().unwrap());
        let description = field("description");
        // Scores are f32 in photoseg; the JSON carries their shortest decimal, which read back as f64
        // can round the other way at two decimals (9999.445 -> "9999.44" but f32 "9999.45").
        let score = *score as f32;
        assert!(description.starts_with(&format!("{album} \u{b7} score {score:.2}")), "{description}");
        let gicon = PathBuf::from(field("gicon"));
        assert!(gicon.starts_with(std::fs::canonicalize(&thumbs).unwrap()), "{}", gicon.display());
        let thumb = image::open(&gicon).unwrap();
        let (pw, ph) = image::image_dimensions(path).unwrap();
        let (tw, th) = (thumb.width(), thumb.height());
        assert!(tw.max(th) <= 256 && (tw.max(th) == 256 || (tw, th) == (pw, ph)), "{tw} x {th} for {pw} x {ph}");
        let (ratio_t, ratio_p) = (f64::from(tw) / f64::from(th), f64::from(pw) / f64::from(ph));
        assert!(
            (ratio_t / ratio_p - 1.0).abs() < 0.05,
            "thumbnail keeps the photo's shape: {tw} x {th} vs {pw} x {ph}"
        );
        if (tw, th) == (pw, ph) {
            // Not scaled: exactly the photo with this answer's mask outlined and the rest dimmed.
            let p = s.answer["albums"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["positives"].as_array().unwrap())
                .find(|p| p["path"] == path.as_str())
                .unwrap();
            let rle: photoseg::query::rle::CocoRle = serde_json::from_value(p["mask"].clone()).unwrap();
            let mask = photoseg::query::rle::decode(&rle).unwrap();
            let photo = image::open(path).unwrap().to_rgb8();
            assert_eq!(thumb.to_rgb8(), photoseg::query::render::overlay(&photo, &mask), "{path}");
            if mask.contains(&1) {
                assert_ne!(thumb.to_rgb8(), photo, "the mask is drawn on {path}");
            }
            checked_exactly += 1;
        }
    }
    assert_eq!(checked_exactly, 2, "the two photos under 256 px are compared pixel for pixel");
    // Typing on recomputes the answer for the new terms: neither an earlier empty answer (GNOME sends
    // one for the first letter) nor a narrower one limits it.
    let initial = w.call(SEARCH_PATH, SEARCH_IFACE, "GetInitialResultSet", &["as", "2", "red", "bike"]);
    assert!(!strings(&initial[0]).is_empty());
    let got = w.call(SEARCH_PATH, SEARCH_IFACE, "GetSubsearchResultSet", &["asas", "0", "2", "red", "bike"]);
    assert_eq!(strings(&got[0]), strings(&initial[0]), "a subsearch after an empty answer");
    let got = w.call(SEARCH_PATH, SEARCH_IFACE, "GetSubsearchResultSet", &["asas", "1", &ids[1], "2", "red", "bike"]);
    assert_eq!(strings(&got[0]), strings(&initial[0]), "a subsearch after a narrower answer");

    // Nothing was written into the photo folders.
    let mut files: Vec<String> =
        walk(&w.photos()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["a.jpg", "b.png", "c.jpg"]);

    // Activating opens the photo.
    w.call(SEARCH_PATH, SEARCH_IFACE, "ActivateResult", &["sasu", &ids[2], "1", "bike", "0"]);
    assert_eq!(w.opened(1), [ids[2].clone()]);
    // ... with the expression of the search that found it, for the photo viewer, once.
    let opened_expression = |id: &str| w.call(PATH, NAME, "OpenedExpression", &["s", id]);
    assert_eq!(opened_expression(&ids[2]), [Value::from(true), Value::from("red bike")]);
    assert_eq!(opened_expression(&ids[2]), [Value::from(false), Value::from("")]);
    // ... and only photos of the library.
    let (name, msg) = w.call_fails(SEARCH_PATH, SEARCH_IFACE, "ActivateResult", &["'/etc/passwd'", "['x']", "0"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots", "{msg}");
    let (name, msg) = w.call_fails(SEARCH_PATH, SEARCH_IFACE, "GetResultMetas", &["['/etc/passwd']"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.UnknownPhoto");
    assert!(msg.contains("/etc/passwd is not a result of a recent search"), "{msg}");
    let (name, msg) = w.call_fails(SEARCH_PATH, SEARCH_IFACE, "GetInitialResultSet", &["['', ' ']"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.InvalidArgument");
    assert!(msg.contains("the expression is empty"), "{msg}");

    // LaunchSearch: overlays of every result in a folder under the cache, which is opened.
    w.call(SEARCH_PATH, SEARCH_IFACE, "LaunchSearch", &["asu", "2", "red", "bike", "0"]);
    let opened = w.opened(2);
    let dir = PathBuf::from(&opened[1]);
    assert!(dir.starts_with(std::fs::canonicalize(w.path("cache/photoseg")).unwrap()), "{}", dir.display());
    assert_eq!(walk(&dir).len(), 3, "one overlay per result in {}", dir.display());
    assert_eq!(opened.len(), 2, "{opened:?}");
    let _ = &s.photos;
}

#[test]
fn krunner_matches_and_runs() {
    let Some(s) = setup(&[]) else { return };
    let w = &s.w;
    let actions = w.call(KRUNNER_PATH, KRUNNER_IFACE, "Actions", &[]);
    assert_eq!(actions[0], serde_json::json!([["open-folder", "Open containing folder", "folder-open"]]));

    let matches = w.call(KRUNNER_PATH, KRUNNER_IFACE, "Match", &["s", "the red bike"]);
    let matches = matches[0].as_array().unwrap();
    assert_eq!(matches.len(), 3);
    let mut last = f64::INFINITY;
    for (m, (path, album, _)) in matches.iter().zip(&s.want) {
        let m = m.as_array().unwrap();
        assert_eq!(m[0], path.as_str());
        assert_eq!(m[1], Path::new(path).file_name().unwrap().to_str().unwrap());
        assert_eq!(m[2], "image-x-generic");
        assert_eq!(m[3], 30, "PossibleMatch");
        let relevance = m[4].as_f64().unwrap();
        assert!(relevance > 0.0 && relevance < 1.0 && relevance <= last, "{relevance}");
        last = relevance;
        let props = &m[5];
        assert!(props["subtext"]["data"].as_str().unwrap().starts_with(&format!("{album} \u{b7} score")), "{props}");
        let url = props["urls"]["data"][0].as_str().unwrap();
        assert_eq!(url, format!("file://{path}"));
        // The thumbnail GNOME gets (mask drawn), as RGBA icon data at most 64 px on a side.
        assert_eq!(props["icon-data"]["type"], "(iiibiiay)", "{props}");
        let icon = props["icon-data"]["data"].as_array().unwrap();
        let (iw, ih) = (icon[0].as_u64().unwrap(), icon[1].as_u64().unwrap());
        assert!(iw.max(ih) <= 64 && iw.min(ih) >= 1, "{iw} x {ih}");
        assert_eq!(
            (icon[2].as_u64(), icon[3].as_bool(), icon[4].as_u64(), icon[5].as_u64()),
            (Some(4 * iw), Some(true), Some(8), Some(4))
        );
        let bytes = icon[6].as_array().unwrap();
        assert_eq!(bytes.len() as u64, 4 * iw * ih);
        assert!(bytes.iter().any(|b| b != &bytes[0]), "a blank icon");
    }

    let first = matches[0][0].as_str().unwrap().to_string();
    w.call(KRUNNER_PATH, KRUNNER_IFACE, "Run", &["ss", &first, ""]);
    w.call(KRUNNER_PATH, KRUNNER_IFACE, "Run", &["ss", &first, "open-folder"]);
    let opened = w.opened(2);
    assert_eq!(opened, [first.clone(), Path::new(&first).parent().unwrap().to_str().unwrap().to_string()]);
    // The photo viewer gets the expression of the match that was run (opening the folder adds none).
    let opened_expression = |id: &str| w.call(PATH, NAME, "OpenedExpression", &["s", id]);
    assert_eq!(opened_expression(&first), [Value::from(true), Value::from("the red bike")]);
    assert_eq!(opened_expression(&first), [Value::from(false), Value::from("")]);

    let (name, msg) = w.call_fails(KRUNNER_PATH, KRUNNER_IFACE, "Run", &[&format!("'{first}'"), "'delete'"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.InvalidArgument");
    assert!(msg.contains("unknown action \"delete\""), "{msg}");
    let (name, _) = w.call_fails(KRUNNER_PATH, KRUNNER_IFACE, "Run", &["'relative.jpg'", "''"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.InvalidArgument");
    let outside = w.path("elsewhere.jpg");
    let (name, _) = w.call_fails(KRUNNER_PATH, KRUNNER_IFACE, "Run", &[&format!("'{}'", outside.display()), "''"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots");
    let (name, _) = w.call_fails(KRUNNER_PATH, KRUNNER_IFACE, "Match", &["''"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.InvalidArgument");
    assert_eq!(w.opened(2).len(), 2, "refused runs opened nothing");
}

/// `Open`: what the Nautilus results window calls: the photo opens, and the viewer gets the expression.
#[test]
fn open_remembers_the_expression_for_the_viewer() {
    let Some(s) = setup(&[]) else { return };
    let w = &s.w;
    let photo = s.photos[1].to_str().unwrap().to_string();
    w.call(PATH, NAME, "Open", &["ss", &photo, "the red bike"]);
    assert_eq!(w.opened(1), std::slice::from_ref(&photo));
    assert_eq!(
        w.call(PATH, NAME, "OpenedExpression", &["s", &photo]),
        [Value::from(true), Value::from("the red bike")]
    );
    assert_eq!(w.call(PATH, NAME, "OpenedExpression", &["s", &photo]), [Value::from(false), Value::from("")]);
    let outside = w.path("elsewhere.jpg");
    let (name, _) = w.call_fails(PATH, NAME, "Open", &[&format!("'{}'", outside.display()), "'a bike'"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots");
    let (name, _) = w.call_fails(PATH, NAME, "Open", &[&format!("'{photo}'"), "'  '"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.InvalidArgument");
    let (name, _) = w.call_fails(PATH, NAME, "OpenedExpression", &["'/etc/passwd'"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots");
    assert_eq!(w.opened(1).len(), 1, "refused calls opened nothing");
}

#[test]
fn no_opener_is_not_an_error() {
    // PATH without gio or xdg-open, and the recording opener pointing nowhere.
    let Some(s) = setup(&[("PATH", "/nonexistent"), ("PHOTOSEG_OPENER", "/nonexistent/opener")]) else { return };
    let w = &s.w;
    let id = s.want[0].0.clone();
    w.call(SEARCH_PATH, SEARCH_IFACE, "GetInitialResultSet", &["as", "1", "bike"]);
    w.call(SEARCH_PATH, SEARCH_IFACE, "ActivateResult", &["sasu", &id, "1", "bike", "0"]);
    w.call(KRUNNER_PATH, KRUNNER_IFACE, "Run", &["ss", &id, ""]);
    assert_eq!(w.call(PATH, NAME, "Status", &[])[3], "idle", "the daemon still serves");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_search_overtaken_by_a_newer_keystroke_answers_nothing() {
    // Each query holds the engine 3 s; two more searches arrive while the first runs (typing).
    let Some(mut s) = setup(&[("PHOTOSEG_DAEMON_QUERY_DELAY_MS", "3000"), ("RUST_LOG", "photoseg=debug")]) else {
        return;
    };
    let (w, d) = (&s.w, &mut s.daemon);
    let search = |term: &str| {
        std::process::Command::new("busctl")
            .args([
                &format!("--address={}", w.bus.address),
                "--json=short",
                "--timeout=60",
                "call",
                NAME,
                SEARCH_PATH,
                SEARCH_IFACE,
                "GetInitialResultSet",
                "as",
                "1",
                term,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ids = |child: std::process::Child| -> Vec<String> {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        strings(&v["data"][0])
    };
    // The daemon's debug log says when each search is where the test needs it.
    let first = search("bike"); // gets the engine at once
    d.wait_for_log("query \"bike\" has the engine", WITHIN);
    let overtaken = search("bikes"); // waits for the engine ...
    d.wait_for_log("search for \"bikes\" waits for the engine", WITHIN);
    let last = search("bikes!"); // ... and is overtaken by this one before it gets it
    assert_eq!(ids(first).len(), 3);
    assert_eq!(ids(overtaken), Vec::<String>::new(), "an overtaken search still ran");
    assert_eq!(ids(last).len(), 3, "the last keystroke is answered");
}
