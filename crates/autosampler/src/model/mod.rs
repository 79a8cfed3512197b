//! Networks: CIFAR ResNets with option-A shortcuts (8/20/32/56) and ImageNet-style ResNets (18/50)
//! with a small stem for 32–64 px inputs. Parameter names follow PyTorch (`layers.0.conv1.weight`,
//! `layer1.0.downsample.0.weight`, `fc.weight`), so a checkpoint loads into the same PyTorch module.
//!
//! Every model splits into `forward_features` (backbone → `[B, D]`) and `forward_head`
//! (`[B, D]` → `[B, C]` logits), and `reset_head` re-creates the classifier: what decoupled
//! training needs.
pub mod card;
pub mod fast;
pub mod resnet;

use crate::{invalid, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// The architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Resnet8,
    Resnet20,
    Resnet32,
    Resnet56,
    Resnet18,
    Resnet50,
    Resnet101,
    Resnet152,
    /// ResNeXt-50 (32×4d): torchvision's `resnext50_32x4d`, grouped 3×3 convolutions.
    #[serde(rename = "resnext50-32x4d")]
    Resnext50,
}

impl Arch {
    /// The CIFAR ResNets (8/20/32/56, option A): one stem, 64-d features.
    pub fn is_cifar(self) -> bool {
        matches!(
            self,
            Arch::Resnet8 | Arch::Resnet20 | Arch::Resnet32 | Arch::Resnet56
        )
    }
}

/// The classifier on top of the features.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Head {
    /// `fc.weight [C, D]`, `fc.bias [C]`.
    #[default]
    Linear,
    /// Cosine classifier (LDAM-DRW's `NormedLinear`): `normalize(x) · normalize(W)`, `fc.weight [D, C]`.
    Cosine,
    /// A linear classifier on l2-normalised features: `normalize(x) · Wᵀ + b`, `fc.weight [C, D]`,
    /// `fc.bias [C]`. What stage 2 re-trains on a cosine model's features, and so the head of such
    /// a model's export.
    LinearOnNormalised,
    /// TDE's causal normalised classifier (Tang et al. 2020): `fc.weight [C, D]`, a moving
    /// average of the training features `fc.embed [D]`, and total-direct-effect inference.
    Causal(Causal),
}

/// `head = { causal = { … } }`: TDE's multi-head causal normalised classifier. Defaults are its
/// CIFAR-10 settings (2 heads, τ 16, γ 1/32, α 1; CIFAR-100 uses α 1.5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Causal {
    /// Heads: the feature vector is split into this many equal parts, each normalised alone.
    pub heads: i64,
    /// Logit scale: each head's cosine is multiplied by τ / heads.
    pub tau: f64,
    /// The weight norm is `‖w‖ + γ` (causal normalisation).
    pub gamma: f64,
    /// TDE strength at inference: the feature's projection on the mean direction, × α, is removed.
    /// 0 gives the plain causal-norm classifier.
    pub alpha: f64,
    /// Moving-average factor of the feature mean: `embed ← μ·embed + mean(batch features)`.
    pub momentum: f64,
}

impl Default for Causal {
    fn default() -> Self {
        Causal {
            heads: 2,
            tau: 16.0,
            gamma: 1.0 / 32.0,
            alpha: 1.0,
            momentum: 0.9,
        }
    }
}

impl Causal {
    /// Training logits: `Σ_h (τ/H) · (x_h/‖x_h‖) · (w_h/(‖w_h‖+γ))`.
    ///
    /// # Shapes
    /// - `x`: `[B, D]`, `w`: `[C, D]` → `[B, C]`
    pub fn logits(&self, x: &Tensor, w: &Tensor) -> Tensor {
        let (nx, nw) = self.normed(x, w);
        let (b, c) = (nx.size()[0], nw.size()[0]);
        nx.reshape([b, -1]).mm(&nw.reshape([c, -1]).tr()) * (self.tau / self.heads as f64)
    }

