#!/usr/bin/python3
"""From a search result to eog's drawn overlay in one go, run by tests/it/eog_plugin.rs inside a private
session bus (dbus-run-session with a config that activates nothing):

    open_in_eog_check.py --via nautilus|krunner --folder DIR --expression EXPR --plugin-dir DIR
                         --krunner-xml FILE --krunner-desktop FILE --out DIR -- DAEMON ARGS...

1. starts Xvfb and the daemon command after `--` (the real `photoseg daemon`) with an opener that
   starts eog on the Xvfb display (eog_overlay_check.eog_opener: eog with the plugin installed and
   enabled, its debug log kept), and waits for the daemon's name;
2. opens a result as a person does:
   - nautilus: runs tests/desktop/nautilus_check.py --thumbnails on --folder, which opens the
     extension's "Find in this folder…" result window with the real nautilus-python bindings, checks its
     thumbnails, and activates its first row (the window calls the daemon's Open with the expression);
   - krunner: calls the runner as KRunner 5.27's D-Bus runner does, on the service and object that
     the runner's .desktop file names (--krunner-desktop, packaging/photoseg-krunner.desktop), through
     a GDBus proxy built from KRunner's own interface description (--krunner-xml,
     kf5_org.kde.krunner1.xml from Debian's libkf5runner5), so a reply of another signature is refused:
     Match(expression), then Run(the first match's id, "") for the default action;
3. the daemon opens the photo with its opener: eog starts on it, the plugin asks the daemon for the
   photo's expression (OpenedExpression) and draws the mask; a screenshot of the X screen shows eog's view
   with every photo pixel away from the mask's edges as it is iff the daemon's own mask (GetMask) covers
   it, and dimmed otherwise (tests/desktop/mask_judge.py).

It waits for states, never for fixed times (eog_overlay_check.py says how). Screenshot: --out/
VIA-eog.png. Prints PASS, or FAIL: reason; exit status 0 only on PASS.
"""
import argparse
import os
import shutil
import subprocess
import sys

import gi

gi.require_version("Gdk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import Gdk, Gio, GLib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from eog_overlay_check import (EOG_SETTINGS, LogFile, Proc, eog_opener, fail, green_box,  # noqa: E402
                               install_plugin, note, opened_photos, start_xvfb, stop_opened, wait_for,
                               wait_for_name, wait_for_screen, write_keyfile)
from mask_judge import daemon_mask, interior_map, judge  # noqa: E402

BUS_NAME = "org.photoseg.Photoseg1"
# How long the opened photo may take to show with its mask (eog's start included), in seconds.
EOG_S = 90


def open_with_krunner(bus, xml, desktop, expression):
    """Match, then Run of the first match, as KRunner's D-Bus runner calls them, on the service and object
    that the runner's .desktop file names. Returns the match's id."""
    entry = GLib.KeyFile()
    entry.load_from_file(desktop, GLib.KeyFileFlags.NONE)
    group = "Desktop Entry"
    if entry.get_string(group, "X-Plasma-API") != "DBus":
        fail("%s is not a D-Bus runner" % desktop)
    service = entry.get_string(group, "X-Plasma-DBusRunner-Service")
    path = entry.get_string(group, "X-Plasma-DBusRunner-Path")
    min_letters = entry.get_integer(group, "X-Plasma-Runner-Min-Letter-Count")
    if len(expression) < min_letters:
        fail("KRunner would not ask the runner about %r (shorter than %d letters)" % (expression, min_letters))
    info = Gio.DBusNodeInfo.new_for_xml(open(xml).read()).lookup_interface("org.kde.krunner1")
    if info is None:
        fail("%s does not describe org.kde.krunner1" % xml)
    runner = Gio.DBusProxy.new_sync(bus, Gio.DBusProxyFlags.DO_NOT_LOAD_PROPERTIES
                                    | Gio.DBusProxyFlags.DO_NOT_CONNECT_SIGNALS, info, service, path,
                                    "org.kde.krunner1", None)
    # With the interface info, GDBus refuses a call or a reply whose signature is not KRunner's.
    for method in ("Match", "Run", "Actions"):
        if info.lookup_method(method) is None:
            fail("KRunner's interface has no %s" % method)
    def call(method, args, timeout_ms):
        try:
            return runner.call_sync(method, args, Gio.DBusCallFlags.NONE, timeout_ms, None).unpack()
        except GLib.Error as e:
            fail("the runner's %s, called as KRunner calls it: %s" % (method, e.message))

    matches = call("Match", GLib.Variant("(s)", (expression,)), 300_000)[0]
    note("Match(%r): %s" % (expression, [(m[0], m[1], m[3], round(m[4], 3)) for m in matches]))
    if not matches:
        fail("the runner matches nothing for %r" % expression)
    actions = call("Actions", None, 30_000)[0]
    note("Actions: %s" % (actions,))
    match_id = matches[0][0]
    call("Run", GLib.Variant("(ss)", (match_id, "")), 30_000)
    return match_id


