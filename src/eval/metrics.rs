//! Measures of anomaly quality: ROC AUC, average precision (PR AUC), and
//! the confusion counts at a threshold. Pure.

use serde::Serialize;

/// Area under the ROC curve: the probability that a random anomalous
/// window scores higher than a random normal one (ties count half).
/// `None` when either class is absent.
pub fn roc_auc(scores: &[f32], anomalous: &[bool]) -> Option<f64> {
    let positives = anomalous.iter().filter(|a| **a).count();
    let negatives = anomalous.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|k| anomalous[**k]).count() as f64 * mid_rank;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Average precision: the area under the precision-recall curve as a step
/// function over distinct score thresholds (scikit-learn's definition).
pub fn average_precision(scores: &[f32], anomalous: &[bool]) -> Option<f64> {
    let positives = anomalous.iter().filter(|a| **a).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0f64, 0f64);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        for k in &order[i..=j] {
            if anomalous[*k] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - last_recall) * precision;
        last_recall = recall;
        i = j + 1;
    }
    Some(ap)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Confusion {
    pub true_positives: usize,
    pub false_positives: usize,
    pub true_negatives: usize,
    pub false_negatives: usize,
}

impl Confusion {
    pub fn count(predicted: &[bool], anomalous: &[bool]) -> Self {
        let mut c = Confusion::default();
        for (p, a) in predicted.iter().zip(anomalous) {
            match (p, a) {
                (true, true) => c.true_positives += 1,
                (true, false) => c.false_positives += 1,
                (false, false) => c.true_negatives += 1,
                (false, true) => c.false_negatives += 1,
            }
        }
        c
    }

    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    /// Share of normal windows flagged.
    pub fn false_alarm_rate(&self) -> f64 {
        ratio(
            self.false_positives,
            self.false_positives + self.true_negatives,
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_tied_scores() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &labels), Some(0.5));
        // One inversion among four pairs.
        assert_eq!(roc_auc(&[0.1, 0.6, 0.5, 0.9], &labels), Some(0.75));
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn average_precision_matches_scikit_learn() {
        // sklearn.metrics.average_precision_score([0,0,1,1], [0.1,0.4,0.35,0.8]) == 0.8333...
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        assert_eq!(average_precision(&[0.1, 0.9], &[false, true]), Some(1.0));
    }

    #[test]
    fn confusion_rates() {
        let c = Confusion::count(&[true, true, false, false], &[true, false, false, true]);
        assert_eq!(
            (c.precision(), c.recall(), c.false_alarm_rate()),
            (0.5, 0.5, 0.5)
        );
    }
}
