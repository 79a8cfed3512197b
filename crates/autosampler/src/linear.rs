//! The batched linear-classifier trainer that stage 2 (classifier re-training) and the class-weight
//! search share: K linear classifiers start from one classifier θ0 and train together on cached
//! features, classifier k sampling classes by its own weights (class-aware sampling with
//! replacement, a plan of N draws per epoch), and are then scored on another part.
//!
//! The K runs of one call are one batched computation (`[K, B, D+1] × [K, D+1, C]`) with the
//! gradient of the cross-entropy written out (softmax − one-hot): a step is a handful of tensor
//! operations whatever K is, so scoring many candidates (samples × proxy seeds) costs little more
//! than scoring one. Each training row is stored once as `[x, 1]` (the 1 carries the bias) with its
//! label beside it; a step gathers its rows by index and subtracts 1 at each row's label from the
//! softmax (no one-hot rows: at 8,142 classes they would be 4× the features).
//!
//! A trainer may keep at most `cap` images of each class ([`Trainer::capped`]): an epoch is then
//! a plan of that many draws, from those images. The class-weight search uses it to bound a
//! proxy's cost on large training sets.
use crate::features::Features;
use crate::rng::chacha;
use crate::sampler::class_members;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How a linear classifier is (re-)trained: SGD with momentum at a constant learning rate, in the
/// form v ← μv + lr·(g + wd·w), w ← w − v (PyTorch's for a constant lr; the weight decay on the
/// weights and the bias, as `torch.optim.SGD` over a layer's parameters), then, with `max_norm`,
/// each class's weight vector projected into a ball (weight balancing's MaxNorm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub momentum: f64,
    /// Start from a zero classifier instead of θ0.
    pub reinit: bool,
    /// L2 weight decay (0: none; recipes without it keep their fingerprints).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_decay: f64,
    /// MaxNorm (Alshammari et al.'s `MaxNorm_via_PGD`): after every step a class whose weight
    /// vector is longer than r = min + t·(max − min) of θ0's per-class norms is scaled back to r
    /// (the bias is not projected); this is t, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_norm: Option<f64>,
    /// Label-aware smoothing of the cross-entropy (MiSLAS), its ε per class from the training
    /// part's counts: the gradient is softmax − ((1 − ε_y)·one-hot + ε_y/C).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<crate::loss::LabelAwareSmoothing>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// One classifier to train: its class weights and the key of its sampling stream,
/// `chacha(key.0, [4, key.1, key.2])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub weights: Vec<f64>,
    pub key: (u64, u64, u64),
}

impl Run {
    pub fn new(weights: &[f64], key: (u64, u64, u64)) -> Run {
        Run {
            weights: weights.to_vec(),
            key,
        }
    }
}

/// The training features, θ0 and what is derived from them once.
pub struct Trainer<'a> {
    pub train: &'a Features,
    /// θ0: `[C, D]` weight and `[C]` bias.
    pub w0: &'a Tensor,
    pub b0: &'a Tensor,
    /// Each class's rows (positions in `kept`, or in `train` when every image is kept).
    members: Vec<Vec<usize>>,
    /// Images per class of the whole training part.
    counts: Vec<usize>,
    /// The training images kept (`train` positions, ascending); `None`: all of them.
    kept: Option<Vec<i64>>,
    /// `[N, D + 1]` rows and `[N]` labels of the kept images.
    rows: std::sync::OnceLock<(Tensor, Tensor)>,
    /// The rows and the products in bf16 (the weights, momentum and softmax stay fp32).
    bf16: bool,
}

/// K trained classifiers: `[K, D, C]` weights and `[K, 1, C]` biases.
pub struct Heads {
    pub w: Tensor,
    pub b: Tensor,
}

impl Heads {
    /// `[K, N, C]` logits of every classifier on `x` (`[N, D]`).
    pub fn logits(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| x.to_kind(Kind::Float).unsqueeze(0).matmul(&self.w) + &self.b)
    }
}

