//! The GRSer network (Wu et al., "Advancing Referring Expression Segmentation Beyond Single Image",
//! ICCV 2023): a Swin visual encoder, a BERT text encoder and the group-wise head. Free of I/O.
pub mod checkpoint;
pub mod ops;
pub mod relpos;
pub mod swin;
pub mod text;