    /// Total-direct-effect logits: each head's normalised feature loses α times its projection on
    /// the normalised mean feature `embed` before the product:
    /// `Σ_h (τ/H) · (x̂_h − α·cos(x̂_h, ĉ_h)·ĉ_h) · w̃_h`.
    ///
    /// # Shapes
    /// - `x`: `[B, D]`, `w`: `[C, D]`, `embed`: `[D]` → `[B, C]`
    pub fn tde_logits(&self, x: &Tensor, w: &Tensor, embed: &Tensor) -> Tensor {
        let (nx, nw) = self.normed(x, w);
        let h = self.heads;
        let c = embed.reshape([1, h, -1]);
        let nc = &c / c.norm_scalaropt_dim(2, [2], true).clamp_min(1e-12);
        let cos = (&nx * &nc).sum_dim_intlist(2, true, Kind::Float);
        let x = nx - cos * self.alpha * nc;
        let (b, k) = (x.size()[0], nw.size()[0]);
        x.reshape([b, -1]).mm(&nw.reshape([k, -1]).tr()) * (self.tau / h as f64)
    }

    /// `[B, H, D/H]` l2-normalised features and `[C, H, D/H]` causally normalised weights.
    fn normed(&self, x: &Tensor, w: &Tensor) -> (Tensor, Tensor) {
        let x = x.reshape([x.size()[0], self.heads, -1]);
        let nx = &x / x.norm_scalaropt_dim(2, [2], true).clamp_min(1e-12);
        (nx, self.normed_weight(w))
    }

    /// `[C, H, D/H]` causally normalised weights: each head's part divided by `‖w_h‖ + γ`.
    fn normed_weight(&self, w: &Tensor) -> Tensor {
        let w = w.reshape([w.size()[0], self.heads, -1]);
        &w / (w.norm_scalaropt_dim(2, [2], true) + self.gamma)
    }
}

/// The stem of ResNet-18/50.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// 3×3 conv, stride 1, no max-pool: for 32–64 px inputs.
    #[default]
    Small,
    /// 7×7 conv, stride 2, 3×3 max-pool: the ImageNet stem.
    Imagenet,
}

/// `[model]` of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    #[serde(default)]
    pub head: Head,
    #[serde(default)]
    pub stem: Stem,
    /// BBN's bilateral backbone: the last residual block is doubled into a conventional
    /// (`cb_block`) and a re-balancing (`rb_block`) branch over shared earlier layers; the feature
    /// is both branches' pooled outputs side by side (`[B, 2D]`). Trained with `method = "bbn"`,
    /// or plainly (TDE's CIFAR backbone is this network).
    #[serde(default)]
    pub bilateral: bool,
    /// Start stage 1 from these weights (`.safetensors` under PyTorch's names, as torchvision's
    /// and timm's ResNets have them; `autosampler.save_init` in the Python package converts a
    /// module or a `.pth`). The classifier (`fc.*`) is re-initialised when its shape differs;
    /// any other tensor missing, unexpected or of another shape is refused, each one named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<std::path::PathBuf>,
}

impl ModelConfig {
    /// The network alone, without where its first weights come from: what a trained model's
    /// card records and what a started stage 1 is compared on (the init file is fingerprinted
    /// by its content, so moving it changes nothing).
    pub fn architecture(&self) -> ModelConfig {
        ModelConfig {
            init: None,
            ..self.clone()
        }
    }
}

/// A branch of a bilateral backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// Fed by the uniform sampler.
    Conventional,
    /// Fed by the reversed sampler.
    Rebalancing,
}

/// A network and its variables.
pub struct Model {
    pub vs: nn::VarStore,
    pub config: ModelConfig,
    pub num_classes: i64,
    body: resnet::Body,
    head: HeadLayer,
}

enum HeadLayer {
    Linear(nn::Linear),
    Cosine(Tensor),
    LinearOnNormalised(nn::Linear),
    Causal {
        cfg: Causal,
        weight: Tensor,
        embed: Tensor,
    },
}

