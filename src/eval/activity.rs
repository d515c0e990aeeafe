//! How well a model's activity head names the activity: the file's own
//! head on the evaluated windows (accuracy, macro-F1, per group, the
//! confusion matrix), and the same recipe refitted on those windows' codes
//! in folds grouped by subject (no group in both training and test), as
//! the feature evaluation keeps them apart; and the confusion matrix as SVG.

use plotters::prelude::*;
use rand::SeedableRng;
use serde::Serialize;

use crate::eval::features::{accuracy_and_macro_f1, group_folds};
use crate::eval::plots::{svg, FONT};
use crate::model::train::config::ActivityConfig;
use crate::model::train::head;

#[derive(Debug, Serialize)]
pub struct GroupAccuracy {
    pub group: String,
    pub windows: usize,
    pub accuracy: f64,
}

#[derive(Debug, Serialize)]
pub struct HeadQuality {
    /// The column the head was trained on, and the one evaluated.
    pub trained_on: String,
    pub label: String,
    /// The confusion matrix's rows (truth) and columns (predicted).
    pub classes: Vec<String>,
    pub windows: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub by_group: Vec<GroupAccuracy>,
    /// `confusion[t][p]`: windows of class t the head called p.
    pub confusion: Vec<Vec<usize>>,
    /// The head's recipe refitted per fold on what it reads of these windows.
    pub cross_validated: Option<CrossValidated>,
}

#[derive(Debug, Serialize)]
pub struct CrossValidated {
    pub folds: usize,
    pub grouped_by: String,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// A jointly trained encoder has seen these windows' labels.
    pub encoder: String,
}

/// What the head said of each window, next to the truth.
pub struct HeadInput<'a> {
    pub trained_on: &'a str,
    pub label: &'a str,
    pub hidden: usize,
    pub encoder: &'a str,
    /// The truth: an index into `label_names` per window.
    pub labels: &'a [u32],
    pub label_names: &'a [String],
    /// The head's class per window (absent: the model published none).
    pub predicted: &'a [Option<String>],
    pub groups: &'a [u32],
    pub group_names: &'a [String],
    pub grouped_by: &'a str,
    pub codes: &'a [Vec<f32>],
    pub folds: usize,
}

pub fn head_quality(input: &HeadInput) -> HeadQuality {
    let mut classes: Vec<String> = input.label_names.to_vec();
    classes.extend(input.predicted.iter().flatten().cloned());
    classes.sort();
    classes.dedup();
    let index = |name: &str| classes.binary_search_by(|c| c.as_str().cmp(name)).ok();
    let truth: Vec<u32> = input
        .labels
        .iter()
        .map(|l| index(&input.label_names[*l as usize]).unwrap_or(0) as u32)
        .collect();
    // A window the head left unnamed counts as wrong.
    let predicted: Vec<u32> = input
        .predicted
        .iter()
        .map(|p| p.as_deref().and_then(index).map_or(u32::MAX, |i| i as u32))
        .collect();
    let (accuracy, macro_f1) = accuracy_and_macro_f1(&truth, &predicted);
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    for (t, p) in truth.iter().zip(&predicted) {
        if let Some(cell) = confusion[*t as usize].get_mut(*p as usize) {
            *cell += 1;
        }
    }
    let mut distinct: Vec<u32> = input.groups.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let by_group = distinct
        .iter()
        .map(|g| {
            let rows: Vec<usize> = (0..truth.len())
                .filter(|i| input.groups[*i] == *g)
                .collect();
            let right = rows.iter().filter(|i| truth[**i] == predicted[**i]).count();
            GroupAccuracy {
                group: input
                    .group_names
                    .get(*g as usize)
                    .cloned()
                    .unwrap_or_else(|| g.to_string()),
                windows: rows.len(),
                accuracy: right as f64 / rows.len().max(1) as f64,
            }
        })
        .collect();
    let cross_validated = (distinct.len() >= 2)
        .then(|| cross_validate(input, &truth, classes.len()))
        .flatten();
    HeadQuality {
        trained_on: input.trained_on.to_string(),
        label: input.label.to_string(),
        classes,
        windows: truth.len(),
        accuracy,
        macro_f1,
        by_group,
        confusion,
        cross_validated,
    }
}

