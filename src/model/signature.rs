//! The inputs and outputs a model's ONNX graph declares, matched against its
//! metadata before any backend sees the graph. Both backends then feed and
//! read the same named tensors, and a model made by another tool is refused
//! with an error naming the input, output or metadata field at fault rather
//! than with a backend's shape error in the middle of a run.

crate::reason::reason_error!(
    /// Why a graph's inputs and outputs do not fit its metadata.
    SignatureError
);

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;

use super::meta::{InputLayout, ModelMetadata, ScoreKind, FORMAT};
use super::onnx::{KL, LATENT, LATENT_SCORE, RECONSTRUCTION};

/// ONNX `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

/// One dimension as declared: a number, or symbolic (a name or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbolic,
}

/// A graph input or output as declared.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    /// ONNX element type; 0 when the graph does not say.
    pub elem_type: i32,
    /// `None` when the graph declares no shape.
    pub dims: Option<Vec<Dim>>,
}

/// The graph's real inputs (initializers excluded) and its outputs.
#[derive(Debug, Clone)]
pub struct GraphIo {
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

impl GraphIo {
    pub fn of(graph: &pb::GraphProto) -> Self {
        let port = |v: &pb::ValueInfoProto| {
            let tensor = v
                .r#type
                .as_ref()
                .and_then(|t| t.value.as_ref())
                .map(|pb::type_proto::Value::TensorType(t)| t);
            Port {
                name: v.name.clone(),
                elem_type: tensor.map(|t| t.elem_type).unwrap_or(0),
                dims: tensor.and_then(|t| t.shape.as_ref()).map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(DimValue::DimValue(v)) if v > 0 => Dim::Fixed(v),
                            _ => Dim::Symbolic,
                        })
                        .collect()
                }),
            }
        };
        // ONNX before IR 4 also lists the weights as graph inputs.
        let weights: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        Self {
            inputs: graph
                .input
                .iter()
                .filter(|v| !weights.contains(v.name.as_str()))
                .map(port)
                .collect(),
            outputs: graph.output.iter().map(port).collect(),
        }
    }

    fn output(&self, name: &str) -> Option<&Port> {
        self.outputs.iter().find(|p| p.name == name)
    }

    fn input_named(&self, name: Option<&str>) -> Option<&Port> {
        match name {
            Some(name) => self.inputs.iter().find(|p| p.name == name),
            None if self.inputs.len() == 1 => self.inputs.first(),
            None => None,
        }
    }

    fn latent_named(&self, name: Option<&str>) -> Option<&Port> {
        match name {
            Some(name) => self.output(name),
            None => self.output(LATENT),
        }
    }

    /// Fills in what a metadata JSON object may leave out and the graph
    /// tells: `format`, `id` (from the file's hash), `variant`,
    /// `input_layout` (from the input's rank) and `latent_dim` (from the
    /// latent output's shape, 0 without one). Fields it cannot tell are
    /// left missing, and parsing then names them.
    pub fn complete_metadata(&self, value: &mut serde_json::Value, file_sha256: &str) {
        let Some(object) = value.as_object_mut() else {
            return;
        };
        let text = |o: &serde_json::Map<String, serde_json::Value>, key: &str| {
            o.get(key).and_then(|v| v.as_str()).map(str::to_string)
        };
        let input = text(object, "input");
        let latent = text(object, "latent_output");
        let put = |o: &mut serde_json::Map<String, serde_json::Value>,
                   key: &str,
                   v: serde_json::Value| {
            o.entry(key.to_string()).or_insert(v);
        };
        put(object, "format", FORMAT.into());
        put(
            object,
            "id",
            format!("external-{}", &file_sha256[..12.min(file_sha256.len())]).into(),
        );
        put(object, "variant", "external".into());
        match self
            .input_named(input.as_deref())
            .map(|p| p.dims.as_deref())
        {
            Some(Some(dims)) if dims.len() == 2 => put(object, "input_layout", "flat".into()),
            Some(Some(dims)) if dims.len() == 3 => put(object, "input_layout", "ntc".into()),
            // No such input: any layout will do, as `signature` then
            // refuses the model naming the input.
            None => put(object, "input_layout", "flat".into()),
            Some(_) => {}
        }
        match self.latent_named(latent.as_deref()) {
            None if latent.is_none() => put(object, "latent_dim", 0.into()),
            Some(port) => {
                if let Some([_, Dim::Fixed(d)]) = port.dims.as_deref() {
                    put(object, "latent_dim", (*d).into());
                }
            }
            // A named output that does not exist: any size will do, as
            // `signature` then refuses the model naming that output.
            None => put(object, "latent_dim", 0.into()),
        }
    }

    /// Resolves which input and outputs carry what, and checks their
    /// declared types and shapes against the metadata.
    pub fn signature(&self, meta: &ModelMetadata) -> Result<Signature, SignatureError> {
        let input = self
            .input_named(meta.input.as_deref())
            .ok_or_else(|| match &meta.input {
                Some(name) => format!(
                    "metadata input: the graph has no input {name:?} (its inputs: {})",
                    names(&self.inputs)
                ),
                None => format!(
                    "the graph has {} inputs ({}); name the one to feed in the metadata field \"input\"",
                    self.inputs.len(),
                    names(&self.inputs)
                ),
            })?;
        let (t, c) = (meta.window, meta.channels.len());
        let input_shape = match meta.input_layout {
            InputLayout::Flat => vec![t * c],
            InputLayout::Ntc => vec![t, c],
        };
        let expected = format!(
            "[N, {}] (metadata input_layout {}, window {t}, {c} channels)",
            input_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            match meta.input_layout {
                InputLayout::Flat => "flat",
                InputLayout::Ntc => "ntc",
            }
        );
        check_float(input, "input")?;
        if let Some(dims) = &input.dims {
            if dims.len() != input_shape.len() + 1 {
                return Err(SignatureError(format!(
                    "input {:?} has shape {}, expected {expected}",
                    input.name,
                    show(dims)
                )));
            }
            if let Dim::Fixed(b) = dims[0] {
                return Err(SignatureError(format!(
                    "input {:?} has a fixed batch dimension of {b}; the contract needs a dynamic \
                     batch dimension N (export it with a symbolic or unknown first dimension)",
                    input.name
                )));
            }
            for (d, want) in dims[1..].iter().zip(&input_shape) {
                if let Dim::Fixed(got) = d {
                    if *got as usize != *want {
                        return Err(SignatureError(format!(
                            "input {:?} has shape {}, expected {expected}",
                            input.name,
                            show(dims)
                        )));
                    }
                }
            }
        }

        let reconstruction = match &meta.reconstruction_output {
            Some(name) => self.output(name).ok_or_else(|| {
                format!(
                    "metadata reconstruction_output: the graph has no output {name:?} (its outputs: {})",
                    names(&self.outputs)
                )
            })?,
            None => self
                .output(RECONSTRUCTION)
                .or_else(|| self.outputs.first())
                .ok_or_else(|| SignatureError("the graph has no output".into()))?,
        };
        check_float(reconstruction, "reconstruction output")?;
        if let Some(dims) = &reconstruction.dims {
            let per_window: Option<i64> = dims
                .iter()
                .skip(1)
                .map(|d| match d {
                    Dim::Fixed(v) => Some(*v),
                    Dim::Symbolic => None,
                })
                .product();
            if dims.len() < 2 || per_window.is_some_and(|p| p as usize != meta.target_features()) {
                return Err(SignatureError(match &meta.front_end {
                    None => format!(
                        "reconstruction output {:?} has shape {}, expected the input's {expected}",
                        reconstruction.name,
                        show(dims)
                    ),
                    Some(front_end) => format!(
                        "reconstruction output {:?} has shape {}, expected the front end's [N, {}] \
                         ({} rows x {c} channels)",
                        reconstruction.name,
                        show(dims),
                        meta.target_features(),
                        front_end.rows(meta.window)
                    ),
                }));
            }
        }
        let target = match &meta.front_end {
            Some(front_end) => {
                let port = self.output(front_end.output()).ok_or_else(|| {
                    format!(
                        "metadata front_end.output: the graph has no output {:?} (its outputs: {})",
                        front_end.output(),
                        names(&self.outputs)
                    )
                })?;
                check_float(port, "front end output")?;
                if let Some(dims) = &port.dims {
                    if !matches!(dims.as_slice(), [_, Dim::Fixed(f)] if *f as usize == meta.target_features())
                    {
                        return Err(SignatureError(format!(
                            "front end output {:?} has shape {}, expected [N, {}]",
                            port.name,
                            show(dims),
                            meta.target_features()
                        )));
                    }
                }
                Some(port.name.clone())
            }
            None => None,
        };

        let latent = match self.latent_named(meta.latent_output.as_deref()) {
            Some(port) => {
                check_float(port, "latent output")?;
                if port.name == reconstruction.name {
                    return Err(SignatureError(format!(
                        "output {:?} cannot be both the reconstruction and the latent code",
                        port.name
                    )));
                }
                match port.dims.as_deref() {
                    Some([_, Dim::Fixed(d)]) if *d as usize != meta.latent_dim => {
                        return Err(SignatureError(format!(
                            "latent output {:?} has {d} values per window, but metadata latent_dim is {}",
                            port.name, meta.latent_dim
                        )))
                    }
                    Some(dims) if dims.len() != 2 => {
                        return Err(SignatureError(format!(
                            "latent output {:?} has shape {}, expected [N, {}] (metadata latent_dim)",
                            port.name,
                            show(dims),
                            meta.latent_dim
                        )))
                    }
                    _ => {}
                }
                Some(port.name.clone())
            }
            None => {
                if let Some(name) = &meta.latent_output {
                    return Err(SignatureError(format!(
                        "metadata latent_output: the graph has no output {name:?} (its outputs: {})",
                        names(&self.outputs)
                    )));
                }
                if meta.latent_dim != 0 {
                    return Err(SignatureError(format!(
                        "metadata latent_dim is {}, but the graph has no latent output \
                         (name one with latent_output, or set latent_dim to 0)",
                        meta.latent_dim
                    )));
                }
                None
            }
        };
        let kl = match meta.score {
            ScoreKind::NegElbo { .. } => Some(
                self.output(KL)
                    .ok_or_else(|| format!("metadata score neg_elbo needs an output named {KL:?}"))?
                    .name
                    .clone(),
            ),
            _ => None,
        };
        let latent_score = if meta.score.needs_latent_score() {
            let port = self.output(LATENT_SCORE).ok_or_else(|| {
                format!(
                    "metadata score {} needs an output named {LATENT_SCORE:?} (its outputs: {})",
                    meta.score.choice_name(),
                    names(&self.outputs)
                )
            })?;
            check_float(port, "latent score output")?;
            Some(port.name.clone())
        } else {
            None
        };
        let activity = match &meta.activity {
            Some(head) => {
                let port = self.output(&head.output).ok_or_else(|| {
                    format!(
                        "metadata activity.output: the graph has no output {:?} (its outputs: {})",
                        head.output,
                        names(&self.outputs)
                    )
                })?;
                check_float(port, "activity output")?;
                let k = head.classes.len();
                match port.dims.as_deref() {
                    Some([_, Dim::Fixed(d)]) if *d as usize != k => {
                        return Err(SignatureError(format!(
                            "activity output {:?} has {d} values per window, but metadata \
                             activity.classes names {k}",
                            port.name
                        )))
                    }
                    Some(dims) if dims.len() != 2 => {
                        return Err(SignatureError(format!(
                            "activity output {:?} has shape {}, expected [N, {k}] (metadata activity.classes)",
                            port.name,
                            show(dims)
                        )))
                    }
                    _ => {}
                }
                Some((port.name.clone(), k))
            }
            None => None,
        };
        Ok(Signature {
            input: input.name.clone(),
            input_shape,
            reconstruction: reconstruction.name.clone(),
            latent,
            kl,
            latent_score,
            activity,
            target,
        })
    }
}

