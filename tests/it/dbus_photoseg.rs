//! `org.photoseg.Photoseg1` end to end: a private bus, the real `photoseg daemon`, and `busctl` /
//! `gdbus` as clients (tests/it/dbus_support). The tiny random model proves plumbing only: the daemon's
//! answers must equal the in-process answers for the same model and cache, never be "right".

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use photoseg::query::rle::{self, CocoRle};
use serde_json::Value;

use crate::common;
use crate::dbus_support::*;

/// The three photos most tests use; returns their paths (canonical).
fn library(w: &World) -> Vec<std::path::PathBuf> {
    vec![w.photo("Paris/a.jpg", 40, 30, 1), w.photo("Paris/b.png", 30, 50, 2), w.photo("Berlin/c.jpg", 50, 20, 3)]
}

/// A world whose three photos ([`library`]) are indexed (by `photoseg index`, which also makes their
/// folder the watched root) with a tiny model of decision margin `margin`; returns it and the model.
fn indexed_world(margin: f64) -> (World, String) {
    let w = World::new();
    library(&w);
    let model = w.model("model", margin);
    w.ok(&["index", w.path("photos").to_str().unwrap(), "--model", &model]);
    (w, model)
}

/// Methods, signals and properties of one interface in introspection XML:
/// "method Name(in name type, ...)" lines, sorted.
fn members(xml: &str, interface: &str) -> Vec<String> {
    // Comments first: the schema documents itself in them.
    let mut text = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        rest = &rest[i..][rest[i..].find("-->").expect("comment closed") + 3..];
    }
    text.push_str(rest);
    let tags: Vec<&str> = text.split('<').skip(1).map(|t| t.split('>').next().unwrap().trim()).collect();
    let attr = |tag: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        tag.find(&key).map(|i| tag[i + key.len()..].split('"').next().unwrap().to_string()).unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut inside = false;
    let mut current: Option<(String, Vec<String>)> = None;
    for tag in tags {
        let kind = tag.split_whitespace().next().unwrap_or("");
        match kind {
            "interface" => inside = attr(tag, "name") == interface,
            "/interface" => inside = false,
            _ if !inside => {}
            "method" | "signal" => {
                let entry = (format!("{kind} {}", attr(tag, "name")), Vec::new());
                if tag.ends_with('/') {
                    out.push(format!("{}()", entry.0));
                } else {
                    current = Some(entry);
                }
            }
            "arg" => {
                let dir = attr(tag, "direction");
                let dir = if dir.is_empty() && current.as_ref().is_some_and(|c| c.0.starts_with("method")) {
                    "in".into()
                } else {
                    dir
                };
                current
                    .as_mut()
                    .expect("arg inside a member")
                    .1
                    .push(format!("{dir} {} {}", attr(tag, "name"), attr(tag, "type")).trim().to_string());
            }
            "/method" | "/signal" => {
                let (name, args) = current.take().unwrap();
                out.push(format!("{name}({})", args.join(", ")));
            }
            "property" => {
                out.push(format!("property {} {} {}", attr(tag, "name"), attr(tag, "type"), attr(tag, "access")))
            }
            _ => {}
        }
    }
    out.sort();
    out
}

