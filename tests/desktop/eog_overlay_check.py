#!/usr/bin/python3
"""End-to-end check of the eog overlay plugin (plugins/eog), run by tests/it/eog_plugin.rs inside a
private session bus (dbus-run-session with a config that activates nothing).

1. starts Xvfb and the daemon command given after `--` (the real `photoseg daemon`), waits for
   org.photoseg.Photoseg1 on the bus;
2. asks the daemon itself (GetMask, format "png") for the mask of each candidate expression and keeps
   the first one whose mask covers between 3% and 90% of the photo: the expected mask;
3. installs the plugin into $XDG_DATA_HOME/eog/plugins, enables it and sets a pure green view
   background in a GSettings keyfile ($XDG_CONFIG_HOME/glib-2.0/settings/keyfile, GSETTINGS_BACKEND=
   keyfile), opens the photo through the daemon (Open, with the expression; the daemon's opener is a
   no-op) and starts eog on it: the plugin gets the expression from the daemon (OpenedExpression);
4. takes screenshots of the root window (Gdk) at the fitted zoom, zoomed in with the mouse wheel
   (photo larger than the view) and after dragging the photo (scrolled), and checks each one.

How a screenshot is checked without trusting the plugin's geometry: the test photo encodes its own
coordinates, R = 20 + 215 x / (W - 1), G = 20 + 215 y / (H - 1), B = 128 (tests/it/eog_plugin.rs writes it).
A screen pixel showing the photo as it is has B ~ 128; dimmed (black at 50%, outside the object) it has
B ~ 64, R' = R/2, G' = G/2. So every photo pixel on screen says which photo pixel it shows and whether it
is dimmed,
whatever eog's zoom and scroll; the check compares that with the daemon's mask at that photo pixel
(away from the mask's edges, where scaling blends). A missing, shifted or wrongly scaled overlay fails.

Exit status 0 when every check passes; the reason otherwise. Screenshots stay in --out.
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
from gi.repository import Gdk, GdkPixbuf, Gio, GLib  # noqa: E402

BUS_NAME = "org.photoseg.Photoseg1"
OBJECT_PATH = "/org/photoseg/Photoseg1"
INTERFACE = "org.photoseg.Photoseg1"
GREEN = (0, 255, 0)
# The photo's coordinate code (keep in step with tests/it/eog_plugin.rs).
LO, SPAN, BLUE = 20, 215, 128


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def note(msg):
    print(msg, flush=True)


class Proc:
    """A child process whose output lines are collected (and echoed with a prefix)."""

    def __init__(self, name, argv, env=None, out_path=None):
        self.name = name
        self.lines = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", start_new_session=True)
        self.out = open(out_path, "w") if out_path else None
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))
            if self.out:
                self.out.write(line)
                self.out.flush()

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def wait_line(self, pred, timeout, start=0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            lines = self.snapshot()
            for i in range(start, len(lines)):
                if pred(lines[i]):
                    return i, lines[i]
            if self.p.poll() is not None:
                time.sleep(0.2)
                lines = self.snapshot()
                fail("%s exited (status %s) while waiting; its output:\n%s" % (self.name, self.p.returncode,
                                                                               "\n".join(lines[-40:])))
            time.sleep(0.1)
        fail("%s: no awaited line within %ss; its output:\n%s" % (self.name, timeout, "\n".join(self.snapshot()[-40:])))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


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
    deadline = time.time() + timeout
    while time.time() < deadline:
        if daemon is not None and daemon.p.poll() is not None:
            fail("the daemon exited (status %s) before taking %s; its output:\n%s"
                 % (daemon.p.returncode, BUS_NAME, "\n".join(daemon.snapshot()[-40:])))
        reply = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
                              GLib.Variant("(s)", (BUS_NAME,)), GLib.VariantType("(b)"), Gio.DBusCallFlags.NONE, -1, None)
        if reply.unpack()[0]:
            return
        time.sleep(0.2)
    fail("%s did not appear on the bus within %ss" % (BUS_NAME, timeout))


def get_mask(bus, photo, expression):
    """(found, width, height, rows of 0/1) from the daemon's GetMask(..., "png")."""
    reply = bus.call_sync(BUS_NAME, OBJECT_PATH, INTERFACE, "GetMask", GLib.Variant("(sss)", (photo, expression, "png")),
                          GLib.VariantType("(buuay)"), Gio.DBusCallFlags.NONE, 300_000, None)
    found = reply.get_child_value(0).get_boolean()
    w = reply.get_child_value(1).get_uint32()
    h = reply.get_child_value(2).get_uint32()
    data = reply.get_child_value(3).get_data_as_bytes().get_data()
    if not found:
        return False, w, h, None
    loader = GdkPixbuf.PixbufLoader.new_with_type("png")
    loader.write(data)
    loader.close()
    pb = loader.get_pixbuf()
    if (pb.get_width(), pb.get_height()) != (w, h):
        fail("GetMask PNG is %dx%d, the reply says %dx%d" % (pb.get_width(), pb.get_height(), w, h))
    px, n, stride = pb.get_pixels(), pb.get_n_channels(), pb.get_rowstride()
    rows = [[1 if px[y * stride + x * n] >= 128 else 0 for x in range(w)] for y in range(h)]
    return True, w, h, rows


