//! Evaluation: the scores GRSer and the Co-SOD literature report, computed the way their reference code
//! computes them (see `docs/datasets.md`).
pub mod metrics;
pub mod run;

pub use metrics::{iou, SaliencyMap, SegMetrics, SegScores, SodMetrics, SodScores};
