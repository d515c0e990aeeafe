//! The project's own ONNX writer: candle layers become ONNX nodes and
//! initializers through `tract_onnx::pb` (the prost types tract reads), and
//! the metadata JSON goes into `metadata_props`.

use candle_core::Tensor;
use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb;

use super::meta::{InputLayout, ModelMetadata, METADATA_KEY};

/// The tensor the network reads: the graph's input, or for a model with
/// a front end, the features the front end computes from [`WINDOW_INPUT`].
pub const INPUT: &str = "x";
/// The graph input of a model with a front end: the normalised window.
pub const WINDOW_INPUT: &str = "window";
pub const RECONSTRUCTION: &str = "reconstruction";
pub const LATENT: &str = "latent";
/// Per-window KL divergence of q(z|x) from the prior (variational models).
pub const KL: &str = "kl";
/// Per-window distance of the latent code to its nearest training codes
/// (models scored `latent` or `combined`).
pub const LATENT_SCORE: &str = "latent_score";
/// Per-window class probabilities of the activity head (`[N, classes]`).
pub const ACTIVITY: &str = super::meta::ACTIVITY_OUTPUT;
const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading weights for {name}: {cause}")]
    Weights {
        name: String,
        cause: candle_core::Error,
    },
    #[error("encoding metadata: {0}")]
    Metadata(#[from] serde_json::Error),
    #[error("the graph cannot be built: {0}")]
    Shape(String),
}

/// A graph under construction. Names are generated so that layers never
/// collide; the two outputs get their contract names at [`finish`](Self::finish).
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    counter: usize,
}