impl<'a> Trainer<'a> {
    pub fn new(train: &'a Features, w0: &'a Tensor, b0: &'a Tensor) -> Self {
        let labels: Vec<u32> = Vec::<i64>::try_from(&train.y)
            .expect("i64 labels")
            .into_iter()
            .map(|l| l as u32)
            .collect();
        let members = class_members(&labels);
        Trainer {
            train,
            w0,
            b0,
            counts: members.iter().map(Vec::len).collect(),
            members,
            kept: None,
            rows: std::sync::OnceLock::new(),
            bf16: false,
        }
    }

    /// The same trainer with at most `cap` images of each class (a random subset, drawn with
    /// `chacha(seed, [9, class])`); `None` keeps every image. [`Trainer::counts`] stays the
    /// whole training part's.
    pub fn capped(mut self, cap: Option<usize>, seed: u64) -> Self {
        let Some(cap) = cap.filter(|&k| self.members.iter().any(|m| m.len() > k)) else {
            return self;
        };
        use rand::seq::SliceRandom;
        let mut kept: Vec<i64> = Vec::new();
        for (c, m) in self.members.iter().enumerate() {
            let mut m = m.clone();
            if m.len() > cap {
                m.shuffle(&mut chacha(seed, &[9, c as u64]));
                m.truncate(cap);
            }
            kept.extend(m.iter().map(|&i| i as i64));
        }
        kept.sort_unstable();
        // each kept image's row: its position among the kept (ascending)
        for m in &mut self.members {
            *m = m
                .iter()
                .filter_map(|&i| kept.binary_search(&(i as i64)).ok())
                .collect();
        }
        self.kept = Some(kept);
        self.rows = std::sync::OnceLock::new();
        self
    }

    /// Training images an epoch draws: every image, or the capped ones.
    pub fn epoch_len(&self) -> usize {
        self.members.iter().map(Vec::len).sum()
    }

    /// The same trainer with its training rows stored in bf16 and the two products of each step
    /// (logits, gradient) computed in bf16, when `on`: the weights, the momentum, the softmax and
    /// the update stay fp32. About half the memory traffic of a step's gather.
    pub fn in_bf16(mut self, on: bool) -> Self {
        self.bf16 = on;
        self
    }

    /// Images per class of the training part.
    pub fn counts(&self) -> Vec<usize> {
        self.counts.clone()
    }

    /// The index plans of every run, `[K, epochs × N]`. Every draw takes exactly two uniforms of
    /// the run's stream (class by inverse CDF of its weights, then an image of the class), so
    /// runs that share a key share their random numbers: candidates compared with the same key
    /// draw the same images wherever their weights agree (common random numbers), and their
    /// rewards differ by their weights, not by sampling luck.
    fn plans(&self, runs: &[Run], epochs: usize) -> Tensor {
        let n = self.epoch_len();
        let mut idx: Vec<i64> = Vec::with_capacity(runs.len() * n * epochs);
        for r in runs {
            let mut rng = chacha(r.key.0, &[4, r.key.1, r.key.2]);
            for _ in 0..epochs {
                draw_plan(&self.members, &r.weights, n, &mut rng, &mut idx);
            }
        }
        Tensor::from_slice(&idx).view([runs.len() as i64, (n * epochs) as i64])
    }

