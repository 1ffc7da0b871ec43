// Tests only (tests/desktop/gnome_shell_check.py): unsafe mode lets the test drive the shell through
// org.gnome.Shell.Eval and take screenshots through org.gnome.Shell.Screenshot. Banners are blocked first,
// so the shell's "System was put in unsafe mode" notification stays off the screenshots.
const Main = imports.ui.main;

function init() {}

function enable() {
    Main.messageTray.bannerBlocked = true;
    global.context.unsafe_mode = true;
}

function disable() {
    global.context.unsafe_mode = false;
    Main.messageTray.bannerBlocked = false;
}