fn introspect(w: &World, path: &str) -> String {
    let out = std::process::Command::new("gdbus")
        .args(["introspect", "--address", &w.bus.address, "--dest", NAME, "--object-path", path, "--xml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn introspection_matches_the_schema_file() {
    if !tools_present() {
        return;
    }
    let w = World::new();
    let model = w.model("model", 1.0);
    let _d = w.daemon(&model, &[]);
    let schema =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/org.photoseg.Photoseg1.xml")).unwrap();
    let want = members(&schema, NAME);
    assert!(want.len() >= 10, "the parser found the schema's members: {want:#?}");
    assert!(want.contains(&"method GetMask(in path s, in expression s, in format s, out found b, out width u, out height u, out data ay)".to_string()), "{want:#?}");
    assert_eq!(
        members(&introspect(&w, PATH), NAME),
        want,
        "served interface differs from schema/org.photoseg.Photoseg1.xml"
    );

    // GNOME's and KDE's interfaces, with the signatures their callers use.
    assert_eq!(
        members(&introspect(&w, SEARCH_PATH), SEARCH_IFACE),
        [
            "method ActivateResult(in identifier s, in terms as, in timestamp u)",
            "method GetInitialResultSet(in terms as, out results as)",
            "method GetResultMetas(in identifiers as, out metas aa{sv})",
            "method GetSubsearchResultSet(in previous_results as, in terms as, out results as)",
            "method LaunchSearch(in terms as, in timestamp u)",
        ]
    );
    assert_eq!(
        members(&introspect(&w, KRUNNER_PATH), KRUNNER_IFACE),
        [
            "method Actions(out matches a(sss))",
            "method Match(in query s, out matches a(sssida{sv}))",
            "method Run(in match_id s, in action_id s)",
        ]
    );
}

#[test]
fn query_and_masks_equal_the_in_process_answers() {
    if !tools_present() {
        return;
    }
    let w = World::new();
    let photos = library(&w);
    let model = w.model("model", -1e4); // every photo positive
    let d = w.daemon(&model, &[]);

    // Watched folders through D-Bus; the daemon indexes the new one in the background and says so
    // with signals (watched by gdbus monitor).
    let monitor = Monitor::start(&w);
    w.call(PATH, NAME, "AddRoot", &["s", w.path("photos").to_str().unwrap()]);
    assert_eq!(w.call(PATH, NAME, "ListRoots", &[]), [Value::from(vec![w.photos().to_str().unwrap()])]);
    w.wait_indexed(3);
    let signals = monitor.until(|l| l.contains("IndexFinished"), WITHIN).join("\n");
    assert!(signals.contains("org.photoseg.Photoseg1.IndexFinished (uint32 3, uint32 0)"), "{signals}");
    assert!(signals.contains("org.photoseg.Photoseg1.IndexProgress (uint32 3, uint32 3, "), "{signals}");
    assert_eq!(
        w.call(PATH, NAME, "Status", &[]),
        [Value::from(3), Value::from(3), Value::from(2), Value::from("idle")]
    );
    let config = std::fs::read_to_string(w.path("config/photoseg/config.json")).unwrap();
    assert!(config.contains(w.photos().to_str().unwrap()), "AddRoot is saved in the config: {config}");

    // Query over D-Bus = photoseg query --json in-process, computed afresh on a copy of the cache (the
    // search index left out, so neither answer is a stored one).
    let answer: Value =
        serde_json::from_str(w.call(PATH, NAME, "Query", &["sas", "the red bike", "0"])[0].as_str().unwrap()).unwrap();
    assert_eq!(answer["albums"].as_array().unwrap().len(), 2, "{answer:#}");
    let copy = w.path("cache-copy/photoseg");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(w.path("cache/photoseg/library.sqlite3"), copy.join("library.sqlite3")).unwrap();
    // The write-ahead log holds the last commits; the -shm index is rebuilt from it.
    let _ = std::fs::copy(w.path("cache/photoseg/library.sqlite3-wal"), copy.join("library.sqlite3-wal"));
    let out = w
        .cmd(&["query", "the red bike", "--json", "--model", &model])
        .env("XDG_CACHE_HOME", w.path("cache-copy"))
        .env("PHOTOSEG_NO_DAEMON", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let in_process: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(in_process["albums"][0]["from_index"], false);
    assert_eq!(
        without_from_index(answer.clone()),
        without_from_index(in_process),
        "daemon and in-process answers differ"
    );

    // `photoseg query` itself goes through the daemon: without --model, in-process would use the
    // built-in model; the daemon answers with the tiny one.
    let via_cli: Value = serde_json::from_str(&w.ok(&["query", "the red bike", "--json"])).unwrap();
    assert_eq!(via_cli["model"], answer["model"], "photoseg query did not ask the daemon");
    assert_eq!(without_from_index(via_cli), without_from_index(answer.clone()));
    // ... and --album reaches it.
    let paris: Value = serde_json::from_str(&w.ok(&["query", "the red bike", "--json", "--album", "par"])).unwrap();
    assert_eq!(paris["albums"].as_array().unwrap().len(), 1);
    assert_eq!(paris["albums"][0]["name"], "Paris");

    // GetMask: PNG of the photo's size whose object pixels are the RLE's; RLE bytes = the JSON's counts.
    let positives: BTreeMap<String, Value> = answer["albums"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["positives"].as_array().unwrap().clone())
        .map(|p| (p["path"].as_str().unwrap().to_string(), p))
        .collect();
    assert_eq!(positives.len(), 3);
    for photo in &photos {
        let p = &positives[photo.to_str().unwrap()];
        let (w_px, h_px) = image::image_dimensions(photo).unwrap();
        let png = w.call(PATH, NAME, "GetMask", &["sss", photo.to_str().unwrap(), "the red bike", "png"]);
        assert_eq!((&png[0], &png[1], &png[2]), (&Value::from(true), &Value::from(w_px), &Value::from(h_px)));
        let bytes: Vec<u8> = png[3].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        let mask = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_luma8();
        assert_eq!(mask.dimensions(), (w_px, h_px), "{}", photo.display());
        let rle: CocoRle = serde_json::from_value(p["mask"].clone()).unwrap();
        let want = rle::decode(&rle).unwrap();
        let got: Vec<u8> = mask.as_raw().iter().map(|&v| u8::from(v == 255)).collect();
        assert!(mask.pixels().all(|px| px[0] == 0 || px[0] == 255));
        assert_eq!(got, want, "PNG mask of {} differs from the query's RLE", photo.display());

        let r = w.call(PATH, NAME, "GetMask", &["sss", photo.to_str().unwrap(), "the red bike", "rle"]);
        let counts: Vec<u8> = r[3].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
        assert_eq!(String::from_utf8(counts).unwrap(), rle.counts);
    }

    // A model that rejects every photo: found = false and no data.
    drop(d);
    let strict = w.model("strict", 1e4);
    let _d = w.daemon(&strict, &[]);
    w.wait_indexed(3);
    let r = w.call(PATH, NAME, "GetMask", &["sss", photos[0].to_str().unwrap(), "the red bike", "png"]);
    assert_eq!(r, [Value::from(false), Value::from(0), Value::from(0), Value::from(Vec::<u8>::new())]);
    assert_eq!(
        w.busctl(&["get-property", NAME, PATH, NAME, "Model"])["data"].as_str().unwrap().rsplit('@').next(),
        Some(&photoseg::query::model::model_digest(std::path::Path::new(&strict)).unwrap()[..16])
    );
}

#[test]
fn bad_arguments_get_named_errors_with_the_value() {
    if !tools_present() {
        return;
    }
    let w = World::new();
    let photos = library(&w);
    std::fs::write(w.path("photos/Paris/notes.txt"), "not a photo").unwrap();
    // A second root indexed with another model and then unplugged: its photos stay known, but the
    // daemon's model has no features for them (NotIndexed).
    let other = w.model("other", 1.0);
    let disk = w.path("disk");
    std::fs::create_dir_all(disk.join("Trip")).unwrap();
    image::RgbImage::from_pixel(20, 10, image::Rgb([9, 9, 9])).save(disk.join("Trip/x.png")).unwrap();
    w.ok(&["index", w.path("photos").to_str().unwrap(), disk.to_str().unwrap(), "--model", &other]);
    let disk = std::fs::canonicalize(&disk).unwrap();
    std::fs::rename(&disk, w.path("disk-unplugged")).unwrap();

    let model = w.model("model", 1.0);
    let _d = w.daemon(&model, &[]);
    w.wait_status(4, 3);

    let mask = |path: &str, expr: &str, format: &str| {
        w.call_fails(PATH, NAME, "GetMask", &[&format!("'{path}'"), &format!("'{expr}'"), &format!("'{format}'")])
    };
    let inv = "org.photoseg.Photoseg1.Error.InvalidArgument";
    let photo = photos[0].to_str().unwrap();

    let (name, msg) = mask("Paris/a.jpg", "bike", "png");
    assert_eq!(name, inv);
    assert!(msg.contains("\"Paris/a.jpg\" is relative"), "{msg}");
    let (name, msg) = mask("/etc/hostname", "bike", "png");
    assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots");
    assert!(
        msg.contains("/etc/hostname is not inside a watched folder") && msg.contains(w.photos().to_str().unwrap()),
        "{msg}"
    );
    // `..` that climbs out of the root is outside it, with the same answer whether the file exists.
    for target in ["etc/hostname", "no/such/file"] {
        let climb = format!("{}/Paris/../../../../../../../../{target}", w.photos().display());
        let (name, msg) = mask(&climb, "bike", "png");
        assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots", "{climb}: {msg}");
        assert!(msg.contains(&format!("/{target} is not inside a watched folder")), "{msg}");
    }
    let notes = w.photos().join("Paris/notes.txt");
    let (name, msg) = mask(notes.to_str().unwrap(), "bike", "png");
    assert_eq!(name, "org.photoseg.Photoseg1.Error.UnknownPhoto");
    assert!(msg.contains(&format!("{} is not a photo of the library", notes.display())), "{msg}");
    let gone = w.photos().join("Paris/gone.jpg");
    let (name, msg) = mask(gone.to_str().unwrap(), "bike", "png");
    assert_eq!(name, "org.photoseg.Photoseg1.Error.UnknownPhoto");
    assert!(msg.contains("no such file"), "{msg}");
    let unplugged = disk.join("Trip/x.png");
    let (name, msg) = mask(unplugged.to_str().unwrap(), "bike", "png");
    assert_eq!(name, "org.photoseg.Photoseg1.Error.NotIndexed", "{msg}");
    assert!(msg.contains(&format!("{} has no features for the model grser-64px", unplugged.display())), "{msg}");
    let (name, msg) = mask(photo, "bike", "gif");
    assert_eq!(name, inv);
    assert!(msg.contains("unknown mask format \"gif\""), "{msg}");
    let (name, msg) = mask(photo, "   ", "png");
    assert_eq!(name, inv);
    assert!(msg.contains("the expression is empty"), "{msg}");
    let long = "a".repeat(501);
    let (name, msg) = mask(photo, &long, "png");
    assert_eq!(name, inv);
    assert!(msg.contains("501 bytes long; at most 500"), "{msg}");
    // 500 bytes is still fine (here: the photo is rejected by the model, margin 1).
    w.call(PATH, NAME, "GetMask", &["sss", photo, &"a".repeat(500), "rle"]);

    let (name, msg) = w.call_fails(PATH, NAME, "Query", &["''", "[]"]);
    assert_eq!((name.as_str(), msg.contains("the expression is empty")), (inv, true), "{msg}");
    let (name, msg) = w.call_fails(PATH, NAME, "Query", &["'bike'", "['nowhere']"]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.Failed");
    assert!(msg.contains("no album name contains \"nowhere\""), "{msg}");
    // Argument sizes are bounded (each album filter costs a search over the album names), and the
    // refusal neither echoes the argument nor makes the caller wait.
    // (gdbus takes the call as one command-line argument, which Linux caps at 128 KiB.)
    let many =
        format!("[{}]", (0..20_000).map(|i| if i == 19_999 { "'last'" } else { "'a'" }).collect::<Vec<_>>().join(","));
    let started = std::time::Instant::now();
    let (name, msg) = w.call_fails(PATH, NAME, "Query", &["'bike'", &many]);
    assert_eq!(name, inv, "{msg}");
    assert!(msg.contains("20000 album filters; at most 64"), "{msg}");
    assert!(msg.len() < 300 && !msg.contains("last"), "the refusal echoes the argument: {} bytes", msg.len());
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    let sixty_four = format!("[{}]", (0..64).map(|i| format!("'nowhere{i}'")).collect::<Vec<_>>().join(","));
    let (_, msg) = w.call_fails(PATH, NAME, "Query", &["'bike'", &sixty_four]);
    assert!(msg.contains("no album name contains"), "64 filters are still searched: {msg}");
    let (name, msg) = w.call_fails(PATH, NAME, "Query", &["'bike'", &format!("['{}']", "x".repeat(257))]);
    assert_eq!((name.as_str(), msg.contains("257 bytes long; at most 256")), (inv, true), "{msg}");
    let huge = format!("/{}", "p".repeat(100_000));
    for (method, args) in [
        ("AddRoot", vec![format!("'{huge}'")]),
        ("GetMask", vec![format!("'{huge}'"), "'bike'".into(), "'png'".into()]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (name, msg) = w.call_fails(PATH, NAME, method, &args);
        assert_eq!(name, inv, "{method}: {msg}");
        assert!(
            msg.contains("100001 bytes long") && msg.len() < 300,
            "{method}: {} bytes: {}",
            msg.len(),
            &msg[..msg.len().min(300)]
        );
    }

    let (name, msg) = w.call_fails(PATH, NAME, "AddRoot", &["'photos'"]);
    assert_eq!((name.as_str(), msg.contains("is relative")), (inv, true), "{msg}");
    let (name, msg) = w.call_fails(PATH, NAME, "AddRoot", &["'/no/such/folder'"]);
    assert_eq!(name, inv);
    assert!(msg.contains("cannot watch /no/such/folder: no such folder"), "{msg}");
    let (name, msg) = w.call_fails(PATH, NAME, "AddRoot", &[&format!("'{photo}'")]);
    assert_eq!(name, inv);
    assert!(msg.contains("not a folder"), "{msg}");
    let (name, msg) = w.call_fails(PATH, NAME, "RemoveRoot", &["'/tmp'"]);
    assert_eq!(name, inv);
    assert!(msg.contains("/tmp is not a watched folder"), "{msg}");
    // A wrong signature is refused by the D-Bus layer, not a crash.
    let out = std::process::Command::new("busctl")
        .args([&format!("--address={}", w.bus.address), "call", NAME, PATH, NAME, "GetMask", "s", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());

    // After all that the daemon still answers.
    assert_eq!(w.call(PATH, NAME, "Status", &[])[3], "idle");

    // RemoveRoot forgets the folder and its photos.
    w.call(PATH, NAME, "RemoveRoot", &["s", w.path("photos").to_str().unwrap()]);
    let roots = w.call(PATH, NAME, "ListRoots", &[]);
    assert!(!roots[0].as_array().unwrap().contains(&Value::from(w.photos().to_str().unwrap())), "{roots:?}");
    let start = Instant::now();
    while w.call(PATH, NAME, "Status", &[])[0] != 1 {
        assert!(start.elapsed() < WITHIN, "the removed folder's photos are still known");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (name, _) = mask(photo, "bike", "png");
    assert_eq!(name, "org.photoseg.Photoseg1.Error.OutsideRoots");
}

/// A `Query` from a client of its own (`busctl`, JSON output), running while the test goes on.
fn spawn_query(w: &World, expression: &str) -> std::process::Child {
    std::process::Command::new("busctl")
        .args([
            &format!("--address={}", w.bus.address),
            "--json=short",
            "call",
            NAME,
            PATH,
            NAME,
            "Query",
            "sas",
            expression,
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_slow_query_does_not_hold_up_other_clients_and_sigterm_stops_cleanly() {
    if !tools_present() {
        return;
    }
    let (w, model) = indexed_world(-1e4);
    // Every query the daemon runs takes 4 s more (a stand-in for a big library on a slow model).
    let mut d = w.daemon(&model, &[("PHOTOSEG_DAEMON_QUERY_DELAY_MS", "4000"), ("RUST_LOG", "photoseg=debug")]);
    w.wait_indexed(3);

    let started = Instant::now();
    let mut slow = spawn_query(&w, "my bike");
    d.wait_for_log("query \"my bike\" has the engine", Duration::from_secs(30));
    // Another caller's query runs beside it on the second engine instead of waiting for it (it also
    // takes 4 s: waiting would end it 4 s later still).
    let other_started = Instant::now();
    let other = spawn_query(&w, "a cat");
    let other = std::thread::spawn(move || (other.wait_with_output().unwrap(), other_started.elapsed()));
    // Other calls answer while it runs: count those that returned with the query still in flight.
    let mut served_meanwhile = 0;
    while slow.try_wait().unwrap().is_none() {
        let t = Instant::now();
        assert_eq!(
            w.call(PATH, NAME, "Status", &[]),
            [Value::from(3), Value::from(3), Value::from(2), Value::from("idle")]
        );
        assert_eq!(w.call(PATH, NAME, "ListRoots", &[]).len(), 1);
        if slow.try_wait().unwrap().is_none() {
            served_meanwhile += 1;
            assert!(t.elapsed() < Duration::from_secs(2), "Status took {:?} while a query ran", t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(served_meanwhile >= 1, "no other call was answered while the slow query ran");
    let out = slow.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(4));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let answer: Value = serde_json::from_str(v["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(answer["expression"], "my bike");
    let (other, other_took) = other.join().unwrap();
    assert!(other.status.success(), "{}", String::from_utf8_lossy(&other.stderr));
    assert!(
        other_took < Duration::from_millis(6500),
        "another caller's query took {other_took:?} beside a 4 s query: it waited for it"
    );

    // SIGTERM while another slow query is in flight: the daemon gives its name up and exits 0 soon.
    let mut inflight = std::process::Command::new("busctl")
        .args([&format!("--address={}", w.bus.address), "call", NAME, PATH, NAME, "Query", "sas", "a dog", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_for_log("query \"a dog\" has the engine", Duration::from_secs(30));
    let t = Instant::now();
    let (clean, stderr) = d.terminate(Duration::from_secs(10));
    assert!(clean, "the daemon did not exit 0 on SIGTERM: {stderr}");
    assert!(stderr.contains("photoseg daemon: stopped"), "{stderr}");
    assert!(t.elapsed() < Duration::from_secs(8), "SIGTERM took {:?}", t.elapsed());
    // The in-flight call ends too (with no reply or an error), it does not hang.
    let _ = inflight.wait();
    let owner = busctl(
        &w.bus.address,
        &["call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", NAME],
    );
    assert_eq!(owner["data"][0], false);
    // The cache is sound after the stop.
    photoseg::library::Cache::open(&w.path("cache/photoseg/library.sqlite3")).unwrap().integrity_check().unwrap();
}

#[test]
fn cli_answers_in_process_without_a_daemon_or_when_told_to() {
    if !tools_present() {
        return;
    }
    let (w, model) = indexed_world(-1e4);
    // A bus without a daemon, and no bus at all: in-process, quickly.
    let t = Instant::now();
    let v: Value = serde_json::from_str(&w.ok(&["query", "my bike", "--json", "--model", &model])).unwrap();
    assert_eq!(v["albums"].as_array().unwrap().len(), 2);
    let out = w
        .cmd(&["query", "my bike", "--json", "--model", &model])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());

    // A daemon with another model: `--model M` is answered in-process by M, not by the daemon.
    let other = w.model("other", 1e4);
    let _d = w.daemon(&other, &[]);
    let daemon_model = w.busctl(&["get-property", NAME, PATH, NAME, "Model"])["data"].as_str().unwrap().to_string();
    let v: Value = serde_json::from_str(&w.ok(&["query", "my bike", "--json", "--model", &model])).unwrap();
    assert_ne!(v["model"].as_str().unwrap(), daemon_model);
    // A process with another cache folder does not get this daemon's library either.
    std::fs::create_dir_all(w.path("cache2")).unwrap();
    let out = w.cmd(&["query", "my bike", "--json"]).env("XDG_CACHE_HOME", w.path("cache2")).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("library is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // PHOTOSEG_NO_DAEMON=1: in-process even when the daemon has the same model.
    let v: Value = serde_json::from_str(&w.ok(&["query", "my bike", "--json"])).unwrap();
    assert_eq!(v["model"].as_str().unwrap(), daemon_model, "same cache, no --model: the daemon answers");
    let out = w.cmd(&["query", "my bike", "--json"]).env("PHOTOSEG_NO_DAEMON", "1").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_ne!(v["model"].as_str().unwrap_or(""), daemon_model, "PHOTOSEG_NO_DAEMON=1 still asked the daemon");
}

/// One `QueryMask` signal's arguments.
type MaskSignal = (String, u32, String, f64, u64, u32, u32, String);

#[test]
fn query_streamed_signals_the_decision_and_each_mask_to_its_caller_before_the_reply() {
    use futures_util::StreamExt;
    use zbus::message::Type;
    if !tools_present() {
        return;
    }
    let w = World::new();
    library(&w);
    let model = w.model("model", -1e4); // every photo positive
    let _d = w.daemon(&model, &[]);
    w.call(PATH, NAME, "AddRoot", &["s", w.photos().to_str().unwrap()]);
    w.wait_indexed(3);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (summary, masks, reply) = runtime.block_on(async {
        let connect = || async { zbus::connection::Builder::address(w.bus.address.as_str()).build().await.unwrap() };
        let (caller, bystander) = (connect().await, connect().await);
        // Another client listening to every signal of the interface must hear none of them: they are
        // the caller's alone.
        let rule = zbus::MatchRule::builder().msg_type(Type::Signal).interface(NAME).build().unwrap();
        let mut overheard = zbus::MessageStream::for_match_rule(rule, &bystander, None).await.unwrap();
        // Every message the caller receives, in order (replies included).
        let mut incoming = zbus::MessageStream::from(&caller);
        let call = zbus::Message::method_call(PATH, "QueryStreamed")
            .destination(NAME)
            .interface(NAME)
            .build(&("the red bike", Vec::<&str>::new(), "token-7"))
            .unwrap();
        let serial = call.primary_header().serial_num();
        caller.send(&call).await.unwrap();
        let (mut summary, mut masks) = (None::<String>, Vec::<MaskSignal>::new());
        let reply = loop {
            let msg = tokio::time::timeout(WITHIN, incoming.next()).await.expect("an answer in time").unwrap().unwrap();
            let header = msg.header();
            let member = header.member().map(|m| m.to_string()).unwrap_or_default();
            match msg.message_type() {
                Type::Signal if member == "QueryDecided" => {
                    let (token, json): (String, String) = msg.body().deserialize().unwrap();
                    assert_eq!(token, "token-7");
                    assert!(summary.is_none(), "QueryDecided came twice");
                    summary = Some(json);
                }
                Type::Signal if member == "QueryMask" => {
                    assert!(summary.is_some(), "a mask came before the decision");
                    masks.push(msg.body().deserialize().unwrap());
                }
                Type::MethodReturn if header.reply_serial() == Some(serial) => {
                    break msg.body().deserialize::<String>().unwrap();
                }
                Type::Error if header.reply_serial() == Some(serial) => panic!("QueryStreamed failed: {msg:?}"),
                _ => {}
            }
        };
        let heard = tokio::time::timeout(Duration::from_millis(500), overheard.next()).await;
        assert!(heard.is_err(), "a bystander heard {heard:?}");
        (summary.expect("QueryDecided before the reply"), masks, reply)
    });

    // The reply is Query's answer; the signals are that answer in pieces, in its order.
    let answer: Value = serde_json::from_str(&reply).unwrap();
    let plain: Value =
        serde_json::from_str(w.call(PATH, NAME, "Query", &["sas", "the red bike", "0"])[0].as_str().unwrap()).unwrap();
    assert_eq!(without_from_index(answer.clone()), without_from_index(plain));
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["expression"], answer["expression"]);
    let mut want = Vec::new();
    for (i, (s, a)) in
        summary["albums"].as_array().unwrap().iter().zip(answer["albums"].as_array().unwrap()).enumerate()
    {
        for key in ["album", "name", "photos", "rejected", "unindexed"] {
            assert_eq!(s[key], a[key], "{key}");
        }
        let listed: Vec<&Value> = s["positives"].as_array().unwrap().iter().map(|p| &p["path"]).collect();
        let answered: Vec<&Value> = a["positives"].as_array().unwrap().iter().map(|p| &p["path"]).collect();
        assert_eq!(listed, answered);
        for p in a["positives"].as_array().unwrap() {
            want.push((
                "token-7".to_string(),
                i as u32,
                p["path"].as_str().unwrap().to_string(),
                p["score"].as_f64().unwrap(),
                p["mask_area"].as_u64().unwrap(),
                p["width"].as_u64().unwrap() as u32,
                p["height"].as_u64().unwrap() as u32,
                p["mask"]["counts"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(summary["albums"].as_array().unwrap().len(), answer["albums"].as_array().unwrap().len());
    assert_eq!(want.len(), 3);
    // Scores travel as f64 in the signal and as JSON numbers (from f32) in the answer.
    let rounded = |v: Vec<MaskSignal>| -> Vec<MaskSignal> {
        v.into_iter().map(|mut m| (m.3 = (m.3 as f32) as f64, m).1).collect()
    };
    assert_eq!(rounded(masks), rounded(want));

    // A token longer than the limit is refused with a named error.
    let long = format!("'{}'", "t".repeat(201));
    let (name, msg) = w.call_fails(PATH, NAME, "QueryStreamed", &["'bike'", "[]", &long]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.InvalidArgument");
    assert!(msg.contains("201 bytes"), "{msg}");
}

#[test]
fn cli_query_prints_the_daemons_answer_as_it_streams() {
    if !tools_present() {
        return;
    }
    let (w, model) = indexed_world(-1e4); // every photo positive
    let in_process =
        w.cmd(&["query", "the red bike", "--model", &model]).env("PHOTOSEG_NO_DAEMON", "1").output().unwrap();
    assert!(in_process.status.success(), "{}", String::from_utf8_lossy(&in_process.stderr));

    // A daemon that takes 1.5 s over each mask: the lines that need no mask come at once.
    let _d = w.daemon(&model, &[("PHOTOSEG_DAEMON_MASK_DELAY_MS", "1500")]);
    let started = Instant::now();
    let mut child = w.cmd(&["query", "the red bike"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let first_at = started.elapsed();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    let done_at = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(first.contains("found in 3 of 3 photos"), "{first}");
    assert!(
        done_at - first_at >= Duration::from_millis(3000),
        "the first line came at {first_at:?}, the last at {done_at:?}: not streamed"
    );
    // Same text as in-process, line for line.
    assert_eq!(first + &rest, String::from_utf8_lossy(&in_process.stdout));
}

/// A failed indexing run (here: the cache made unwritable under the running daemon, as a full disk
/// does) is retried with backoff: once the cache can be written again, the daemon indexes what it
/// missed without another change in the folder.
#[test]
fn a_failed_indexing_run_is_retried_until_the_library_is_in_line() {
    if !tools_present() {
        return;
    }
    let (w, model) = indexed_world(1.0);
    let mut d = w.daemon(&model, &[("RUST_LOG", "photoseg=info")]);
    w.wait_indexed(3);

    // The database and its write-ahead log, not the shared-memory index SQLite maps (writing a mapped
    // immutable file is a SIGBUS, which no full disk causes).
    let frozen =
        ["library.sqlite3", "library.sqlite3-wal"].map(|f| common::ReadOnly::new(&w.path("cache/photoseg").join(f)));
    w.photo("Paris/d.png", 30, 30, 4);
    d.wait_for_log("failed", WITHIN);
    drop(frozen);
    // No further change in the folder: only the retry can index the new photo.
    w.wait_indexed(4);
    d.wait_for_log("indexing every watched folder again", WITHIN);
}

/// Photos pasted into a watched folder together are one change: the daemon indexes them and reports
/// one `IndexFinished`, not one per photo.
#[test]
fn photos_pasted_together_are_indexed_as_one_change() {
    if !tools_present() {
        return;
    }
    let (w, model) = indexed_world(1.0);
    let _d = w.daemon(&model, &[]);
    w.wait_indexed(3);
    let monitor = Monitor::start(&w);
    let source = w.path("elsewhere");
    std::fs::create_dir_all(&source).unwrap();
    let pasted = 12;
    for i in 0..pasted {
        let photo =
            image::RgbImage::from_fn(24, 24, |x, y| image::Rgb([(x * 9 + i * 20) as u8, (y * 5) as u8, i as u8]));
        photo.save(source.join(format!("p{i}.png"))).unwrap();
    }
    for i in 0..pasted {
        std::fs::copy(source.join(format!("p{i}.png")), w.path("photos/Paris").join(format!("p{i}.png"))).unwrap();
    }
    let mut featurized = 0;
    let finished: Vec<String> = monitor
        .until(
            |line| {
                if let Some(rest) = line.split("IndexFinished (uint32 ").nth(1) {
                    featurized += rest.split(',').next().unwrap().parse::<u32>().unwrap();
                }
                featurized >= pasted
            },
            WITHIN,
        )
        .into_iter()
        .filter(|l| l.contains("IndexFinished"))
        .collect();
    assert_eq!(finished.len(), 1, "{finished:#?}");
    w.wait_indexed(3 + u64::from(pasted));
}

/// A cache on a read-only medium: the daemon starts, answers queries from it, and refuses to change the
/// watched folders with a sentence saying why (it could not index them).
#[test]
fn a_read_only_cache_is_served_for_queries() {
    if !tools_present() {
        return;
    }
    let (w, model) = indexed_world(-1e4); // every photo positive
    let _frozen = common::ReadOnly::new(&w.path("cache/photoseg"));
    let _d = w.daemon(&model, &[]);
    let answer: Value =
        serde_json::from_str(w.call(PATH, NAME, "Query", &["sas", "my bike", "0"])[0].as_str().unwrap()).unwrap();
    let positives: usize =
        answer["albums"].as_array().unwrap().iter().map(|a| a["positives"].as_array().unwrap().len()).sum();
    assert_eq!(positives, 3, "{answer:#}");
    let (name, message) = w.call_fails(PATH, NAME, "AddRoot", &[&format!("'{}'", w.path("elsewhere").display())]);
    assert_eq!(name, "org.photoseg.Photoseg1.Error.Failed");
    assert!(message.contains("cannot be written"), "{message}");
    assert_eq!(w.call(PATH, NAME, "Status", &[])[3], "idle");
}
