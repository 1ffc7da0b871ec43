#!/usr/bin/python3
"""GNOME Shell's overview search as a person uses it, in the real GNOME Shell 43 (headless, one virtual
monitor), run by tests/it/gnome_shell.rs inside a private session bus (dbus-run-session with a config
that activates nothing):

    gnome_shell_check.py --expression EXPR --plugin-dir DIR --packaging DIR --extension-dir DIR --out DIR
                         -- DAEMON ARGS...

1. starts a stand-in system bus (GNOME Shell asks it for logind, accounts and the like and carries on
   without them), the daemon command after `--` (the real `photoseg daemon`) and waits for its name;
   asks the daemon itself for the answer to the whole expression (GetInitialResultSet: the photos the
   overview must list, 1 to 5 of them, all shown) and to its first letter (which must find nothing, so
   that typing starts from an empty answer);
2. installs what the package installs for GNOME Shell into a temporary XDG_DATA_DIRS entry (the search
   provider's .ini and photoseg.desktop from --packaging), the test-only extension from --extension-dir
   (it turns on unsafe mode, which opens org.gnome.Shell.Eval and org.gnome.Shell.Screenshot to this
   script) and the eog plugin, with settings in a GSettings keyfile (GSETTINGS_BACKEND=keyfile):
   the extension enabled, animations off, a plain desktop background, eog's plugin enabled with a pure
   green view background;
3. starts `gnome-shell --headless --wayland --no-x11 --virtual-monitor 1024x768`, opens the overview and
   types the expression one character at a time, TYPING_S apart, through a Clutter virtual keyboard
   (the keys go through the shell's own input path to the search entry); waits until the overview
   lists the daemon's answer, and checks on the provider's calls (dbus-monitor) that typing went
   through GetSubsearchResultSet with an empty previous list;
4. clears the search (Esc) and pastes the whole expression (on the shell's clipboard; the cursor put in
   the search entry, then Ctrl+V): the overview must list the same photos, after one
   GetInitialResultSet of the whole expression;
5. presses Enter on the first result: the shell calls ActivateResult, the daemon opens the photo with its
   opener, here a wrapper that starts eog (a Wayland client of this shell) with the plugin's debug log;
   the plugin gets the expression from the daemon (OpenedExpression) and draws the mask; a screenshot of
   the shell's screen shows eog's view with every photo pixel away from the mask's edges as it is iff the
   daemon's own mask (GetMask) covers it, and dimmed otherwise (tests/desktop/mask_judge.py).

The photo's opener is the one piece replaced: the product opens it with `gio open`, the desktop's default
viewer; the wrapper starts eog itself so that the plugin's log is kept.

How it waits: for states, never for fixed times (the keys are sent TYPING_S apart, which is the typing
being tested, not a wait). Each step asks the shell (Eval) or takes a screenshot every POLL_S until the
state it needs is there, and fails after a deadline with the last state seen.

Screenshots (--out): gnome-search-typed.png (the overview listing the results of the typed
expression), gnome-search-pasted.png, gnome-eog.png (eog opened from the overview, mask drawn).
Prints PASS, or FAIL: reason; exit status 0 only on PASS.
"""
import argparse
import json
import os
import re
import shutil
import sys
import time

import gi

gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, Gio, GLib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from eog_overlay_check import (EOG_SETTINGS, LogFile, Proc, eog_opener, fail, green_box,  # noqa: E402
                               install_plugin, note, opened_photos, stop_opened, wait_for, wait_for_name,
                               write_keyfile)
from mask_judge import daemon_mask, interior_map, judge  # noqa: E402

# The pause between two typed characters, in seconds: a person typing steadily, slower than the
# shell's 150 ms search timeout, so every character starts a search of its own.
TYPING_S = 0.25
# How often a state being waited for is looked at again, in seconds.
POLL_S = 0.1
SHELL_NAME = "org.gnome.Shell"
PROVIDER_PATH = "/org/photoseg/SearchProvider"
PROVIDER_IFACE = "org.gnome.Shell.SearchProvider2"
PROVIDER_ID = "photoseg.desktop"
EXTENSION_UUID = "photoseg-test@photoseg.invalid"
WAYLAND_DISPLAY = "photoseg-test-wayland"
# The overview's search results view and photoseg's part of it (GNOME Shell 43's js/ui/search.js).
RESULTS = "imports.ui.main.overview._overview._controls._searchController._searchResults"
# Keysyms (X11 keysymdef.h).
KEY_RETURN, KEY_ESCAPE, KEY_CONTROL_L, KEY_V = 0xFF0D, 0xFF1B, 0xFFE3, 0x76

