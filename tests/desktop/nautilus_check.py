#!/usr/bin/python3
"""Checks plugins/nautilus/photoseg-nautilus.py with the real nautilus-python 4 bindings (the Nautilus
4.0 typelib from gir1.2-nautilus-4.0, the one python3-nautilus loads extensions with), run by
tests/it/nautilus_plugin.rs inside a private session bus where a daemon serves org.photoseg.Photoseg1.

    nautilus_check.py --folder DIR --sibling DIR --expression EXPR [--calls LOG] [--display :N]

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
Prints PASS or FAIL: reason; exit status 0 only on PASS.
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import gi

gi.require_version("Nautilus", "4.0")
from gi.repository import Gio, GLib, Nautilus  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EXT = os.path.join(HERE, "..", "..", "plugins", "nautilus", "photoseg-nautilus.py")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--sibling", required=True)
    ap.add_argument("--expression", required=True)
    ap.add_argument("--calls")
    ap.add_argument("--display")
    a = ap.parse_args()

    typelib = gi.Repository.get_default().get_typelib_path("Nautilus")
    print("Nautilus typelib: %s" % typelib, flush=True)
    spec = importlib.util.spec_from_file_location("photoseg_nautilus", EXT)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    if not issubclass(ext.PhotosegMenuProvider, Nautilus.MenuProvider):
        fail("PhotosegMenuProvider does not implement Nautilus.MenuProvider")

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
