//! The search's reward: how a proxy classifier is scored on the validation images it sees (top-1,
//! mean per-class accuracy, or mean per-class log-likelihood), per item and aggregated, and the
//! paired standard error that decides whether one candidate beats another by more than the noise.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// What a classifier is scored by on a labelled part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Score {
    /// Top-1 accuracy.
    Top1,
    /// Mean per-class accuracy (top-1 on a balanced part).
    Balanced,
    /// Mean per-class log-likelihood of the true label (≤ 0; continuous, so it separates
    /// classifiers whose accuracies tie).
    LogLikelihood,
}

/// Per-item scores of `[K, N, C]` logits against `labels` (`N`), `K` rows of `N`: 1/0 for a
/// right/wrong prediction (top-1, balanced), or the log-likelihood of the true label.
pub fn item_scores(kind: Score, logits: &Tensor, labels: &[i64]) -> Vec<Vec<f64>> {
    let (k, n) = (logits.size()[0] as usize, labels.len());
    if n == 0 {
        return vec![Vec::new(); k];
    }
    let flat: Vec<f64> = match kind {
        Score::Top1 | Score::Balanced => {
            let pred: Vec<i64> = Vec::try_from(logits.argmax(-1, false).flatten(0, -1)).expect("i64");
            pred.chunks(n)
                .flat_map(|p| p.iter().zip(labels).map(|(a, b)| f64::from(u8::from(a == b))))
                .collect()
        }
        Score::LogLikelihood => {
            let y = Tensor::from_slice(labels)
                .to_device(logits.device())
                .view([1, n as i64, 1])
                .expand([k as i64, n as i64, 1], false);
            let ll = logits
                .to_kind(Kind::Double)
                .log_softmax(-1, Kind::Double)
                .gather(2, &y, false);
            Vec::try_from(ll.flatten(0, -1)).expect("f64")
        }
    };
    flat.chunks(n).map(<[f64]>::to_vec).collect()
}

/// The weight of each item in a score: 1/N for top-1; 1/(C'·n_c) for the per-class means
/// (C' classes present, n_c items of the item's class).
fn item_weights(kind: Score, labels: &[i64], classes: usize) -> Vec<f64> {
    let n = labels.len();
    match kind {
        Score::Top1 => vec![1.0 / n.max(1) as f64; n],
        Score::Balanced | Score::LogLikelihood => {
            let mut tot = vec![0usize; classes];
            for &y in labels {
                tot[y as usize] += 1;
            }
            let present = tot.iter().filter(|&&t| t > 0).count().max(1) as f64;
            labels
                .iter()
                .map(|&y| 1.0 / (present * tot[y as usize] as f64))
                .collect()
        }
    }
}

/// A score from per-item scores (accuracies as fractions in [0, 1]).
pub fn aggregate(kind: Score, items: &[f64], labels: &[i64], classes: usize) -> f64 {
    item_weights(kind, labels, classes)
        .iter()
        .zip(items)
        .map(|(w, x)| w * x)
        .sum()
}

/// Whether `gain` is more than one standard error `se`: a gain equal to it (3 of 100 images with
/// SE 3.00) is not, whatever the last bit of the floating-point SE says.
pub fn beyond_se(gain: f64, se: f64) -> bool {
    gain > se * (1.0 + 1e-9) + 1e-9
}