fn check_float(port: &Port, what: &str) -> Result<(), SignatureError> {
    if port.elem_type == FLOAT || port.elem_type == 0 {
        return Ok(());
    }
    let name = pb::tensor_proto::DataType::try_from(port.elem_type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| port.elem_type.to_string());
    Err(SignatureError(format!(
        "{what} {:?} is of type {name}; the contract takes float32 (FLOAT)",
        port.name
    )))
}

fn names(ports: &[Port]) -> String {
    if ports.is_empty() {
        return "none".into();
    }
    ports
        .iter()
        .map(|p| format!("{:?}", p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Symbolic => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Which graph input and outputs carry what, shared by every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub input: String,
    /// The input's shape without its batch dimension.
    pub input_shape: Vec<usize>,
    pub reconstruction: String,
    pub latent: Option<String>,
    pub kl: Option<String>,
    /// The per-window latent distance, for `latent` and `combined` scores.
    pub latent_score: Option<String>,
    /// The activity head's probabilities and how many classes they cover.
    pub activity: Option<(String, usize)>,
    /// The front end's features, which the reconstruction is measured
    /// against (none: the input itself).
    pub target: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, elem_type: i32, dims: &[Dim]) -> Port {
        Port {
            name: name.into(),
            elem_type,
            dims: Some(dims.to_vec()),
        }
    }

    fn io(input: Port, outputs: Vec<Port>) -> GraphIo {
        GraphIo {
            inputs: vec![input],
            outputs,
        }
    }

    fn meta(value: serde_json::Value, io: &GraphIo) -> ModelMetadata {
        let mut value = value;
        io.complete_metadata(&mut value, "0123456789abcdef");
        ModelMetadata::from_value(value).unwrap()
    }

    fn sidecar() -> serde_json::Value {
        serde_json::json!({"channels": ["ax", "ay", "az"], "window": 4, "hop": 2,
                           "sample_rate_hz": 50.0, "threshold": 1.0})
    }

    const S: Dim = Dim::Symbolic;

    #[test]
    fn a_sidecar_is_completed_from_the_graph() {
        let g = io(
            port("in", FLOAT, &[S, Dim::Fixed(4), Dim::Fixed(3)]),
            vec![
                port("out", FLOAT, &[S, Dim::Fixed(12)]),
                port("latent", FLOAT, &[S, Dim::Fixed(5)]),
            ],
        );
        let m = meta(sidecar(), &g);
        assert_eq!(m.id, "external-0123456789ab");
        assert_eq!(m.variant, "external");
        assert_eq!(m.input_layout, InputLayout::Ntc);
        assert_eq!(m.latent_dim, 5);
        let sig = g.signature(&m).unwrap();
        assert_eq!(sig.input, "in");
        assert_eq!(sig.input_shape, vec![4, 3]);
        assert_eq!(sig.reconstruction, "out");
        assert_eq!(sig.latent.as_deref(), Some("latent"));
    }

    #[test]
    fn without_a_latent_output_the_code_is_empty() {
        let g = io(
            port("x", FLOAT, &[S, Dim::Fixed(12)]),
            vec![port("y", FLOAT, &[S, S])],
        );
        let m = meta(sidecar(), &g);
        assert_eq!((m.input_layout, m.latent_dim), (InputLayout::Flat, 0));
        assert_eq!(g.signature(&m).unwrap().latent, None);
        let mut wrong = m.clone();
        wrong.latent_dim = 8;
        let err = g.signature(&wrong).unwrap_err();
        assert!(
            err.0.contains("latent_dim is 8") && err.0.contains("no latent output"),
            "{err}"
        );
    }

    #[test]
    fn mismatches_name_the_input_or_output() {
        let flat = |input: Port, output: Port| {
            let g = io(input, vec![output]);
            let mut value = sidecar();
            value["input_layout"] = "flat".into();
            g.signature(&meta(value, &g)).unwrap_err()
        };
        let double = 11;
        let err = flat(
            port("x", double, &[S, Dim::Fixed(12)]),
            port("y", FLOAT, &[S, Dim::Fixed(12)]),
        );
        assert!(err.0.contains("input \"x\" is of type DOUBLE"), "{err}");
        let err = flat(
            port("x", FLOAT, &[Dim::Fixed(1), Dim::Fixed(12)]),
            port("y", FLOAT, &[Dim::Fixed(1), Dim::Fixed(12)]),
        );
        assert!(err.0.contains("fixed batch dimension of 1"), "{err}");
        let err = flat(
            port("x", FLOAT, &[S, Dim::Fixed(10)]),
            port("y", FLOAT, &[S, Dim::Fixed(12)]),
        );
        assert!(
            err.0
                .contains("input \"x\" has shape [?, 10], expected [N, 12]"),
            "{err}"
        );
        let err = flat(
            port("x", FLOAT, &[S, Dim::Fixed(12)]),
            port("y", FLOAT, &[S, Dim::Fixed(3)]),
        );
        assert!(
            err.0
                .contains("reconstruction output \"y\" has shape [?, 3]"),
            "{err}"
        );
        let err = flat(
            port("x", FLOAT, &[S, Dim::Fixed(4), Dim::Fixed(3)]),
            port("y", FLOAT, &[S, Dim::Fixed(12)]),
        );
        assert!(err.0.contains("expected [N, 12]"), "{err}");
    }

    #[test]
    fn named_inputs_and_outputs_must_exist() {
        let g = io(
            port("x", FLOAT, &[S, Dim::Fixed(12)]),
            vec![port("y", FLOAT, &[S, Dim::Fixed(12)])],
        );
        for (key, needle) in [
            ("input", "metadata input: the graph has no input \"nope\""),
            (
                "reconstruction_output",
                "metadata reconstruction_output: the graph has no output \"nope\"",
            ),
            (
                "latent_output",
                "metadata latent_output: the graph has no output \"nope\"",
            ),
        ] {
            let mut value = sidecar();
            value[key] = "nope".into();
            let err = g.signature(&meta(value, &g)).unwrap_err();
            assert!(err.0.contains(needle), "{err}");
        }
    }

    #[test]
    fn an_activity_head_is_checked_against_its_output() {
        let g = io(
            port("x", FLOAT, &[S, Dim::Fixed(12)]),
            vec![
                port("reconstruction", FLOAT, &[S, Dim::Fixed(12)]),
                port("activity_probs", FLOAT, &[S, Dim::Fixed(3)]),
            ],
        );
        let with = |classes: &[&str], output: Option<&str>| {
            let mut value = sidecar();
            value["activity"] = serde_json::json!({"label": "exercise", "classes": classes});
            if let Some(output) = output {
                value["activity"]["output"] = output.into();
            }
            value
        };
        // Without a head the same graph loads, and publishes none.
        assert_eq!(g.signature(&meta(sidecar(), &g)).unwrap().activity, None);
        let sig = g
            .signature(&meta(with(&["a", "b", "c"], None), &g))
            .unwrap();
        assert_eq!(sig.activity, Some(("activity_probs".to_string(), 3)));
        let err = g.signature(&meta(with(&["a", "b"], None), &g)).unwrap_err();
        assert!(
            err.0.contains("has 3 values per window") && err.0.contains("names 2"),
            "{err}"
        );
        let err = g
            .signature(&meta(with(&["a", "b", "c"], Some("probs")), &g))
            .unwrap_err();
        assert!(
            err.0
                .contains("activity.output: the graph has no output \"probs\""),
            "{err}"
        );
        let mut value = with(&["a", "a"], None);
        g.complete_metadata(&mut value, "0123456789abcdef");
        let err = ModelMetadata::from_value(value).unwrap_err().to_string();
        assert!(err.contains("two or more distinct classes"), "{err}");
    }
}
