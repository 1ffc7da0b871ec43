# photoseg for Nautilus (nautilus-python 4, Nautilus 43+, GTK 4): a "Find in this folder…" menu item on
# a folder's background and on a selected folder. It asks for an expression, queries photoseg's daemon
# (org.photoseg.Photoseg1, schema/org.photoseg.Photoseg1.xml) over the albums in that folder and lists
# the photos found (best first, with the mask's share of the photo) and how many were rejected. Each
# found photo has a thumbnail with its mask drawn as the eog plugin draws it (the object in its own
# colours, the rest dimmed, a white and black ring): the photo is read and the mask asked for
# (GetMask) asynchronously, one photo after the other, so the window stays responsive.
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
import sys

import cairo
import gi

gi.require_version("Gdk", "4.0")
gi.require_version("GdkPixbuf", "2.0")
gi.require_version("Gtk", "4.0")
gi.require_version("Nautilus", "4.0")
gi.require_version("Pango", "1.0")
from gi.repository import Gdk, GdkPixbuf, Gio, GLib, GObject, Gtk, Nautilus, Pango  # noqa: E402

BUS_NAME = "org.photoseg.Photoseg1"
OBJECT_PATH = "/org/photoseg/Photoseg1"
INTERFACE = "org.photoseg.Photoseg1"
# Signatures from schema/org.photoseg.Photoseg1.xml.
LIST_ROOTS = ("ListRoots", None, "(as)")
QUERY = ("Query", "(sas)", "(s)")
OPEN = ("Open", "(ss)", "()")
GET_MASK = ("GetMask", "(sss)", "(buuay)")
CALL_TIMEOUT_MS = 300_000
LABEL = "Find in this folder…"
# The box a result's thumbnail fits in, in pixels.
THUMB_W, THUMB_H = 160, 120
# The eog plugin's look (plugins/eog/photoseg.py): outside the object, black at DIM_ALPHA; around it a
# ring, black then white next to the object, each RING_PX pixels wide.
DIM_ALPHA = 0.5
RING_PX = 1.5


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
            found.append((p["score"], p["path"], share, p.get("width", 0), p.get("height", 0)))
    found.sort(key=lambda f: -f[0])
    counts = "%d found, %d without it" % (len(found), rejected)
    if unindexed:
        counts += ", %d not indexed yet" % unindexed
    return found, counts


def mask_surface(data, width, height):
    """An A8 cairo surface (255 = object) of `width` x `height` from GetMask's PNG bytes, scaled while
    it is decoded (the blended edge becomes partial alpha); raises ValueError when it is unusable."""
    loader = GdkPixbuf.PixbufLoader.new_with_type("png")
    loader.set_size(width, height)
    try:
        loader.write(data)
        loader.close()
    except GLib.Error as e:
        raise ValueError("the daemon's mask is not a readable PNG: " + e.message)
    pb = loader.get_pixbuf()
    if (pb.get_width(), pb.get_height()) != (width, height):
        raise ValueError("the daemon's mask is %dx%d, not %dx%d" % (pb.get_width(), pb.get_height(), width, height))
    n, src, src_stride = pb.get_n_channels(), pb.get_pixels(), pb.get_rowstride()
    stride = cairo.ImageSurface.format_stride_for_width(cairo.FORMAT_A8, width)
    dst = bytearray(stride * height)
    for row in range(height):
        dst[row * stride : row * stride + width] = src[row * src_stride : row * src_stride + n * width : n]
    return cairo.ImageSurface.create_for_data(dst, cairo.FORMAT_A8, width, height, stride)


def draw_thumbnail(photo, mask):
    """A Gdk.Texture of `photo` (a GdkPixbuf) with the object in its own colours, the rest dimmed (black
    at DIM_ALPHA) and a ring around the object, white inside black: the eog plugin's look. `mask` is an
    A8 surface of the photo's size, or None (the photo as it is)."""
    w, h = photo.get_width(), photo.get_height()
    surface = cairo.ImageSurface(cairo.FORMAT_ARGB32, w, h)
    cr = cairo.Context(surface)
    Gdk.cairo_set_source_pixbuf(cr, photo, 0, 0)
    cr.paint()
    if mask is not None:
        pattern = cairo.SurfacePattern(mask)

        def mask_at(dx, dy):
            pattern.set_matrix(cairo.Matrix(x0=-dx, y0=-dy))
            cr.mask(pattern)

        cr.push_group()
        for width, rgb in ((2 * RING_PX, (0, 0, 0)), (RING_PX, (1, 1, 1))):
            cr.set_source_rgb(*rgb)
            for dx, dy in ((width, 0), (-width, 0), (0, width), (0, -width),
                           (width, width), (-width, -width), (width, -width), (-width, width)):
                mask_at(dx, dy)
        cr.set_operator(cairo.OPERATOR_DEST_OVER)
        cr.set_source_rgba(0, 0, 0, DIM_ALPHA)
        cr.paint()
        cr.set_operator(cairo.OPERATOR_DEST_OUT)
        cr.set_source_rgba(0, 0, 0, 1)
        mask_at(0, 0)
        cr.pop_group_to_source()
        cr.paint()
    surface.flush()
    # cairo's ARGB32 is premultiplied, native-endian: B, G, R, A in memory on little-endian machines.
    fmt = Gdk.MemoryFormat.B8G8R8A8_PREMULTIPLIED if sys.byteorder == "little" else Gdk.MemoryFormat.A8R8G8B8_PREMULTIPLIED
    return Gdk.MemoryTexture.new(w, h, fmt, GLib.Bytes.new(bytes(surface.get_data())), surface.get_stride())