/// The standard error of `aggregate(a) − aggregate(b)` for two classifiers scored on the same
/// items, from their per-item differences (paired: items both get right or wrong cancel), within
/// each class for the per-class means.
pub fn paired_se(kind: Score, a: &[f64], b: &[f64], labels: &[i64], classes: usize) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let groups: Vec<usize> = match kind {
        Score::Top1 => vec![0; labels.len()],
        Score::Balanced | Score::LogLikelihood => labels.iter().map(|&y| y as usize).collect(),
    };
    let w = item_weights(kind, labels, classes);
    let g = groups.iter().max().map_or(0, |m| m + 1);
    let (mut sum, mut cnt) = (vec![0.0; g], vec![0usize; g]);
    for (&k, &x) in groups.iter().zip(&d) {
        sum[k] += x;
        cnt[k] += 1;
    }
    let var: f64 = groups
        .iter()
        .zip(&d)
        .zip(&w)
        .map(|((&k, &x), &wi)| {
            let m = sum[k] / cnt[k] as f64;
            // unbiased within-group variance of the mean: n/(n−1) · Σ w²(d − d̄)²
            let c = cnt[k] as f64;
            wi * wi * (x - m).powi(2) * if c > 1.0 { c / (c - 1.0) } else { 0.0 }
        })
        .sum();
    var.sqrt()
}

/// Scores of `[K, N, C]` logits against `labels` (`N`), one per classifier; accuracies are
/// fractions in [0, 1]. Classes absent from `labels` are left out of the per-class means.
pub fn score(kind: Score, logits: &Tensor, labels: &[i64], classes: usize) -> Vec<f64> {
    let k = logits.size()[0] as usize;
    if labels.is_empty() {
        return vec![0.0; k];
    }
    item_scores(kind, logits, labels)
        .iter()
        .map(|v| aggregate(kind, v, labels, classes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_standard_error_by_hand() {
        // top-1 on 4 items: a right on items 0, 1, 2; b right on 0, 3; d = (0, 1, 1, −1)
        let (a, b) = ([1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]);
        let labels = [0i64, 0, 1, 1];
        // Var of the mean of d: sample variance / n = (Σ(d − ¼)² / 3) / 4; Σ = 1/16 + 9/16 + 9/16 + 25/16
        let want = ((44.0 / 16.0) / 3.0 / 4.0f64).sqrt();
        assert!((paired_se(Score::Top1, &a, &b, &labels, 2) - want).abs() < 1e-12);
        // balanced: per class, d = (0, 1) and (1, −1), each class's mean weighted ½:
        // ¼ · (var₀/2 + var₁/2), var₀ = ½ (sample variance of 0, 1), var₁ = 2
        let want = (0.25 * (0.5 / 2.0 + 2.0 / 2.0f64)).sqrt();
        assert!((paired_se(Score::Balanced, &a, &b, &labels, 2) - want).abs() < 1e-12);
        // identical classifiers: no difference, no error
        assert_eq!(paired_se(Score::Balanced, &a, &a, &labels, 2), 0.0);
        assert_eq!(aggregate(Score::Balanced, &a, &labels, 2), 0.75);
    }

    #[test]
    fn scores_by_hand() {
        // one classifier, 4 items of 2 classes; logits favour class 0 everywhere
        let logits = Tensor::from_slice(&[2.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 3.0]).view([1, 4, 2]);
        let labels = [0i64, 0, 1, 1];
        // predictions 0, 0, 0, 1: top-1 3/4; class 0 2/2, class 1 1/2 → balanced 3/4
        assert_eq!(score(Score::Top1, &logits, &labels, 2), vec![0.75]);
        // labels 0, 1, 1, 1: class 0 1/1, class 1 1/3 → balanced 2/3 (top-1 2/4)
        assert_eq!(
            score(Score::Balanced, &logits, &[0, 1, 1, 1], 2),
            vec![(1.0 + 1.0 / 3.0) / 2.0]
        );
        assert_eq!(score(Score::Top1, &logits, &[0, 1, 1, 1], 2), vec![0.5]);
        let ls = |a: f64, b: f64, pick: f64| pick - (a.exp() + b.exp()).ln();
        let c0 = (ls(2.0, 0.0, 2.0) + ls(1.0, 0.0, 1.0)) / 2.0;
        let c1 = (ls(1.0, 0.0, 0.0) + ls(0.0, 3.0, 3.0)) / 2.0;
        let ll = score(Score::LogLikelihood, &logits, &labels, 2);
        assert!((ll[0] - (c0 + c1) / 2.0).abs() < 1e-12, "{ll:?}");
    }
}