impl HeadLayer {
    fn new(p: nn::Path, head: Head, dim: i64, classes: i64) -> HeadLayer {
        match head {
            Head::Linear => HeadLayer::Linear(nn::linear(p, dim, classes, Default::default())),
            Head::LinearOnNormalised => {
                HeadLayer::LinearOnNormalised(nn::linear(p, dim, classes, Default::default()))
            }
            Head::Cosine => {
                // NormedLinear: uniform(-1, 1), each column renormed to norm ≤ 1e-5, × 1e5.
                let w = p.var("weight", &[dim, classes], nn::Init::Uniform { lo: -1.0, up: 1.0 });
                tch::no_grad(|| {
                    let n = w
                        .pow_tensor_scalar(2)
                        .sum_dim_intlist(0, true, Kind::Float)
                        .sqrt();
                    let scale = (n.clamp_min(1e-5) / 1e-5).reciprocal();
                    let _ = w.shallow_clone().g_mul_(&(scale * 1e5));
                });
                HeadLayer::Cosine(w)
            }
            Head::Causal(cfg) => {
                let b = 1.0 / (dim as f64).sqrt();
                HeadLayer::Causal {
                    cfg,
                    weight: p.var("weight", &[classes, dim], nn::Init::Uniform { lo: -b, up: b }),
                    embed: p.zeros_no_train("embed", &[dim]),
                }
            }
        }
    }
    /// Inference logits: TDE for the causal head, the training logits otherwise.
    fn predict(&self, f: &Tensor) -> Tensor {
        match self {
            HeadLayer::Causal { cfg, weight, embed } if cfg.alpha != 0.0 => cfg.tde_logits(f, weight, embed),
            _ => self.forward(f),
        }
    }
    fn forward(&self, f: &Tensor) -> Tensor {
        match self {
            HeadLayer::Causal { cfg, weight, .. } => cfg.logits(f, weight),
            HeadLayer::Linear(l) => nn::Module::forward(l, f),
            HeadLayer::LinearOnNormalised(l) => nn::Module::forward(l, &l2_normalise(f, 1)),
            HeadLayer::Cosine(w) => l2_normalise(f, 1).mm(&l2_normalise(w, 0)),
        }
    }
    /// The per-feature factors `[B, D]` by which the head scales the pooled features `f` before
    /// its (linear) product: 1 for the linear head, `1/‖f‖` for the normalising heads, `1/‖f_h‖`
    /// on each head's part for the causal one. `forward(f) = product(f ⊙ input_scale(f))`.
    fn input_scale(&self, f: &Tensor) -> Tensor {
        let inv_norm = |x: &Tensor| x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12).reciprocal();
        match self {
            HeadLayer::Linear(_) => f.ones_like(),
            HeadLayer::LinearOnNormalised(_) | HeadLayer::Cosine(_) => inv_norm(f).expand_as(f),
            HeadLayer::Causal { cfg, .. } => {
                let x = f.reshape([f.size()[0], cfg.heads, -1]);
                inv_norm(&x).expand_as(&x).reshape(f.size())
            }
        }
    }
    /// The head's linear product on features already scaled by [`HeadLayer::input_scale`].
    fn product(&self, v: &Tensor) -> Tensor {
        match self {
            HeadLayer::Linear(l) | HeadLayer::LinearOnNormalised(l) => nn::Module::forward(l, v),
            HeadLayer::Cosine(w) => v.mm(&l2_normalise(w, 0)),
            HeadLayer::Causal { cfg, weight, .. } => {
                let nw = cfg.normed_weight(weight).reshape([weight.size()[0], -1]);
                v.mm(&nw.tr()) * (cfg.tau / cfg.heads as f64)
            }
        }
    }
}

/// `x` divided by its l2 norm along `dim` (PyTorch's `F.normalize`, eps 1e-12).
pub fn l2_normalise(x: &Tensor, dim: i64) -> Tensor {
    x / x.norm_scalaropt_dim(2, [dim], true).clamp_min(1e-12)
}

/// A classifier written as a linear layer on the backbone's features, l2-normalised first when
/// `normalised`: what the class-weight search and stage 2 start from and re-train.
pub struct LinearForm {
    /// `[C, D]`, on the CPU.
    pub weight: Tensor,
    /// `[C]`, on the CPU.
    pub bias: Tensor,
    /// The features are l2-normalised before the product.
    pub normalised: bool,
}

impl LinearForm {
    /// The features as this classifier takes them (`[N, D]`: normalised rows, or as they are).
    pub fn features(&self, x: Tensor) -> Tensor {
        if self.normalised {
            l2_normalise(&x, 1)
        } else {
            x
        }
    }
}

impl Head {
    /// The head of a model whose classifier stage 2 re-trained as a linear layer: a linear one,
    /// on normalised features where this head normalises them.
    pub fn retrained(self) -> Head {
        match self {
            Head::Cosine | Head::LinearOnNormalised => Head::LinearOnNormalised,
            _ => Head::Linear,
        }
    }
}