    /// Trains one classifier per run with `recipe`.
    pub fn train(&self, runs: &[Run], recipe: &Recipe) -> Heads {
        let k = runs.len() as i64;
        let (c, d) = (self.w0.size()[0], self.w0.size()[1]);
        let plans = self.plans(runs, recipe.epochs);
        let total = plans.size()[1];
        let batch = recipe.batch.max(1) as i64;
        tch::no_grad(|| {
            let (rows, labels) = self.rows();
            // [K, D+1, C]: θ0's weight with its bias as the last row
            let start = if recipe.reinit {
                Tensor::zeros([d + 1, c], (Kind::Float, self.w0.device()))
            } else {
                Tensor::cat(&[self.w0.tr(), self.b0.view([1, c])], 0).to_kind(Kind::Float)
            };
            let mut w = start.unsqueeze(0).repeat([k, 1, 1]);
            let mut v = w.zeros_like();
            let radius = recipe
                .max_norm
                .map(|t| max_norm_radius(&start.narrow(0, 0, d), t));
            let eps = recipe.smoothing.map(|las| {
                let e: Vec<f32> = las.epsilons(&self.counts).iter().map(|&e| e as f32).collect();
                Tensor::from_slice(&e).to_device(self.w0.device())
            });
            // dCE/dlogits = softmax − target: 1 taken off at each row's label, or with label-aware
            // smoothing ε_y/C off everywhere and 1 − ε_y more at the label
            let grad = |p: Tensor, y: &Tensor, minus_one: &Tensor| match &eps {
                None => p.scatter_add(2, y, minus_one),
                Some(e) => {
                    let ey = e.index_select(0, &y.view([-1])).view(y.size().as_slice());
                    (p - &ey / c as f64).scatter_add(2, y, &(ey + minus_one))
                }
            };
            for s in (0..total).step_by(batch as usize) {
                let bsz = batch.min(total - s);
                let at = plans.narrow(1, s, bsz).reshape([-1]);
                let x = rows.index_select(0, &at).view([k, bsz, d + 1]);
                let y = labels.index_select(0, &at).view([k, bsz, 1]);
                let minus_one = Tensor::full([k, bsz, 1], -1.0, (Kind::Float, x.device()));
                let step = recipe.lr / bsz as f64;
                if self.bf16 {
                    let logits = x.bmm(&w.to_kind(Kind::BFloat16)).to_kind(Kind::Float);
                    let g = grad(logits.softmax(-1, Kind::Float), &y, &minus_one);
                    let xg = x
                        .transpose(1, 2)
                        .bmm(&g.to_kind(Kind::BFloat16))
                        .to_kind(Kind::Float);
                    v = v * recipe.momentum + xg * step;
                } else {
                    let g = grad(x.bmm(&w).softmax(-1, Kind::Float), &y, &minus_one);
                    // v ← μv + (lr/B)·xᵀg in one kernel
                    v = v.baddbmm(&x.transpose(1, 2), &g, recipe.momentum, step);
                }
                if recipe.weight_decay != 0.0 {
                    v += &w * (recipe.lr * recipe.weight_decay);
                }
                w -= &v;
                if let Some(r) = radius {
                    project_max_norm(&mut w, d, r);
                }
            }
            Heads {
                w: w.narrow(1, 0, d),
                b: w.narrow(1, d, 1),
            }
        })
    }

    /// `[N, D + 1]`: each kept training feature and a 1; and its label (`[N]`).
    fn rows(&self) -> &(Tensor, Tensor) {
        self.rows.get_or_init(|| {
            let (x, y) = match &self.kept {
                None => (self.train.x.shallow_clone(), self.train.y.shallow_clone()),
                Some(kept) => {
                    let i = Tensor::from_slice(kept).to_device(self.train.x.device());
                    (self.train.x.index_select(0, &i), self.train.y.index_select(0, &i))
                }
            };
            let kind = if self.bf16 { Kind::BFloat16 } else { Kind::Float };
            let ones = Tensor::ones([x.size()[0], 1], (kind, x.device()));
            (Tensor::cat(&[x.to_kind(kind), ones], 1), y)
        })
    }
}

/// MaxNorm's radius for `t`: min + t·(max − min) of the per-class norms of `weight` (`[D, C]`,
/// one column a class), as `MaxNorm_via_PGD.setPerLayerThresh` measures it on the starting
/// classifier.
pub fn max_norm_radius(weight: &Tensor, t: f64) -> f64 {
    let norms = weight.norm_scalaropt_dim(2, [0], false);
    let (lo, hi) = (norms.min().double_value(&[]), norms.max().double_value(&[]));
    lo + t * (hi - lo)
}

