# photoseg overlay for Eye of GNOME (eog 43, libpeas 1, GTK 3).
#
# For the photo on screen and an expression typed in the header bar, asks photoseg's daemon for the
# mask (org.photoseg.Photoseg1.GetMask, schema/org.photoseg.Photoseg1.xml) and shows it by dimming the
# rest of the photo and ringing the object in white and black, so the object keeps its own colours (a
# tint would turn a yellow object orange). Ctrl+F focuses the box; Esc clears the overlay wherever the
# focus is. docs/desktop.md says how it is installed, enabled and tested.
#
# How the overlay follows zoom and scroll: EogScrollView is a GtkOverlay whose main child is the
# drawing area eog paints the photo on. The plugin adds one more overlay child, a transparent
# GtkDrawingArea that lets every event through (pass-through), and paints the mask there with the same
# geometry eog uses for the photo (eog-scroll-view.c, eog_scroll_view_get_image_coords): the photo is
# scaled by the view's zoom to floor(size * zoom + 0.5), centred when it is smaller than the view,
# otherwise shifted by the scroll adjustments' values. The overlay is redrawn on zoom-changed, on the
# adjustments' value-changed and on size-allocate. Drawing after eog's own "draw" handler on its
# drawing area is not possible: that handler returns TRUE, which stops the signal. Swapping a tinted
# pixbuf into the view would change the photo eog saves, prints and copies.
#
# A photo opened from a photoseg search (GNOME Shell, KRunner, the Nautilus results window) arrives with
# its expression: the daemon remembers it, and the plugin asks (OpenedExpression) when it shows a photo
# with an empty box, fills the box and draws that mask.
#
# Environment: PHOTOSEG_EOG_EXPRESSION sets the expression at start (scripts);
# PHOTOSEG_EOG_DEBUG=1 logs each request, answer and overlay geometry on stderr ("photoseg-eog: ...").

import os
import sys

import cairo
import gi

gi.require_version("Gtk", "3.0")
gi.require_version("Eog", "3.0")
from gi.repository import Eog, GdkPixbuf, Gio, GLib, GObject, Gtk  # noqa: E402

BUS_NAME = "org.photoseg.Photoseg1"
OBJECT_PATH = "/org/photoseg/Photoseg1"
INTERFACE = "org.photoseg.Photoseg1"
# GetMask(s path, s expression, s format) -> (b found, u width, u height, ay data)
GET_MASK_IN = "(sss)"
GET_MASK_OUT = "(buuay)"
# The model may need a while on a large album; the call is asynchronous, so eog stays responsive.
CALL_TIMEOUT_MS = 120_000
# Outside the object: black at this alpha. The ring around it: black, then white next to the object,
# each RING_PX screen pixels wide.
DIM_ALPHA = 0.5
RING_PX = 1.5

DEBUG = os.environ.get("PHOTOSEG_EOG_DEBUG") == "1"


def log(msg):
    if DEBUG:
        print("photoseg-eog: " + msg, file=sys.stderr, flush=True)


def image_rect(zoom, img_w, img_h, alloc_w, alloc_h, hscroll, vscroll):
    """Where eog draws a photo of img_w x img_h: (x, y, scaled_w, scaled_h) in the view's pixels."""
    sw = int(img_w * zoom + 0.5)
    sh = int(img_h * zoom + 0.5)
    x = (alloc_w - sw) // 2 if sw <= alloc_w else -int(hscroll)
    y = (alloc_h - sh) // 2 if sh <= alloc_h else -int(vscroll)
    return x, y, sw, sh


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
    """A sentence for the user from a GLib.Error of a D-Bus call (never a traceback)."""
    remote = Gio.DBusError.get_remote_error(err) if Gio.DBusError.is_remote_error(err) else None
    msg = remote_message(err)
    if remote in (
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    ) or (remote or "").startswith("org.freedesktop.DBus.Error.Spawn"):
        return "photoseg daemon is not running (start it: systemctl --user start photoseg.service)"
    if remote == "org.freedesktop.DBus.Error.NoReply" or err.matches(Gio.io_error_quark(), Gio.IOErrorEnum.TIMED_OUT):
        return "photoseg daemon did not answer in time"
    if remote == "org.photoseg.Photoseg1.Error.OutsideRoots":
        return "this photo is not in a folder photoseg watches (add it: photoseg index FOLDER)"
    if remote == "org.photoseg.Photoseg1.Error.UnknownPhoto":
        return "photoseg does not know this photo yet (run: photoseg index)"
    if remote == "org.photoseg.Photoseg1.Error.NotIndexed":
        return "this photo is not indexed for the current model yet; try again once indexing is done"
    if remote == "org.photoseg.Photoseg1.Error.InvalidArgument":
        return "photoseg: " + msg
    return "photoseg: " + msg