impl Model {
    /// The classifier as a linear layer ([`LinearForm`]): the linear heads as they are; the cosine
    /// head as `scale · normalize(W)ᵀ` with a zero bias on normalised features (`scale` is the
    /// logit scale it was trained with, LDAM's `s`), which ranks the classes as it does. `None`
    /// for TDE's causal head, whose inference is not a linear layer.
    pub fn linear_form(&self, scale: f64) -> Option<LinearForm> {
        let cpu = |t: &Tensor| t.detach().to_device(Device::Cpu);
        match &self.head {
            HeadLayer::Linear(l) | HeadLayer::LinearOnNormalised(l) => Some(LinearForm {
                weight: cpu(&l.ws),
                bias: cpu(l.bs.as_ref().expect("nn::linear has a bias")),
                normalised: matches!(self.head, HeadLayer::LinearOnNormalised(_)),
            }),
            HeadLayer::Cosine(w) => Some(LinearForm {
                weight: (l2_normalise(&cpu(w), 0) * scale).tr().contiguous(),
                bias: Tensor::zeros([self.num_classes], (Kind::Float, Device::Cpu)),
                normalised: true,
            }),
            HeadLayer::Causal { .. } => None,
        }
    }

    /// Builds a freshly initialised network (initialisation follows `tch::manual_seed`).
    pub fn new(config: &ModelConfig, num_classes: i64, device: Device) -> Result<Model> {
        if num_classes < 1 {
            return Err(invalid!("num_classes must be at least 1"));
        }
        let dim = resnet::Body::dim_of(config);
        if let Head::Causal(c) = config.head {
            if c.heads < 1 || dim % c.heads != 0 {
                return Err(invalid!(
                    "head.causal.heads = {} must divide the feature dimension {dim}",
                    c.heads
                ));
            }
            if !(0.0..1.0).contains(&c.momentum) || c.tau <= 0.0 || c.gamma < 0.0 {
                return Err(invalid!(
                    "head.causal needs 0 ≤ momentum < 1, tau > 0 and gamma ≥ 0"
                ));
            }
        }
        let vs = nn::VarStore::new(device);
        let body = resnet::Body::new(&vs.root(), config);
        let head = HeadLayer::new(vs.root() / "fc", config.head, body.dim(), num_classes);
        Ok(Model {
            vs,
            config: config.clone(),
            num_classes,
            body,
            head,
        })
    }

    /// Feature dimension D.
    pub fn feature_dim(&self) -> i64 {
        self.body.dim()
    }

