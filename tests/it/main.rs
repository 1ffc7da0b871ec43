//! The integration tests, one test binary (`cargo test --test it`): each module was once a file of its own
//! in `tests/`, a binary of its own, and one binary links photoseg once instead of 22 times. A module's
//! tests are named after it: `cargo test --test it dbus_photoseg` runs the D-Bus tests,
//! `cargo test --test it library::` the library's.
//!
//! All tests share one process and run in parallel threads, so none may change process-wide state
//! (environment variables, the current directory, the umask, signal dispositions): a child process
//! gets its environment through `Command::env`.
mod common;
mod dbus_support;

mod avx2_only;
mod builtin_model;
mod cli_index_kill;
mod cli_query;
mod cli_watch;
mod data_coco_mask;
mod data_cosod;
mod data_refcoco;
mod dbus_desktop;
mod dbus_model_switch;
mod dbus_photoseg;
mod eog_plugin;
mod feature_codec;
mod gnome_shell;
mod grad_parity;
mod gradcheck;
mod head;
mod library;
mod metrics_sod;
mod model_dir;
mod model_init;
mod model_install;
mod model_route;
mod nautilus_plugin;
mod parity_bert;
mod parity_swin;
mod query_engine;
mod synth;
mod train;
mod train_real_data;