/// The head's recipe (its hidden size, `[training.activity]`'s defaults
/// otherwise, the refit included) fitted on the other folds' codes, each
/// fold's windows classified; a fold's training rows lend their last fifth
/// for early stopping.
fn cross_validate(input: &HeadInput, truth: &[u32], classes: usize) -> Option<CrossValidated> {
    let dim = input.codes.first().map_or(0, Vec::len);
    if dim == 0 {
        return None;
    }
    let folds = group_folds(input.groups, input.folds);
    let settings = ActivityConfig {
        hidden: Some(input.hidden),
        ..Default::default()
    };
    let mut predicted = vec![u32::MAX; truth.len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let tensor = |rows: &[usize]| {
        let values: Vec<f32> = rows.iter().flat_map(|i| input.codes[*i].clone()).collect();
        candle_core::Tensor::from_vec(values, (rows.len(), dim), &candle_core::Device::Cpu)
    };
    for test in &folds {
        let rest: Vec<usize> = (0..truth.len()).filter(|i| !test.contains(i)).collect();
        let cut = rest.len() - rest.len() / 5;
        let (fit_rows, stop_rows) = rest.split_at(cut);
        let labels = |rows: &[usize]| rows.iter().map(|i| truth[*i]).collect::<Vec<u32>>();
        let mut run = || -> candle_core::Result<Vec<u32>> {
            let (head, _) = head::fit_on_codes(
                &tensor(fit_rows)?,
                &labels(fit_rows),
                &tensor(stop_rows)?,
                &labels(stop_rows),
                0,
                classes,
                &settings,
                (32, 1e-4),
                &mut rng,
            )?;
            head.logits(&tensor(test)?)?
                .argmax(candle_core::D::Minus1)?
                .to_vec1()
        };
        for (i, p) in test.iter().zip(run().ok()?) {
            predicted[*i] = p;
        }
    }
    let (accuracy, macro_f1) = accuracy_and_macro_f1(truth, &predicted);
    Some(CrossValidated {
        folds: folds.len(),
        grouped_by: input.grouped_by.to_string(),
        accuracy,
        macro_f1,
        encoder: input.encoder.to_string(),
    })
}

pub fn markdown(q: &HeadQuality) -> String {
    let mut md = format!(
        "\n## Activity head\n\nThe model's head (trained on column {:?}) against column {:?}: \
         {} windows, accuracy {:.4}, macro-F1 {:.4}.\n",
        q.trained_on, q.label, q.windows, q.accuracy, q.macro_f1
    );
    if let Some(cv) = &q.cross_validated {
        md += &format!(
            "\nRefitted on what the head reads of these windows (the code, and the front end's \
             features if it reads them), {}-fold cross-validation grouped by {} (no group in both \
             training and test): accuracy {:.4}, macro-F1 {:.4}{}.\n",
            cv.folds,
            cv.grouped_by,
            cv.accuracy,
            cv.macro_f1,
            if cv.encoder == "joint" {
                " (the encoder was trained with its head: on groups it was trained on, \
                 this is not a fair figure)"
            } else {
                ""
            }
        );
    }
    md += "\n| group | windows | accuracy |\n|---|---|---|\n";
    for g in &q.by_group {
        md += &format!("| {} | {} | {:.4} |\n", g.group, g.windows, g.accuracy);
    }
    md
}

/// The confusion matrix: a row per true class, a column per predicted
/// one, each cell shaded by its share of its row and showing its count.
pub fn confusion_plot(title: &str, classes: &[String], counts: &[Vec<usize>]) -> String {
    let k = classes.len().max(1) as i32;
    let cell = (560 / k).clamp(24, 90);
    let (left, top) = (140, 70);
    let size = ((left + k * cell + 40) as u32, (top + k * cell + 70) as u32);
    svg(size, |root| {
        let text = |size: i32| (FONT, size).into_text_style(root);
        root.draw_text(title, &text(18), (12, 12))?;
        root.draw_text("predicted →", &text(14), (left, top - 40))?;
        root.draw_text("true ↓", &text(14), (12, top - 20))?;
        for (t, row) in counts.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            let y = top + t as i32 * cell;
            root.draw_text(&classes[t], &text(14), (12, y + cell / 2 - 7))?;
            for (p, n) in row.iter().enumerate() {
                let x = left + p as i32 * cell;
                let share = *n as f64 / total;
                let shade = RGBColor(0x24, 0x58, 0xB3).mix(0.08 + 0.92 * share);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell - 2, y + cell - 2)],
                    shade.filled(),
                ))?;
                let colour = if share > 0.5 { WHITE } else { BLACK };
                root.draw_text(
                    &n.to_string(),
                    &text(13).color(&colour),
                    (x + cell / 2 - 8, y + cell / 2 - 7),
                )?;
            }
        }
        for (p, name) in classes.iter().enumerate() {
            let x = left + p as i32 * cell;
            root.draw_text(name, &text(13), (x + 2, top + k * cell + 8))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_counts_the_confusion_by_name() {
        let names = vec!["b".to_string(), "a".to_string()];
        let predicted = [Some("a".to_string()), Some("a".to_string()), None];
        let groups = vec!["s1".to_string(), "s2".to_string()];
        let q = head_quality(&HeadInput {
            trained_on: "ex",
            label: "ex",
            hidden: 0,
            encoder: "frozen",
            labels: &[1, 0, 0],
            label_names: &names,
            predicted: &predicted,
            groups: &[0, 0, 1],
            group_names: &groups,
            grouped_by: "subject",
            codes: &[vec![0.0], vec![1.0], vec![1.0]],
            folds: 2,
        });
        assert_eq!(q.classes, ["a", "b"]);
        assert_eq!(q.confusion, vec![vec![1, 0], vec![1, 0]]);
        assert!((q.accuracy - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(q.by_group[0].group, "s1");
        assert_eq!(q.by_group[0].accuracy, 0.5);
        let svg = confusion_plot("t", &q.classes, &q.confusion);
        assert!(svg.starts_with("<svg") && svg.contains("\nb\n"), "{svg}");
    }
}
