//! How good latent codes are as activity features: PCA (the linear
//! baseline of the same size), a k-nearest-neighbour classifier, grouped
//! cross-validation folds and macro-F1. Pure; small dense linear algebra in
//! f64, enough for thousands of windows of a few hundred values.

/// Principal components fitted on rows of `dim` values.
#[derive(Debug, Clone)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// `k` unit vectors of `dim` values, by decreasing variance.
    pub components: Vec<Vec<f64>>,
}

impl Pca {
    /// The top `k` components by orthogonal (subspace) iteration on the
    /// covariance matrix; deterministic.
    pub fn fit(rows: &[&[f32]], k: usize) -> Pca {
        let dim = rows.first().map_or(0, |r| r.len());
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0f64; dim];
        for row in rows {
            for (m, v) in mean.iter_mut().zip(row.iter()) {
                *m += *v as f64 / n;
            }
        }
        let mut cov = vec![0f64; dim * dim];
        let mut centred = vec![0f64; dim];
        for row in rows {
            for ((c, v), m) in centred.iter_mut().zip(row.iter()).zip(&mean) {
                *c = *v as f64 - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                if ci == 0.0 {
                    continue;
                }
                let line = &mut cov[i * dim..(i + 1) * dim];
                for (slot, cj) in line.iter_mut().zip(&centred) {
                    *slot += ci * cj;
                }
            }
        }
        let k = k.min(dim);
        // Start from a fixed, full-rank basis so the result is reproducible.
        let mut basis: Vec<Vec<f64>> = (0..k)
            .map(|j| {
                (0..dim)
                    .map(|i| {
                        if i % k.max(1) == j {
                            1.0
                        } else {
                            0.01 * ((i * 7 + j * 13) % 11) as f64
                        }
                    })
                    .collect()
            })
            .collect();
        orthonormalise(&mut basis);
        for _ in 0..100 {
            let mut next: Vec<Vec<f64>> = basis
                .iter()
                .map(|v| {
                    (0..dim)
                        .map(|i| {
                            cov[i * dim..(i + 1) * dim]
                                .iter()
                                .zip(v)
                                .map(|(a, b)| a * b)
                                .sum()
                        })
                        .collect()
                })
                .collect();
            orthonormalise(&mut next);
            basis = next;
        }
        // Order by the variance each direction explains.
        let variance = |v: &Vec<f64>| -> f64 {
            (0..dim)
                .map(|i| {
                    v[i] * cov[i * dim..(i + 1) * dim]
                        .iter()
                        .zip(v)
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                })
                .sum()
        };
        basis.sort_by(|a, b| variance(b).total_cmp(&variance(a)));
        Pca {
            mean,
            components: basis,
        }
    }

    pub fn transform(&self, row: &[f32]) -> Vec<f32> {
        self.components
            .iter()
            .map(|c| {
                c.iter()
                    .zip(row)
                    .zip(&self.mean)
                    .map(|((c, v), m)| c * (*v as f64 - m))
                    .sum::<f64>() as f32
            })
            .collect()
    }
}

/// Gram-Schmidt, twice for stability; a vanishing vector is replaced by
/// zeros (it then explains no variance).
fn orthonormalise(vectors: &mut [Vec<f64>]) {
    for _ in 0..2 {
        for i in 0..vectors.len() {
            for j in 0..i {
                let dot: f64 = vectors[i].iter().zip(&vectors[j]).map(|(a, b)| a * b).sum();
                let (head, tail) = vectors.split_at_mut(i);
                for (a, b) in tail[0].iter_mut().zip(&head[j]) {
                    *a -= dot * b;
                }
            }
            let norm = vectors[i].iter().map(|a| a * a).sum::<f64>().sqrt();
            for a in vectors[i].iter_mut() {
                *a = if norm > 1e-12 { *a / norm } else { 0.0 };
            }
        }
    }
}

