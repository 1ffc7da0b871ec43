//! photoseg: group-wise referring expression segmentation (GRSer, ICCV 2023) over a personal photo library.
//!
//! `model` is the network and nothing else (no file or network I/O beyond loading weights it is handed);
//! `cli` turns subcommands into calls of the library.
pub mod cli;
pub mod data;
pub mod eval;
pub mod model;