    /// # Shapes
    /// - `xs`: `[B, 3, H, W]` → `[B, D]`
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.body.forward(xs, train)
    }

    /// The backbone's last feature map, before pooling: `[B, 3, H, W]` → `[B, D, h, w]`
    /// (its spatial mean is [`Model::forward_features`]).
    pub fn forward_map(&self, xs: &Tensor, train: bool) -> Tensor {
        self.body.forward_map(xs, train)
    }

    /// Class activation maps (Zhou et al., 2016): each position's share of the (training) logits,
    /// `[B, 3, H, W]` → `[B, C, h, w]` (inference mode), so that a class's map averages to its
    /// logit for every head. The linear head is applied at every position of the last feature
    /// map; a normalising head (cosine, linear-on-normalised, causal) first divides every position
    /// by the *pooled* feature's norm (per causal head part), as its logit does, rather than by
    /// the position's own norm, which would lift faint background positions to the object's level.
    pub fn class_maps(&self, xs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let map = self.forward_map(xs, false).to_kind(Kind::Float);
            let (b, d, h, w) = map.size4().expect("a [B, D, h, w] feature map");
            let scale = self
                .head
                .input_scale(&map.mean_dim([2, 3].as_slice(), false, Kind::Float));
            let f = map.permute([0, 2, 3, 1]).reshape([b, h * w, d]) * scale.unsqueeze(1);
            self.head
                .product(&f.reshape([b * h * w, d]))
                .view([b, h, w, self.num_classes])
                .permute([0, 3, 1, 2])
        })
    }

    /// # Shapes
    /// - `features`: `[B, D]` → logits `[B, C]`
    pub fn forward_head(&self, features: &Tensor) -> Tensor {
        self.head.forward(features)
    }

    /// Inference logits from features: the same as [`Model::forward_head`] except for the causal
    /// head, whose prediction is TDE's (the mean feature's effect removed).
    pub fn predict_head(&self, features: &Tensor) -> Tensor {
        self.head.predict(features)
    }

    /// `[B, 3, H, W]` → logits `[B, C]`: training logits when `train`, inference logits otherwise.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Tensor {
        let f = self.forward_features(xs, train);
        if train {
            self.forward_head(&f)
        } else {
            self.predict_head(&f)
        }
    }

    /// Records a training batch's features where the head keeps statistics of them (the causal
    /// head's moving mean); nothing otherwise.
    pub fn observe_features(&self, features: &Tensor) {
        if let HeadLayer::Causal { cfg, embed, .. } = &self.head {
            tch::no_grad(|| {
                let m = features
                    .detach()
                    .to_kind(Kind::Float)
                    .mean_dim(0, false, Kind::Float);
                let _ = embed.shallow_clone().g_mul_scalar_(cfg.momentum).g_add_(&m);
            });
        }
    }

    /// BBN's training forward: the conventional branch on `xa`, the re-balancing branch on `xb`,
    /// features weighted `2α` and `2(1−α)` side by side, through the classifier. (At α = ½ this is
    /// the inference forward on one image.)
    ///
    /// # Shapes
    /// - `xa`, `xb`: `[B, 3, H, W]` → logits `[B, C]`
    pub fn forward_bbn(&self, xa: &Tensor, xb: &Tensor, alpha: f64, train: bool) -> Result<Tensor> {
        let fa = self.body.forward_branch(xa, Branch::Conventional, train)?;
        let fb = self.body.forward_branch(xb, Branch::Rebalancing, train)?;
        let f = Tensor::cat(&[fa * (2.0 * alpha), fb * (2.0 * (1.0 - alpha))], 1);
        Ok(self.forward_head(&f))
    }

    /// Re-creates the classifier for `num_classes` classes (freshly initialised); the backbone's
    /// weights are kept.
    pub fn reset_head(&mut self, num_classes: i64) -> Result<()> {
        let mut fresh = Model::new(&self.config, num_classes, self.vs.device())?;
        tch::no_grad(|| -> Result<()> {
            let src = self.vs.variables();
            for (name, mut dst) in fresh.vs.variables() {
                if !name.starts_with("fc.") {
                    dst.copy_(&src[&name]);
                }
            }
            Ok(())
        })?;
        std::mem::swap(self, &mut fresh);
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Every variable with its PyTorch name, plus the `num_batches_tracked` counters PyTorch's
    /// BatchNorm keeps (zeros), so `load_state_dict(strict=True)` accepts the file.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        let bns: Vec<String> = v
            .iter()
            .filter_map(|(n, _)| {
                n.strip_suffix(".running_mean")
                    .map(|p| format!("{p}.num_batches_tracked"))
            })
            .collect();
        for n in bns {
            v.push((n, Tensor::zeros([], (Kind::Int64, Device::Cpu))));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Writes the weights as safetensors, atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        save_tensors(path, &self.state_dict())
    }

    /// Loads weights saved by [`Model::save`] (or by PyTorch with the same names).
    pub fn load(&mut self, path: &std::path::Path) -> Result<()> {
        if let Err(e) = std::fs::metadata(path) {
            return Err(crate::Error::io(path, e));
        }
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| crate::Error::format(path.display(), format!("cannot read safetensors: {e}")))?;
        let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        self.load_map(&map, path)
    }

    /// Copies every variable from `map` (read from `path`, named in errors).
    pub fn load_map(
        &mut self,
        map: &std::collections::HashMap<String, Tensor>,
        path: &std::path::Path,
    ) -> Result<()> {
        load_vars(&self.vs, map, path)
    }
}

