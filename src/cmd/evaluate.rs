//! `accelwatch evaluate`: anomaly and feature quality on a labelled
//! recording, with a report.

use anyhow::{anyhow, Context};

use crate::cli::EvaluateArgs;
use crate::cmd::exit::{failure, Failure, EX_DATAERR};
use crate::cmd::offline::{load_config, score_recording};
use crate::eval::{self, LabelledWindows};
use crate::model::LoadedModel;
use crate::record::Output;

pub fn evaluate(args: EvaluateArgs) -> Result<(), Failure> {
    let config = load_config(args.config.as_deref())?;
    let model = LoadedModel::load_with(&args.model, &config.model.backend_options())?;
    let model_id = model.meta.id.clone();
    let standardiser = model.meta.normalization.as_ref().map(|n| n.standardiser());
    let head = model.meta.activity.clone();
    // The head's refit reads what the head read: the code, then the front
    // end's features (computed here unstandardised: the refit standardises).
    let head_spectrum = match (&head, &model.meta.front_end) {
        (Some(h), Some(front_end)) if h.front_end_features > 0 => Some((
            crate::model::spectrum::Spectrum::new(
                front_end,
                model.meta.window,
                model.meta.channels.len(),
            ),
            h.front_end_features,
        )),
        _ => None,
    };
    let mut keep = vec![args.label.clone()];
    keep.extend(args.group.clone());
    let mut w = LabelledWindows::default();
    let recording = score_recording(model, &config, &args.data, keep, |windows, outputs| {
        let records = outputs.iter().filter_map(|o| match o {
            Output::Window(record) => Some(record),
            Output::Alert(_) | Output::Status(_) => None,
        });
        for (window, record) in windows.iter().zip(records) {
            w.scores.push(record.score);
            w.over_threshold.push(record.over_threshold);
            w.in_alert.push(record.anomaly);
            w.threshold = record.threshold;
            w.latent.push(record.latent.to_vec());
            let mut input = window.window.data.clone();
            if let Some(norm) = &standardiser {
                norm.apply(&mut input);
            }
            if let Some((spectrum, n)) = &head_spectrum {
                let mut read = record.latent.to_vec();
                let start = read.len();
                spectrum.push(&input, &mut read);
                read.truncate(start + n);
                w.head_input.push(read);
            }
            w.input.push(input);
            w.labels.push(window.kept[0]);
            w.activity
                .push(record.activity.as_ref().map(|a| a.to_string()));
            // Without a group column, a device (or recording) is a group.
            w.groups
                .push(window.kept.get(1).copied().unwrap_or(window.stream as u32));
        }
        Ok(())
    })?;
    w.label_names = recording.levels[0].clone();
    w.head = head;
    w.group_names = match &args.group {
        Some(_) => recording.levels[1].clone(),
        None => recording.streams.iter().map(|s| s.device.clone()).collect(),
    };
    for normal in &args.normal {
        if !w.label_names.contains(normal) {
            return Err(failure(
                EX_DATAERR,
                anyhow!(
                    "--normal {normal:?} never appears in column {:?} (values: {})",
                    args.label,
                    w.label_names.join(", ")
                ),
            ));
        }
    }
    let data = args.data.data.display().to_string();
    let grouped_by = match &args.group {
        Some(column) => format!("column {column:?}"),
        None => "device".to_string(),
    };
    let report = eval::evaluate(
        &w,
        &eval::Subject {
            model: &model_id,
            data: &data,
            label: &args.label,
            normal: &args.normal,
            grouped_by: &grouped_by,
        },
    );
    print!("{}", eval::markdown(&report));
    if let Some(dir) = &args.report {
        eval::write(dir, &report, &w)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
    }
    Ok(())
}
