//! `accelwatch evaluate`: how well a model separates normal windows from
//! the rest (anomaly quality), how good its latent codes are as activity
//! features (feature quality, against raw windows and PCA codes of the same
//! size), and a report with plots.

pub mod activity;
pub mod features;
pub mod metrics;
pub mod plots;
pub mod plots_evidence;

use std::path::Path;

use serde::Serialize;

use crate::eval::features::{cross_validate, Pca};
use crate::eval::metrics::{average_precision, roc_auc, Confusion};

/// Every scored window of a labelled recording, in recording order.
#[derive(Debug, Default)]
pub struct LabelledWindows {
    pub scores: Vec<f32>,
    pub over_threshold: Vec<bool>,
    pub in_alert: Vec<bool>,
    pub latent: Vec<Vec<f32>>,
    /// What the activity head reads of each window, when more than the
    /// code (the code, then the front end's features); empty otherwise.
    pub head_input: Vec<Vec<f32>>,
    /// The model's input (normalised window), for the baselines.
    pub input: Vec<Vec<f32>>,
    pub labels: Vec<u32>,
    pub groups: Vec<u32>,
    pub label_names: Vec<String>,
    pub threshold: f64,
    /// The group of each window by name (an index of `groups`).
    pub group_names: Vec<String>,
    /// The model's activity head, and the class it gave each window.
    pub head: Option<crate::model::meta::ActivityHead>,
    pub activity: Vec<Option<String>>,
}

#[derive(Debug, Serialize)]
pub struct Rates {
    pub precision: f64,
    pub recall: f64,
    pub false_alarm_rate: f64,
    pub counts: Confusion,
}

impl From<Confusion> for Rates {
    fn from(c: Confusion) -> Self {
        Rates {
            precision: c.precision(),
            recall: c.recall(),
            false_alarm_rate: c.false_alarm_rate(),
            counts: c,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ClassifierScore {
    pub dimensions: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
}

#[derive(Debug, Serialize)]
pub struct FeatureQuality {
    pub classifier: String,
    /// What keeps folds apart (a column, or the device/recording).
    pub grouped_by: String,
    pub folds: usize,
    pub latent: ClassifierScore,
    pub pca: ClassifierScore,
    pub raw: ClassifierScore,
}

#[derive(Debug, Serialize)]
pub struct EvaluationReport {
    pub model: String,
    pub data: String,
    pub label: String,
    pub normal: Vec<String>,
    pub windows: usize,
    pub normal_windows: usize,
    pub anomalous_windows: usize,
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub threshold: f64,
    pub at_threshold: Rates,
    pub after_hysteresis: Rates,
    pub mean_score_by_label: Vec<(String, f64, usize)>,
    pub feature_quality: Option<FeatureQuality>,
    /// The activity head's, for a model with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<activity::HeadQuality>,
}

pub const NEIGHBOURS: usize = 5;
pub const FOLDS: usize = 5;
/// PCA baselines are capped here: beyond it the baseline costs more than it
/// tells (an overcomplete sparse code has more units than the input).
pub const MAX_PCA_DIMENSIONS: usize = 64;

pub struct Subject<'a> {
    pub model: &'a str,
    pub data: &'a str,
    pub label: &'a str,
    pub normal: &'a [String],
    pub grouped_by: &'a str,
}

pub fn evaluate(w: &LabelledWindows, subject: &Subject) -> EvaluationReport {
    let anomalous: Vec<bool> = w
        .labels
        .iter()
        .map(|l| !subject.normal.contains(&w.label_names[*l as usize]))
        .collect();
    let mean_score_by_label = w
        .label_names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let s: Vec<f64> = w
                .labels
                .iter()
                .zip(&w.scores)
                .filter(|(l, _)| **l as usize == i)
                .map(|(_, s)| *s as f64)
                .collect();
            (!s.is_empty()).then(|| {
                (
                    name.clone(),
                    s.iter().sum::<f64>() / s.len() as f64,
                    s.len(),
                )
            })
        })
        .collect();
    let classes = {
        let mut l = w.labels.clone();
        l.sort_unstable();
        l.dedup();
        l.len()
    };
    // A model without a latent output has empty codes: nothing to classify.
    let has_codes = w.latent.first().is_some_and(|c| !c.is_empty());
    let feature_quality = (classes >= 2 && has_codes).then(|| {
        let latent_dim = w.latent[0].len();
        let pca_dim = latent_dim.min(w.input[0].len()).min(MAX_PCA_DIMENSIONS);
        let run = |rows: &[Vec<f32>], pca: Option<usize>| {
            let (accuracy, macro_f1) =
                cross_validate(rows, &w.labels, &w.groups, FOLDS, NEIGHBOURS, pca);
            (accuracy, macro_f1)
        };
        let (la, lf) = run(&w.latent, None);
        let (pa, pf) = run(&w.input, Some(pca_dim));
        let (ra, rf) = run(&w.input, None);
        FeatureQuality {
            classifier: format!("{NEIGHBOURS}-nearest neighbours on standardised features"),
            grouped_by: subject.grouped_by.to_string(),
            folds: FOLDS,
            latent: ClassifierScore {
                dimensions: latent_dim,
                accuracy: la,
                macro_f1: lf,
            },
            pca: ClassifierScore {
                dimensions: pca_dim,
                accuracy: pa,
                macro_f1: pf,
            },
            raw: ClassifierScore {
                dimensions: w.input[0].len(),
                accuracy: ra,
                macro_f1: rf,
            },
        }
    });
    EvaluationReport {
        model: subject.model.to_string(),
        data: subject.data.to_string(),
        label: subject.label.to_string(),
        normal: subject.normal.to_vec(),
        windows: w.scores.len(),
        normal_windows: anomalous.iter().filter(|a| !**a).count(),
        anomalous_windows: anomalous.iter().filter(|a| **a).count(),
        roc_auc: roc_auc(&w.scores, &anomalous),
        pr_auc: average_precision(&w.scores, &anomalous),
        threshold: w.threshold,
        at_threshold: Confusion::count(&w.over_threshold, &anomalous).into(),
        after_hysteresis: Confusion::count(&w.in_alert, &anomalous).into(),
        mean_score_by_label,
        feature_quality,
        activity: w.head.as_ref().map(|head| {
            activity::head_quality(&activity::HeadInput {
                trained_on: &head.label,
                label: subject.label,
                hidden: head.hidden,
                encoder: &head.encoder,
                labels: &w.labels,
                label_names: &w.label_names,
                predicted: &w.activity,
                groups: &w.groups,
                group_names: &w.group_names,
                grouped_by: subject.grouped_by,
                codes: if w.head_input.is_empty() {
                    &w.latent
                } else {
                    &w.head_input
                },
                folds: FOLDS,
            })
        }),
    }
}