/// Names and shapes of a safetensors file's tensors, read from its header alone (a ResNet-152's
/// weights are not read to check their names).
pub fn tensor_shapes(path: &std::path::Path) -> Result<std::collections::BTreeMap<String, Vec<i64>>> {
    use std::io::Read;
    let bad = |why: String| crate::Error::format(path.display(), why);
    let mut f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let len = u64::from_le_bytes(len);
    let size = f.metadata().map_err(|e| crate::Error::io(path, e))?.len();
    if len > 100 << 20 || len + 8 > size {
        return Err(bad(format!(
            "not a safetensors file: a header of {len} bytes in a file of {size}"
        )));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| crate::Error::io(path, e))?;
    let header: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a safetensors file: its header is not JSON ({e})")))?;
    let mut out = std::collections::BTreeMap::new();
    for (name, v) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape = v
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|s| s.iter().map(|d| d.as_i64()).collect::<Option<Vec<i64>>>())
            .ok_or_else(|| bad(format!("tensor `{name}` has no shape in the header")))?;
        out.insert(name, shape);
    }
    Ok(out)
}

/// How a model's variables (`want`: names and shapes) are filled from an init file's tensors
/// (`have`; BatchNorm's `num_batches_tracked` counters are ignored): `Ok(true)` when everything
/// matches, `Ok(false)` when only the classifier (`fc.*`) differs (it is then re-initialised,
/// whole), and an error listing every other tensor that is missing, unexpected or of another
/// shape.
pub fn init_fits(
    want: &std::collections::BTreeMap<String, Vec<i64>>,
    have: &std::collections::BTreeMap<String, Vec<i64>>,
) -> std::result::Result<bool, Vec<String>> {
    let have: std::collections::BTreeMap<&String, &Vec<i64>> = have
        .iter()
        .filter(|(n, _)| !n.ends_with(".num_batches_tracked"))
        .collect();
    let mut wrong = Vec::new();
    let mut classifier = true;
    for (name, shape) in want {
        match have.get(name) {
            Some(s) if *s == shape => {}
            _ if name.starts_with("fc.") => classifier = false,
            None => wrong.push(format!("missing tensor `{name}` {shape:?}")),
            Some(s) => wrong.push(format!("tensor `{name}` is {s:?}, the model's is {shape:?}")),
        }
    }
    for (name, shape) in &have {
        if !want.contains_key(*name) {
            if name.starts_with("fc.") {
                classifier = false;
            } else {
                wrong.push(format!("unexpected tensor `{name}` {shape:?}"));
            }
        }
    }
    if wrong.is_empty() {
        Ok(classifier)
    } else {
        Err(wrong)
    }
}

/// The error for an init file that does not fit `config`'s network: every mismatch named (the
/// first 12, then how many more).
fn init_refused(path: &std::path::Path, config: &ModelConfig, wrong: &[String]) -> crate::Error {
    let mut list: Vec<String> = wrong.iter().take(12).cloned().collect();
    if wrong.len() > 12 {
        list.push(format!("and {} more", wrong.len() - 12));
    }
    crate::Error::format(
        path.display(),
        format!(
            "[model] init does not fit arch = {} with stem = {}{}: {}",
            serde_json::to_value(config.arch)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            serde_json::to_value(config.stem)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            if config.bilateral { ", bilateral" } else { "" },
            list.join("; ")
        ),
    )
}

impl Model {
    fn shapes(&self) -> std::collections::BTreeMap<String, Vec<i64>> {
        self.vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect()
    }

    /// Checks, from its header alone, that `config.init` fits `config`'s network (the classifier
    /// aside, which may have another class count): before any work.
    pub fn check_init(config: &ModelConfig) -> Result<()> {
        let Some(path) = &config.init else {
            return Ok(());
        };
        let have = tensor_shapes(path)?;
        let net = Model::new(&config.architecture(), 1, Device::Cpu)?;
        init_fits(&net.shapes(), &have)
            .map(|_| ())
            .map_err(|wrong| init_refused(path, config, &wrong))
    }

    /// Fills the network from `[model] init`: every tensor but a classifier of another shape,
    /// which keeps its fresh initialisation. Returns what was done, in words.
    pub fn load_init(&mut self, path: &std::path::Path) -> Result<String> {
        let have = tensor_shapes(path)?;
        let fits =
            init_fits(&self.shapes(), &have).map_err(|wrong| init_refused(path, &self.config, &wrong))?;
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| crate::Error::format(path.display(), format!("cannot read safetensors: {e}")))?;
        let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        let mut loaded = 0;
        tch::no_grad(|| {
            for (name, mut var) in self.vs.variables() {
                if !fits && name.starts_with("fc.") {
                    continue;
                }
                var.copy_(&map[&name]);
                loaded += 1;
            }
        });
        Ok(if fits {
            format!("{loaded} tensors from {}", path.display())
        } else {
            let file_fc = have
                .get("fc.weight")
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|| "none".into());
            format!(
                "{loaded} tensors from {}; the classifier re-initialised for {} classes (the file's fc.weight: {file_fc})",
                path.display(),
                self.num_classes
            )
        })
    }
}

