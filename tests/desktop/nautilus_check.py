#!/usr/bin/python3
"""Checks plugins/nautilus/photoseg-nautilus.py with the real nautilus-python 4 bindings (the Nautilus
4.0 typelib from gir1.2-nautilus-4.0, the one python3-nautilus loads extensions with), run by
tests/it/nautilus_plugin.rs inside a private session bus where a daemon serves org.photoseg.Photoseg1.

    nautilus_check.py --folder DIR --sibling DIR --expression EXPR [--calls LOG] [--display :N]
    nautilus_check.py --thumbnails --folder DIR --expression EXPR --out DIR --display :N [--opened-log FILE]

- the provider offers "Find in this folder…" on a local folder's background and on one selected
  folder, and nothing for a file, a remote location or several folders;
- the search (ListRoots, then Query with the folder's path) returns only albums at or below
  --folder: --sibling's album, whose name contains the folder's, is left out; the same search on the
  watched root (--folder's parent, which holds no photo itself) returns every album below it;
- with --calls (the fake daemon's log), each call's signature is the XML's and Query got the
  expression and the album name; the fake daemon itself registers the XML's interface, so GDBus
  refuses any other signature before our code sees it;
- with --display, the menu item's action opens the result window and lists one row per photo found,
  and activating a row calls the daemon's Open with the photo and the expression.
With --thumbnails (the real daemon, over a folder of photos that encode their own coordinates in their
colour, tests/desktop/mask_judge.py), only the result window, as a person sees it:
- each row shows a thumbnail of its photo (a Gtk.Picture), and a screenshot of the window (taken by
  tests/desktop/window_shot.py, saved as --out/nautilus-results.png) shows in each thumbnail the photo
  as it is where the daemon's own mask (GetMask) covers it and dimmed elsewhere, away from the mask's
  edges (>= 99 % each);
- activating a row opens the photo through the daemon with the expression: the daemon then answers
  OpenedExpression for it with that expression, as it does for the eog plugin; with --opened-log (the
  log of the daemon's opener, which tests/desktop/open_in_eog_check.py makes start eog), the check waits
  for the photo in that log instead and leaves the answer to eog.
It waits for states, never for fixed times: the window is looked at every POLL_S (GTK's main loop runs
in between) until it shows the awaited state or a deadline passes, and fails with the last reason.

Prints PASS or FAIL: reason; exit status 0 only on PASS.
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import gi

gi.require_version("Nautilus", "4.0")
from gi.repository import Gio, GLib, Nautilus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXT = os.path.join(HERE, "..", "..", "plugins", "nautilus", "photoseg-nautilus.py")
sys.path.insert(0, HERE)
from mask_judge import BUS_NAME, INTERFACE, OBJECT_PATH, daemon_mask, interior_map, judge  # noqa: E402

# How often a state being waited for is looked at again, in seconds (GTK's main loop runs meanwhile).
POLL_S = 0.05


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


class Info:
    """Stands in for the Nautilus.FileInfo nautilus passes (get_location, is_directory)."""

    def __init__(self, gfile, is_dir):
        self.gfile, self.is_dir = gfile, is_dir

    def get_location(self):
        return self.gfile

    def is_directory(self):
        return self.is_dir


def wait(pred, timeout):
    ctx = GLib.MainContext.default()
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            return False
        ctx.iteration(False)
        time.sleep(0.01)
    return True


def wait_for(what, probe, timeout):
    """Calls probe() every POLL_S, running GTK's main loop in between, until it returns (True, value), and
    returns value; probe returns (False, reason) while the state is not there. Fails with `what` and the
    last reason when `timeout` seconds pass first."""
    ctx = GLib.MainContext.default()
    deadline = time.monotonic() + timeout
    while True:
        done, value = probe()
        if done:
            return value
        if time.monotonic() > deadline:
            fail("%s: not within %ss; last: %s" % (what, timeout, value))
        until = time.monotonic() + POLL_S
        while time.monotonic() < until:  # the pause between two looks, with the main loop running
            if not ctx.iteration(False):
                time.sleep(0.005)


def pictures_in(widget):
    """The Gtk.Picture widgets inside `widget`, depth first."""
    from gi.repository import Gtk

    found = [widget] if isinstance(widget, Gtk.Picture) else []
    child = widget.get_first_child()
    while child is not None:
        found += pictures_in(child)
        child = child.get_next_sibling()
    return found


def check_thumbnails(ext, a):
    """The --thumbnails check (see the module's docstring)."""
    gi.require_version("Gtk", "4.0")
    gi.require_version("GdkX11", "4.0")
    from gi.repository import GdkPixbuf, GdkX11, Gtk

    if not a.display or not a.out:
        fail("--thumbnails needs --display and --out")
    os.makedirs(a.out, exist_ok=True)
    bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    os.environ["PHOTOSEG_NAUTILUS_EXPRESSION"] = a.expression
    if not Gtk.init_check():
        fail("GTK cannot open %s" % a.display)
    shooter = subprocess.Popen([sys.executable, os.path.join(HERE, "window_shot.py")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        windows = ext.find_in_folder(a.folder)
        if len(windows) != 1:
            fail("the action opened %d result windows" % len(windows))
        win = windows[0]
        wait_for("the search's answer in the result window",
                 lambda: (not win.status.get_text().startswith("Looking"), win.status.get_text()), 300)
        rows = []
        while win.list.get_row_at_index(len(rows)) is not None:
            rows.append(win.list.get_row_at_index(len(rows)))
        print("result window: %r, %d rows" % (win.status.get_text(), len(rows)), flush=True)
        if not rows:
            fail("the result window lists no photo: %s" % win.status.get_text())
        # Each row: its photo, the thumbnail widget, and the daemon's mask judged at the thumbnail's scale.
        judged = []
        for i, row in enumerate(rows):
            pictures = pictures_in(row)
            if len(pictures) != 1:
                fail("row %d (%s) shows %d pictures, not one thumbnail" % (i, win.paths[i], len(pictures)))
            w, h, mask, why = daemon_mask(bus, win.paths[i], a.expression)
            if why:
                fail(why)
            judged.append((win.paths[i], pictures[0], w, h, mask))
        shot_path = os.path.join(a.out, "nautilus-results.png")

        def shot():
            surface = win.get_surface()
            if surface is None or not win.get_mapped():
                return None, "the result window is not on screen"
            shooter.stdin.write("%d %s\n" % (GdkX11.X11Surface.get_xid(surface), shot_path))
            shooter.stdin.flush()
            answer = shooter.stdout.readline().strip()
            if not answer.startswith("ok "):
                fail("window_shot.py: %s" % (answer or "no answer"))
            return GdkPixbuf.Pixbuf.new_from_file(shot_path), None

        margins = {}

        def thumbnails_show_the_masks():
            pb, why = shot()
            if pb is None:
                return False, why
            # Where the window's content lies in its X window (client-side decorations).
            ox, oy = win.get_surface_transform()
            for path, picture, w, h, mask in judged:
                paintable = picture.get_paintable()
                if paintable is None:
                    return False, "%s: no thumbnail yet" % os.path.basename(path)
                ok, rect = picture.compute_bounds(win)
                if not ok:
                    return False, "%s: its thumbnail has no place in the window" % os.path.basename(path)
                box = (max(0, int(ox + rect.get_x())), max(0, int(oy + rect.get_y())),
                       min(pb.get_width(), int(math.ceil(ox + rect.get_x() + rect.get_width()))),
                       min(pb.get_height(), int(math.ceil(oy + rect.get_y() + rect.get_height()))))
                # Away from the mask's edges by the ring's white half (RING_PX thumbnail pixels next to the
                # object: white blended into the dimmed photo can read as a photo pixel as it is; the black
                # half reads as dimmed or as no photo) and the blending of scaling (half a pixel), in photo
                # pixels at the thumbnail's scale, plus 1 for decoding. A mask shifted by 6 thumbnail pixels
                # either way, flipped, or scaled by 5 % from its corner fails.
                if rect.get_width() < 1 or rect.get_height() < 1:
                    return False, "%s: its thumbnail is not laid out yet" % os.path.basename(path)
                # The thumbnail's scale as shown: the picture's size on screen over the photo's.
                scale = min(rect.get_width() / w, rect.get_height() / h)
                margin = int(math.ceil((ext.RING_PX + 0.5) / scale)) + 1
                if margin not in margins:
                    margins[margin] = interior_map(mask, w, h, margin)
                stats, reason = judge(pb, box, margins[margin], w, h, step=1)
                if reason is not None:
                    return False, "%s (thumbnail at %s, scale %.2f): %s; %s" % (
                        os.path.basename(path), box, scale, reason, stats)
                stats["scale"] = round(scale, 3)
                stats["box"] = box
                lines.append("%s: %s" % (os.path.basename(path), stats))
            return True, lines

        lines = []
        wait_for("thumbnails with the daemon's masks (%s)" % os.path.basename(shot_path),
                 lambda: lines.clear() or thumbnails_show_the_masks(), 60)
        print("\n".join(lines), flush=True)

        # Activating a row opens the photo through the daemon with the expression (its opener is a no-op
        # here); the daemon then hands the expression to the photo viewer, once.
        path = win.paths[0]
        win.list.emit("row-activated", rows[0])

        def opened():
            reply = bus.call_sync(BUS_NAME, OBJECT_PATH, INTERFACE, "OpenedExpression", GLib.Variant("(s)", (path,)),
                                  GLib.VariantType("(bs)"), Gio.DBusCallFlags.NONE, 30_000, None)
            found, expression = reply.unpack()
            if found and expression != a.expression:
                fail("the daemon opened %s with %r, not %r" % (path, expression, a.expression))
            return found, "the daemon has not opened %s with an expression" % path

        def given_to_the_opener():
            try:
                with open(a.opened_log) as f:
                    photos = f.read().splitlines()
            except FileNotFoundError:
                photos = []
            return path in photos, "the daemon's opener got %s" % photos

        if a.opened_log:
            # A photo viewer takes the expression from the daemon (tests/desktop/open_in_eog_check.py): asking
            # for it here would use up its one answer, so wait for the daemon's opener instead.
            wait_for("the photo given to the daemon's opener", given_to_the_opener, 30)
            print("thumbnails match the daemon's masks; activating a row opens %s" % path, flush=True)
        else:
            wait_for("the photo opened through the daemon with the expression", opened, 30)
            print("thumbnails match the daemon's masks; activating a row opens %s with %r" % (path, a.expression),
                  flush=True)
        win.destroy()
    finally:
        shooter.stdin.close()
        shooter.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--sibling")
    ap.add_argument("--expression", required=True)
    ap.add_argument("--calls")
    ap.add_argument("--display")
    ap.add_argument("--thumbnails", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--opened-log")
    a = ap.parse_args()
    if not a.thumbnails and not a.sibling:
        fail("--sibling is needed")

    typelib = gi.Repository.get_default().get_typelib_path("Nautilus")
    print("Nautilus typelib: %s" % typelib, flush=True)
    spec = importlib.util.spec_from_file_location("photoseg_nautilus", EXT)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    if not issubclass(ext.PhotosegMenuProvider, Nautilus.MenuProvider):
        fail("PhotosegMenuProvider does not implement Nautilus.MenuProvider")

    if a.thumbnails:
        check_thumbnails(ext, a)
        print("PASS", flush=True)
        return

    provider = ext.PhotosegMenuProvider()
    folder = Info(Gio.File.new_for_path(a.folder), True)
    items = provider.get_background_items(folder)
    if len(items) != 1 or not isinstance(items[0], Nautilus.MenuItem) or items[0].props.label != "Find in this folder…":
        fail("background items of a folder: %r" % [i.props.label for i in items])
    if [i.props.label for i in provider.get_file_items([folder])] != ["Find in this folder…"]:
        fail("one selected folder gets no item")
    photo = Info(Gio.File.new_for_path(os.path.join(a.folder, "x.png")), False)
    remote = Info(Gio.File.new_for_uri("sftp://host/photos"), True)
    for what, got in (("a file", provider.get_file_items([photo])),
                      ("two folders", provider.get_file_items([folder, folder])),
                      ("a remote folder", provider.get_background_items(remote))):
        if got:
            fail("%s gets a menu item" % what)

    result = {}

    def done(res, err):
        result["res"], result["err"] = res, err

    ext.Search(a.folder, a.expression, done).start()
    if not wait(lambda: result, 300):
        fail("the search did not finish within 300 s")
    if result["err"] is not None:
        fail("the search failed: %s" % result["err"])
    albums = result["res"]["albums"]
    paths = [al["album"] for al in albums]
    print("albums answered: %s" % paths, flush=True)
    folder_n = os.path.normpath(a.folder)
    if folder_n not in paths:
        fail("the folder's own album is missing: %s" % paths)
    if any(p != folder_n and not p.startswith(folder_n + "/") for p in paths):
        fail("albums outside the folder were kept: %s" % paths)
    if os.path.normpath(a.sibling) in paths:
        fail("the sibling album was kept")
    for al in albums:
        if len(al["positives"]) + al["rejected"] + al["unindexed"] != al["photos"]:
            fail("album counts do not add up: %s" % al)

    # The watched root itself, whose photos are all in subfolders: every album, no album named after it.
    root = os.path.dirname(folder_n)
    result.clear()
    ext.Search(root, a.expression, done).start()
    if not wait(lambda: result, 300):
        fail("the search of the watched root did not finish within 300 s")
    if result["err"] is not None:
        fail("the search of the watched root failed: %s" % result["err"])
    under_root = sorted(al["album"] for al in result["res"]["albums"])
    print("albums answered for the root: %s" % under_root, flush=True)
    if folder_n not in under_root or os.path.normpath(a.sibling) not in under_root:
        fail("the watched root's search left out its subfolders' albums: %s" % under_root)

    if a.calls:
        calls = [json.loads(line) for line in open(a.calls)]
        sigs = [(c["method"], c["signature"]) for c in calls]
        if sigs != [("ListRoots", "()"), ("Query", "(sas)")] * 2:
            fail("calls made: %s" % sigs)
        for call, folder in ((calls[1], folder_n), (calls[3], root)):
            if call["args"] != [a.expression, [folder]]:
                fail("Query got %s, expected %s" % (call["args"], [a.expression, [folder]]))

    if not a.calls:
        # A refused call (the real daemon limits an expression to 500 bytes) reads as the daemon's own
        # sentence, without GDBus's "GDBus.Error:NAME:" prefix.
        result.clear()
        ext.Search(a.folder, "x" * 600, done).start()
        if not wait(lambda: result, 60):
            fail("the refused search did not finish within 60 s")
        err = result["err"] or ""
        print("refused search: %r" % err, flush=True)
        if not err.startswith("photoseg: ") or "GDBus" in err or "org.photoseg" in err:
            fail("a refused search reads %r" % err)

    if a.display:
        os.environ["PHOTOSEG_NAUTILUS_EXPRESSION"] = a.expression
        gi.require_version("Gtk", "4.0")
        from gi.repository import Gtk

        if not Gtk.init_check():
            fail("GTK cannot open %s" % a.display)
        windows = ext.find_in_folder(a.folder)
        if len(windows) != 1:
            fail("the action opened %d result windows" % len(windows))
        win = windows[0]
        if not wait(lambda: not win.status.get_text().startswith("Looking"), 300):
            fail("the result window still says: %s" % win.status.get_text())
        found = sum(len(al["positives"]) for al in albums)
        rows = 0
        while win.list.get_row_at_index(rows) is not None:
            rows += 1
        print("result window: %r, %d rows" % (win.status.get_text(), rows), flush=True)
        if rows != found:
            fail("the result window lists %d photos, the search found %d" % (rows, found))
        # Activating a found photo opens it through the daemon, with the expression (for the eog plugin).
        if rows:
            win.list.emit("row-activated", win.list.get_row_at_index(0))
            if a.calls:
                def opens():
                    return [c for c in (json.loads(line) for line in open(a.calls)) if c["method"] == "Open"]

                if not wait(opens, 10):
                    fail("activating a found photo made no Open call")
                if opens()[0]["args"] != [win.paths[0], a.expression]:
                    fail("Open got %s, expected %s" % (opens()[0]["args"], [win.paths[0], a.expression]))
        before = len(Gtk.Window.list_toplevels())
        items[0].activate()
        if not wait(lambda: len(Gtk.Window.list_toplevels()) > before, 10):
            fail("activating the menu item opened no window")
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
