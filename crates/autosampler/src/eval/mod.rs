//! Evaluation metrics: top-1, top-5, per-class accuracy, many/medium/few-shot accuracy (groups by
//! training count), expected calibration error (15 bins) and the confusion matrix. Accuracies are
//! in percent, as the paper's tables; ECE is a fraction.
use crate::data::split::shot_group;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Metrics of one model on one part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
    /// Top-1 per class; NaN for a class with no image in the part (JSON: null).
    #[serde(deserialize_with = "nan_for_null")]
    pub per_class: Vec<f64>,
    pub many: Option<f64>,
    pub medium: Option<f64>,
    pub few: Option<f64>,
    /// Mean accuracy over classes (equals top-1 on a balanced set).
    pub balanced: f64,
    pub ece: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u32>>,
}

/// Reads back what serde_json writes for NaN (null).
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// Metrics of `logits` (`[N, C]`) against `labels`; `train_counts` defines the shot groups.
pub fn metrics(logits: &Tensor, labels: &[u32], train_counts: &[usize]) -> Metrics {
    let c = train_counts.len();
    let n = labels.len();
    let probs = logits
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .softmax(-1, Kind::Float);
    let probs: Vec<f32> = Vec::try_from(probs.flatten(0, -1)).expect("f32 probabilities");
    let mut confusion = vec![vec![0u32; c]; c];
    let (mut top1, mut top5) = (0usize, 0usize);
    let bins = 15;
    let mut bin_n = vec![0usize; bins];
    let mut bin_conf = vec![0f64; bins];
    let mut bin_acc = vec![0f64; bins];
    for (i, &y) in labels.iter().enumerate() {
        let p = &probs[i * c..(i + 1) * c];
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let pred = order[0];
        confusion[y as usize][pred] += 1;
        top1 += usize::from(pred == y as usize);
        top5 += usize::from(order.iter().take(5).any(|&k| k == y as usize));
        let conf = p[pred] as f64;
        let b = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1; // bins (k/15, (k+1)/15]
        bin_n[b] += 1;
        bin_conf[b] += conf;
        bin_acc[b] += f64::from(u8::from(pred == y as usize));
    }
    let per_class: Vec<f64> = confusion
        .iter()
        .enumerate()
        .map(|(k, row)| {
            let t: u32 = row.iter().sum();
            if t == 0 {
                f64::NAN
            } else {
                100.0 * row[k] as f64 / t as f64
            }
        })
        .collect();
    let group = |g: &str| {
        let v: Vec<f64> = (0..c)
            .filter(|&k| shot_group(train_counts[k]) == g && !per_class[k].is_nan())
            .map(|k| per_class[k])
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let present: Vec<f64> = per_class.iter().copied().filter(|x| !x.is_nan()).collect();
    let ece = (0..bins)
        .filter(|&b| bin_n[b] > 0)
        .map(|b| {
            (bin_acc[b] / bin_n[b] as f64 - bin_conf[b] / bin_n[b] as f64).abs() * bin_n[b] as f64 / n as f64
        })
        .sum();
    Metrics {
        n,
        top1: 100.0 * top1 as f64 / n.max(1) as f64,
        top5: 100.0 * top5 as f64 / n.max(1) as f64,
        many: group("many"),
        medium: group("medium"),
        few: group("few"),
        balanced: present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class,
        ece,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A class without images in a part (every class of an empty validation set) reads back
    /// from the JSON it is written to (it used to stop a run's stage 2 reading its eval.json).
    #[test]
    fn a_part_without_a_class_round_trips_through_json() {
        let m = metrics(&Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]), &[0], &[5, 5]);
        assert_eq!(m.per_class[0], 100.0);
        assert!(m.per_class[1].is_nan());
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.per_class[0], 100.0);
        assert!(back.per_class[1].is_nan());
        let empty = metrics(
            &Tensor::zeros([0, 2], (Kind::Float, tch::Device::Cpu)),
            &[],
            &[5, 5],
        );
        let back: Metrics = serde_json::from_str(&serde_json::to_string(&empty).unwrap()).unwrap();
        assert!(back.per_class.iter().all(|x| x.is_nan()) && back.n == 0);
    }

    #[test]
    fn hand_computed_case() {
        // 4 samples, 3 classes; predictions 0, 2, 2, 1 against labels 0, 1, 2, 1
        let logits = Tensor::from_slice(&[
            3.0f32, 0.0, 0.0, //
            0.0, 1.0, 2.0, //
            0.0, 0.0, 5.0, //
            0.0, 4.0, 0.0,
        ])
        .view([4, 3]);
        let m = metrics(&logits, &[0, 1, 2, 1], &[200, 50, 10]);
        assert_eq!(m.top1, 75.0);
        assert_eq!(m.top5, 100.0);
        assert_eq!(m.per_class, [100.0, 50.0, 100.0]);
        assert_eq!((m.many, m.medium, m.few), (Some(100.0), Some(50.0), Some(100.0)));
        assert_eq!(m.confusion, [[1, 0, 0], [0, 1, 1], [0, 0, 1]]);
        // ECE by hand: confidences softmax maxima
        let conf = |l: [f64; 3]| {
            let e: Vec<f64> = l.iter().map(|x| x.exp()).collect();
            e.iter().cloned().fold(0.0, f64::max) / e.iter().sum::<f64>()
        };
        let c = [
            conf([3., 0., 0.]),
            conf([0., 1., 2.]),
            conf([0., 0., 5.]),
            conf([0., 4., 0.]),
        ];
        // bins of 1/15: c0 = 0.9094 → bin 13, c1 = 0.6652 → bin 9, c2 = 0.9867 → bin 14, c3 = 0.9647 → bin 14
        let want = ((1.0 - c[0]) + (c[1] - 0.0) + 2.0 * (1.0 - (c[2] + c[3]) / 2.0).abs()) / 4.0;
        assert!((m.ece - want).abs() < 1e-6, "{} vs {want}", m.ece);
    }
}