/// Standardises columns with the statistics of `fit_rows`.
pub struct Scaler {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Scaler {
    pub fn fit(fit_rows: &[&[f32]]) -> Scaler {
        let dim = fit_rows.first().map_or(0, |r| r.len());
        let n = fit_rows.len().max(1) as f64;
        let mut mean = vec![0f64; dim];
        let mut sq = vec![0f64; dim];
        for row in fit_rows {
            for (i, v) in row.iter().enumerate() {
                mean[i] += *v as f64 / n;
                sq[i] += (*v as f64) * (*v as f64) / n;
            }
        }
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| ((s - m * m).max(0.0).sqrt().max(1e-9)) as f32)
            .collect();
        Scaler {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    pub fn apply(&self, row: &[f32]) -> Vec<f32> {
        row.iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((v, m), s)| (v - m) / s)
            .collect()
    }
}

/// The majority label among the `k` nearest training rows (Euclidean);
/// ties go to the nearest of the tied labels.
pub fn knn_predict(train: &[Vec<f32>], labels: &[u32], query: &[f32], k: usize) -> u32 {
    let mut nearest: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (row, label) in train.iter().zip(labels) {
        let d: f32 = row.iter().zip(query).map(|(a, b)| (a - b) * (a - b)).sum();
        if nearest.len() < k || d < nearest[nearest.len() - 1].0 {
            let at = nearest.partition_point(|(e, _)| *e <= d);
            nearest.insert(at, (d, *label));
            nearest.truncate(k);
        }
    }
    let mut best = (0usize, u32::MAX);
    // Visited nearest first, so a later label needs strictly more votes.
    for (_, label) in &nearest {
        let votes = nearest.iter().filter(|(_, l)| l == label).count();
        if votes > best.0 {
            best = (votes, *label);
        }
    }
    best.1
}

/// `folds` groups of group ids (round-robin over the sorted distinct
/// groups), so that no group is in two folds. Returns each fold's rows.
pub fn group_folds(groups: &[u32], folds: usize) -> Vec<Vec<usize>> {
    let mut distinct: Vec<u32> = groups.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let folds = folds.min(distinct.len()).max(1);
    (0..folds)
        .map(|f| {
            let members: Vec<u32> = distinct.iter().copied().skip(f).step_by(folds).collect();
            (0..groups.len())
                .filter(|i| members.contains(&groups[*i]))
                .collect()
        })
        .collect()
}

/// Accuracy and the mean of per-class F1 over the classes present in
/// `truth` or `predicted`.
pub fn accuracy_and_macro_f1(truth: &[u32], predicted: &[u32]) -> (f64, f64) {
    let n = truth.len().max(1) as f64;
    let accuracy = truth.iter().zip(predicted).filter(|(t, p)| t == p).count() as f64 / n;
    let mut classes: Vec<u32> = truth.iter().chain(predicted).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let f1s: Vec<f64> = classes
        .iter()
        .map(|c| {
            let tp = truth
                .iter()
                .zip(predicted)
                .filter(|(t, p)| *t == c && *p == c)
                .count() as f64;
            let fp = truth
                .iter()
                .zip(predicted)
                .filter(|(t, p)| *t != c && *p == c)
                .count() as f64;
            let fn_ = truth
                .iter()
                .zip(predicted)
                .filter(|(t, p)| *t == c && *p != c)
                .count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fn_)
            }
        })
        .collect();
    (accuracy, f1s.iter().sum::<f64>() / f1s.len().max(1) as f64)
}

type Projection = Box<dyn Fn(&[f32]) -> Vec<f32>>;

