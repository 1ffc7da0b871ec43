//! photoseg: group-wise referring expression segmentation (GRSer, ICCV 2023) over a personal photo library.
//!
//! `model` is the network and nothing else (no file or network I/O beyond loading weights it is handed);
//! `library` is the photo collection and its SQLite cache (no tensor maths); `data` and `synth` read and
//! write data sets; `train` and `eval` fit and measure models; `cli` turns subcommands into library calls.
pub mod cli;
pub mod data;
pub mod eval;
pub mod library;
pub mod model;
pub mod synth;
pub mod train;