def open_with_krunner_framework(harness, desktop, expression, out):
    """KRunner's own runner machinery (libKF5Runner, tests/desktop/krunner_harness.cpp) finds the runner
    through its .desktop file installed as the package installs it, matches `expression` and runs the
    first match. Returns the photo the daemon's opener got."""
    share = os.path.join(out, "share")
    plugins = os.path.join(share, "krunner", "dbusplugins")
    os.makedirs(plugins, exist_ok=True)
    shutil.copy(desktop, plugins)
    entry = GLib.KeyFile()
    entry.load_from_file(desktop, GLib.KeyFileFlags.NONE)
    runner_id = entry.get_string("Desktop Entry", "X-KDE-PluginInfo-Name")
    run = subprocess.run([harness, runner_id, expression],
                         env=dict(os.environ, XDG_DATA_DIRS="%s:/usr/local/share:/usr/share" % share),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    note("krunner_harness:\n" + run.stdout.rstrip())
    if run.returncode != 0:
        fail("KRunner's framework did not run a match (exit status %s)" % run.returncode)
    matches = [line.split("\t") for line in run.stdout.splitlines() if line.startswith("match\t")]
    for m in matches:
        if len(m) != 7 or not m[2] or m[5] == "none" or not m[6].startswith("file://"):
            fail("a match as KRunner shows it lacks its text, icon or URL: %s" % m)
    wait_for("the photo given to the daemon's opener", lambda: (bool(opened_photos(out)), "nothing yet"), 30)
    photos = opened_photos(out)
    if len(photos) != 1 or not matches[0][1].endswith(photos[0]):
        fail("KRunner ran %s; the daemon's opener got %s" % (matches[0][1], photos))
    return photos[0]


def open_with_nautilus(a, display, out):
    """The Nautilus results window's first row activated (nautilus_check.py --thumbnails); returns the
    photo the daemon's opener got."""
    check = subprocess.run(
        [sys.executable, os.path.join(HERE, "nautilus_check.py"), "--thumbnails", "--folder", a.folder,
         "--expression", a.expression, "--out", out, "--display", display, "--opened-log",
         os.path.join(out, "opened.log")],
        env=dict(os.environ, DISPLAY=display, GDK_BACKEND="x11", GSK_RENDERER="cairo"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    note("nautilus_check.py:\n" + check.stdout.rstrip())
    if check.returncode != 0 or "PASS" not in check.stdout:
        fail("the Nautilus results window did not open a photo (exit status %s)" % check.returncode)
    opened = opened_photos(out)
    if len(opened) != 1:
        fail("the daemon's opener got %s, not one photo" % opened)
    return opened[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--via", choices=("nautilus", "krunner", "krunner-framework"), required=True)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--expression", required=True)
    ap.add_argument("--plugin-dir", required=True)
    ap.add_argument("--krunner-xml")
    ap.add_argument("--krunner-desktop")
    ap.add_argument("--krunner-harness")
    ap.add_argument("--out", required=True)
    ap.add_argument("daemon", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    daemon_argv = a.daemon[1:] if a.daemon[:1] == ["--"] else a.daemon
    if not daemon_argv:
        fail("no daemon command after --")
    if a.via == "krunner" and not (a.krunner_xml and a.krunner_desktop):
        fail("--via krunner needs --krunner-xml and --krunner-desktop")
    if a.via == "krunner-framework" and not (a.krunner_harness and a.krunner_desktop):
        fail("--via krunner-framework needs --krunner-harness and --krunner-desktop")
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    procs = []
    xvfb = None
    try:
        xvfb, display = start_xvfb()
        note("Xvfb on %s" % display)
        install_plugin(a.plugin_dir)
        write_keyfile(EOG_SETTINGS)
        env = dict(os.environ, DISPLAY=display, GDK_BACKEND="x11", GSETTINGS_BACKEND="keyfile", NO_AT_BRIDGE="1",
                   GTK_THEME="Adwaita", PHOTOSEG_EOG_DEBUG="1", PHOTOSEG_OPENER=eog_opener(out))
        env.pop("PHOTOSEG_EOG_EXPRESSION", None)
        daemon = Proc("daemon", daemon_argv, env=env, out_path=os.path.join(out, "daemon.log"))
        procs.append(daemon)
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        wait_for_name(bus, daemon, 120)
        note("%s is on the bus" % BUS_NAME)

        if a.via == "krunner":
            photo = open_with_krunner(bus, a.krunner_xml, a.krunner_desktop, a.expression)
            if opened_photos(out)[:1] not in ([], [photo]):
                fail("the daemon opened %s, not %s" % (opened_photos(out), photo))
        elif a.via == "krunner-framework":
            photo = open_with_krunner_framework(a.krunner_harness, a.krunner_desktop, a.expression, out)
        else:
            photo = open_with_nautilus(a, display, out)
        note("opened through %s: %s" % (a.via, photo))

        w, h, mask, why = daemon_mask(bus, photo, a.expression)
        if why:
            fail(why)
        expected = interior_map(mask, w, h, 3)
        eog = LogFile("eog", os.path.join(out, "eog.log"))
        _, line = eog.wait_line("the plugin's answer from OpenedExpression",
                                lambda l: l.startswith("photoseg-eog: OpenedExpression "), EOG_S)
        note("eog: " + line)
        if not line.endswith("-> True %r" % a.expression):
            fail("the plugin got %r from the daemon, not the expression %r" % (line, a.expression))
        _, line = eog.wait_line("a drawn overlay", lambda l: l.startswith("photoseg-eog: drawn "), EOG_S)
        note("eog: " + line)

        Gdk.set_allowed_backends("x11")
        os.environ["DISPLAY"] = display
        if not Gdk.init_check([])[0]:
            fail("cannot open display %s for screenshots" % display)

        def fitted(shot):
            box = green_box(shot)
            if box is None:
                return False, "no green eog view on screen"
            stats, reason = judge(shot, box, expected, w, h)
            if reason is not None:
                return False, "%s; %s" % (reason, stats)
            return True, (box, stats)

        shot = os.path.join(out, "%s-eog.png" % a.via)
        box, stats = wait_for_screen("eog showing the photo with the mask drawn", shot, fitted)
        note("eog's view %s: %s" % (box, stats))
        log = eog.lines()
        if any("Traceback" in l for l in log):
            fail("the eog plugin raised:\n" + "\n".join(log))
        asked = "photoseg-eog: GetMask %r %r" % (photo, a.expression)
        if asked not in log:
            fail("the plugin never asked for the mask of %r; it asked: %s"
                 % (a.expression, [l for l in log if l.startswith("photoseg-eog: GetMask ")]))
        if opened_photos(out) != [photo]:
            fail("the daemon's opener got %s, not [%s]" % (opened_photos(out), photo))
        note("PASS: opened from %s, eog shows %s with the mask of %r" % (a.via, photo, a.expression))
    finally:
        stop_opened(out)
        for p in reversed(procs):
            p.stop()
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()


if __name__ == "__main__":
    main()