def screenshot(path):
    root = Gdk.get_default_root_window()
    pb = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    pb.savev(path, "png", [], [])
    return pb


def pixel_reader(pb):
    px, n, stride = pb.get_pixels(), pb.get_n_channels(), pb.get_rowstride()

    def at(x, y):
        i = y * stride + x * n
        return px[i], px[i + 1], px[i + 2]

    return at


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


def decode(rgb, w, h):
    """(u, v, dimmed) of the photo pixel a screen pixel shows, or None when it does not show the photo
    (eog's background, the ring around the object)."""
    r, g, b = rgb
    if abs(b - BLUE) <= 6:
        R, G, dimmed = r, g, False
    elif abs(b - BLUE / 2) <= 2:
        # The photo's blue is one value everywhere, so dimming gives exactly half of it; a looser
        # bound would take eog's dark grey status label for photo pixels.
        R, G, dimmed = 2 * r, 2 * g, True
    else:
        return None
    if not (LO - 8 <= R <= LO + SPAN + 8 and LO - 8 <= G <= LO + SPAN + 8):
        return None
    u = (R - LO) * (w - 1) / SPAN
    v = (G - LO) * (h - 1) / SPAN
    return min(max(u, 0), w - 1), min(max(v, 0), h - 1), dimmed


def interior(mask, w, h, u, v, margin):
    """The mask value around photo pixel (u, v) if it is the same within `margin` pixels, else None."""
    x0, x1 = max(0, int(u - margin)), min(w - 1, int(u + margin + 1))
    y0, y1 = max(0, int(v - margin)), min(h - 1, int(v + margin + 1))
    first = mask[y0][x0]
    for y in range(y0, y1 + 1):
        row = mask[y]
        for x in range(x0, x1 + 1):
            if row[x] != first:
                return None
    return first


