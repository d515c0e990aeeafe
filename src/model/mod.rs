//! The autoencoder family: networks trained with candle ([`net`],
//! [`train`]), written to ONNX by our own writer ([`onnx`]) with their
//! metadata ([`meta`]), and served with tract ([`tract_backend`]) or ONNX
//! Runtime ([`ort_backend`], cargo feature `ort`). Models made by other
//! tools are served the same way once their inputs and outputs
//! ([`signature`]) and metadata check out.

pub mod config;
pub mod conv;
pub mod dense;
pub mod family;
mod fused_front_end;
pub mod inference;
pub mod latent;
pub mod loaded;
pub mod meta;
pub mod net;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_backend;
pub mod scorer;
mod select_k;
pub mod signature;
pub mod spectrum;
pub mod standardise;
pub mod tract_backend;
pub mod train;
pub mod vae;

pub use config::{BackendKind, BackendOptions};
pub use loaded::{sidecar_path, LoadedModel, ModelError, Runtime, MAX_MODEL_BYTES};
pub use meta::{ModelMetadata, Normalization};