pub enum Attr {
    Int(&'static str, i64),
    Float(&'static str, f32),
    Ints(&'static str, Vec<i64>),
    Str(&'static str, &'static str),
}

impl Attr {
    fn proto(self) -> pb::AttributeProto {
        use pb::attribute_proto::AttributeType;
        let mut a = pb::AttributeProto::default();
        match self {
            Attr::Int(name, i) => {
                a.name = name.into();
                a.i = i;
                a.r#type = AttributeType::Int as i32;
            }
            Attr::Float(name, f) => {
                a.name = name.into();
                a.f = f;
                a.r#type = AttributeType::Float as i32;
            }
            Attr::Ints(name, ints) => {
                a.name = name.into();
                a.ints = ints;
                a.r#type = AttributeType::Ints as i32;
            }
            Attr::Str(name, s) => {
                a.name = name.into();
                a.s = s.as_bytes().to_vec();
                a.r#type = AttributeType::String as i32;
            }
        }
        a
    }
}

impl GraphBuilder {
    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("{stem}_{}", self.counter)
    }

    /// Adds a float initializer holding `tensor`'s values.
    pub fn weights(&mut self, stem: &str, tensor: &Tensor) -> Result<String, ExportError> {
        let name = self.fresh(stem);
        let wrap = |cause| ExportError::Weights {
            name: name.clone(),
            cause,
        };
        let values: Vec<f32> = tensor
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(wrap)?;
        let dims = tensor.dims().iter().map(|d| *d as i64).collect();
        self.constant(&name, dims, values);
        Ok(name)
    }

    /// Adds an initializer of given shape and values.
    pub fn constant(&mut self, name: &str, dims: Vec<i64>, values: Vec<f32>) {
        self.initializers.push(pb::TensorProto {
            name: name.to_string(),
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: values,
            ..Default::default()
        });
    }

    /// A one-element float constant, broadcast against any tensor.
    pub fn scalar(&mut self, stem: &str, value: f32) -> String {
        self.floats(stem, vec![value])
    }

    pub fn floats(&mut self, stem: &str, values: Vec<f32>) -> String {
        let name = self.fresh(stem);
        self.constant(&name, vec![values.len() as i64], values);
        name
    }

    pub fn constant_i64(&mut self, stem: &str, values: Vec<i64>) -> String {
        let name = self.fresh(stem);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: values,
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            name: format!("{output}_node"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
        output
    }

    /// Adds a node whose one output gets `output` as its name (a tensor
    /// other parts of the graph know by name, such as [`INPUT`]).
    pub fn node_named(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>, output: &str) {
        self.nodes.push(pb::NodeProto {
            name: format!("{output}_node"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
    }

    /// Adds a node with `count` outputs and returns their names.
    pub fn node_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<Attr>,
        count: usize,
    ) -> Vec<String> {
        let stem = self.fresh(&op.to_lowercase());
        let outputs: Vec<String> = (0..count).map(|i| format!("{stem}_{i}")).collect();
        self.nodes.push(pb::NodeProto {
            name: format!("{stem}_node"),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.clone(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
            ..Default::default()
        });
        outputs
    }

    /// `x · Wᵀ + b` for a candle `Linear` (weight `[out, in]`).
    pub fn linear(&mut self, x: &str, layer: &candle_nn::Linear) -> Result<String, ExportError> {
        let w = self.weights("w", layer.weight())?;
        let mut inputs = vec![x.to_string(), w];
        if let Some(bias) = layer.bias() {
            inputs.push(self.weights("b", bias)?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node("Gemm", &refs, vec![Attr::Int("transB", 1)]))
    }

    /// Closes the graph with its named outputs and serialises the model,
    /// with `meta` (whose `id` is filled in here from the graph's hash)
    /// under [`METADATA_KEY`].
    pub fn finish(
        mut self,
        outputs: &Exported,
        meta: &mut ModelMetadata,
    ) -> Result<Vec<u8>, ExportError> {
        self.nodes
            .push(identity(&outputs.reconstruction, RECONSTRUCTION));
        self.nodes.push(identity(&outputs.latent, LATENT));
        if let Some(kl) = &outputs.kl {
            self.nodes.push(identity(kl, KL));
        }
        if let Some(score) = &outputs.latent_score {
            self.nodes.push(identity(score, LATENT_SCORE));
        }
        if let Some(probs) = &outputs.activity {
            self.nodes.push(identity(probs, ACTIVITY));
        }
        // With a front end the graph reads the window, and INPUT is the
        // front end's features (written by `spectrum::Spectrum::export`).
        let (input, target) = match &meta.front_end {
            Some(front_end) => {
                self.nodes.push(identity(INPUT, front_end.output()));
                let target = vec![Dim::Batch, Dim::Fixed(meta.target_features())];
                let port = value_info(front_end.output(), &target);
                (WINDOW_INPUT, Some((port, target)))
            }
            None => (INPUT, None),
        };
        let classes = meta.activity.as_ref().map_or(0, |h| h.classes.len());
        let input_dims: Vec<Dim> = match meta.input_layout {
            InputLayout::Flat => vec![Dim::Batch, Dim::Fixed(meta.features())],
            InputLayout::Ntc => vec![
                Dim::Batch,
                Dim::Fixed(meta.window),
                Dim::Fixed(meta.channels.len()),
            ],
        };
        let graph = pb::GraphProto {
            name: format!("accelwatch_{}", meta.variant),
            node: self.nodes,
            initializer: self.initializers,
            input: vec![value_info(input, &input_dims)],
            output: [
                value_info(
                    RECONSTRUCTION,
                    target.as_ref().map_or(&input_dims, |(_, dims)| dims),
                ),
                value_info(LATENT, &[Dim::Batch, Dim::Fixed(meta.latent_dim)]),
            ]
            .into_iter()
            .chain(outputs.kl.as_ref().map(|_| value_info(KL, &[Dim::Batch])))
            .chain(
                outputs
                    .latent_score
                    .as_ref()
                    .map(|_| value_info(LATENT_SCORE, &[Dim::Batch])),
            )
            .chain(
                outputs
                    .activity
                    .as_ref()
                    .map(|_| value_info(ACTIVITY, &[Dim::Batch, Dim::Fixed(classes)])),
            )
            .chain(target.map(|(port, _)| port))
            .collect(),
            ..Default::default()
        };
        let digest = Sha256::digest(graph.encode_to_vec());
        meta.id = format!("{}-{}", meta.variant, &format!("{digest:x}")[..12]);
        let model = pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "accelwatch".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: "accelwatch autoencoder; see metadata_props[\"accelwatch\"]".into(),
            graph: Some(graph),
            metadata_props: vec![pb::StringStringEntryProto {
                key: METADATA_KEY.into(),
                value: serde_json::to_string(meta)?,
            }],
            ..Default::default()
        };
        Ok(model.encode_to_vec())
    }
}

impl GraphBuilder {
    /// The graph so far as a model of one input (`[N, width]`) and the
    /// given outputs (`[N, width]` each), for tests of parts of a graph.
    #[cfg(test)]
    pub fn part_model(self, input: (&str, usize), outputs: &[(&str, usize)]) -> pb::ModelProto {
        let dims = |width: usize| [Dim::Batch, Dim::Fixed(width)];
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            graph: Some(pb::GraphProto {
                name: "part".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: vec![value_info(input.0, &dims(input.1))],
                output: outputs
                    .iter()
                    .map(|(name, width)| value_info(name, &dims(*width)))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn identity(from: &str, to: &str) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("{to}_output"),
        op_type: "Identity".into(),
        input: vec![from.into()],
        output: vec![to.into()],
        ..Default::default()
    }
}

enum Dim {
    Batch,
    Fixed(usize),
}

fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Batch => Value::DimParam("N".into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// The names of a graph's outputs, as [`Autoencoder::export`](crate::model::net::Autoencoder::export) wrote them.
pub struct Exported {
    pub reconstruction: String,
    pub latent: String,
    /// Per-window KL divergence of q(z|x) from the prior (VAE only).
    pub kl: Option<String>,
    /// Per-window latent distance (added by training for `latent` and
    /// `combined` scores, see [`crate::model::latent`]).
    pub latent_score: Option<String>,
    /// Per-window class probabilities (added by training with a label
    /// column, see [`crate::model::train::head`]).
    pub activity: Option<String>,
}
