//! The autoencoder family: networks trained with candle ([`net`],
//! [`train`]), written to ONNX by our own writer ([`onnx`]) with their
//! metadata ([`meta`]), and served with tract ([`tract_backend`]).

pub mod meta;
pub mod net;
pub mod onnx;
pub mod tract_backend;
pub mod train;

use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

pub use meta::{ModelMetadata, Normalization};
pub use tract_backend::{Inference, TractModel};

/// Model files larger than this are refused before they are parsed.
pub const MAX_MODEL_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("model {path}: {bytes} bytes is over the {MAX_MODEL_BYTES}-byte limit")]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("model {path}: not an ONNX file ({reason})")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("model {path}: {cause}")]
    Metadata {
        path: PathBuf,
        cause: meta::MetadataError,
    },
    #[error("model {path}: {reason}")]
    Graph { path: PathBuf, reason: String },
}

/// A model ready to serve: its metadata and its runnable plan.
#[derive(Clone)]
pub struct LoadedModel {
    pub meta: ModelMetadata,
    pub runtime: TractModel,
}

impl LoadedModel {
    /// Reads, checks and prepares a model file. The metadata comes from the
    /// file's `metadata_props`, or from a sidecar `<model>.json`. One test
    /// inference on a zero window proves the graph answers with the shapes
    /// the metadata promises, and finite values.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let io = |cause| ModelError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > MAX_MODEL_BYTES {
            return Err(ModelError::TooLarge {
                path: path.to_path_buf(),
                bytes,
            });
        }
        let data = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&data, path)
    }

    pub fn from_bytes(data: &[u8], path: &Path) -> Result<Self, ModelError> {
        let proto = pb::ModelProto::decode(data).map_err(|e| ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if proto.graph.is_none() {
            return Err(ModelError::NotOnnx {
                path: path.to_path_buf(),
                reason: "it holds no graph".into(),
            });
        }
        let meta = read_metadata(&proto, path).map_err(|cause| ModelError::Metadata {
            path: path.to_path_buf(),
            cause,
        })?;
        let graph = |reason| ModelError::Graph {
            path: path.to_path_buf(),
            reason,
        };
        let runtime = TractModel::from_proto(&proto, &meta).map_err(graph)?;
        let probe = runtime.run(&vec![0.0; meta.features()], 1).map_err(graph)?;
        if probe
            .reconstruction
            .iter()
            .chain(&probe.latent)
            .any(|v| !v.is_finite())
        {
            return Err(graph("a zero window gives non-finite outputs".into()));
        }
        Ok(Self { meta, runtime })
    }
}

fn read_metadata(
    proto: &pb::ModelProto,
    path: &Path,
) -> Result<ModelMetadata, meta::MetadataError> {
    if let Some(entry) = proto
        .metadata_props
        .iter()
        .find(|p| p.key == meta::METADATA_KEY)
    {
        return ModelMetadata::from_json(&entry.value);
    }
    let sidecar = path.with_extension("json");
    match std::fs::read_to_string(&sidecar) {
        Ok(text) => ModelMetadata::from_json(&text),
        Err(_) => Err(meta::MetadataError::Missing(sidecar.display().to_string())),
    }
}