def check_shot(label, pb, box, mask, w, h):
    """Compares whether every photo pixel on screen (inside `box`) is dimmed with the mask; returns stats."""
    at = pixel_reader(pb)
    x0, y0, x1, y1 = box
    stats = {"photo_px": 0, "in_ok": 0, "in_bad": 0, "out_ok": 0, "out_bad": 0, "edge": 0}
    us, vs = [], []
    bad_examples = []
    for sy in range(y0, y1, 2):
        for sx in range(x0, x1, 2):
            d = decode(at(sx, sy), w, h)
            if d is None:
                continue
            u, v, dimmed = d
            stats["photo_px"] += 1
            us.append(u)
            vs.append(v)
            # Decoding is exact to ~1 photo pixel as it is, ~2 dimmed; scaling blends ~1 more.
            m = interior(mask, w, h, u, v, 3)
            if m is None:
                stats["edge"] += 1
                continue
            # The object shows as it is; everything else is dimmed.
            key = ("in_" if m else "out_") + ("ok" if dimmed != bool(m) else "bad")
            stats[key] += 1
            if key.endswith("bad") and len(bad_examples) < 5:
                bad_examples.append((sx, sy, at(sx, sy), round(u, 1), round(v, 1), m))
    if not us:
        fail("%s: no photo pixel on screen (screenshot kept)" % label)
    stats["u_span"] = (round(min(us), 1), round(max(us), 1))
    stats["v_span"] = (round(min(vs), 1), round(max(vs), 1))
    note("%s: %s" % (label, stats))
    inside = stats["in_ok"] + stats["in_bad"]
    outside = stats["out_ok"] + stats["out_bad"]
    if inside < 50 or outside < 50:
        fail("%s: too few photo pixels away from the mask's edges to judge (inside %d, outside %d)"
             % (label, inside, outside))
    if stats["in_ok"] < 0.99 * inside:
        fail("%s: %d of %d on-screen pixels inside the mask are dimmed; e.g. (x, y, rgb, u, v, mask) %s"
             % (label, stats["in_bad"], inside, bad_examples))
    if stats["out_ok"] < 0.99 * outside:
        fail("%s: only %d of %d on-screen pixels outside the mask are dimmed; e.g. (x, y, rgb, u, v, mask) %s"
             % (label, stats["out_ok"], outside, bad_examples))
    return stats


