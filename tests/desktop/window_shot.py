#!/usr/bin/python3
"""Saves what one X window shows, for tests/desktop/nautilus_check.py, whose GTK 4 process cannot
load GTK 3's Gdk (the one with Gdk.pixbuf_get_from_window). Reads lines "XID PATH" on stdin, saves the
window's pixels as it is on screen (Xvfb has no compositor) to PATH as PNG, answers "ok WIDTH HEIGHT"
or "error: WHY" on stdout, one line each, until stdin ends. DISPLAY names the X server.
"""
import sys

import gi

gi.require_version("Gdk", "3.0")
gi.require_version("GdkX11", "3.0")
from gi.repository import Gdk, GdkX11  # noqa: E402


def main():
    Gdk.set_allowed_backends("x11")
    if not Gdk.init_check([])[0]:
        print("error: cannot open the display", flush=True)
        return
    display = Gdk.Display.get_default()
    for line in sys.stdin:
        xid, _, path = line.rstrip("\n").partition(" ")
        try:
            win = GdkX11.X11Window.foreign_new_for_display(display, int(xid))
            if win is None:
                raise ValueError("no window %s" % xid)
            pb = Gdk.pixbuf_get_from_window(win, 0, 0, win.get_width(), win.get_height())
            if pb is None:
                raise ValueError("window %s cannot be read" % xid)
            pb.savev(path, "png", [], [])
            print("ok %d %d" % (pb.get_width(), pb.get_height()), flush=True)
        except Exception as e:  # the caller fails with the reason
            print("error: %s" % e, flush=True)


if __name__ == "__main__":
    main()