def mask_surface_from_png(data, width, height):
    """An A8 cairo surface (255 = object) from GetMask's PNG bytes; raises ValueError if unusable."""
    loader = GdkPixbuf.PixbufLoader.new_with_type("png")
    try:
        loader.write(data)
        loader.close()
    except GLib.Error as e:
        raise ValueError("the daemon's mask is not a readable PNG: " + e.message)
    pb = loader.get_pixbuf()
    if pb.get_width() != width or pb.get_height() != height:
        raise ValueError(
            "the daemon's mask is %dx%d, it said %dx%d" % (pb.get_width(), pb.get_height(), width, height)
        )
    n = pb.get_n_channels()
    src = pb.get_pixels()
    src_stride = pb.get_rowstride()
    stride = cairo.ImageSurface.format_stride_for_width(cairo.FORMAT_A8, width)
    dst = bytearray(stride * height)
    area = 0
    for row in range(height):
        line = src[row * src_stride : row * src_stride + n * width : n]
        dst[row * stride : row * stride + width] = line
        area += width - line.count(0)
    surface = cairo.ImageSurface.create_for_data(dst, cairo.FORMAT_A8, width, height, stride)
    return surface, area


class PhotosegWindowActivatable(GObject.Object, Eog.WindowActivatable):
    window = GObject.Property(type=Eog.Window)

    def do_activate(self):
        self._view = self.window.get_view()
        self._handlers = []  # (object, handler id)
        self._adj_handlers = []
        self._mask = None  # (cairo surface, width, height) of the photo in self._mask_path
        self._mask_path = None
        self._cancellable = None
        self._proxy = None

        self._area = Gtk.DrawingArea()
        self._area.set_name("photoseg-overlay")
        # No GdkWindow of its own: pass-through only applies to the overlay's child window, and a
        # drawing area's own window would still take the clicks and drags eog needs for panning.
        self._area.set_has_window(False)
        self._area.connect("draw", self._on_draw)
        self._view.add_overlay(self._area)
        self._view.set_overlay_pass_through(self._area, True)
        self._view.reorder_overlay(self._area, 0)  # under eog's own overlay buttons
        self._area.show()

        self._status = Gtk.Label()
        self._status.set_name("photoseg-status")
        self._status.get_style_context().add_class("osd")
        self._status.set_halign(Gtk.Align.CENTER)
        self._status.set_valign(Gtk.Align.END)
        self._status.set_margin_bottom(12)
        self._status.set_line_wrap(True)
        self._status.set_no_show_all(True)
        self._view.add_overlay(self._status)
        self._view.set_overlay_pass_through(self._status, True)

        self._entry = Gtk.SearchEntry()
        self._entry.set_name("photoseg-entry")
        self._entry.set_placeholder_text("Find in photo…")
        self._entry.set_tooltip_text("photoseg: type what to find in this photo and press Enter")
        self._entry.set_width_chars(30)  # "the yellow circle at the bottom" fits
        self._entry.connect("activate", self._on_entry_activate)
        self._entry.connect("stop-search", self._on_entry_clear)
        self._place_entry()
        self._entry.show()
        # The new entry must not take the keyboard from the photo (arrows browse, +/- zoom).
        GLib.idle_add(self._focus_view)

        self._connect(self.window, "key-press-event", self._on_key)
        self._connect(self._view, "zoom-changed", lambda *a: self._area.queue_draw())
        self._connect(self._view, "size-allocate", lambda *a: self._area.queue_draw())
        self._connect(self._view, "notify::image", self._on_image_changed)
        self._connect(self._view, "notify::hadjustment", self._watch_adjustments)
        self._connect(self._view, "notify::vadjustment", self._watch_adjustments)
        self._watch_adjustments()

        expression = os.environ.get("PHOTOSEG_EOG_EXPRESSION", "").strip()
        if expression:
            self._entry.set_text(expression)
        log("activated")
        self._request()

    def do_deactivate(self):
        if self._cancellable is not None:
            self._cancellable.cancel()
        for obj, hid in self._handlers + self._adj_handlers:
            obj.disconnect(hid)
        self._handlers = []
        self._adj_handlers = []
        self._area.destroy()
        self._status.destroy()
        self._entry.destroy()
        self._mask = None
        log("deactivated")

    # --- widgets ---

    def _connect(self, obj, signal, handler):
        self._handlers.append((obj, obj.connect(signal, handler)))

    def _place_entry(self):
        """In eog's header bar (a HdyHeaderBar, packed at its end) or, failing that, over the view."""
        bar = self._find_header_bar(self.window)
        if bar is not None:
            bar.add(self._entry)
            bar.child_set_property(self._entry, "pack-type", Gtk.PackType.END)
            return
        self._entry.set_halign(Gtk.Align.END)
        self._entry.set_valign(Gtk.Align.START)
        self._entry.set_margin_top(6)
        self._entry.set_margin_end(6)
        self._view.add_overlay(self._entry)

    @staticmethod
    def _find_header_bar(widget):
        if GObject.type_name(widget) in ("HdyHeaderBar", "GtkHeaderBar"):
            return widget
        if isinstance(widget, Gtk.Container):
            for child in widget.get_children():
                found = PhotosegWindowActivatable._find_header_bar(child)
                if found is not None:
                    return found
        return None

    def _focus_view(self):
        self._view.grab_focus()
        return False

    def _watch_adjustments(self, *args):
        for obj, hid in self._adj_handlers:
            obj.disconnect(hid)
        self._adj_handlers = []
        for adj in (self._view.get_hadjustment(), self._view.get_vadjustment()):
            if adj is not None:
                hid = adj.connect("value-changed", lambda *a: self._area.queue_draw())
                self._adj_handlers.append((adj, hid))

    def _say(self, text):
        log("status: " + (text or ""))
        if text:
            self._status.set_text(text)
            self._status.show()
        else:
            self._status.hide()

    # --- requests ---

    def _on_key(self, window, event):
        """Ctrl+F: to the box. Esc with an overlay: clear it, wherever the focus is (eog would otherwise
        leave fullscreen or close the window). Other keys are eog's."""
        from gi.repository import Gdk

        ctrl = event.state & Gdk.ModifierType.CONTROL_MASK
        if ctrl and event.keyval in (Gdk.KEY_f, Gdk.KEY_F):
            self._entry.grab_focus()
            log("key: Ctrl+F, box focused")
            return True
        if event.keyval == Gdk.KEY_Escape and self._entry.get_text():
            self._entry.set_text("")
            self._request()
            self._focus_view()
            log("key: Esc, overlay cleared")
            return True
        return False

    def _on_entry_activate(self, entry):
        self._request()
        self._focus_view()

    def _on_entry_clear(self, entry):
        entry.set_text("")
        self._request()

    def _on_image_changed(self, *args):
        self._request()

    def _current_path(self):
        image = self._view.get_image()
        if image is None:
            return None, None
        gfile = image.get_file()
        return image, (gfile.get_path() if gfile is not None else None)

    def _request(self):
        if self._cancellable is not None:
            self._cancellable.cancel()
            self._cancellable = None
        self._mask = None
        self._mask_path = None
        self._area.queue_draw()
        expression = self._entry.get_text().strip()
        image, path = self._current_path()
        if image is None:
            self._say(None)
            return
        if not expression:
            self._say(None)
            if path is not None:
                self._ask_opened(path)
            return
        if path is None:
            self._say("photoseg only searches photos on this computer")
            return
        self._say("Looking for “%s”…" % expression)
        self._cancellable = Gio.Cancellable()
        cancellable = self._cancellable
        args = GLib.Variant(GET_MASK_IN, (path, expression, "png"))
        log("GetMask %r %r" % (path, expression))
        self._with_proxy(cancellable, lambda: self._call(args, path, expression, cancellable), self._say)

    def _with_proxy(self, cancellable, then, on_error):
        """Runs `then` once the daemon's proxy exists; `on_error(sentence)` when it cannot be made."""
        if self._proxy is not None:
            then()
            return

        def on_proxy(source, result):
            try:
                self._proxy = Gio.DBusProxy.new_for_bus_finish(result)
            except GLib.Error as e:
                if not cancellable.is_cancelled():
                    on_error(explain_error(e))
                return
            then()

        Gio.DBusProxy.new_for_bus(
            Gio.BusType.SESSION,
            Gio.DBusProxyFlags.DO_NOT_LOAD_PROPERTIES | Gio.DBusProxyFlags.DO_NOT_CONNECT_SIGNALS,
            None,
            BUS_NAME,
            OBJECT_PATH,
            INTERFACE,
            cancellable,
            on_proxy,
        )

    def _ask_opened(self, path):
        """A photo opened from a photoseg search (GNOME, KRunner, Nautilus) comes with its expression:
        the daemon remembers it (OpenedExpression); put it in the box and draw its mask. Photos opened
        any other way, or no daemon at all, show nothing and say nothing."""
        self._cancellable = Gio.Cancellable()
        cancellable = self._cancellable

        def done(proxy, result):
            if cancellable.is_cancelled():
                return
            try:
                found, expression = proxy.call_finish(result).unpack()
            except GLib.Error as e:
                log("OpenedExpression failed: %s" % e.message)
                return
            log("OpenedExpression %r -> %r %r" % (path, found, expression))
            if found and expression and not self._entry.get_text().strip() and self._current_path()[1] == path:
                self._entry.set_text(expression)
                self._request()

        def call():
            self._proxy.call("OpenedExpression", GLib.Variant("(s)", (path,)), Gio.DBusCallFlags.NONE, 10_000,
                             cancellable, done)

        self._with_proxy(cancellable, call, lambda sentence: log("no daemon: " + sentence))

    def _call(self, args, path, expression, cancellable):
        def done(proxy, result):
            if cancellable.is_cancelled():
                return
            try:
                reply = proxy.call_finish(result)
            except GLib.Error as e:
                log("GetMask failed: %s" % e.message)
                self._say(explain_error(e))
                return
            self._on_mask(reply, path, expression)

        self._proxy.call("GetMask", args, Gio.DBusCallFlags.NONE, CALL_TIMEOUT_MS, cancellable, done)

    def _on_mask(self, reply, path, expression):
        if reply.get_type_string() != GET_MASK_OUT:
            self._say("photoseg: the daemon answered %s, expected %s" % (reply.get_type_string(), GET_MASK_OUT))
            return
        found = reply.get_child_value(0).get_boolean()
        width = reply.get_child_value(1).get_uint32()
        height = reply.get_child_value(2).get_uint32()
        log("mask found=%d %dx%d" % (found, width, height))
        if not found:
            self._say("No “%s” in this photo" % expression)
            return
        data = reply.get_child_value(3).get_data_as_bytes().get_data()
        try:
            surface, area = mask_surface_from_png(data, width, height)
        except ValueError as e:
            self._say("photoseg: %s" % e)
            return
        self._mask = (surface, width, height)
        self._mask_path = path
        share = 100.0 * area / max(1, width * height)
        log("mask area=%d" % area)
        self._say("“%s”: %.1f%% of the photo" % (expression, share) if area else "“%s”: found, but the mask is empty" % expression)
        self._area.queue_draw()

    # --- drawing ---

    def _on_draw(self, widget, cr):
        if self._mask is None:
            return False
        image, path = self._current_path()
        if image is None or path != self._mask_path:
            return False
        pixbuf = image.get_pixbuf()
        if pixbuf is None:
            return False
        surface, mw, mh = self._mask
        iw, ih = pixbuf.get_width(), pixbuf.get_height()
        if (iw, ih) != (mw, mh):
            # The user rotated or flipped the photo in eog: the mask is of the upright photo.
            log("photo shown as %dx%d, mask is %dx%d: not drawn" % (iw, ih, mw, mh))
            return False
        zoom = self._view.get_zoom()
        alloc = widget.get_allocation()
        hadj, vadj = self._view.get_hadjustment(), self._view.get_vadjustment()
        x, y, sw, sh = image_rect(
            zoom, iw, ih, alloc.width, alloc.height,
            hadj.get_value() if hadj else 0, vadj.get_value() if vadj else 0,
        )
        log("drawn zoom=%.4f x=%d y=%d w=%d h=%d view=%dx%d" % (zoom, x, y, sw, sh, alloc.width, alloc.height))
        cr.rectangle(x, y, sw, sh)
        cr.clip()
        cr.translate(x, y)
        cr.scale(zoom, zoom)  # as eog scales the photo
        pattern = cairo.SurfacePattern(surface)
        pattern.set_filter(cairo.FILTER_NEAREST if zoom >= 1 else cairo.FILTER_GOOD)

        def mask_at(dx, dy):
            m = cairo.Matrix(x0=-dx, y0=-dy)
            pattern.set_matrix(m)
            cr.mask(pattern)

        cr.push_group()
        # The ring: the mask spread by 2 RING_PX in black, by RING_PX in white, in screen pixels.
        for width, rgb in ((2 * RING_PX, (0, 0, 0)), (RING_PX, (1, 1, 1))):
            d = width / zoom
            cr.set_source_rgb(*rgb)
            for dx, dy in ((d, 0), (-d, 0), (0, d), (0, -d), (d, d), (-d, -d), (d, -d), (-d, d)):
                mask_at(dx, dy)
        # The dim, under the ring and outside the object.
        cr.set_operator(cairo.OPERATOR_DEST_OVER)
        cr.set_source_rgba(0, 0, 0, DIM_ALPHA)
        cr.paint()
        # Nothing over the object itself.
        cr.set_operator(cairo.OPERATOR_DEST_OUT)
        cr.set_source_rgba(0, 0, 0, 1)
        mask_at(0, 0)
        pattern.set_matrix(cairo.Matrix())
        cr.pop_group_to_source()
        cr.paint()
        return False
