# photoseg for Nautilus (nautilus-python 4, Nautilus 43+, GTK 4): a "Find in this folder…" menu item on
# a folder's background and on a selected folder. It asks for an expression, queries photoseg's daemon
# (org.photoseg.Photoseg1, schema/org.photoseg.Photoseg1.xml) over the albums in that folder and lists
# the photos found (best first, with the mask's share of the photo) and how many were rejected.
# Activating a found photo opens it through the daemon (Open, with the expression), so the eog plugin
# draws that mask when the photo appears; without a daemon, in the default viewer. docs/desktop.md has
# the details.
#
# Which albums: Query takes the folder's absolute path as its filter and answers for every album in that
# folder or below it. ListRoots comes first, so a folder photoseg does not watch gets a sentence saying
# so rather than an empty answer.
#
# Environment: PHOTOSEG_NAUTILUS_EXPRESSION skips the question (tests, scripts).

import json
import os

import gi

gi.require_version("Gtk", "4.0")
gi.require_version("Nautilus", "4.0")
from gi.repository import Gio, GLib, GObject, Gtk, Nautilus  # noqa: E402

BUS_NAME = "org.photoseg.Photoseg1"
OBJECT_PATH = "/org/photoseg/Photoseg1"
INTERFACE = "org.photoseg.Photoseg1"
# Signatures from schema/org.photoseg.Photoseg1.xml.
LIST_ROOTS = ("ListRoots", None, "(as)")
QUERY = ("Query", "(sas)", "(s)")
OPEN = ("Open", "(ss)", "()")
CALL_TIMEOUT_MS = 300_000
LABEL = "Find in this folder…"


def remote_message(err):
    """The daemon's own sentence of a D-Bus error: GDBus's "GDBus.Error:NAME: " prefix removed from the
    message (PyGObject hands over a copy of the GError, so Gio.DBusError.strip_remote_error cannot)."""
    msg = err.message
    if msg.startswith("GDBus.Error:"):
        _, sep, rest = msg.partition(": ")
        if sep:
            return rest
    return msg


def explain_error(err):
    """A sentence for the user from a GLib.Error of a D-Bus call."""
    remote = Gio.DBusError.get_remote_error(err) if Gio.DBusError.is_remote_error(err) else None
    if remote in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner") or (
        remote or ""
    ).startswith("org.freedesktop.DBus.Error.Spawn"):
        return "photoseg daemon is not running (start it: systemctl --user start photoseg.service)"
    if remote == "org.freedesktop.DBus.Error.NoReply" or err.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
        return "photoseg daemon did not answer in time"
    return "photoseg: " + remote_message(err)


def album_filter(folder, roots):
    """The Query filter for `folder` (its absolute path: the albums in it or below it), or None when no
    watched root holds it."""
    folder = os.path.normpath(folder)
    for root in roots:
        root = os.path.normpath(root)
        if folder == root or folder.startswith(root.rstrip("/") + "/"):
            return folder
    return None


class Search:
    """One "find EXPR in FOLDER" run: ListRoots then Query, asynchronous; calls done(result, error)."""

    def __init__(self, folder, expression, done, bus=None):
        self.folder = folder
        self.expression = expression
        self.done = done
        self.bus = bus

    def start(self):
        if self.bus is None:
            Gio.bus_get(Gio.BusType.SESSION, None, self._on_bus)
        else:
            self._call(LIST_ROOTS, None, self._on_roots)

    def _on_bus(self, source, result):
        try:
            self.bus = Gio.bus_get_finish(result)
        except GLib.Error as e:
            self.done(None, explain_error(e))
            return
        self._call(LIST_ROOTS, None, self._on_roots)

    def _call(self, method, args, then):
        name, in_sig, out_sig = method
        params = GLib.Variant(in_sig, args) if in_sig else None

        def finish(bus, result):
            try:
                reply = bus.call_finish(result)
            except GLib.Error as e:
                self.done(None, explain_error(e))
                return
            then(reply.unpack())

        self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, name, params, GLib.VariantType(out_sig),
                      Gio.DBusCallFlags.NONE, CALL_TIMEOUT_MS, None, finish)

    def _on_roots(self, reply):
        (roots,) = reply
        name = album_filter(self.folder, roots)
        if name is None:
            self.done(None, "photoseg does not watch this folder; add it with: photoseg index %s" % self.folder)
            return
        self._call(QUERY, (self.expression, [name]), self._on_answer)

    def _on_answer(self, reply):
        (text,) = reply
        try:
            answer = json.loads(text)
        except ValueError as e:
            self.done(None, "photoseg: the daemon's answer is not JSON (%s)" % e)
            return
        # The daemon keeps only the albums in the folder (by path, links resolved): no second filter here.
        self.done({"expression": answer.get("expression", self.expression), "albums": answer.get("albums", [])},
                  None)