def fit(width, height, box_w, box_h):
    """The size of a width x height photo scaled to fit box_w x box_h (never enlarged)."""
    scale = min(1.0, box_w / max(1, width), box_h / max(1, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class Thumbnails:
    """Loads the result window's thumbnails one after the other, off the main loop's critical path: the
    photo is read and scaled asynchronously (GdkPixbuf from a Gio stream), the mask comes from the
    daemon (GetMask, asynchronous); each thumbnail is shown as soon as both are there. cancel() stops
    the rest (the window closed)."""

    def __init__(self, expression, jobs):
        self.expression = expression
        self.jobs = list(jobs)  # (path, width, height, Gtk.Picture)
        self.cancellable = Gio.Cancellable()
        self.bus = None

    def start(self):
        Gio.bus_get(Gio.BusType.SESSION, self.cancellable, self._on_bus)

    def cancel(self):
        self.cancellable.cancel()

    def _on_bus(self, source, result):
        try:
            self.bus = Gio.bus_get_finish(result)
        except GLib.Error:
            self.bus = None  # thumbnails without masks
        self._next()

    def _next(self):
        if self.cancellable.is_cancelled() or not self.jobs:
            return
        path, width, height, picture = self.jobs.pop(0)
        tw, th = fit(width, height, THUMB_W, THUMB_H)
        job = {"photo": None, "mask": None, "pending": 2, "error": None}

        def settle():
            job["pending"] -= 1
            if job["pending"]:
                return
            if self.cancellable.is_cancelled():
                return
            photo = job["photo"]
            if photo is not None:
                if (photo.get_width(), photo.get_height()) != (tw, th):
                    photo = photo.scale_simple(tw, th, GdkPixbuf.InterpType.BILINEAR)
                picture.set_paintable(draw_thumbnail(photo, job["mask"]))
            if job["error"]:
                picture.set_tooltip_text(job["error"])
            self._next()

        self._load_photo(path, tw, th, job, settle)
        self._load_mask(path, tw, th, job, settle)

    def _load_photo(self, path, tw, th, job, settle):
        def on_pixbuf(source, result):
            try:
                pb = GdkPixbuf.Pixbuf.new_from_stream_finish(result)
                job["photo"] = pb.apply_embedded_orientation() or pb
            except GLib.Error as e:
                job["error"] = "cannot read the photo: %s" % e.message
            settle()

        def on_stream(gfile, result):
            try:
                stream = gfile.read_finish(result)
            except GLib.Error as e:
                job["error"] = "cannot read the photo: %s" % e.message
                settle()
                return
            # Stored sideways (EXIF orientation 5 to 8), the photo is read with its sides swapped.
            side = max(tw, th)
            GdkPixbuf.Pixbuf.new_from_stream_at_scale_async(stream, side, side, True, self.cancellable, on_pixbuf)

        Gio.File.new_for_path(path).read_async(GLib.PRIORITY_LOW, self.cancellable, on_stream)

    def _load_mask(self, path, tw, th, job, settle):
        if self.bus is None:
            settle()
            return

        def on_reply(bus, result):
            try:
                reply = bus.call_finish(result)
                found = reply.get_child_value(0).get_boolean()
                data = reply.get_child_value(3).get_data_as_bytes().get_data()
                if found:
                    job["mask"] = mask_surface(data, tw, th)
            except GLib.Error as e:
                job["error"] = explain_error(e)
            except ValueError as e:
                job["error"] = "photoseg: %s" % e
            settle()

        name, in_sig, out_sig = GET_MASK
        self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, name, GLib.Variant(in_sig, (path, self.expression, "png")),
                      GLib.VariantType(out_sig), Gio.DBusCallFlags.NONE, CALL_TIMEOUT_MS, self.cancellable, on_reply)


class ResultWindow(Gtk.Window):
    def __init__(self, folder, expression):
        super().__init__(title="photoseg: “%s” in %s" % (expression, os.path.basename(folder) or folder))
        self.set_default_size(600, 480)
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
        self.pictures = []
        self.expression = expression
        self.thumbnails = None
        self.connect("destroy", lambda *a: self.thumbnails and self.thumbnails.cancel())

    def show_result(self, result, error):
        if error is not None:
            self.status.set_text(error)
            return
        found, counts = summary(result)
        self.status.set_text(counts if found else "No “%s” here: %s" % (result["expression"], counts))
        jobs = []
        for score, path, share, width, height in found:
            row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
            # The thumbnail at its own size, centred in a place kept for it while it loads (the rows do
            # not jump).
            place = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
            place.set_size_request(THUMB_W, THUMB_H)
            picture = Gtk.Picture(can_shrink=False, halign=Gtk.Align.CENTER, valign=Gtk.Align.CENTER, vexpand=True)
            picture.set_tooltip_text(path)
            place.append(picture)
            row.append(place)
            label = Gtk.Label(label="%s\n%.0f%% of the photo, score %.2f" % (os.path.basename(path), share, score),
                              xalign=0, hexpand=True)
            label.set_ellipsize(Pango.EllipsizeMode.MIDDLE)
            label.set_tooltip_text(path)
            row.append(label)
            self.list.append(row)
            self.paths.append(path)
            self.pictures.append(picture)
            jobs.append((path, width, height, picture))
        if jobs:
            self.thumbnails = Thumbnails(result["expression"], jobs)
            self.thumbnails.start()

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
