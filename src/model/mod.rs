//! The GRSer network (Wu et al., "Advancing Referring Expression Segmentation Beyond Single Image",
//! ICCV 2023): a Swin visual encoder, a BERT text encoder and the group-wise head. Free of I/O except
//! [`checkpoint`], which reads weight files it is pointed at.
pub mod checkpoint;
pub mod codec;
pub mod decoder;
pub mod dense;
pub mod few_rows;
pub mod grad_kernels;
pub mod grser;
pub mod head;
pub mod hierarchizer;
pub mod isa;
pub mod kernels;
pub mod neck;
pub mod ops;
pub mod preprocess;
pub mod profile;
pub mod referent;
pub mod relpos;
pub mod swin;
pub mod text;
pub mod tqm;
pub mod triphasic;
pub mod upsample;