/// Copies every variable of `vs` from `map` (read from `path`, named in errors): each must be
/// there with the variable's shape.
pub fn load_vars(
    vs: &nn::VarStore,
    map: &std::collections::HashMap<String, Tensor>,
    path: &std::path::Path,
) -> Result<()> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let src = map
                .get(&name)
                .ok_or_else(|| crate::Error::format(path.display(), format!("missing tensor `{name}`")))?;
            if src.size() != var.size() {
                return Err(crate::Error::format(
                    path.display(),
                    format!(
                        "tensor `{name}` has shape {:?}: expected {:?}",
                        src.size(),
                        var.size()
                    ),
                ));
            }
            var.copy_(src);
        }
        Ok(())
    })
}

/// Writes named tensors as safetensors (moved to the CPU), atomically and synced to disk. I/O
/// errors (a full disk) name the file and say the OS's reason.
pub fn save_tensors(path: &std::path::Path, tensors: &[(String, Tensor)]) -> Result<()> {
    save_tensors_with(path, tensors, None)
}

/// A tensor's bytes as safetensors writes them.
struct Bytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::tensor::View for &Bytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn tensor_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<(String, Bytes)>> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(Device::Cpu).contiguous();
        let dtype = safetensors::Dtype::try_from(t.kind())?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        views.push((name.clone(), Bytes { dtype, shape, data }));
    }
    Ok(views)
}

fn write_views(
    path: &std::path::Path,
    views: &[(String, Bytes)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bytes = safetensors::tensor::serialize(views.iter().map(|(n, b)| (n.as_str(), b)), &metadata)
        .map_err(|e| crate::Error::format(path.display(), format!("cannot serialise the tensors: {e:?}")))?;
    crate::fsx::write_atomic(path, &bytes)
}

/// [`save_tensors`] with the safetensors header's `__metadata__` (string to string).
pub fn save_tensors_with(
    path: &std::path::Path,
    tensors: &[(String, Tensor)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    write_views(path, &tensor_bytes(tensors)?, metadata)
}

/// SHA-256 (hex) of named tensors, in name order: each name, dtype, shape and data bytes.
fn seal<'a>(tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut all: Vec<_> = tensors.collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, dtype, shape, data) in all {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(dtype.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex::encode(h.finalize())
}

/// [`save_tensors`] with the tensors' own digest in the header (`__metadata__[key]`): a file that
/// carries its digest, checked by [`check_sealed`] when it is read back.
pub fn save_tensors_sealed(path: &std::path::Path, tensors: &[(String, Tensor)], key: &str) -> Result<()> {
    let views = tensor_bytes(tensors)?;
    let digest = seal(
        views
            .iter()
            .map(|(n, b)| (n.as_str(), format!("{:?}", b.dtype), &b.shape[..], &b.data[..])),
    );
    write_views(path, &views, Some([(key.to_string(), digest)].into()))
}

/// Whether a file written by [`save_tensors_sealed`] still holds what it was written with:
/// `Ok(true)` when its tensors match the digest it carries, `Ok(false)` when it carries none (a
/// file written before digests were), and an error naming the file when it does not parse or
/// its content differs.
pub fn check_sealed(path: &std::path::Path, key: &str) -> Result<bool> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
    let damaged = |why: String| {
        crate::Error::format(
            path.display(),
            format!("damaged: {why} (the file changed after it was written)"),
        )
    };
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| damaged(format!("not a readable safetensors file ({e:?})")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| damaged(format!("not a readable safetensors file ({e:?})")))?;
    let Some(recorded) = meta.metadata().as_ref().and_then(|m| m.get(key)).cloned() else {
        return Ok(false);
    };
    let tensors = st.tensors();
    let got = seal(
        tensors
            .iter()
            .map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data())),
    );
    if got != recorded {
        return Err(damaged(format!(
            "its tensors' SHA-256 is {got}, and the file records {recorded}"
        )));
    }
    Ok(true)
}
