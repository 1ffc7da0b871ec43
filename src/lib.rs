//! photoseg: group-wise referring expression segmentation (GRSer, ICCV 2023) over a personal photo library.
//!
//! `model` is the network and nothing else (no file or network I/O beyond loading weights it is handed);
//! `library` finds, decodes and caches photos (no tensor maths); `query` answers expressions over albums
//! with the model; `data` and `synth` read and write data sets; `train` and `eval` fit and measure models;
//! `service` is `photoseg daemon` on D-Bus; `catalog` keeps the installed models and which one answers, `hub`
//! fetches files from the Hugging Face hub; `whole_dir` writes a folder whole or not at all; `cli` turns subcommands into calls of the library.
pub mod builtin;
pub mod catalog;
pub mod cli;
pub mod data;
pub mod eval;
pub mod hub;
#[cfg(test)]
mod layers;
pub mod library;
pub mod model;
pub mod query;
pub mod service;
pub mod synth;
pub mod train;
pub mod whole_dir;
