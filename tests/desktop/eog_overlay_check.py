#!/usr/bin/python3
"""End-to-end check of the eog overlay plugin (plugins/eog), run by tests/it/eog_plugin.rs inside a
private session bus (dbus-run-session with a config that activates nothing).

1. starts Xvfb and the daemon command given after `--` (the real `photoseg daemon`), waits for
   org.photoseg.Photoseg1 on the bus;
2. asks the daemon itself (GetMask, format "png") for the mask of --expression: the expected mask, which
   must cover between 3% and 90% of the photo;
3. installs the plugin into $XDG_DATA_HOME/eog/plugins, enables it and sets a pure green view
   background in a GSettings keyfile ($XDG_CONFIG_HOME/glib-2.0/settings/keyfile, GSETTINGS_BACKEND=
   keyfile), opens the photo through the daemon (Open, with the expression; the daemon's opener is a
   no-op) and starts eog on it: the plugin gets the expression from the daemon (OpenedExpression);
4. takes screenshots of the root window (Gdk) at the fitted zoom, zoomed in with Ctrl++ (photo larger
   than the view) and after dragging the photo (scrolled), and checks each one; then Esc clears the
   overlay and leaves eog open, and Ctrl+F focuses the box.

How a screenshot is checked without trusting the plugin's geometry: the test photo encodes its own
coordinates in its colour (tests/it/common/desktop.rs, coded_photo), so every photo pixel on screen says
which photo pixel it shows and whether it is dimmed, whatever eog's zoom and scroll; the check compares
that with the daemon's mask at that photo pixel, away from the mask's edges, where scaling blends
(tests/desktop/mask_judge.py). A missing, shifted or wrongly scaled overlay fails.

How it waits: for a state, never for a fixed time. Each step looks for the state it needs every POLL_S
until a deadline, then fails with the last reason the state was not there: the daemon's name on the bus,
a line of eog's log (with PHOTOSEG_EOG_DEBUG=1 the plugin logs each overlay it draws and each key it
handles), or a screenshot that shows the view the step expects, with the overlay matching. Frames on the
way there are simply looked at again: eog's own buttons over the photo (they show while the pointer
moves over it and fade out 3 s after it stops), eog's sharper redraw 200 ms after a zoom or scroll, the
photo halfway through a drag.

Exit status 0 when every check passes; the reason otherwise. Screenshots stay in --out (each step's last).

The other desktop checks (open_in_eog_check.py, gnome_shell_check.py) use its helpers: the processes,
the waiting, the plugin's installation and settings, and the daemon's opener that starts eog.
"""
import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

import gi