/// Grouped cross-validated k-NN on `rows`: each fold's rows are classified
/// by the others, after standardising with the others' statistics and, when
/// `pca_dim` is given, projecting on their principal components.
pub fn cross_validate(
    rows: &[Vec<f32>],
    labels: &[u32],
    groups: &[u32],
    folds: usize,
    k: usize,
    pca_dim: Option<usize>,
) -> (f64, f64) {
    let mut predicted = vec![0u32; rows.len()];
    for test in group_folds(groups, folds) {
        let is_test: std::collections::HashSet<usize> = test.iter().copied().collect();
        let train_idx: Vec<usize> = (0..rows.len()).filter(|i| !is_test.contains(i)).collect();
        let train_rows: Vec<&[f32]> = train_idx.iter().map(|i| rows[*i].as_slice()).collect();
        let project: Projection = match pca_dim {
            Some(d) => {
                let pca = Pca::fit(&train_rows, d);
                Box::new(move |r| pca.transform(r))
            }
            None => Box::new(|r| r.to_vec()),
        };
        let projected: Vec<Vec<f32>> = train_rows.iter().map(|r| project(r)).collect();
        let scaler = Scaler::fit(&projected.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let train: Vec<Vec<f32>> = projected.iter().map(|r| scaler.apply(r)).collect();
        let train_labels: Vec<u32> = train_idx.iter().map(|i| labels[*i]).collect();
        for i in test {
            predicted[i] = knn_predict(&train, &train_labels, &scaler.apply(&project(&rows[i])), k);
        }
    }
    accuracy_and_macro_f1(labels, &predicted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_dominant_direction() {
        // Points along (1, 1, 0) with a little noise on the third axis.
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 - 25.0;
                vec![t, t, 0.1 * ((i % 3) as f32 - 1.0)]
            })
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let pca = Pca::fit(&refs, 2);
        let c = &pca.components[0];
        assert!(
            (c[0].abs() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-3
                && (c[1].abs() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-3,
            "{c:?}"
        );
        assert!(c[2].abs() < 1e-3);
        let dot: f64 = pca.components[0]
            .iter()
            .zip(&pca.components[1])
            .map(|(a, b)| a * b)
            .sum();
        assert!(dot.abs() < 1e-9, "orthogonal components");
        let mean: Vec<f32> = pca.mean.iter().map(|m| *m as f32).collect();
        assert!(
            pca.transform(&mean)[0].abs() < 1e-4,
            "the mean projects to 0"
        );
    }

    #[test]
    fn knn_votes_and_breaks_ties_by_distance() {
        let train = vec![vec![0.0], vec![0.1], vec![5.0], vec![5.1], vec![5.2]];
        let labels = [1, 1, 2, 2, 2];
        assert_eq!(knn_predict(&train, &labels, &[0.05], 3), 1);
        assert_eq!(knn_predict(&train, &labels, &[4.0], 3), 2);
        assert_eq!(
            knn_predict(&train, &labels, &[2.4], 2),
            1,
            "one vote each: the nearer wins"
        );
    }

    #[test]
    fn folds_never_split_a_group() {
        let groups = [1, 1, 2, 2, 3, 3, 4, 5];
        let folds = group_folds(&groups, 2);
        assert_eq!(folds.len(), 2);
        let all: usize = folds.iter().map(Vec::len).sum();
        assert_eq!(all, groups.len());
        for fold in &folds {
            for other in &folds {
                if fold != other {
                    for i in fold {
                        assert!(other.iter().all(|j| groups[*j] != groups[*i]));
                    }
                }
            }
        }
    }

    #[test]
    fn macro_f1_averages_classes() {
        let (acc, f1) = accuracy_and_macro_f1(&[0, 0, 1, 1], &[0, 0, 1, 0]);
        assert_eq!(acc, 0.75);
        // class 0: tp 2 fp 1 fn 0 -> 0.8; class 1: tp 1 fp 0 fn 1 -> 0.6667
        assert!((f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn cross_validation_separates_separable_classes() {
        let mut rows = Vec::new();
        let (mut labels, mut groups) = (Vec::new(), Vec::new());
        for g in 0..5u32 {
            for i in 0..20 {
                let label = (i % 2) as u32;
                let base = if label == 0 { -3.0 } else { 3.0 };
                rows.push(vec![
                    base + 0.1 * g as f32,
                    base - 0.05 * i as f32,
                    0.3 * (i as f32).sin(),
                ]);
                labels.push(label);
                groups.push(g);
            }
        }
        assert_eq!(cross_validate(&rows, &labels, &groups, 5, 3, None).0, 1.0);
        assert_eq!(
            cross_validate(&rows, &labels, &groups, 5, 3, Some(1)).0,
            1.0
        );
    }
}
