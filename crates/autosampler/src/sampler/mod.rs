//! Samplers: per-class weight vectors (summing to 1) and the per-epoch index plans drawn from
//! them (DESIGN.md §4). Pure functions over slices; no tensors.
use crate::{invalid, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which class weights to sample with (`[*.sampler]` in a config, chosen by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Sampler {
    /// w_c ∝ n_c: every image once per epoch (plain shuffling).
    Instance,
    /// w_c = 1/C.
    ClassBalanced,
    /// w_c ∝ √n_c.
    SquareRoot,
    /// Kang et al. (2020): w_c(t) = (1 − t/T)·n_c/N + (t/T)·1/C at epoch t of T.
    Progressive,
    /// BBN's reversed sampler: w_c ∝ n_max/n_c.
    Reversed,
    /// Any given weights (normalised to sum 1), e.g. searched ones.
    Given { weights: Vec<f64> },
    /// Random under-sampling: every class drawn down to the smallest class's count, a fresh random
    /// subset each epoch.
    UnderSample,
    /// Random over-sampling: every class repeated up to the largest class's count.
    OverSample,
}

/// w_c ∝ n_c^q (Kang et al.): q = 1 instance-balanced, q = 0 class-balanced, q = ½ square-root.
pub fn power_weights(counts: &[usize], q: f64) -> Vec<f64> {
    normalise(&counts.iter().map(|&n| (n as f64).powf(q)).collect::<Vec<_>>())
}

/// Scales non-negative values to sum 1.
pub fn normalise(v: &[f64]) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    v.iter().map(|x| x / s).collect()
}

impl Sampler {
    /// Class weights at `epoch` (0-based) of `total_epochs` for classes of `counts` images.
    pub fn weights(&self, counts: &[usize], epoch: usize, total_epochs: usize) -> Result<Vec<f64>> {
        if counts.is_empty() || counts.contains(&0) {
            return Err(invalid!(
                "every class needs at least one training image to be sampled, counts: {counts:?}"
            ));
        }
        let c = counts.len();
        Ok(match self {
            Sampler::Instance => power_weights(counts, 1.0),
            Sampler::ClassBalanced | Sampler::UnderSample | Sampler::OverSample => vec![1.0 / c as f64; c],
            Sampler::SquareRoot => power_weights(counts, 0.5),
            Sampler::Progressive => {
                let t = epoch as f64 / total_epochs.max(1) as f64;
                power_weights(counts, 1.0)
                    .iter()
                    .map(|w| (1.0 - t) * w + t / c as f64)
                    .collect()
            }
            Sampler::Reversed => {
                let max = *counts.iter().max().unwrap() as f64;
                normalise(&counts.iter().map(|&n| max / n as f64).collect::<Vec<_>>())
            }
            Sampler::Given { weights } => {
                if weights.len() != c {
                    return Err(invalid!(
                        "given weights have {} entries: expected one per class ({c})",
                        weights.len()
                    ));
                }
                if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || weights.iter().sum::<f64>() <= 0.0
                {
                    return Err(invalid!(
                        "given weights must be finite, non-negative and not all zero: {weights:?}"
                    ));
                }
                normalise(weights)
            }
        })
    }

    /// The number of draws in one epoch: the training set's size, except for under- and
    /// over-sampling (C × smallest / C × largest class).
    pub fn epoch_len(&self, counts: &[usize]) -> usize {
        let c = counts.len();
        match self {
            Sampler::UnderSample => c * counts.iter().copied().min().unwrap_or(0),
            Sampler::OverSample => c * counts.iter().copied().max().unwrap_or(0),
            _ => counts.iter().sum(),
        }
    }

    /// The index plan of `epoch`: positions into `labels`, `epoch_len` long. Without replacement
    /// each class's quota is filled by whole fresh permutations of its images (so no image repeats
    /// before every image of its class has been used); with replacement a class is drawn by its
    /// weight and then an image of it uniformly (class-aware sampling).
    pub fn plan(
        &self,
        labels: &[u32],
        epoch: usize,
        total_epochs: usize,
        replacement: bool,
        rng: &mut impl Rng,
    ) -> Result<Vec<usize>> {
        let members = class_members(labels);
        let counts: Vec<usize> = members.iter().map(Vec::len).collect();
        let w = self.weights(&counts, epoch, total_epochs)?;
        let len = self.epoch_len(&counts);
        Ok(if replacement {
            plan_with_replacement(&members, &w, len, rng)
        } else {
            plan_without_replacement(&members, &w, len, rng)
        })
    }
}

/// Positions of each class's images in `labels`.
pub fn class_members(labels: &[u32]) -> Vec<Vec<usize>> {
    let c = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut m = vec![Vec::new(); c];
    for (i, &l) in labels.iter().enumerate() {
        m[l as usize].push(i);
    }
    m
}

/// Splits `len` into per-class quotas proportional to `w` (largest remainder; sums to `len`).
pub fn quotas(w: &[f64], len: usize) -> Vec<usize> {
    let exact: Vec<f64> = w.iter().map(|x| x * len as f64).collect();
    let mut q: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut rest: Vec<usize> = (0..w.len()).collect();
    rest.sort_by(|&a, &b| {
        (exact[b] - q[b] as f64)
            .total_cmp(&(exact[a] - q[a] as f64))
            .then(a.cmp(&b))
    });
    let short = len - q.iter().sum::<usize>();
    for &c in rest.iter().take(short) {
        q[c] += 1;
    }
    q
}

/// Draws `len` positions: class by weight, then an image of it uniformly.
pub fn plan_with_replacement(
    members: &[Vec<usize>],
    w: &[f64],
    len: usize,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let mut cum = Vec::with_capacity(w.len());
    let mut s = 0.0;
    for &x in w {
        s += x;
        cum.push(s);
    }
    (0..len)
        .map(|_| {
            let u = rng.random::<f64>() * s;
            let mut c = cum.partition_point(|&x| x <= u).min(w.len() - 1);
            while members[c].is_empty() || w[c] == 0.0 {
                c = (c + 1) % w.len(); // only reachable through rounding at the top end
            }
            members[c][rng.random_range(0..members[c].len())]
        })
        .collect()
}

/// Fills each class's quota with fresh permutations of its images, then shuffles the epoch.
pub fn plan_without_replacement(
    members: &[Vec<usize>],
    w: &[f64],
    len: usize,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let q = quotas(w, len);
    let mut plan = Vec::with_capacity(len);
    for (m, &n) in members.iter().zip(&q) {
        let mut left = n;
        while left > 0 {
            let mut p = m.clone();
            p.shuffle(rng);
            let take = left.min(p.len());
            plan.extend_from_slice(&p[..take]);
            left -= take;
        }
    }
    plan.shuffle(rng);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} != {b:?}");
        }
    }

    // counts [100, 25, 4]: instance 100/129, 25/129, 4/129; square-root 10/17, 5/17, 2/17;
    // reversed ∝ 1, 4, 25 → 1/30, 4/30, 25/30.
    #[test]
    fn weight_formulas_on_exact_cases() {
        let n = [100, 25, 4];
        close(
            &Sampler::Instance.weights(&n, 0, 1).unwrap(),
            &[100. / 129., 25. / 129., 4. / 129.],
        );
        close(&Sampler::ClassBalanced.weights(&n, 0, 1).unwrap(), &[1. / 3.; 3]);
        close(
            &Sampler::SquareRoot.weights(&n, 0, 1).unwrap(),
            &[10. / 17., 5. / 17., 2. / 17.],
        );
        close(
            &Sampler::Reversed.weights(&n, 0, 1).unwrap(),
            &[1. / 30., 4. / 30., 25. / 30.],
        );
        // progressive at t/T = 1/4: 3/4 · instance + 1/4 · 1/3
        let p = Sampler::Progressive.weights(&n, 1, 4).unwrap();
        close(
            &p,
            &[
                0.75 * 100. / 129. + 1. / 12.,
                0.75 * 25. / 129. + 1. / 12.,
                0.75 * 4. / 129. + 1. / 12.,
            ],
        );
        close(
            &Sampler::Progressive.weights(&n, 0, 4).unwrap(),
            &Sampler::Instance.weights(&n, 0, 1).unwrap(),
        );
        close(
            &Sampler::Given {
                weights: vec![1.0, 1.0, 2.0],
            }
            .weights(&n, 0, 1)
            .unwrap(),
            &[0.25, 0.25, 0.5],
        );
        assert!(Sampler::Given { weights: vec![1.0] }.weights(&n, 0, 1).is_err());
        assert!(Sampler::Given {
            weights: vec![1.0, -1.0, 1.0]
        }
        .weights(&n, 0, 1)
        .is_err());
    }

    #[test]
    fn quotas_sum_and_round_by_largest_remainder() {
        assert_eq!(quotas(&[0.5, 0.3, 0.2], 10), [5, 3, 2]);
        assert_eq!(quotas(&[1. / 3.; 3], 10), [4, 3, 3]);
        assert_eq!(quotas(&[0.05, 0.95], 7), [0, 7]);
    }

    #[test]
    fn instance_plan_is_a_permutation() {
        let labels = [0, 0, 0, 1, 1, 2];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut p = Sampler::Instance.plan(&labels, 0, 1, false, &mut rng).unwrap();
        p.sort_unstable();
        assert_eq!(p, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn class_balanced_without_replacement_uses_every_image_before_repeating() {
        // 6 images, class 0 has 4, class 1 has 2: CB quotas are 3 and 3.
        let labels = [0, 0, 0, 0, 1, 1];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let p = Sampler::ClassBalanced
            .plan(&labels, 0, 1, false, &mut rng)
            .unwrap();
        let c1: Vec<_> = p.iter().filter(|&&i| labels[i] == 1).collect();
        assert_eq!(c1.len(), 3);
        let ones = p.iter().filter(|&&i| i == 4).count();
        let twos = p.iter().filter(|&&i| i == 5).count();
        assert_eq!(ones + twos, 3);
        assert!(
            ones >= 1 && twos >= 1,
            "both images of class 1 are used before a repeat"
        );
        let c0: std::collections::HashSet<_> = p.iter().filter(|&&i| labels[i] == 0).collect();
        assert_eq!(c0.len(), 3, "no repeats within class 0's quota of 3");
    }

    #[test]
    fn under_and_over_sampling_sizes() {
        let labels = [0, 0, 0, 0, 1, 1, 2];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let u = Sampler::UnderSample.plan(&labels, 0, 1, false, &mut rng).unwrap();
        assert_eq!(u.len(), 3);
        let mut cls: Vec<u32> = u.iter().map(|&i| labels[i]).collect();
        cls.sort_unstable();
        assert_eq!(cls, [0, 1, 2]);
        let o = Sampler::OverSample.plan(&labels, 0, 1, false, &mut rng).unwrap();
        assert_eq!(o.len(), 12);
        assert_eq!(o.iter().filter(|&&i| i == 6).count(), 4);
    }

    #[test]
    fn with_replacement_follows_the_weights() {
        let labels: Vec<u32> = (0..100).map(|i| if i < 90 { 0 } else { 1 }).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let p = Sampler::Given {
            weights: vec![0.2, 0.8],
        }
        .plan(&labels, 0, 1, true, &mut rng)
        .unwrap();
        let n1 = p.iter().filter(|&&i| labels[i] == 1).count();
        // Binomial(100, 0.8): mean 80, sd 4; this seed gives a value within 3 sd.
        assert!((68..=92).contains(&n1), "{n1}");
        let big = Sampler::Given {
            weights: vec![0.2, 0.8],
        };
        let labels2: Vec<u32> = (0..20_000).map(|i| (i % 2) as u32).collect();
        let p2 = big.plan(&labels2, 0, 1, true, &mut rng).unwrap();
        let f = p2.iter().filter(|&&i| labels2[i] == 1).count() as f64 / p2.len() as f64;
        assert!((f - 0.8).abs() < 0.02, "{f}");
    }
}
