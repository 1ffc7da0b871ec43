#!/usr/bin/python3
"""A stand-in for `photoseg daemon` that serves org.photoseg.Photoseg1 with the interface description
from schema/org.photoseg.Photoseg1.xml, so GDBus itself refuses a call whose signature differs from
the XML. It records every call it gets as one JSON line in $FAKE_PHOTOSEG_LOG.

Used only by the client tests that check call formats (tests/it/nautilus_plugin.rs); the eog overlay test
runs the real daemon.

Answers: GetMask -> a disc in the middle of a WIDTHxHEIGHT photo (FAKE_PHOTOSEG_SIZE, default 160x100),
as PNG; ListRoots -> FAKE_PHOTOSEG_ROOTS (':'-separated); Query -> JSON version 1 with one album per
folder in a root whose name contains a filter, each with one positive a.png and one rejected photo;
Open -> nothing (recorded only).
An expression "boom" gets org.photoseg.Photoseg1.Error.NotIndexed.
"""
import json
import os
import sys

import gi

gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, Gio, GLib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
XML = os.path.join(HERE, "..", "..", "schema", "org.photoseg.Photoseg1.xml")


def disc_png(w, h):
    data = bytearray(w * h * 3)
    cx, cy, r = w / 2, h / 2, min(w, h) / 3
    for y in range(h):
        for x in range(w):
            if (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r:
                i = (y * w + x) * 3
                data[i : i + 3] = b"\xff\xff\xff"
    pb = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(bytes(data)), GdkPixbuf.Colorspace.RGB, False, 8, w, h, w * 3)
    ok, buf = pb.save_to_bufferv("png", [], [])
    return bytes(buf)


def main():
    node = Gio.DBusNodeInfo.new_for_xml(open(XML).read())
    iface = node.lookup_interface("org.photoseg.Photoseg1")
    w, h = (int(v) for v in os.environ.get("FAKE_PHOTOSEG_SIZE", "160x100").split("x"))
    log_path = os.environ.get("FAKE_PHOTOSEG_LOG")
    roots = [r for r in os.environ.get("FAKE_PHOTOSEG_ROOTS", "").split(":") if r]
    loop = GLib.MainLoop()

    def record(method, params):
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps({"method": method, "signature": params.get_type_string(), "args": params.unpack()}) + "\n")

    def on_call(conn, sender, path, interface, method, params, invocation):
        record(method, params)
        if method == "GetMask":
            photo, expression, fmt = params.unpack()
            if expression == "boom":
                invocation.return_dbus_error("org.photoseg.Photoseg1.Error.NotIndexed", "not indexed: " + photo)
                return
            invocation.return_value(GLib.Variant("(buuay)", (True, w, h, disc_png(w, h))))
        elif method == "Open":
            invocation.return_value(None)
        elif method == "ListRoots":
            invocation.return_value(GLib.Variant("(as)", (roots,)))
        elif method == "Query":
            expression, filters = params.unpack()
            albums = []
            for root in roots:
                for name in sorted(os.listdir(root)):
                    album = os.path.join(root, name)
                    # The daemon's rule: a name filter is a substring of the album's name, an absolute
                    # path the albums in that folder or below it.
                    def wanted(f):
                        if os.path.isabs(f):
                            return album == os.path.normpath(f) or album.startswith(os.path.normpath(f).rstrip("/") + "/")
                        return f.lower() in name.lower()

                    if os.path.isdir(album) and (not filters or any(wanted(f) for f in filters)):
                        albums.append({
                            "album": album,
                            "name": name,
                            "photos": 2,
                            "positives": [
                                {"path": os.path.join(album, "a.png"), "score": 0.5, "mask_area": 10, "width": 4,
                                 "height": 4, "mask": {"size": [4, 4], "counts": "05;0"}}
                            ],
                            "rejected": 1,
                            "unindexed": 0,
                            "from_index": False,
                        })
            answer = {"version": 1, "expression": expression, "model": "fake", "albums": albums}
            invocation.return_value(GLib.Variant("(s)", (json.dumps(answer),)))
        else:
            invocation.return_dbus_error("org.photoseg.Photoseg1.Error.Failed", "fake: " + method + " not served")

    def on_bus(conn, name):
        conn.register_object("/org/photoseg/Photoseg1", iface, on_call, None, None)

    def on_name(conn, name):
        print("fake photoseg: serving", name, flush=True)

    def on_lost(conn, name):
        print("fake photoseg: lost", name, file=sys.stderr, flush=True)
        loop.quit()

    Gio.bus_own_name(Gio.BusType.SESSION, "org.photoseg.Photoseg1", Gio.BusNameOwnerFlags.NONE, on_bus, on_name, on_lost)
    loop.run()


if __name__ == "__main__":
    main()
