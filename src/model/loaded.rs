//! A model file read, checked and made runnable on one backend.

use crate::model::inference::BackendError;
use std::path::{Path, PathBuf};

use prost::Message;

use sha2::Digest;
use tract_onnx::pb;

use super::config::{BackendKind, BackendOptions};
use super::inference::Inference;
use super::meta::{self, ModelMetadata};
#[cfg(feature = "ort")]
use super::ort_backend::OrtModel;
use super::signature;
use super::tract_backend::TractModel;

/// A runnable model on one backend; every backend answers the same
/// [`Inference`] for the same windows.
#[derive(Clone)]
pub enum Runtime {
    Tract(TractModel),
    #[cfg(feature = "ort")]
    Ort(OrtModel),
}

impl Runtime {
    /// Runs `n` windows laid end to end in `input` (already normalised).
    pub fn run(&self, input: &[f32], n: usize) -> Result<Inference, BackendError> {
        match self {
            Runtime::Tract(m) => m.run(input, n),
            #[cfg(feature = "ort")]
            Runtime::Ort(m) => m.run(input, n),
        }
    }

    pub fn backend(&self) -> BackendKind {
        match self {
            Runtime::Tract(_) => BackendKind::Tract,
            #[cfg(feature = "ort")]
            Runtime::Ort(_) => BackendKind::Ort,
        }
    }
}

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
    #[error("model {path}: backend {backend}: {reason}")]
    Backend {
        path: PathBuf,
        backend: &'static str,
        reason: String,
    },
}

/// A model ready to serve: its metadata and its runnable plan.
#[derive(Clone)]
pub struct LoadedModel {
    pub meta: ModelMetadata,
    pub runtime: Runtime,
}

impl LoadedModel {
    /// [`load_with`](Self::load_with) tract.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::load_with(path, &BackendOptions::tract())
    }

    /// Reads, checks and prepares a model file. The metadata comes from the
    /// file's `metadata_props`, or from a sidecar `<model>.json`. The
    /// graph's declared inputs and outputs are checked against it, then one
    /// test inference on a zero window proves the graph answers with the
    /// shapes the metadata promises, and finite values.
    pub fn load_with(path: &Path, backend: &BackendOptions) -> Result<Self, ModelError> {
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
        Self::from_bytes_with(&data, path, backend)
    }

    /// [`from_bytes_with`](Self::from_bytes_with) tract.
    pub fn from_bytes(data: &[u8], path: &Path) -> Result<Self, ModelError> {
        Self::from_bytes_with(data, path, &BackendOptions::tract())
    }

    pub fn from_bytes_with(
        data: &[u8],
        path: &Path,
        backend: &BackendOptions,
    ) -> Result<Self, ModelError> {
        let sidecar = || {
            let sidecar = sidecar_path(path);
            std::fs::read_to_string(&sidecar)
                .map_err(|_| meta::MetadataError::Missing(sidecar.display().to_string()))
        };
        Self::from_parts(data, sidecar, path, backend)
    }

    /// A model from its bytes, with `sidecar` giving the sidecar's text
    /// when the file carries no metadata; `path` only names it in errors.
    /// Touches no file itself (the fuzz target's entry point).
    pub fn from_parts(
        data: &[u8],
        sidecar: impl FnOnce() -> Result<String, meta::MetadataError>,
        path: &Path,
        backend: &BackendOptions,
    ) -> Result<Self, ModelError> {
        let proto = parse(data, path)?;
        let io = signature::GraphIo::of(proto.graph.as_ref().expect("checked by parse"));
        let meta =
            read_metadata(&proto, &io, data, sidecar).map_err(|cause| ModelError::Metadata {
                path: path.to_path_buf(),
                cause,
            })?;
        Self::with_metadata(data, &proto, &io, meta, path, backend)
    }

    /// Loads a model file made elsewhere with metadata given as a JSON
    /// object rather than read (for `calibrate`, which writes the sidecar);
    /// what it leaves out is completed from the graph as for a sidecar.
    pub fn with_given_metadata(
        path: &Path,
        value: serde_json::Value,
        backend: &BackendOptions,
    ) -> Result<Self, ModelError> {
        let io_error = |cause| ModelError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let bytes = std::fs::metadata(path).map_err(io_error)?.len();
        if bytes > MAX_MODEL_BYTES {
            return Err(ModelError::TooLarge {
                path: path.to_path_buf(),
                bytes,
            });
        }
        let data = std::fs::read(path).map_err(io_error)?;
        let proto = parse(&data, path)?;
        let metadata_error = |cause| ModelError::Metadata {
            path: path.to_path_buf(),
            cause,
        };
        if proto
            .metadata_props
            .iter()
            .any(|p| p.key == meta::METADATA_KEY)
        {
            // Embedded metadata wins over a sidecar: one written now would be ignored.
            return Err(metadata_error(meta::MetadataError::Inconsistent(format!(
                "the file carries its own {:?} metadata, which takes precedence over a sidecar",
                meta::METADATA_KEY
            ))));
        }
        let io = signature::GraphIo::of(proto.graph.as_ref().expect("checked by parse"));
        let mut value = value;
        io.complete_metadata(&mut value, &sha256_hex(&data));
        let meta = ModelMetadata::from_value(value).map_err(metadata_error)?;
        Self::with_metadata(&data, &proto, &io, meta, path, backend)
    }

    fn with_metadata(
        data: &[u8],
        proto: &pb::ModelProto,
        io: &signature::GraphIo,
        meta: ModelMetadata,
        path: &Path,
        backend: &BackendOptions,
    ) -> Result<Self, ModelError> {
        let graph = |reason| ModelError::Graph {
            path: path.to_path_buf(),
            reason,
        };
        let signature = io.signature(&meta).map_err(|e| graph(e.to_string()))?;
        let runtime = match backend.kind {
            BackendKind::Tract => Runtime::Tract(
                TractModel::from_proto(proto, &meta, &signature)
                    .map_err(|e| graph(e.to_string()))?,
            ),
            #[cfg(feature = "ort")]
            BackendKind::Ort => Runtime::Ort(
                OrtModel::from_bytes(data, &meta, &signature, backend.ort_library.as_deref())
                    .map_err(|reason| ModelError::Backend {
                        path: path.to_path_buf(),
                        backend: "ort",
                        reason: reason.to_string(),
                    })?,
            ),
            #[cfg(not(feature = "ort"))]
            BackendKind::Ort => {
                let _ = data;
                return Err(ModelError::Backend {
                    path: path.to_path_buf(),
                    backend: "ort",
                    reason: "this build has no ONNX Runtime backend (cargo feature `ort`)".into(),
                });
            }
        };
        let probe = runtime
            .run(&vec![0.0; meta.features()], 1)
            .map_err(|e| graph(e.to_string()))?;
        if let Some(bad) = probe
            .reconstruction
            .iter()
            .chain(&probe.latent)
            .chain(probe.kl.iter().flatten())
            .chain(probe.latent_score.iter().flatten())
            .chain(probe.activity.iter().flatten())
            .chain(probe.target.iter().flatten())
            .find(|v| !v.is_finite())
        {
            return Err(graph(format!(
                "a zero window gives non-finite outputs ({bad}): the model cannot be served"
            )));
        }
        if let (Some(probs), Some(head)) = (&probe.activity, &meta.activity) {
            // Published as a confidence: the row must be a distribution.
            let sum: f32 = probs.iter().sum();
            if (sum - 1.0).abs() > 1e-3 || probs.iter().any(|p| *p < 0.0) {
                return Err(graph(format!(
                    "activity output {:?} does not give probabilities: a zero window's sum to {sum} \
                     (end the head with a Softmax)",
                    head.output
                )));
            }
        }
        Ok(Self { meta, runtime })
    }
}