gi.require_version("Gdk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import Gdk, Gio, GLib  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mask_judge import BUS_NAME, INTERFACE, OBJECT_PATH, daemon_mask, decode, interior_map, judge, pixel_reader  # noqa: E402

GREEN = (0, 255, 0)
# How often a state being waited for is looked at again, in seconds.
POLL_S = 0.05
# How long a screenshot may take to show what a step expects, in seconds.
SCREEN_S = 30
# The drag, in screen pixels: the pointer moves up and to the left, so the view shows more of the photo's
# lower right.
DRAG_X, DRAG_Y = 120, 80


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def note(msg):
    print(msg, flush=True)


def wait_for(what, probe, timeout):
    """Calls probe() every POLL_S until it returns (True, value) and returns value; probe returns
    (False, reason) while the state is not there. Fails with `what` and the last reason when `timeout`
    seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = probe()
        if done:
            return value
        if time.monotonic() > deadline:
            fail("%s: not within %ss; last: %s" % (what, timeout, value))
        time.sleep(POLL_S)  # the pause between two looks at the state


class Proc:
    """A child process whose output lines are collected (and copied to out_path)."""

    def __init__(self, name, argv, env=None, out_path=None):
        self.name = name
        self.lines = []
        self.ended = False  # its output has ended: it exited (or closed it)
        self.cond = threading.Condition()
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", start_new_session=True)
        self.out = open(out_path, "w") if out_path else None
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            if self.out:
                self.out.write(line)
                self.out.flush()
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.lines)

    def wait_line(self, what, pred, timeout, start=0):
        """(index, line) of the first line from `start` on that satisfies pred, waiting for the output as
        it comes; fails, saying `what` was awaited, when `timeout` seconds pass or the output ends first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    if pred(self.lines[i]):
                        return i, self.lines[i]
                start = len(self.lines)
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    break
                self.cond.wait(left)
        tail = "\n".join(self.snapshot()[-40:])
        if self.ended:
            try:
                status = self.p.wait(5)
            except subprocess.TimeoutExpired:
                status = "none yet"
            fail("%s ended its output (exit status %s) while waiting for %s; its output:\n%s"
                 % (self.name, status, what, tail))
        fail("%s: no %s within %ss; its output:\n%s" % (self.name, what, timeout, tail))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


# eog's settings for the checks: the plugin enabled, a pure green view background (green_box finds the
# view by it), no side panes.
EOG_SETTINGS = ("[org/gnome/eog/plugins]\nactive-plugins=['photoseg']\n\n"
                "[org/gnome/eog/view]\nuse-background-color=true\nbackground-color='#00ff00'\n\n"
                "[org/gnome/eog/ui]\nsidebar=false\nstatusbar=false\nimage-gallery=false\n")


def install_plugin(plugin_dir):
    """Copies the plugin (plugins/eog) into $XDG_DATA_HOME/eog/plugins/photoseg."""
    plugin_dst = os.path.join(os.environ["XDG_DATA_HOME"], "eog", "plugins", "photoseg")
    shutil.rmtree(plugin_dst, ignore_errors=True)
    os.makedirs(plugin_dst)
    for name in ("photoseg.plugin", "photoseg.py"):
        shutil.copy(os.path.join(plugin_dir, name), plugin_dst)


def write_keyfile(text):
    """Writes the GSettings keyfile that programs run with GSETTINGS_BACKEND=keyfile read."""
    settings = os.path.join(os.environ["XDG_CONFIG_HOME"], "glib-2.0", "settings")
    os.makedirs(settings, exist_ok=True)
    with open(os.path.join(settings, "keyfile"), "w") as f:
        f.write(text)


class LogFile:
    """A log file another process appends to (eog started by the daemon's opener), read line by line."""

    def __init__(self, name, path):
        self.name, self.path = name, path

    def lines(self):
        try:
            with open(self.path, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_line(self, what, pred, timeout, start=0):
        """(index, line) of the first line from `start` on that satisfies pred; fails, saying `what` was
        awaited, when `timeout` seconds pass first."""
        def probe():
            lines = self.lines()
            for i in range(start, len(lines)):
                if pred(lines[i]):
                    return True, (i, lines[i])
            return False, "its last lines: %s" % (lines[-10:] or "none (not started)")

        return wait_for("%s: %s" % (self.name, what), probe, timeout)


def eog_opener(out):
    """Writes out/open-with-eog.sh, a program for the daemon's $PHOTOSEG_OPENER: it starts eog on the photo
    it is given, with the environment the daemon has, appending its pid to out/eog.pids, the photo to
    out/opened.log and eog's output (the plugin's debug log) to out/eog.log. Returns its path. (The
    product's opener is `gio open`, the desktop's default viewer; this one keeps eog's log.)"""
    opener = os.path.join(out, "open-with-eog.sh")
    with open(opener, "w") as f:
        f.write("#!/bin/sh\n# The daemon's opener in the desktop checks (tests/desktop/eog_overlay_check.py).\n"
                "echo $$ >>'%s'\necho \"$1\" >>'%s'\nexec eog \"$1\" >>'%s' 2>&1\n"
                % (os.path.join(out, "eog.pids"), os.path.join(out, "opened.log"), os.path.join(out, "eog.log")))
    os.chmod(opener, 0o755)
    return opener


def opened_photos(out):
    """The photos the opener of eog_opener(out) was given, in order."""
    try:
        with open(os.path.join(out, "opened.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def stop_opened(out):
    """Ends the eog processes the opener of eog_opener(out) started."""
    try:
        pids = open(os.path.join(out, "eog.pids")).read().split()
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), 15)
        except ProcessLookupError:
            pass


def start_xvfb():
    r, w = os.pipe()
    p = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                         pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(w)
    with os.fdopen(r) as f:
        num = f.readline().strip()
    if not num:
        fail("Xvfb did not start")
    return p, ":" + num


def wait_for_name(bus, daemon, timeout):
    def probe():
        if daemon is not None and daemon.p.poll() is not None:
            fail("the daemon exited (status %s) before taking %s; its output:\n%s"
                 % (daemon.p.returncode, BUS_NAME, "\n".join(daemon.snapshot()[-40:])))
        reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
                              GLib.Variant("(s)", (BUS_NAME,)), GLib.VariantType("(b)"), Gio.DBusCallFlags.NONE, -1, None)
        return reply.unpack()[0], "no owner"

    wait_for("%s on the bus" % BUS_NAME, probe, timeout)


def screenshot(path):
    root = Gdk.get_default_root_window()
    pb = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    pb.savev(path, "png", [], [])
    return pb


def green_box(pb):
    """Bounding box (x0, y0, x1, y1) of the pure green view background."""
    at = pixel_reader(pb)
    xs, ys = [], []
    for y in range(0, pb.get_height(), 2):
        for x in range(0, pb.get_width(), 2):
            if at(x, y) == GREEN:
                xs.append(x)
                ys.append(y)
    if not xs:
        return None
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def wait_for_screen(what, path, accept):
    """Takes screenshots (each saved to `path`) until accept(shot) returns (True, value), and returns
    value; accept returns (False, reason) for a screen that does not show the awaited view yet."""
    return wait_for("%s (%s)" % (what, os.path.basename(path)), lambda: accept(screenshot(path)), SCREEN_S)


def xdo(display, *args):
    """One xdotool run: its commands (chained, e.g. mousemove then key) reach the X server in order."""
    subprocess.run(["xdotool", *args], env=dict(os.environ, DISPLAY=display), check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", required=True)
    ap.add_argument("--expression", required=True)
    ap.add_argument("--plugin-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("daemon", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    daemon_argv = a.daemon[1:] if a.daemon[:1] == ["--"] else a.daemon
    os.makedirs(a.out, exist_ok=True)
    procs = []
    xvfb = None
    try:
        xvfb, display = start_xvfb()
        note("Xvfb on %s" % display)
        daemon = None
        if daemon_argv:
            daemon = Proc("daemon", daemon_argv, out_path=os.path.join(a.out, "daemon.log"))
            procs.append(daemon)
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        wait_for_name(bus, daemon, 120)
        note("%s is on the bus" % BUS_NAME)

        expression = a.expression
        w, h, mask, why = daemon_mask(bus, a.photo, expression)
        if why:
            fail(why)
        area = sum(map(sum, mask))
        note("expected mask: %r, %dx%d, %d pixels (%.1f%%)" % (expression, w, h, area, 100.0 * area / (w * h)))
        if not 0.03 * w * h <= area <= 0.90 * w * h:
            fail("the mask covers %.1f%% of the photo; judging the overlay needs 3%% to 90%%"
                 % (100.0 * area / (w * h)))
        expected = interior_map(mask, w, h, 3)

        install_plugin(a.plugin_dir)
        write_keyfile(EOG_SETTINGS)

        # The photo is opened as a desktop search result opens it: through the daemon, which remembers the
        # expression (its opener is a no-op here; this script starts eog itself, without the expression).
        bus.call_sync(BUS_NAME, OBJECT_PATH, INTERFACE, "Open", GLib.Variant("(ss)", (a.photo, expression)),
                      None, Gio.DBusCallFlags.NONE, 30_000, None)
        env = dict(os.environ, DISPLAY=display, GSETTINGS_BACKEND="keyfile", NO_AT_BRIDGE="1", GTK_THEME="Adwaita",
                   PHOTOSEG_EOG_DEBUG="1")
        env.pop("PHOTOSEG_EOG_EXPRESSION", None)
        eog = Proc("eog", ["eog", a.photo], env=env, out_path=os.path.join(a.out, "eog.log"))
        procs.append(eog)
        Gdk.set_allowed_backends("x11")
        os.environ["DISPLAY"] = display
        if not Gdk.init_check([])[0]:
            fail("cannot open display %s for screenshots" % display)

        def drawn(line):
            return line.startswith("photoseg-eog: drawn ")

        def geometry(line):
            return dict(kv.split("=") for kv in line.split()[2:])

        def logged(what):
            return lambda line: line.startswith("photoseg-eog: " + what)

        def judged(label, shot, box, also=None):
            """(True, stats) when the overlay on `shot` matches the mask and also(stats) has no objection."""
            stats, reason = judge(shot, box, expected, w, h)
            if reason is None and also is not None:
                reason = also(stats)
            if reason is not None:
                return False, "%s: %s; %s" % (label, reason, stats)
            note("%s: %s" % (label, stats))
            return True, stats

        i, line = eog.wait_line("a drawn overlay", drawn, 90)
        note("eog: " + line)

        def fitted(shot):
            box = green_box(shot)
            if box is None:
                return False, "no green view background on screen"
            ok, value = judged("fitted", shot, box)
            return ok, (box if ok else value)

        box = wait_for_screen("the overlay at the fitted zoom", os.path.join(a.out, "1-fit.png"), fitted)
        note("view box %s" % (box,))
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2

        # Zoom in as a user does (Ctrl++, eog's zoom steps 1.33, 2, 3, 4, 5) until the photo is larger
        # than the view. (xdotool's wheel clicks reach GTK 3 as emulated XI2 buttons, which it ignores.)
        # The pointer stays off the photo, where it does not call up eog's own buttons over it; the keys
        # go to eog's window, which has the keyboard focus.
        xdo(display, "mousemove", "5", "5", "key", "ctrl+plus", "ctrl+plus", "ctrl+plus", "ctrl+plus", "ctrl+plus")
        i, line = eog.wait_line("an overlay drawn at zoom 5",
                                lambda l: drawn(l) and float(geometry(l)["zoom"]) > 4.0, 30, i + 1)
        note("eog: " + line)
        zoomed_at = geometry(line)

        def zoomed_in(stats):
            if stats["u_span"][1] - stats["u_span"][0] > 0.8 * (w - 1):
                return "the view still shows %s of the photo's columns: not zoomed in yet" % (stats["u_span"],)
            return None

        zoomed = wait_for_screen("the overlay zoomed in", os.path.join(a.out, "2-zoomed.png"),
                                 lambda shot: judged("zoomed", shot, box, zoomed_in))

        # Drag the photo (button 1) up and to the left: eog scrolls by the drag, so the view moves right
        # and down over the photo by the drag divided by the zoom.
        steps = [("mousemove", str(cx - DRAG_X * k // 10), str(cy - DRAG_Y * k // 10)) for k in range(1, 11)]
        xdo(display, "mousemove", str(cx), str(cy), "mousedown", "1", *[arg for step in steps for arg in step],
            "mouseup", "1")

        def scrolled(line):
            return drawn(line) and (geometry(line)["x"], geometry(line)["y"]) != (zoomed_at["x"], zoomed_at["y"])

        i, line = eog.wait_line("an overlay drawn after the drag", scrolled, 30, i + 1)
        note("eog: " + line)
        xdo(display, "mousemove", "5", "5")
        zoom = float(zoomed_at["zoom"])

        def moved_by_the_drag(stats):
            du = (stats["u_span"][0] - zoomed["u_span"][0] + stats["u_span"][1] - zoomed["u_span"][1]) / 2
            dv = (stats["v_span"][0] - zoomed["v_span"][0] + stats["v_span"][1] - zoomed["v_span"][1]) / 2
            if abs(du - DRAG_X / zoom) > 3 or abs(dv - DRAG_Y / zoom) > 3:
                return ("the view moved by (%.1f, %.1f) photo pixels since the zoom, the drag by (%.1f, %.1f)"
                        % (du, dv, DRAG_X / zoom, DRAG_Y / zoom))
            return None

        wait_for_screen("the overlay scrolled by the drag", os.path.join(a.out, "3-scrolled.png"),
                        lambda shot: judged("scrolled", shot, box, moved_by_the_drag))

        # Esc with the focus on the photo clears the overlay and leaves eog open; Ctrl+F focuses the box.
        n = len(eog.snapshot())
        xdo(display, "mousemove", str(cx), str(cy), "click", "1", "key", "Escape")
        eog.wait_line("the plugin's answer to Esc", logged("key: Esc, overlay cleared"), 30, n)
        xdo(display, "mousemove", "5", "5")

        def cleared(shot):
            if eog.p.poll() is not None:
                fail("Esc closed eog (status %s)" % eog.p.returncode)
            at = pixel_reader(shot)
            shown = [decode(at(sx, sy), w, h)
                     for sy in range(box[1], box[3], 4) for sx in range(box[0], box[2], 4)]
            photo = [d for d in shown if d is not None]
            dimmed = sum(1 for d in photo if d[2])
            if len(photo) < 0.5 * len(shown):
                return False, "only %d of %d sampled view pixels show the photo" % (len(photo), len(shown))
            if dimmed:
                return False, "%d of %d sampled photo pixels are still dimmed" % (dimmed, len(photo))
            return True, len(photo)

        photo_px = wait_for_screen("the photo without the overlay after Esc", os.path.join(a.out, "4-cleared.png"),
                                   cleared)
        note("cleared: %d sampled photo pixels, none dimmed" % photo_px)
        # Keys still reach the plugin after Esc: eog is open.
        xdo(display, "key", "ctrl+f")
        eog.wait_line("the plugin's answer to Ctrl+F", logged("key: Ctrl+F, box focused"), 30, n)

        if eog.p.poll() is not None:
            fail("eog exited (status %s) after Esc" % eog.p.returncode)
        log = eog.snapshot()
        if any("Traceback" in l for l in log):
            fail("the plugin raised:\n" + "\n".join(log))
        if not any(logged("OpenedExpression ")(l) for l in log):
            fail("the plugin never asked the daemon for the expression the photo was opened with")
        asked = "photoseg-eog: GetMask %r %r" % (a.photo, expression)
        if asked not in log:
            fail("the plugin never asked for the mask of %r; it asked: %s"
                 % (expression, [l for l in log if logged("GetMask ")(l)]))
        note("PASS: the overlay matches the daemon's mask fitted, zoomed and scrolled")
    finally:
        for p in reversed(procs):
            p.stop()
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()


if __name__ == "__main__":
    main()