# The stand-in system bus: the session bus's rules (tests/it/common/desktop.rs); without the eavesdrop
# rules a bus of the system type leaves its clients' connections hanging.
SYSTEM_BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class Shell:
    """GNOME Shell on the session bus: Eval (unsafe mode) and Screenshot."""

    def __init__(self, bus, proc):
        self.bus, self.proc = bus, proc

    def _check_alive(self):
        if self.proc.p.poll() is not None:
            fail("gnome-shell exited (status %s); its output:\n%s"
                 % (self.proc.p.returncode, "\n".join(self.proc.snapshot()[-40:])))

    def try_eval(self, code):
        """(True, value) for the JSON value of `code` evaluated in the shell, (False, why) otherwise."""
        self._check_alive()
        try:
            reply = self.bus.call_sync(SHELL_NAME, "/org/gnome/Shell", "org.gnome.Shell", "Eval",
                                       GLib.Variant("(s)", (code,)), GLib.VariantType("(bs)"),
                                       Gio.DBusCallFlags.NONE, 10_000, None)
        except GLib.Error as e:
            return False, e.message
        ok, text = reply.unpack()
        if not ok:
            return False, "Eval refused or raised: %r" % text
        return True, json.loads(text) if text else None

    def eval(self, code):
        ok, value = self.try_eval(code)
        if not ok:
            fail("the shell could not run %s: %s" % (code, value))
        return value

    def screenshot(self, path):
        self._check_alive()
        reply = self.bus.call_sync(SHELL_NAME, "/org/gnome/Shell/Screenshot", "org.gnome.Shell.Screenshot",
                                   "Screenshot", GLib.Variant("(bbs)", (False, False, path)),
                                   GLib.VariantType("(bs)"), Gio.DBusCallFlags.NONE, 30_000, None)
        ok, used = reply.unpack()
        if not ok:
            fail("org.gnome.Shell.Screenshot could not write %s" % path)
        return GdkPixbuf.Pixbuf.new_from_file(used)

    def keys(self, *events):
        """Sends (keysym, pressed) events through the test's Clutter virtual keyboard, in order."""
        js = ";".join("k.notify_keyval(G.get_monotonic_time(), %d, C.KeyState.%s)"
                      % (sym, "PRESSED" if down else "RELEASED") for sym, down in events)
        self.eval("(() => { const C = imports.gi.Clutter, G = imports.gi.GLib; const k = global._photosegKeys; "
                  "%s; return true; })()" % js)

    def tap(self, sym):
        self.keys((sym, True), (sym, False))

    def search_state(self):
        """What the overview shows: the entry's text, the terms searched, whether a search is running, the
        status line ("No results.", "Searching…"; empty while results show), photoseg's listed ids, the
        result Enter opens and the actor with the keyboard focus; {"error": why} when the shell could not
        say (its views are being rebuilt, e.g. when it reloads the search providers)."""
        ok, value = self.try_eval(
            "(() => { const r = %s; const p = r._providers.find(p => p.id === %s); "
            "const d = p && p.display; "
            "return { text: imports.ui.main.overview.searchEntry.get_text(), terms: r._terms, "
            "running: r.searchInProgress, status: r._statusBin.visible ? r._statusText.text : '', "
            "provider: !!p, listed: d && d.visible ? d._content.get_children().map(c => c.metaInfo.id) : [], "
            "default: r._defaultResult && r._defaultResult.metaInfo ? r._defaultResult.metaInfo.id : null, "
            "focus: global.stage.key_focus ? global.stage.key_focus.toString() : null }; })()"
            % (RESULTS, json.dumps(PROVIDER_ID)))
        return value if ok else {"error": value}


