"""How a screenshot of a masked photo is judged, shared by the desktop checks in tests/desktop/
(eog_overlay_check.py, nautilus_check.py, open_in_eog_check.py, gnome_shell_check.py; no GTK here: a
screenshot is a GdkPixbuf, whichever GTK or GNOME Shell took it).

The test photo encodes its own coordinates in its colour: R = LO + SPAN x / (W - 1), G = LO + SPAN y /
(H - 1), B = BLUE (tests/it/common/desktop.rs, coded_photo, writes it). A screen pixel showing the photo
as it is has B ~ BLUE; dimmed (black at 50%, outside the object) B ~ BLUE / 2, R' = R / 2, G' = G / 2.
So every photo pixel on screen says which photo pixel it shows and whether it is dimmed, whatever the
scale, zoom or scroll, and is compared with the daemon's mask at that photo pixel, away from the mask's
edges (where scaling blends and the ring is drawn).
"""

# The photo's coordinate code (keep in step with tests/it/common/desktop.rs).
LO, SPAN, BLUE = 20, 215, 128

# The daemon whose mask is the truth a screenshot is judged against.
BUS_NAME = "org.photoseg.Photoseg1"
OBJECT_PATH = "/org/photoseg/Photoseg1"
INTERFACE = "org.photoseg.Photoseg1"


def daemon_mask(bus, photo, expression):
    """The daemon's own mask of `expression` in `photo` (GetMask, "png"): (width, height, rows of 0/1,
    None), or (width, height, None, why) when it finds nothing or its PNG is not the size it says."""
    from gi.repository import GdkPixbuf, Gio, GLib

    reply = bus.call_sync(BUS_NAME, OBJECT_PATH, INTERFACE, "GetMask", GLib.Variant("(sss)", (photo, expression, "png")),
                          GLib.VariantType("(buuay)"), Gio.DBusCallFlags.NONE, 300_000, None)
    found = reply.get_child_value(0).get_boolean()
    w = reply.get_child_value(1).get_uint32()
    h = reply.get_child_value(2).get_uint32()
    if not found:
        return w, h, None, "the daemon finds nothing for %r in %s" % (expression, photo)
    loader = GdkPixbuf.PixbufLoader.new_with_type("png")
    loader.write(reply.get_child_value(3).get_data_as_bytes().get_data())
    loader.close()
    pb = loader.get_pixbuf()
    if (pb.get_width(), pb.get_height()) != (w, h):
        return w, h, None, "GetMask PNG is %dx%d, the reply says %dx%d" % (pb.get_width(), pb.get_height(), w, h)
    px, n, stride = pb.get_pixels(), pb.get_n_channels(), pb.get_rowstride()
    return w, h, [[1 if px[y * stride + x * n] >= 128 else 0 for x in range(w)] for y in range(h)], None


def pixel_reader(pb):
    px, n, stride = pb.get_pixels(), pb.get_n_channels(), pb.get_rowstride()

    def at(x, y):
        i = y * stride + x * n
        return px[i], px[i + 1], px[i + 2]

    return at


def decode(rgb, w, h):
    """(u, v, dimmed) of the photo pixel a screen pixel shows, or None when it does not show the photo
    (the view's background, the ring around the object, grey text)."""
    r, g, b = rgb
    if abs(r - g) <= 3 and abs(g - b) <= 3:
        # Grey: the ring's black and white blended, or text. Only the photo's centre has this colour
        # (dimmed or not), so nothing is lost by not reading it.
        return None
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


def interior_map(mask, w, h, margin):
    """For each photo pixel (x, y), the mask's value if it is the same over x - margin .. x + margin + 1
    and y - margin .. y + margin + 1 (within the photo), else None: what a screen pixel that decodes to
    (x + a fraction, y + a fraction) is judged against, away from the mask's edges."""
    # Summed-area table: sums[y][x] is the number of mask pixels above and left of (x, y).
    sums = [[0] * (w + 1) for _ in range(h + 1)]
    for y in range(h):
        run = 0
        for x in range(w):
            run += mask[y][x]
            sums[y + 1][x + 1] = sums[y][x + 1] + run
    out = []
    for y in range(h):
        y0, y1 = max(0, y - margin), min(h - 1, y + margin + 1)
        row = []
        for x in range(w):
            x0, x1 = max(0, x - margin), min(w - 1, x + margin + 1)
            on = sums[y1 + 1][x1 + 1] - sums[y0][x1 + 1] - sums[y1 + 1][x0] + sums[y0][x0]
            row.append(0 if on == 0 else 1 if on == (x1 - x0 + 1) * (y1 - y0 + 1) else None)
        out.append(row)
    return out


def judge(pb, box, expected, w, h, step=2):
    """Compares whether every photo pixel on screen (inside `box`, every `step`-th one) is dimmed with the
    mask (`expected`, its interior_map). Returns (stats, None) when they agree, (stats, reason) when not."""
    at = pixel_reader(pb)
    x0, y0, x1, y1 = box
    stats = {"photo_px": 0, "in_ok": 0, "in_bad": 0, "out_ok": 0, "out_bad": 0, "edge": 0}
    us, vs = [], []
    bad_examples = []
    for sy in range(y0, y1, step):
        for sx in range(x0, x1, step):
            d = decode(at(sx, sy), w, h)
            if d is None:
                continue
            u, v, dimmed = d
            stats["photo_px"] += 1
            us.append(u)
            vs.append(v)
            # Decoding is exact to ~1 photo pixel as it is, ~2 dimmed; scaling blends ~1 more: 3 pixels.
            m = expected[int(v)][int(u)]
            if m is None:
                stats["edge"] += 1
                continue
            # The object shows as it is; everything else is dimmed.
            key = ("in_" if m else "out_") + ("ok" if dimmed != bool(m) else "bad")
            stats[key] += 1
            if key.endswith("bad") and len(bad_examples) < 5:
                bad_examples.append((sx, sy, at(sx, sy), round(u, 1), round(v, 1), m))
    if not us:
        return stats, "no photo pixel on screen"
    stats["u_span"] = (round(min(us), 1), round(max(us), 1))
    stats["v_span"] = (round(min(vs), 1), round(max(vs), 1))
    inside = stats["in_ok"] + stats["in_bad"]
    outside = stats["out_ok"] + stats["out_bad"]
    if inside < 50 or outside < 50:
        return stats, ("too few photo pixels away from the mask's edges to judge (inside %d, outside %d)"
                       % (inside, outside))
    if stats["in_ok"] < 0.99 * inside:
        return stats, ("%d of %d on-screen pixels inside the mask are dimmed; e.g. (x, y, rgb, u, v, mask) %s"
                       % (stats["in_bad"], inside, bad_examples))
    if stats["out_ok"] < 0.99 * outside:
        return stats, ("only %d of %d on-screen pixels outside the mask are dimmed; "
                       "e.g. (x, y, rgb, u, v, mask) %s" % (stats["out_ok"], outside, bad_examples))
    return stats, None