def summary(result):
    """Lines of the result window: one per found photo, then the counts."""
    found = []
    rejected = unindexed = 0
    for album in result["albums"]:
        rejected += album.get("rejected", 0)
        unindexed += album.get("unindexed", 0)
        for p in album.get("positives", []):
            share = 100.0 * p.get("mask_area", 0) / max(1, p.get("width", 0) * p.get("height", 0))
            found.append((p["score"], p["path"], share))
    found.sort(key=lambda f: -f[0])
    counts = "%d found, %d without it" % (len(found), rejected)
    if unindexed:
        counts += ", %d not indexed yet" % unindexed
    return found, counts


class ResultWindow(Gtk.Window):
    def __init__(self, folder, expression):
        super().__init__(title="photoseg: “%s” in %s" % (expression, os.path.basename(folder) or folder))
        self.set_default_size(560, 420)
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        for side in ("top", "bottom", "start", "end"):
            getattr(box, "set_margin_" + side)(12)
        self.status = Gtk.Label(label="Looking for “%s”…" % expression, xalign=0)
        self.status.set_wrap(True)
        box.append(self.status)
        self.list = Gtk.ListBox()
        self.list.set_selection_mode(Gtk.SelectionMode.SINGLE)
        self.list.connect("row-activated", self._open)
        scroller = Gtk.ScrolledWindow(vexpand=True)
        scroller.set_child(self.list)
        box.append(scroller)
        self.set_child(box)
        self.paths = []
        self.expression = expression

    def show_result(self, result, error):
        if error is not None:
            self.status.set_text(error)
            return
        found, counts = summary(result)
        self.status.set_text(counts if found else "No “%s” here: %s" % (result["expression"], counts))
        for score, path, share in found:
            label = Gtk.Label(label="%s   (%.0f%% of the photo, score %.2f)" % (path, share, score), xalign=0)
            label.set_ellipsize(3)  # Pango.EllipsizeMode.END
            self.list.append(label)
            self.paths.append(path)

    def _open(self, listbox, row):
        path = self.paths[row.get_index()]
        name, in_sig, out_sig = OPEN

        def opened(bus, result):
            try:
                bus.call_finish(result)
            except GLib.Error:
                # No daemon to remember the expression: open the photo all the same.
                uri = Gio.File.new_for_path(path).get_uri()
                Gio.AppInfo.launch_default_for_uri_async(uri, None, None, None, None)

        def on_bus(source, result):
            bus = Gio.bus_get_finish(result)
            bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, name, GLib.Variant(in_sig, (path, self.expression)),
                     GLib.VariantType(out_sig), Gio.DBusCallFlags.NONE, 30_000, None, opened)

        Gio.bus_get(Gio.BusType.SESSION, None, on_bus)


def ask_expression(folder, then):
    """A small dialog asking what to find; calls then(expression) on Find."""
    preset = os.environ.get("PHOTOSEG_NAUTILUS_EXPRESSION", "").strip()
    if preset:
        then(preset)
        return None
    win = Gtk.Window(title="Find in %s" % (os.path.basename(folder) or folder), modal=True)
    box = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    for side in ("top", "bottom", "start", "end"):
        getattr(box, "set_margin_" + side)(12)
    entry = Gtk.Entry(placeholder_text="What are you looking for? (e.g. my red bike)", hexpand=True)
    button = Gtk.Button(label="Find")
    button.add_css_class("suggested-action")

    def go(*args):
        text = entry.get_text().strip()
        if text:
            win.destroy()
            then(text)

    entry.connect("activate", go)
    button.connect("clicked", go)
    box.append(entry)
    box.append(button)
    win.set_child(box)
    win.present()
    return win


def find_in_folder(folder):
    """The menu action: ask, search, show. Returns the result window once shown (tests use it)."""
    windows = []

    def run(expression):
        win = ResultWindow(folder, expression)
        win.present()
        windows.append(win)
        Search(folder, expression, win.show_result).start()

    ask_expression(folder, run)
    return windows


class PhotosegMenuProvider(GObject.GObject, Nautilus.MenuProvider):
    def _item(self, folder_path):
        item = Nautilus.MenuItem(name="Photoseg::find_in_folder", label=LABEL,
                                 tip="Find photos in this folder by what they show (photoseg)")
        item.connect("activate", lambda *a: find_in_folder(folder_path))
        return item

    @staticmethod
    def _local_dir(info):
        location = info.get_location()
        path = location.get_path() if location is not None else None
        return path if path and info.is_directory() else None

    def get_background_items(self, current_folder):
        path = self._local_dir(current_folder)
        return [self._item(path)] if path else []

    def get_file_items(self, files):
        if len(files) != 1:
            return []
        path = self._local_dir(files[0])
        return [self._item(path)] if path else []