/// Scales each class's weight vector (the first `d` rows of a column of `w`, `[K, D+1, C]`) that is
/// longer than `r` back to length `r` (`MaxNorm_via_PGD.PGD`); the bias row is left alone.
fn project_max_norm(w: &mut Tensor, d: i64, r: f64) {
    let weights = w.narrow(1, 0, d);
    let norms = weights.norm_scalaropt_dim(2, [1], true);
    let scale = (norms.reciprocal() * r).where_scalarother(&norms.gt(r), 1.0);
    let mut weights = weights;
    weights *= scale;
}

/// Appends `len` positions drawn with replacement: a class by its weight (inverse CDF of one
/// uniform), then an image of it (a second uniform). Classes without images or weight are never
/// drawn.
pub fn draw_plan(
    members: &[Vec<usize>],
    w: &[f64],
    len: usize,
    rng: &mut impl rand::Rng,
    out: &mut Vec<i64>,
) {
    let mut cum = Vec::with_capacity(w.len());
    let mut s = 0.0;
    for (c, &x) in w.iter().enumerate() {
        if !members[c].is_empty() {
            s += x.max(0.0);
        }
        cum.push(s);
    }
    for _ in 0..len {
        let (u, v) = (rng.random::<f64>() * s, rng.random::<f64>());
        // the first class whose cumulative weight exceeds u (zero-weight classes never are)
        let c = cum.partition_point(|&x| x <= u).min(w.len() - 1);
        let c = (c..w.len())
            .chain(0..c)
            .find(|&k| !members[k].is_empty() && w[k] > 0.0)
            .expect("a class with images and weight");
        let m = &members[c];
        out.push(m[((v * m.len() as f64) as usize).min(m.len() - 1)] as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// 2 classes, four 1-d features, θ0 = 0, one full-batch epoch at lr ½ without momentum.
    fn four_points() -> (Features, Tensor, Tensor, Recipe) {
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([4, 1]);
        let y = Tensor::from_slice(&[0i64, 1, 0, 1]);
        let w0 = Tensor::zeros([2, 1], (Kind::Float, Device::Cpu));
        let b0 = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let recipe = Recipe {
            epochs: 1,
            batch: 4,
            lr: 0.5,
            momentum: 0.0,
            reinit: false,
            weight_decay: 0.0,
            max_norm: None,
            smoothing: None,
        };
        (Features { x, y }, w0, b0, recipe)
    }

    /// A capped trainer keeps at most `cap` images of each class (the same ones for a seed), an
    /// epoch draws that many, and its counts stay the whole part's.
    #[test]
    fn a_capped_trainer_draws_only_its_kept_images() {
        let labels: Vec<i64> = [vec![0; 50], vec![1; 7], vec![2; 3]].concat();
        let n = labels.len() as i64;
        let feats = Features {
            x: Tensor::arange(n, (Kind::Float, tch::Device::Cpu)).view([n, 1]),
            y: Tensor::from_slice(&labels),
        };
        let (w0, b0) = (
            Tensor::zeros([3, 1], (Kind::Float, tch::Device::Cpu)),
            Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)),
        );
        let t = Trainer::new(&feats, &w0, &b0).capped(Some(5), 4);
        assert_eq!(t.counts(), [50, 7, 3]);
        assert_eq!(t.epoch_len(), 5 + 5 + 3);
        let kept = t.kept.clone().unwrap();
        assert_eq!(
            kept,
            Trainer::new(&feats, &w0, &b0).capped(Some(5), 4).kept.unwrap()
        );
        assert_ne!(
            kept,
            Trainer::new(&feats, &w0, &b0).capped(Some(5), 5).kept.unwrap()
        );
        assert_eq!(kept.iter().filter(|&&i| i < 50).count(), 5);
        assert!(kept.ends_with(&[57, 58, 59]), "a class of 3 keeps all: {kept:?}");
        let plans = Vec::<i64>::try_from(
            t.plans(&[Run::new(&[1.0, 1.0, 1.0], (0, 0, 0))], 2)
                .flatten(0, -1),
        )
        .unwrap();
        assert_eq!(plans.len(), 26);
        // each drawn row is a kept image (rows are positions among the kept)
        let (rows, y) = t.rows();
        for p in plans {
            let image = rows.double_value(&[p, 0]) as i64;
            assert!(kept.contains(&image));
            assert_eq!(y.int64_value(&[p]), labels[image as usize]);
        }
        assert!(
            Trainer::new(&feats, &w0, &b0).capped(Some(50), 4).kept.is_none(),
            "no class above the cap"
        );
    }

    #[test]
    fn one_step_matches_a_direct_computation() {
        // 2 classes, 1-d features, one run, one full-batch step from θ0 = 0:
        // logits 0 → p = ½; dL/dw = mean_i x_i (p − y_i), dL/db = mean_i (p − y_i).
        let (feats, w0, b0, recipe) = four_points();
        let t = Trainer::new(&feats, &w0, &b0);
        // with replacement the epoch is a multiset of the 4 indices: recompute with the same plan
        let members = class_members(&[0, 1, 0, 1]);
        let w = vec![0.5, 0.5];
        let mut rng = chacha(0, &[4, 7, 0]);
        let mut plan = Vec::new();
        draw_plan(&members, &w, 4, &mut rng, &mut plan);
        let plan: Vec<usize> = plan.into_iter().map(|i| i as usize).collect();
        let heads = t.train(&[Run::new(&w, (0, 7, 0))], &recipe);
        let xs = [1.0f64, -2.0, 3.0, 0.5];
        let ys = [0usize, 1, 0, 1];
        for class in 0..2 {
            let (mut gw, mut gb) = (0.0, 0.0);
            for &i in &plan {
                let e = 0.5 - f64::from(u8::from(ys[i] == class));
                gw += xs[i] * e / 4.0;
                gb += e / 4.0;
            }
            assert!((heads.w.double_value(&[0, 0, class as i64]) + 0.5 * gw).abs() < 1e-6);
            assert!((heads.b.double_value(&[0, 0, class as i64]) + 0.5 * gb).abs() < 1e-6);
        }
        // scored on the same 4 points
        let r = crate::search::reward::score(
            crate::search::Score::Top1,
            &heads.logits(&feats.x),
            &[0, 1, 0, 1],
            2,
        );
        let pred: Vec<usize> = xs
            .iter()
            .map(|&v| {
                let s = |k: i64| heads.w.double_value(&[0, 0, k]) * v + heads.b.double_value(&[0, 0, k]);
                usize::from(s(1) > s(0))
            })
            .collect();
        let acc = pred.iter().zip(&ys).filter(|(a, b)| a == b).count() as f64 / 4.0;
        assert!((r[0] - acc).abs() < 1e-12);
    }

    #[test]
    fn the_bf16_trainer_takes_the_same_step_where_bf16_is_exact() {
        // The features, the one-hots, ½ − y and the products of one step from θ0 = 0 are all
        // exact in bf16 (8-bit mantissa): the bf16 trainer gives the fp32 trainer's classifier to
        // the last bit. In PyTorch: (x.bfloat16().T @ g.bfloat16()).float() == x.T @ g here.
        let (feats, w0, b0, recipe) = four_points();
        let run = [Run::new(&[0.5, 0.5], (0, 7, 0))];
        let fp32 = Trainer::new(&feats, &w0, &b0).train(&run, &recipe);
        let bf16 = Trainer::new(&feats, &w0, &b0).in_bf16(true).train(&run, &recipe);
        assert_eq!(bf16.w.kind(), Kind::Float, "the weights stay fp32");
        assert_eq!(
            Vec::<f32>::try_from(bf16.w.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(fp32.w.flatten(0, -1)).unwrap()
        );
        assert_eq!(
            Vec::<f32>::try_from(bf16.b.flatten(0, -1)).unwrap(),
            Vec::<f32>::try_from(fp32.b.flatten(0, -1)).unwrap()
        );
        // a non-zero step: the two agree to bf16's precision, not to the bit
        let recipe = Recipe {
            epochs: 3,
            momentum: 0.9,
            ..recipe
        };
        let fp32 = Trainer::new(&feats, &w0, &b0).train(&run, &recipe);
        let bf16 = Trainer::new(&feats, &w0, &b0).in_bf16(true).train(&run, &recipe);
        let d = (bf16.w - &fp32.w).abs().max().double_value(&[]);
        let scale = fp32.w.abs().max().double_value(&[]);
        assert!(d > 0.0 && d < scale / 64.0, "bf16 differs by {d} (scale {scale})");
    }

    #[test]
    fn batched_runs_equal_single_runs() {
        // Training K runs together gives each the classifier it gets alone.
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5, 0.2, -1.0, 2.0, 1.5, -0.5, 0.0]).view([5, 2]);
        let y = Tensor::from_slice(&[0i64, 1, 2, 1, 0]);
        let feats = Features { x, y };
        let w0 = Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.0, -0.1, 0.2]).view([3, 2]);
        let b0 = Tensor::from_slice(&[0.0f32, 0.1, -0.1]);
        let t = Trainer::new(&feats, &w0, &b0);
        let recipe = Recipe {
            epochs: 3,
            batch: 2,
            lr: 0.1,
            momentum: 0.9,
            reinit: false,
            weight_decay: 0.0,
            max_norm: None,
            smoothing: None,
        };
        let runs = [
            Run::new(&[0.2, 0.3, 0.5], (1, 2, 3)),
            Run::new(&[0.6, 0.2, 0.2], (4, 5, 6)),
        ];
        let both = t.train(&runs, &recipe);
        for (k, r) in runs.iter().enumerate() {
            let one = t.train(std::slice::from_ref(r), &recipe);
            let diff = (both.w.get(k as i64) - one.w.get(0))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-6, "run {k}: {diff}");
        }
    }

    #[test]
    fn draws_follow_the_weights_and_share_random_numbers() {
        // classes 0..3 with 2, 3, 1 images; class 2 has no weight
        let members = vec![vec![0, 1], vec![2, 3, 4], vec![5]];
        let mut a = Vec::new();
        draw_plan(&members, &[0.25, 0.75, 0.0], 40_000, &mut chacha(1, &[]), &mut a);
        let share = |k: &[i64]| a.iter().filter(|i| k.contains(i)).count() as f64 / a.len() as f64;
        assert!((share(&[0, 1]) - 0.25).abs() < 0.01, "{}", share(&[0, 1]));
        assert_eq!(share(&[5]), 0.0);
        // every image of a class is drawn, equally often
        let third = a.iter().filter(|&&i| i == 3).count() as f64 / a.len() as f64;
        assert!((third - 0.25).abs() < 0.01, "{third}");
        // the same stream with slightly other weights: mostly the same draws (common random numbers)
        let mut b = Vec::new();
        draw_plan(&members, &[0.26, 0.74, 0.0], 40_000, &mut chacha(1, &[]), &mut b);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
        assert!(same > 0.98, "{same}");
    }

    // The trainer's plan for this set (class-balanced weights, key (0, 0, 0), 2 epochs) is
    // [4, 0, 2, 5, 4, 1, 4, 1, 0, 3, 3, 5]; the same batches of 4 in PyTorch:
    //   fc = nn.Linear(2, 3) with the weight and bias below; n = fc.weight.norm(dim=1)
    //   r = n.min() + t * (n.max() - n.min())
    //   opt = SGD(fc.parameters(), lr=0.1, momentum=0.9, weight_decay=wd)
    //   per batch: cross_entropy(fc(X[idx]), y[idx]).backward(); opt.step()
    //   then (MaxNorm) fc.weight *= where(norm > r, r / norm, 1) row by row
    // print(fc.weight.flatten().tolist(), fc.bias.tolist()) -> the values below
    #[test]
    fn weight_decay_and_max_norm_match_torch_sgd_with_weight_balancings_projection() {
        let (f, w0, b0) = six_points([0, 1, 2, 0, 1, 2]);
        let t = Trainer::new(&f, &w0, &b0);
        let run = [Run::new(&[1.0, 1.0, 1.0], (0, 0, 0))];
        let plan = Vec::<i64>::try_from(t.plans(&run, 2).flatten(0, -1)).unwrap();
        assert_eq!(plan, [4, 0, 2, 5, 4, 1, 4, 1, 0, 3, 3, 5]);
        type Case = (f64, Option<f64>, [f64; 6], [f64; 3]);
        let cases: [Case; 3] = [
            (
                0.05,
                Some(0.3),
                [
                    0.4139300584793091,
                    -0.003340554889291525,
                    -0.11576469242572784,
                    0.27688267827033997,
                    -0.18757925927639008,
                    0.15371128916740417,
                ],
                [0.013818996958434582, 0.07960516214370728, -0.09342415630817413],
            ),
            (
                0.0,
                None,
                [
                    0.6009397506713867,
                    -0.0457298569381237,
                    -0.10874048620462418,
                    0.2873028814792633,
                    -0.19219925999641418,
                    0.15842695534229279,
                ],
                [0.01410348154604435, 0.08128424733877182, -0.09538771212100983],
            ),
            (
                0.05,
                None,
                [
                    0.5871102809906006,
                    -0.04092947393655777,
                    -0.1108165979385376,
                    0.276900976896286,
                    -0.18467269837856293,
                    0.1528564691543579,
                ],
                [0.012062421068549156, 0.08101799339056015, -0.09308040887117386],
            ),
        ];
        for (wd, max_norm, want_w, want_b) in cases {
            let h = t.train(&run, &replay_recipe(wd, max_norm, None));
            assert_first_head(
                &h,
                want_w,
                want_b,
                1e-6,
                &format!("wd {wd} max_norm {max_norm:?}"),
            );
        }
        // the radius: min + 0.3·(max − min) of θ0's per-class norms (PyTorch: 0.4139435291290283)
        let r = max_norm_radius(&w0.tr(), 0.3);
        assert!((r - 0.4139435291290283).abs() < 1e-6, "{r}");
    }

    // Label-aware smoothing replayed in PyTorch on a set of counts [3, 2, 1]: the trainer's plan
    // (class-balanced, key (0, 0, 0), 2 epochs) is [4, 1, 5, 5, 4, 3, 4, 3, 1, 2, 2, 5]; per batch
    // of 4: lp = log_softmax(fc(x)); e = smooth[y] (MiSLAS's concave ε for [3, 2, 1]);
    // loss = ((1 - e) * -lp.gather(1, y[:, None]).squeeze(1) + e * -lp.mean(-1)).mean();
    // SGD(lr=0.1, momentum=0.9) -> fc.weight.flatten().tolist(), fc.bias.tolist() below
    #[test]
    fn label_aware_smoothing_matches_mislas_loss_under_torch_sgd() {
        let (f, w0, b0) = six_points([0, 0, 0, 1, 1, 2]);
        let run = [Run::new(&[1.0, 1.0, 1.0], (0, 0, 0))];
        type Case = (f64, f64, [f64; 6], [f64; 3]);
        let cases: [Case; 2] = [
            (
                0.3,
                0.0,
                [
                    0.33398494124412537,
                    -0.04630405083298683,
                    0.1304941177368164,
                    0.2230524867773056,
                    -0.16447904706001282,
                    0.2232515960931778,
                ],
                [0.006247709505259991, 0.05405796691775322, -0.06030566245317459],
            ),
            (
                0.4,
                0.1,
                [
                    0.3469928801059723,
                    -0.0595848374068737,
                    0.1247057318687439,
                    0.23823896050453186,
                    -0.1716986447572708,
                    0.22134587168693542,
                ],
                [0.01026211492717266, 0.047117725014686584, -0.0573798306286335],
            ),
        ];
        for bf16 in [false, true] {
            let t = Trainer::new(&f, &w0, &b0).in_bf16(bf16);
            let plan = Vec::<i64>::try_from(t.plans(&run, 2).flatten(0, -1)).unwrap();
            assert_eq!(plan, [4, 1, 5, 5, 4, 3, 4, 3, 1, 2, 2, 5]);
            for (head, tail, want_w, want_b) in cases {
                let las = crate::loss::LabelAwareSmoothing {
                    head,
                    tail,
                    shape: Default::default(),
                };
                let h = t.train(&run, &replay_recipe(0.0, None, Some(las)));
                // bf16 rounds the rows and products (8 bits of mantissa)
                let tol = if bf16 { 2e-2 } else { 1e-6 };
                assert_first_head(&h, want_w, want_b, tol, &format!("bf16 {bf16} {head}/{tail}"));
            }
        }
    }

    /// Six 2-d points with `labels` and the θ0 (`[3, 2]`, `[3]`) the PyTorch replays start from:
    ///   X = [[1, .5], [-1, 2], [.3, -.7], [2, 1], [-.5, -1.5], [.8, .2]]
    ///   fc.weight = [[.5, -.2], [.1, .4], [-.3, .2]], fc.bias = [.1, 0, -.1]
    fn six_points(labels: [i64; 6]) -> (Features, Tensor, Tensor) {
        let x = Tensor::from_slice(&[1.0f32, 0.5, -1.0, 2.0, 0.3, -0.7, 2.0, 1.0, -0.5, -1.5, 0.8, 0.2])
            .view([6, 2]);
        let f = Features {
            x,
            y: Tensor::from_slice(&labels),
        };
        let w0 = Tensor::from_slice(&[0.5f32, -0.2, 0.1, 0.4, -0.3, 0.2]).view([3, 2]);
        let b0 = Tensor::from_slice(&[0.1f32, 0.0, -0.1]);
        (f, w0, b0)
    }

    /// The replays' recipe: 2 epochs of batches of 4, SGD lr 0.1, momentum 0.9, from θ0.
    fn replay_recipe(
        weight_decay: f64,
        max_norm: Option<f64>,
        smoothing: Option<crate::loss::LabelAwareSmoothing>,
    ) -> Recipe {
        Recipe {
            epochs: 2,
            batch: 4,
            lr: 0.1,
            momentum: 0.9,
            reinit: false,
            weight_decay,
            max_norm,
            smoothing,
        }
    }

    /// The first trained head against PyTorch's `fc.weight.flatten()` and `fc.bias` (heads are
    /// `[D, C]`: PyTorch's `[C, D]` transposed), each value within `tol`.
    fn assert_first_head(h: &Heads, want_w: [f64; 6], want_b: [f64; 3], tol: f64, what: &str) {
        let w = Vec::<f32>::try_from(h.w.get(0).tr().contiguous().view([-1])).unwrap();
        let b = Vec::<f32>::try_from(h.b.get(0).view([-1])).unwrap();
        for (g, e) in w.iter().zip(want_w).chain(b.iter().zip(want_b)) {
            assert!((*g as f64 - e).abs() < tol, "{what}: {w:?} {b:?}");
        }
    }
}