fn parse(data: &[u8], path: &Path) -> Result<pb::ModelProto, ModelError> {
    let proto = pb::ModelProto::decode(data).map_err(|e| ModelError::NotOnnx {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let Some(graph) = proto.graph.as_ref() else {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason: "it holds no graph".into(),
        });
    };
    // tract-onnx 0.23 indexes its map of tensors by each output's name and
    // panics on a name nothing produces (a damaged file did it: found by
    // fuzz::props::model_files_survive_corruption).
    let produced: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .chain(graph.input.iter().map(|i| &i.name))
        .chain(graph.initializer.iter().map(|t| &t.name))
        .map(String::as_str)
        .collect();
    if let Some(missing) = graph
        .output
        .iter()
        .find(|o| !produced.contains(o.name.as_str()))
    {
        return Err(ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason: format!(
                "the graph's output {:?} is not produced by any node, input or initializer",
                missing.name
            ),
        });
    }
    Ok(proto)
}

pub fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(data))
}

fn read_metadata(
    proto: &pb::ModelProto,
    io: &signature::GraphIo,
    data: &[u8],
    sidecar: impl FnOnce() -> Result<String, meta::MetadataError>,
) -> Result<ModelMetadata, meta::MetadataError> {
    let text = match proto
        .metadata_props
        .iter()
        .find(|p| p.key == meta::METADATA_KEY)
    {
        Some(entry) => entry.value.clone(),
        None => sidecar()?,
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| meta::MetadataError::Invalid(e.to_string()))?;
    io.complete_metadata(&mut value, &sha256_hex(data));
    ModelMetadata::from_value(value)
}

/// Where a model made elsewhere keeps its metadata: `<model>.json`.
pub fn sidecar_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}