def xdo(display, *args):
    subprocess.run(["xdotool", *args], env=dict(os.environ, DISPLAY=display), check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photo", required=True)
    ap.add_argument("--expressions", required=True, help="candidates, separated by '|'")
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

        chosen = None
        tried = []
        for expression in a.expressions.split("|"):
            found, w, h, mask = get_mask(bus, a.photo, expression)
            area = sum(map(sum, mask)) if found else 0
            tried.append((expression, found, area))
            if found and 0.03 * w * h <= area <= 0.90 * w * h:
                chosen = (expression, w, h, mask, area)
                break
        if chosen is None:
            fail("no candidate expression has a mask between 3%% and 90%% of the photo: %s" % tried)
        expression, w, h, mask, area = chosen
        note("expected mask: %r, %dx%d, %d pixels (%.1f%%)" % (expression, w, h, area, 100.0 * area / (w * h)))

        data_home = os.environ["XDG_DATA_HOME"]
        config_home = os.environ["XDG_CONFIG_HOME"]
        plugin_dst = os.path.join(data_home, "eog", "plugins", "photoseg")
        shutil.rmtree(plugin_dst, ignore_errors=True)
        os.makedirs(plugin_dst)
        for name in ("photoseg.plugin", "photoseg.py"):
            shutil.copy(os.path.join(a.plugin_dir, name), plugin_dst)
        settings = os.path.join(config_home, "glib-2.0", "settings")
        os.makedirs(settings, exist_ok=True)
        with open(os.path.join(settings, "keyfile"), "w") as f:
            f.write("[org/gnome/eog/plugins]\nactive-plugins=['photoseg']\n\n"
                    "[org/gnome/eog/view]\nuse-background-color=true\nbackground-color='#00ff00'\n\n"
                    "[org/gnome/eog/ui]\nsidebar=false\nstatusbar=false\nimage-gallery=false\n")

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

        i, line = eog.wait_line(drawn, 90)
        note("eog: " + line)
        time.sleep(1.5)
        shot = screenshot(os.path.join(a.out, "1-fit.png"))
        box = green_box(shot)
        if box is None:
            fail("no green view background on screen (see 1-fit.png)")
        note("view box %s" % (box,))
        check_shot("fitted", shot, box, mask, w, h)

        # Zoom in as a user does (Ctrl++, eog's zoom steps 1.33, 2, 3, 4, 5) until the photo is larger
        # than the view. (xdotool's wheel clicks reach GTK 3 as emulated XI2 buttons, which it ignores.)
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        xdo(display, "mousemove", str(cx), str(cy))
        xdo(display, "key", "--delay", "150", "ctrl+plus", "ctrl+plus", "ctrl+plus", "ctrl+plus", "ctrl+plus")
        i, line = eog.wait_line(lambda l: drawn(l) and float(geometry(l)["zoom"]) > 4.0, 30, i + 1)
        note("eog: " + line)
        xdo(display, "mousemove", "5", "5")
        time.sleep(3.5)  # eog's own overlay buttons fade out 2 s after the pointer leaves
        shot = screenshot(os.path.join(a.out, "2-zoomed.png"))
        zoomed = check_shot("zoomed", shot, box, mask, w, h)
        if zoomed["u_span"][1] - zoomed["u_span"][0] > 0.8 * (w - 1):
            fail("zoomed: the view still shows %s of the photo's columns: the zoom did not happen" % (zoomed["u_span"],))

        # Drag the photo (button 1) up and to the left: eog scrolls.
        xdo(display, "mousemove", str(cx), str(cy))
        xdo(display, "mousedown", "1")
        for step in range(1, 11):
            xdo(display, "mousemove", str(cx - 12 * step), str(cy - 8 * step))
            time.sleep(0.03)
        xdo(display, "mouseup", "1")
        i, line = eog.wait_line(lambda l: drawn(l) and geometry(l)["x"] != geometry(line)["x"], 30, i + 1)
        note("eog: " + line)
        xdo(display, "mousemove", "5", "5")
        time.sleep(3.5)
        shot = screenshot(os.path.join(a.out, "3-scrolled.png"))
        scrolled = check_shot("scrolled", shot, box, mask, w, h)
        if scrolled["u_span"] == zoomed["u_span"] and scrolled["v_span"] == zoomed["v_span"]:
            fail("scrolled: the view shows the same part of the photo as before the drag")

        # Esc with the focus on the photo clears the overlay and leaves eog open; Ctrl+F focuses the box.
        n = len(eog.snapshot())
        xdo(display, "mousemove", str(cx), str(cy))
        xdo(display, "click", "1")
        xdo(display, "key", "Escape")
        eog.wait_line(lambda l: l.startswith("photoseg-eog: key: Esc, overlay cleared"), 30, n)
        time.sleep(1.0)
        if eog.p.poll() is not None:
            fail("Esc closed eog")
        xdo(display, "mousemove", "5", "5")
        time.sleep(3.5)
        shot = screenshot(os.path.join(a.out, "4-cleared.png"))
        at = pixel_reader(shot)
        dimmed = sum(1 for sy in range(box[1], box[3], 4) for sx in range(box[0], box[2], 4)
                     if (lambda d: d is not None and d[2])(decode(at(sx, sy), w, h)))
        if dimmed:
            fail("after Esc %d sampled photo pixels are still dimmed (4-cleared.png)" % dimmed)
        xdo(display, "key", "ctrl+f")
        eog.wait_line(lambda l: l.startswith("photoseg-eog: key: Ctrl+F, box focused"), 30, n)

        tracebacks = [l for l in eog.snapshot() if "Traceback" in l]
        if tracebacks:
            fail("the plugin raised:\n" + "\n".join(eog.snapshot()))
        if not any(l.startswith("photoseg-eog: OpenedExpression ") for l in eog.snapshot()):
            fail("the plugin never asked the daemon for the expression the photo was opened with")
        note("PASS: the overlay matches the daemon's mask fitted, zoomed and scrolled")
    finally:
        for p in reversed(procs):
            p.stop()
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()


if __name__ == "__main__":
    main()