pub fn markdown(r: &EvaluationReport) -> String {
    let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    let mut md = format!(
        "# Evaluation of {} on {}\n\nNormal: {} = {}; {} windows ({} normal, {} anomalous).\n\n\
         ## Anomaly quality\n\n| measure | value |\n|---|---|\n| ROC AUC | {} |\n\
         | PR AUC (average precision) | {} |\n| threshold | {:.5} |\n",
        r.model,
        r.data,
        r.label,
        r.normal.join(", "),
        r.windows,
        r.normal_windows,
        r.anomalous_windows,
        opt(r.roc_auc),
        opt(r.pr_auc),
        r.threshold
    );
    for (name, rates) in [
        ("at the threshold", &r.at_threshold),
        ("after hysteresis", &r.after_hysteresis),
    ] {
        md += &format!(
            "| precision {name} | {:.4} |\n| recall {name} | {:.4} |\n| false-alarm rate {name} | {:.4} |\n",
            rates.precision, rates.recall, rates.false_alarm_rate
        );
    }
    md += "\n| label | windows | mean score |\n|---|---|---|\n";
    for (name, mean, n) in &r.mean_score_by_label {
        md += &format!("| {name} | {n} | {mean:.4} |\n");
    }
    if let Some(f) = &r.feature_quality {
        md += &format!(
            "\n## Feature quality\n\n{} classifying {}, {}-fold cross-validation grouped by {} \
             (no group in both training and test).\n\n| features | dimensions | accuracy | macro-F1 |\n|---|---|---|---|\n",
            f.classifier, r.label, f.folds, f.grouped_by
        );
        for (name, s) in [
            ("latent code", &f.latent),
            ("PCA of the input", &f.pca),
            ("raw input", &f.raw),
        ] {
            md += &format!(
                "| {name} | {} | {:.4} | {:.4} |\n",
                s.dimensions, s.accuracy, s.macro_f1
            );
        }
    }
    if let Some(q) = &r.activity {
        md += &activity::markdown(q);
    }
    md
}

/// Writes `report.json`, `report.md` and the plots into `dir`.
pub fn write(dir: &Path, r: &EvaluationReport, w: &LabelledWindows) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(r).map_err(std::io::Error::other)?,
    )?;
    let has_codes = w.latent.first().is_some_and(|c| !c.is_empty());
    let mut md = markdown(r);
    md += "\n## Plots\n\n![score over time](scores.svg)\n\n![score distribution](histogram.svg)\n";
    if has_codes {
        md += "\n![latent codes](latent.svg)\n";
    }
    if let Some(q) = &r.activity {
        md += "\n![activity head: confusion matrix](confusion.svg)\n";
        std::fs::write(
            dir.join("confusion.svg"),
            activity::confusion_plot(
                &format!(
                    "Activity head on {} windows: true against predicted",
                    q.windows
                ),
                &q.classes,
                &q.confusion,
            ),
        )?;
    }
    std::fs::write(dir.join("report.md"), md)?;
    std::fs::write(
        dir.join("scores.svg"),
        plots::score_timeline(
            &w.scores,
            w.threshold,
            &w.in_alert,
            &w.labels,
            &w.label_names,
        ),
    )?;
    let (mut normal, mut anomalous) = (Vec::new(), Vec::new());
    for (score, label) in w.scores.iter().zip(&w.labels) {
        if r.normal.contains(&w.label_names[*label as usize]) {
            normal.push(*score);
        } else {
            anomalous.push(*score);
        }
    }
    std::fs::write(
        dir.join("histogram.svg"),
        plots::score_histograms(&normal, &anomalous, w.threshold),
    )?;
    if !has_codes {
        return Ok(());
    }
    let rows: Vec<&[f32]> = w.latent.iter().map(Vec::as_slice).collect();
    let pca = Pca::fit(&rows, 2);
    let points: Vec<(f32, f32)> = rows
        .iter()
        .map(|r| {
            let p = pca.transform(r);
            (p[0], p.get(1).copied().unwrap_or(0.0))
        })
        .collect();
    std::fs::write(
        dir.join("latent.svg"),
        plots::scatter(
            "Latent codes, first two principal components",
            &points,
            &w.labels,
            &w.label_names,
        ),
    )?;
    Ok(())
}
