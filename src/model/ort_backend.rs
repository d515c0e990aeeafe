//! Inference with ONNX Runtime through the `ort` crate, with the shared
//! library opened at run time (`load-dynamic`): nothing is downloaded or
//! linked at build time, and a build without the library still runs tract.

use crate::model::inference::BackendError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use super::inference::Inference;
use super::meta::ModelMetadata;
use super::signature::Signature;

/// The environment variable naming the library when the config does not.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// A process loads one ONNX Runtime library, once: remember which.
static RUNTIME: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// The library to open: `model.ort_library`, else `ORT_DYLIB_PATH`.
pub fn library_path(configured: Option<&Path>) -> Result<PathBuf, BackendError> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    match std::env::var_os(DYLIB_ENV) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(BackendError(format!(
            "backend \"ort\" needs the ONNX Runtime shared library (libonnxruntime.so, 1.22 or \
             newer): set model.ort_library or {DYLIB_ENV}"
        ))),
    }
}

fn environment(configured: Option<&Path>) -> Result<&'static Environment, BackendError> {
    let path = library_path(configured)?;
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((loaded, env)) = RUNTIME.get() {
        if *loaded != path {
            return Err(BackendError(format!(
                "ONNX Runtime is already loaded from {} in this process; {} needs a restart",
                loaded.display(),
                path.display()
            )));
        }
        return Ok(env);
    }
    // ort resolves a relative path against the executable's directory;
    // users expect the working directory, as for every other path.
    if !path.exists() {
        return Err(BackendError(format!(
            "the ONNX Runtime library {} does not exist (model.ort_library or {DYLIB_ENV})",
            path.display()
        )));
    }
    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    let env = ort::init_from(&absolute)
        .map_err(|e| format!("loading ONNX Runtime from {}: {e}", path.display()))?
        .with_name("accelwatch")
        .build()
        .map_err(|e| format!("starting ONNX Runtime from {}: {e}", path.display()))?;
    Ok(&RUNTIME.get_or_init(|| (path, env)).1)
}

fn fail(e: impl std::fmt::Display) -> String {
    format!("ONNX Runtime cannot load the graph: {e}")
}

#[derive(Clone)]
pub struct OrtModel {
    // `Session::run` takes `&mut self` (ONNX Runtime's allocators are not
    // thread safe); the scorer runs one batch at a time anyway.
    session: Arc<Mutex<Session>>,
    signature: Signature,
    features: usize,
    /// Values per window of the reconstruction (and of the front end's).
    target_features: usize,
    latent_dim: usize,
}

impl OrtModel {
    pub fn from_bytes(
        bytes: &[u8],
        meta: &ModelMetadata,
        signature: &Signature,
        library: Option<&Path>,
    ) -> Result<Self, BackendError> {
        let env = environment(library)?;
        // One thread per session: tract runs on one too, the daemon batches
        // across devices, and an edge box keeps its other cores for the rest.
        let session = Session::builder(env)
            .map_err(fail)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(fail)?
            .with_intra_threads(1)
            .map_err(fail)?
            .with_inter_threads(1)
            .map_err(fail)?
            .commit_from_memory(bytes)
            .map_err(fail)?;
        Ok(Self {
            session: Arc::new(Mutex::new(session)),
            signature: signature.clone(),
            features: meta.features(),
            target_features: meta.target_features(),
            latent_dim: meta.latent_dim,
        })
    }

    /// Runs `n` windows laid end to end in `input`.
    pub fn run(&self, input: &[f32], n: usize) -> Result<Inference, BackendError> {
        assert_eq!(input.len(), n * self.features, "input holds {n} windows");
        let mut shape = vec![n as i64];
        shape.extend(self.signature.input_shape.iter().map(|d| *d as i64));
        let tensor = TensorRef::from_array_view((shape, input))
            .map_err(|e| format!("building the input tensor: {e}"))?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![self.signature.input.as_str() => tensor])
            .map_err(|e| format!("inference failed: {e}"))?;
        let take = |name: &str, per_window: usize| -> Result<Vec<f32>, String> {
            let value = outputs
                .get(name)
                .ok_or_else(|| format!("ONNX Runtime gave no output {name:?}"))?;
            let (_, values) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| format!("output {name:?} is not a float32 tensor: {e}"))?;
            if values.len() != n * per_window {
                return Err(format!(
                    "output {name:?} has {} values for {n} windows, expected {per_window} per window",
                    values.len()
                ));
            }
            Ok(values.to_vec())
        };
        let sig = &self.signature;
        Ok(Inference {
            reconstruction: take(&sig.reconstruction, self.target_features)?,
            latent: match &sig.latent {
                Some(name) => take(name, self.latent_dim)?,
                None => Vec::new(),
            },
            kl: match &sig.kl {
                Some(name) => Some(take(name, 1)?),
                None => None,
            },
            latent_score: match &sig.latent_score {
                Some(name) => Some(take(name, 1)?),
                None => None,
            },
            activity: match &sig.activity {
                Some((name, classes)) => Some(take(name, *classes)?),
                None => None,
            },
            target: match &sig.target {
                Some(name) => Some(take(name, self.target_features)?),
                None => None,
            },
        })
    }
}