def provider_calls(log_path):
    """The search provider's method calls in dbus-monitor's log: (member, [string arrays]) each."""
    calls, current = [], None
    with open(log_path, errors="replace") as f:
        for line in f:
            if not line.startswith(" "):
                current = None
                m = re.search(r"member=(\w+)", line)
                if line.startswith("method call") and "interface=%s" % PROVIDER_IFACE in line and m:
                    current = (m.group(1), [])
                    calls.append(current)
            elif current is not None:
                s = line.strip()
                if s.startswith("array ["):
                    current[1].append([])
                elif s.startswith("string ") and current[1]:
                    current[1][-1].append(json.loads(s[len("string "):]))
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expression", required=True)
    ap.add_argument("--plugin-dir", required=True)
    ap.add_argument("--packaging", required=True)
    ap.add_argument("--extension-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("daemon", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    daemon_argv = a.daemon[1:] if a.daemon[:1] == ["--"] else a.daemon
    if not daemon_argv:
        fail("no daemon command after --")
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    expression = a.expression
    terms = expression.split()
    procs = []
    try:
        # The stand-in system bus.
        conf = os.path.join(out, "system-bus.conf")
        with open(conf, "w") as f:
            f.write(SYSTEM_BUS_CONF)
        system_bus = Proc("system bus", ["dbus-daemon", "--config-file", conf, "--nofork", "--print-address=1"])
        procs.append(system_bus)
        _, system_address = system_bus.wait_line("its address", lambda l: l.startswith("unix:"), 30)

        # What the package installs for GNOME Shell, the test extension, the eog plugin and the settings.
        share = os.path.join(out, "share")
        for sub, name in (("applications", "photoseg.desktop"),
                          ("gnome-shell/search-providers", "photoseg-search-provider.ini")):
            os.makedirs(os.path.join(share, sub), exist_ok=True)
            shutil.copy(os.path.join(a.packaging, name), os.path.join(share, sub))
        ext_dst = os.path.join(os.environ["XDG_DATA_HOME"], "gnome-shell", "extensions", EXTENSION_UUID)
        shutil.rmtree(ext_dst, ignore_errors=True)
        shutil.copytree(a.extension_dir, ext_dst)
        install_plugin(a.plugin_dir)
        write_keyfile(EOG_SETTINGS + "\n[org/gnome/shell]\nenabled-extensions=['%s']\n"
                      "welcome-dialog-last-shown-version='999'\n\n"
                      "[org/gnome/desktop/interface]\nenable-animations=false\n\n"
                      "[org/gnome/desktop/background]\npicture-options='none'\nprimary-color='#3d5a80'\n"
                      "color-shading-type='solid'\n" % EXTENSION_UUID)
        # The daemon's program on PATH, as the package's /usr/bin/photoseg is: GLib ignores a desktop entry
        # whose Exec program is not found, and the shell a search provider without its desktop entry.
        env = dict(os.environ, GSETTINGS_BACKEND="keyfile", NO_AT_BRIDGE="1", GTK_A11Y="none",
                   XDG_DATA_DIRS="%s:/usr/local/share:/usr/share" % share,
                   PATH="%s:%s" % (os.path.dirname(os.path.abspath(daemon_argv[0])), os.environ.get("PATH", "")))
        for k in ("DISPLAY", "WAYLAND_DISPLAY", "PHOTOSEG_EOG_EXPRESSION"):
            env.pop(k, None)

        # The daemon, whose opener starts eog on this shell's Wayland display with the plugin's log kept.
        opener = eog_opener(out)
        daemon_env = dict(env, PHOTOSEG_OPENER=opener, WAYLAND_DISPLAY=WAYLAND_DISPLAY, GDK_BACKEND="wayland",
                          GTK_THEME="Adwaita", PHOTOSEG_EOG_DEBUG="1")
        daemon = Proc("daemon", daemon_argv, env=daemon_env, out_path=os.path.join(out, "daemon.log"))
        procs.append(daemon)
        bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
        wait_for_name(bus, daemon, 120)
        note("the daemon is on the bus")

        def provider(method, args, sig, reply):
            return bus.call_sync("org.photoseg.Photoseg1", PROVIDER_PATH, PROVIDER_IFACE, method,
                                 GLib.Variant(sig, args), GLib.VariantType(reply), Gio.DBusCallFlags.NONE,
                                 300_000, None).unpack()[0]

        expected = provider("GetInitialResultSet", (terms,), "(as)", "(as)")
        first = provider("GetInitialResultSet", ([expression[0]],), "(as)", "(as)")
        note("the daemon's answer: %r -> %s; %r -> %s" % (expression, expected, expression[0], first))
        if not 1 <= len(expected) <= 5:
            fail("the daemon lists %d photos for %r; the check needs 1 to 5 (all shown in the overview)"
                 % (len(expected), expression))
        if first:
            fail("the daemon already finds %s for %r; typing must start from an empty answer" % (first, expression[0]))

        # Every call to the search provider, as the shell makes them.
        calls_log = os.path.join(out, "provider-calls.log")
        monitor = Proc("dbus-monitor", ["dbus-monitor", "--session",
                                        "type='method_call',interface='%s'" % PROVIDER_IFACE],
                       out_path=calls_log)
        procs.append(monitor)
        monitor.wait_line("its start", lambda l: "NameLost" in l or "NameAcquired" in l, 30)

        shell_proc = Proc("gnome-shell", ["gnome-shell", "--headless", "--wayland", "--no-x11", "--virtual-monitor",
                                          "1024x768", "--wayland-display", WAYLAND_DISPLAY],
                          env=dict(env, DBUS_SYSTEM_BUS_ADDRESS=system_address),
                          out_path=os.path.join(out, "gnome-shell.log"))
        procs.append(shell_proc)
        shell = Shell(bus, shell_proc)
        wait_for("GNOME Shell in unsafe mode (the test extension enabled)",
                 lambda: (lambda r: (r == (True, True), r))(shell.try_eval("global.context.unsafe_mode")), 120)
        version = shell.eval("imports.misc.config.PACKAGE_VERSION")
        note("GNOME Shell %s is up" % version)
        wait_for("photoseg's search provider in the overview",
                 lambda: (lambda s: (s.get("provider", False), s))(shell.search_state()), 30)
        shell.eval("imports.ui.main.overview.show(); global._photosegKeys = imports.gi.Clutter.get_default_backend()"
                   ".get_default_seat().create_virtual_device(imports.gi.Clutter.InputDeviceType.KEYBOARD_DEVICE); "
                   "true")
        wait_for("the overview shown",
                 lambda: (lambda v: (v == [True, False], v))(shell.eval(
                     "[imports.ui.main.overview.visible, imports.ui.main.overview.animationInProgress]")), 30)

        def lists(what, text, shot):
            def probe():
                s = shell.search_state()
                if s.get("text") == text and not s.get("running", True) and s.get("listed") == expected:
                    return True, s
                return False, s

            s = wait_for("%s: the overview lists the daemon's answer %s" % (what, expected), probe, 60)
            shell.screenshot(os.path.join(out, shot))
            note("%s: the overview lists %s (%s)" % (what, s["listed"], shot))
            return s

        # Typed one character at a time.
        for ch in expression:
            shell.tap(ord(ch))
            time.sleep(TYPING_S)
        typed = lists("typed", expression, "gnome-search-typed.png")

        def searches_in(calls):
            return [(m, args) for m, args in calls if m in ("GetInitialResultSet", "GetSubsearchResultSet")]

        def logged_calls(what, pred):
            """The provider's calls once dbus-monitor's log (written as the calls pass) satisfies pred."""
            def probe():
                calls = provider_calls(calls_log)
                return pred(calls), "the calls logged: %s" % [(m, args) for m, args in calls][-5:]

            wait_for("dbus-monitor's log of %s" % what, probe, 30)
            return provider_calls(calls_log)

        calls = logged_calls("the search for the whole typed expression",
                             lambda calls: any(args[-1:] == [terms] for _, args in searches_in(calls)))
        searches = searches_in(calls)
        note("typing sent %d searches: %s" % (len(searches), [(m, " ".join(args[-1])) for m, args in searches]))
        if not searches or searches[0] != ("GetInitialResultSet", [[expression[0]]]):
            fail("typing did not start with GetInitialResultSet([%r]): %s" % (expression[0], searches[:1]))
        if not any(m == "GetSubsearchResultSet" and args and not args[0] for m, args in searches):
            fail("typing never called GetSubsearchResultSet with an empty previous list; the check does not "
                 "reach the case it is about")
        n_calls = len(calls)

        # Cleared, then pasted at once.
        shell.tap(KEY_ESCAPE)
        wait_for("the search cleared by Esc", lambda: (lambda s: (s.get("text") == "" and s.get("terms") == [], s))(
            shell.search_state()), 30)
        # The expression on the shell's clipboard (as when it was copied elsewhere), read back until it is
        # there; the cursor in the search entry (a click on it), then Ctrl+V. (Ctrl+V typed with the focus
        # elsewhere starts a search but reaches the entry's text without the entry's paste.)
        shell.eval("imports.gi.St.Clipboard.get_default().set_text(imports.gi.St.ClipboardType.CLIPBOARD, %s); true"
                   % json.dumps(expression))

        def on_clipboard():
            got = shell.eval("(() => { const St = imports.gi.St; St.Clipboard.get_default().get_text("
                             "St.ClipboardType.CLIPBOARD, (c, t) => { global._photosegClipboard = t; }); "
                             "return global._photosegClipboard ?? null; })()")
            return got == expression, "the clipboard holds %r" % got

        wait_for("the expression on the shell's clipboard", on_clipboard, 30)

        def entry_focused():
            ok, focused = shell.try_eval("(() => { const e = imports.ui.main.overview.searchEntry; "
                                         "if (global.stage.key_focus !== e.clutter_text) e.grab_key_focus(); "
                                         "return global.stage.key_focus === e.clutter_text; })()")
            return ok and focused is True, shell.search_state()

        wait_for("the keyboard focus in the search entry", entry_focused, 30)
        shell.keys((KEY_CONTROL_L, True), (KEY_V, True), (KEY_V, False), (KEY_CONTROL_L, False))
        pasted = lists("pasted", expression, "gnome-search-pasted.png")
        pasted_calls = searches_in(logged_calls("the pasted expression's search",
                                                lambda calls: searches_in(calls[n_calls:]))[n_calls:])
        if pasted_calls[:1] != [("GetInitialResultSet", [terms])]:
            fail("pasting did not search once for the whole expression: %s" % pasted_calls)
        if typed["listed"] != pasted["listed"]:
            fail("typed lists %s, pasted %s" % (typed["listed"], pasted["listed"]))

        # Enter opens the first result; eog shows it with the mask of the expression.
        photo = pasted["listed"][0]
        if pasted["default"] != photo:
            fail("Enter would activate %r, not photoseg's first result %r" % (pasted["default"], photo))
        w, h, mask, why = daemon_mask(bus, photo, expression)
        if why:
            fail(why)
        interior = interior_map(mask, w, h, 3)
        shell.tap(KEY_RETURN)
        eog = LogFile("eog", os.path.join(out, "eog.log"))
        _, line = eog.wait_line("the plugin's answer from OpenedExpression",
                                lambda l: l.startswith("photoseg-eog: OpenedExpression "), 90)
        note("eog: " + line)
        if not line.endswith("-> True %r" % expression):
            fail("the plugin got %r from the daemon, not the expression %r" % (line, expression))
        _, line = eog.wait_line("a drawn overlay", lambda l: l.startswith("photoseg-eog: drawn "), 90)
        note("eog: " + line)
        activated = [(m, args) for m, args in logged_calls("ActivateResult", lambda calls: any(
            m == "ActivateResult" for m, _ in calls)) if m == "ActivateResult"]
        if activated != [("ActivateResult", [terms])]:
            fail("the shell's ActivateResult calls: %s" % activated)
        opened = opened_photos(out)
        if opened != [photo]:
            fail("the daemon opened %s, not %s" % (opened, photo))

        def overlay():
            shot = shell.screenshot(os.path.join(out, "gnome-eog.png"))
            box = green_box(shot)
            if box is None:
                return False, "no green eog view on screen"
            stats, reason = judge(shot, box, interior, w, h)
            if reason is not None:
                return False, "%s; %s" % (reason, stats)
            return True, (box, stats)

        box, stats = wait_for("eog on the shell's screen with the mask drawn (gnome-eog.png)", overlay, 60)
        note("eog's view %s: %s" % (box, stats))
        log = eog.lines()
        if any("Traceback" in l for l in log):
            fail("the eog plugin raised:\n" + "\n".join(log))
        asked = "photoseg-eog: GetMask %r %r" % (photo, expression)
        if asked not in log:
            fail("the plugin never asked for the mask of %r; it asked: %s"
                 % (expression, [l for l in log if l.startswith("photoseg-eog: GetMask ")]))
        note("PASS: typed and pasted list %s; Enter opens %s in eog with the mask of %r"
             % (expected, photo, expression))
    finally:
        stop_opened(out)
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    main()
