//! ResNet bodies. CIFAR: 3×3 conv 16 → three stages of n basic blocks (16, 32, 64 channels,
//! strides 1, 2, 2) with option-A (parameter-free) shortcuts, as kaidic/LDAM-DRW's
//! `resnet_cifar.py`; names `conv`, `bn`, `layers.{i}.conv1` … ImageNet-style ResNet-18 (basic),
//! ResNet-50/101/152 (bottleneck) and ResNeXt-50 32×4d (grouped bottleneck) with torchvision's
//! names (`conv1`, `bn1`, `layer1.0.downsample.0`), so torchvision's and timm's weights load.
use super::{Arch, Branch, ModelConfig, Stem};
use tch::nn::{self, ModuleT};
use tch::Tensor;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    conv_groups(p, cin, cout, k, stride, 1)
}

fn conv_groups(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        groups,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// A basic block (two 3×3 convs). `shortcut`: option A (subsample + zero-pad channels) or B
/// (1×1 conv + BN, named `downsample.0/1`).
struct Basic {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    short: Short,
}

enum Short {
    Identity,
    PadA { pad: i64 },
    Proj(Box<(nn::Conv2D, nn::BatchNorm)>),
}

impl Short {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Short::Identity => x.shallow_clone(),
            Short::PadA { pad } => x
                .slice(2, 0, None, 2)
                .slice(3, 0, None, 2)
                .constant_pad_nd([0, 0, 0, 0, *pad, *pad]),
            Short::Proj(cb) => cb.1.forward_t(&cb.0.forward_t(x, train), train),
        }
    }
}

impl Basic {
    fn new(p: &nn::Path, cin: i64, cout: i64, stride: i64, option_a: bool) -> Basic {
        let short = if stride == 1 && cin == cout {
            Short::Identity
        } else if option_a {
            Short::PadA {
                pad: (cout - cin) / 2,
            }
        } else {
            let d = p / "downsample";
            Short::Proj(Box::new((
                conv(&d / "0", cin, cout, 1, stride),
                bn(&d / "1", cout),
            )))
        };
        Basic {
            conv1: conv(p / "conv1", cin, cout, 3, stride),
            bn1: bn(p / "bn1", cout),
            conv2: conv(p / "conv2", cout, cout, 3, 1),
            bn2: bn(p / "bn2", cout),
            short,
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let out = self.bn1.forward_t(&self.conv1.forward_t(x, train), train).relu();
        let out = self.bn2.forward_t(&self.conv2.forward_t(&out, train), train);
        (out + self.short.forward(x, train)).relu()
    }
}

/// A bottleneck block: 1×1 to `inner` channels, 3×3 with the stride (in `groups` groups: ResNeXt),
/// 1×1 to `planes × 4`.
struct Bottleneck {
    c1: nn::Conv2D,
    b1: nn::BatchNorm,
    c2: nn::Conv2D,
    b2: nn::BatchNorm,
    c3: nn::Conv2D,
    b3: nn::BatchNorm,
    short: Short,
}

impl Bottleneck {
    fn new(p: &nn::Path, cin: i64, planes: i64, stride: i64, groups: Groups) -> Bottleneck {
        let cout = planes * 4;
        // torchvision: width = int(planes * (width_per_group / 64.)) * groups
        let width = planes * groups.width_per_group / 64 * groups.groups;
        let short = if stride == 1 && cin == cout {
            Short::Identity
        } else {
            let d = p / "downsample";
            Short::Proj(Box::new((
                conv(&d / "0", cin, cout, 1, stride),
                bn(&d / "1", cout),
            )))
        };
        Bottleneck {
            c1: conv(p / "conv1", cin, width, 1, 1),
            b1: bn(p / "bn1", width),
            c2: conv_groups(p / "conv2", width, width, 3, stride, groups.groups),
            b2: bn(p / "bn2", width),
            c3: conv(p / "conv3", width, cout, 1, 1),
            b3: bn(p / "bn3", cout),
            short,
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let o = self.b1.forward_t(&self.c1.forward_t(x, train), train).relu();
        let o = self.b2.forward_t(&self.c2.forward_t(&o, train), train).relu();
        let o = self.b3.forward_t(&self.c3.forward_t(&o, train), train);
        (o + self.short.forward(x, train)).relu()
    }
}

/// The grouped convolution of a bottleneck: ResNet's 1 × 64, ResNeXt-50's 32 × 4.
#[derive(Clone, Copy)]
struct Groups {
    groups: i64,
    width_per_group: i64,
}

enum Block {
    Basic(Box<Basic>),
    Bottleneck(Box<Bottleneck>),
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Block::Basic(b) => b.forward(x, train),
            Block::Bottleneck(b) => b.forward(x, train),
        }
    }
}

/// The backbone of a model: stem, blocks, global average pool. A bilateral body (BBN) builds its
/// last block twice, as `cb_block` and `rb_block`, after the shared ones.
pub struct Body {
    stem: nn::Conv2D,
    stem_bn: nn::BatchNorm,
    max_pool: bool,
    blocks: Vec<Block>,
    branches: Option<(Block, Block)>,
    dim: i64,
}

impl Body {
    /// The feature dimension of `cfg`'s body, without building it.
    pub fn dim_of(cfg: &ModelConfig) -> i64 {
        let d = match cfg.arch {
            Arch::Resnet8 | Arch::Resnet20 | Arch::Resnet32 | Arch::Resnet56 => 64,
            Arch::Resnet18 => 512,
            Arch::Resnet50 | Arch::Resnet101 | Arch::Resnet152 | Arch::Resnext50 => 2048,
        };
        if cfg.bilateral {
            2 * d
        } else {
            d
        }
    }

    pub fn new(root: &nn::Path, cfg: &ModelConfig) -> Body {
        // (path, in channels, width, stride) of every block, in order.
        let mut specs: Vec<(nn::Path, i64, i64, i64)> = Vec::new();
        let cifar = cfg.arch.is_cifar();
        let bottleneck = !cifar && cfg.arch != Arch::Resnet18;
        // blocks per stage of the ImageNet ResNets (torchvision's `layers`)
        let depths = match cfg.arch {
            Arch::Resnet18 => [2, 2, 2, 2],
            Arch::Resnet101 => [3, 4, 23, 3],
            Arch::Resnet152 => [3, 8, 36, 3],
            _ => [3, 4, 6, 3],
        };
        let groups = match cfg.arch {
            Arch::Resnext50 => Groups {
                groups: 32,
                width_per_group: 4,
            },
            _ => Groups {
                groups: 1,
                width_per_group: 64,
            },
        };
        let (stem, stem_bn, max_pool, mut cin) = if cifar {
            let n = match cfg.arch {
                Arch::Resnet8 => 1,
                Arch::Resnet20 => 3,
                Arch::Resnet32 => 5,
                _ => 9,
            };
            let mut cin = 16;
            for (cout, stride) in [(16, 1), (32, 2), (64, 2)] {
                for i in 0..n {
                    let p = root / "layers" / specs.len();
                    specs.push((p, cin, cout, if i == 0 { stride } else { 1 }));
                    cin = cout;
                }
            }
            (conv(root / "conv", 3, 16, 3, 1), bn(root / "bn", 16), false, 16)
        } else {
            let (stem, max_pool) = match cfg.stem {
                Stem::Small => (conv(root / "conv1", 3, 64, 3, 1), false),
                Stem::Imagenet => {
                    let c = nn::ConvConfig {
                        stride: 2,
                        padding: 3,
                        bias: false,
                        ..Default::default()
                    };
                    (nn::conv2d(root / "conv1", 3, 64, 7, c), true)
                }
            };
            let mut cin = 64;
            for (stage, (width, stride)) in [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate() {
                for i in 0..depths[stage] {
                    let p = root / format!("layer{}", stage + 1) / i;
                    specs.push((p, cin, width, if i == 0 { stride } else { 1 }));
                    cin = if bottleneck { width * 4 } else { width };
                }
            }
            (stem, bn(root / "bn1", 64), max_pool, 64)
        };
        let make = |p: &nn::Path, cin: i64, width: i64, stride: i64| {
            if bottleneck {
                Block::Bottleneck(Box::new(Bottleneck::new(p, cin, width, stride, groups)))
            } else {
                Block::Basic(Box::new(Basic::new(p, cin, width, stride, cifar)))
            }
        };
        let last = specs.len() - 1;
        let mut blocks = Vec::with_capacity(specs.len());
        let mut branches = None;
        for (i, (p, c, width, stride)) in specs.iter().enumerate() {
            if i == last && cfg.bilateral {
                branches = Some((
                    make(&(root / "cb_block"), *c, *width, *stride),
                    make(&(root / "rb_block"), *c, *width, *stride),
                ));
            } else {
                blocks.push(make(p, *c, *width, *stride));
            }
            cin = if bottleneck { width * 4 } else { *width };
        }
        let dim = if cfg.bilateral { 2 * cin } else { cin };
        debug_assert_eq!(dim, Body::dim_of(cfg));
        Body {
            stem,
            stem_bn,
            max_pool,
            blocks,
            branches,
            dim,
        }
    }

    pub fn dim(&self) -> i64 {
        self.dim
    }

    /// `[B, 3, H, W]` → `[B, D]` (a bilateral body: both branches side by side).
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.shared(x, train);
        match &self.branches {
            None => pool(&h),
            Some((cb, rb)) => Tensor::cat(&[pool(&cb.forward(&h, train)), pool(&rb.forward(&h, train))], 1),
        }
    }

    /// The last feature map before pooling: `[B, 3, H, W]` → `[B, D, h, w]` (a bilateral body:
    /// both branches' maps side by side on the channels).
    pub fn forward_map(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.shared(x, train);
        match &self.branches {
            None => h,
            Some((cb, rb)) => Tensor::cat(&[cb.forward(&h, train), rb.forward(&h, train)], 1),
        }
    }

    /// One branch of a bilateral body: `[B, 3, H, W]` → `[B, D/2]`.
    pub fn forward_branch(&self, x: &Tensor, branch: Branch, train: bool) -> crate::Result<Tensor> {
        let (cb, rb) = self.branches.as_ref().ok_or_else(|| {
            crate::invalid!("this network has no branches: set bilateral = true in [model]")
        })?;
        let h = self.shared(x, train);
        Ok(pool(&match branch {
            Branch::Conventional => cb.forward(&h, train),
            Branch::Rebalancing => rb.forward(&h, train),
        }))
    }

    fn shared(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = self
            .stem_bn
            .forward_t(&self.stem.forward_t(x, train), train)
            .relu();
        if self.max_pool {
            h = h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for b in &self.blocks {
            h = b.forward(&h, train);
        }
        h
    }
}

fn pool(h: &Tensor) -> Tensor {
    h.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
}

#[cfg(test)]
mod tests {
    use super::super::Branch;
    use super::super::*;

    fn params(arch: Arch, c: i64) -> i64 {
        params_of(arch, c, false)
    }

    fn params_of(arch: Arch, c: i64, bilateral: bool) -> i64 {
        params_with(arch, c, bilateral, Stem::Small)
    }

    fn params_with(arch: Arch, c: i64, bilateral: bool, stem: Stem) -> i64 {
        Model::new(
            &ModelConfig {
                arch,
                head: Head::Linear,
                stem,
                bilateral,
                init: None,
            },
            c,
            tch::Device::Cpu,
        )
        .unwrap()
        .num_parameters()
    }

    #[test]
    fn parameter_counts_match_the_references() {
        // kaidic/LDAM-DRW resnet32 (and torch_reference.py): 464,154 for 10 classes
        assert_eq!(params(Arch::Resnet32, 10), 464_154);
        // for d in (20, 56): print(sum(p.numel() for p in ResNetCifar(d, 10).parameters()))
        // (torch_reference.py's module) -> 269722, 853018
        assert_eq!(params(Arch::Resnet20, 10), 269_722);
        assert_eq!(params(Arch::Resnet56, 10), 853_018);
        // torchvision resnet18(num_classes=10) with conv1 replaced by a 3×3 (1,728 instead of 9,408
        // weights): 11,689,512 − 1000·513 + 10·513 − 9,408 + 1,728 = 11,173,962
        assert_eq!(params(Arch::Resnet18, 10), 11_173_962);
        // torchvision's ImageNet models, 1,000 classes:
        // sum(p.numel() for p in torchvision.models.<name>().parameters())
        let imagenet = |arch| params_with(arch, 1000, false, Stem::Imagenet);
        assert_eq!(imagenet(Arch::Resnet18), 11_689_512);
        assert_eq!(imagenet(Arch::Resnet50), 25_557_032);
        assert_eq!(imagenet(Arch::Resnext50), 25_028_904);
        assert_eq!(imagenet(Arch::Resnet101), 44_549_160);
        assert_eq!(imagenet(Arch::Resnet152), 60_192_808);
        // BBN / TDE's CIFAR backbone: BBN_ResNet_Cifar(BasicBlock, [5, 5, 5]) from
        // KaihuaTang/Long-Tailed-Recognition.pytorch's ResNet32Feature.py, plus nn.Linear(128, 10):
        // sum(p.numel() for p in m.parameters()) + 128*10 + 10 -> 538778
        assert_eq!(params_of(Arch::Resnet32, 10, true), 538_778);
    }

    fn hand_causal() -> Causal {
        Causal {
            heads: 2,
            tau: 4.0,
            gamma: 1.0,
            alpha: 1.0,
            momentum: 0.9,
        }
    }

    fn t(v: &[f32], shape: &[i64]) -> tch::Tensor {
        tch::Tensor::from_slice(v).reshape(shape)
    }

    /// TDE by hand. x = [3, 4 | 0, 2] → heads x̂ = [.6, .8], [0, 1]; mean c = [1, 0 | 0, 5] →
    /// ĉ = [1, 0], [0, 1]; cos = .6 and 1. Weights with γ = 1: class 0 [2, 0 | 0, 3] →
    /// [2/3, 0], [0, 3/4]; class 1 [0, 1 | 1, 0] → [0, 1/2], [1/2, 0]. Scale τ/H = 2.
    /// Training: class 0 = 2·(.6·2/3 + 1·3/4) = 2.3, class 1 = 2·(.8·1/2) = 0.8.
    /// α = 1: x̂ − cos·ĉ = [0, .8], [0, 0] → class 0 = 0, class 1 = 0.8 (the prediction flips).
    /// α = ½: [.3, .8], [0, .5] → class 0 = 2·(.3·2/3 + .5·3/4) = 1.15, class 1 = 0.8.
    #[test]
    fn tde_logits_by_hand() {
        let x = t(&[3., 4., 0., 2.], &[1, 4]);
        let w = t(&[2., 0., 0., 3., 0., 1., 1., 0.], &[2, 4]);
        let c = t(&[1., 0., 0., 5.], &[4]);
        let close = |a: &tch::Tensor, b: &[f32]| {
            let got: Vec<f32> = a.reshape([-1]).try_into().unwrap();
            for (g, e) in got.iter().zip(b) {
                assert!((g - e).abs() < 1e-5, "{got:?} vs {b:?}");
            }
        };
        let h = hand_causal();
        close(&h.logits(&x, &w), &[2.3, 0.8]);
        close(&h.tde_logits(&x, &w, &c), &[0.0, 0.8]);
        close(&Causal { alpha: 0.5, ..h }.tde_logits(&x, &w, &c), &[1.15, 0.8]);
    }

    /// The same numbers through a model: the training forward uses the causal logits, the
    /// inference forward TDE's, and the moving mean follows `embed ← μ·embed + mean(batch)`.
    #[test]
    fn causal_head_in_a_model() {
        let cfg = ModelConfig {
            arch: Arch::Resnet8,
            head: Head::Causal(hand_causal()),
            stem: Stem::Small,
            bilateral: false,
            init: None,
        };
        // ResNet-8 features are 64-wide: put the hand example in dims 0..2 and 32..34.
        let m = Model::new(&cfg, 2, tch::Device::Cpu).unwrap();
        let mut x = vec![0f32; 64];
        x[0] = 3.;
        x[1] = 4.;
        x[33] = 2.;
        let mut w = vec![0f32; 128];
        w[0] = 2.;
        w[33] = 3.;
        w[64 + 1] = 1.;
        w[64 + 32] = 1.;
        let x = t(&x, &[1, 64]);
        tch::no_grad(|| {
            let vars = m.vs.variables();
            vars["fc.weight"].shallow_clone().copy_(&t(&w, &[2, 64]));
        });
        // embed: 0 → [1, 0 | 0, 5] after one batch of mean [1, 0 | 0, 5]
        let mut c = vec![0f32; 64];
        c[0] = 1.;
        c[33] = 5.;
        let batch = tch::Tensor::stack(&[t(&c, &[64]) * 2.0, t(&c, &[64]) * 0.0], 0);
        m.observe_features(&batch);
        let embed = m.vs.variables()["fc.embed"].shallow_clone();
        assert!(embed.allclose(&t(&c, &[64]), 1e-6, 1e-6, false));
        m.observe_features(&batch);
        assert!(embed.allclose(&(t(&c, &[64]) * 1.9), 1e-6, 1e-6, false));
        let train: Vec<f32> = m.forward_head(&x).reshape([-1]).try_into().unwrap();
        let pred: Vec<f32> = m.predict_head(&x).reshape([-1]).try_into().unwrap();
        assert!(
            (train[0] - 2.3).abs() < 1e-5 && (train[1] - 0.8).abs() < 1e-5,
            "{train:?}"
        );
        assert!(pred[0].abs() < 1e-5 && (pred[1] - 0.8).abs() < 1e-5, "{pred:?}");
        assert!(!embed.requires_grad(), "the moving mean is not trained");
    }

    #[test]
    fn bilateral_branches() {
        let cfg = ModelConfig {
            arch: Arch::Resnet8,
            head: Head::Linear,
            stem: Stem::Small,
            bilateral: true,
            init: None,
        };
        let m = Model::new(&cfg, 3, tch::Device::Cpu).unwrap();
        assert_eq!(m.feature_dim(), 128);
        let names: Vec<String> = m.vs.variables().into_keys().collect();
        assert!(names.iter().any(|n| n.starts_with("cb_block.conv1")));
        assert!(names.iter().any(|n| n.starts_with("rb_block.conv1")));
        let x = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let f = m.forward_features(&x, false);
        let cb = m.body.forward_branch(&x, Branch::Conventional, false).unwrap();
        let rb = m.body.forward_branch(&x, Branch::Rebalancing, false).unwrap();
        assert!(f.allclose(&tch::Tensor::cat(&[&cb, &rb], 1), 1e-6, 1e-6, false));
        assert!(
            !cb.allclose(&rb, 1e-3, 1e-3, false),
            "the branches have their own weights"
        );
        // BBN at α = ½ on one image is the inference forward (equal weights).
        let bbn = m.forward_bbn(&x, &x, 0.5, false).unwrap();
        assert!(bbn.allclose(&m.forward(&x, false), 1e-5, 1e-5, false));
        let cb_only = m.forward_bbn(&x, &x, 1.0, false).unwrap();
        let zeros = tch::Tensor::zeros_like(&rb);
        let expect = m.forward_head(&tch::Tensor::cat(&[&cb * 2.0, zeros], 1));
        assert!(
            cb_only.allclose(&expect, 1e-5, 1e-5, false),
            "α = 1: the conventional branch alone, ×2"
        );
        let plain = Model::new(
            &ModelConfig {
                bilateral: false,
                init: None,
                ..cfg
            },
            3,
            tch::Device::Cpu,
        )
        .unwrap();
        assert!(plain
            .body
            .forward_branch(&x, Branch::Conventional, false)
            .is_err());
    }

    /// Every head but TDE's has a linear form that gives its logits (the cosine head's times its
    /// scale) from the features; a model built with the linear-on-normalised head and the form's
    /// tensors gives the same logits again (what an exported cosine model holds after stage 2).
    #[test]
    fn linear_forms_give_the_heads_logits() {
        tch::manual_seed(3);
        let f = tch::Tensor::randn([6, 64], (tch::Kind::Float, tch::Device::Cpu)) * 3.0;
        let config = |head| ModelConfig {
            arch: Arch::Resnet8,
            head,
            stem: Stem::Small,
            bilateral: false,
            init: None,
        };
        for (head, scale) in [
            (Head::Linear, 1.0),
            (Head::Cosine, 30.0),
            (Head::LinearOnNormalised, 1.0),
        ] {
            let m = Model::new(&config(head), 7, tch::Device::Cpu).unwrap();
            let form = m.linear_form(scale).unwrap();
            assert_eq!(form.normalised, head != Head::Linear, "{head:?}");
            let got = form.features(f.shallow_clone()).mm(&form.weight.tr()) + &form.bias;
            let want = m.forward_head(&f) * scale;
            assert!(got.allclose(&want, 1e-5, 1e-5, false), "{head:?}");
            // the form loaded into a model with the head stage 2 leaves
            let r = Model::new(&config(head.retrained()), 7, tch::Device::Cpu).unwrap();
            let vars = r.vs.variables();
            tch::no_grad(|| {
                vars["fc.weight"].shallow_clone().copy_(&form.weight);
                vars["fc.bias"].shallow_clone().copy_(&form.bias);
            });
            assert!(r.forward_head(&f).allclose(&want, 1e-5, 1e-5, false), "{head:?}");
        }
        let tde = Model::new(&config(Head::Causal(hand_causal())), 7, tch::Device::Cpu).unwrap();
        assert!(tde.linear_form(1.0).is_none());
    }

    #[test]
    fn every_heads_class_maps_average_to_its_logits() {
        // a map is each position's share of the logit; before, the normalising heads normalised
        // each position alone, and their maps' means were not their logits
        tch::manual_seed(5);
        let x = tch::Tensor::randn([3, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        for head in [
            Head::Linear,
            Head::Cosine,
            Head::LinearOnNormalised,
            Head::Causal(hand_causal()),
        ] {
            let config = ModelConfig {
                arch: Arch::Resnet8,
                head,
                stem: Stem::Small,
                bilateral: false,
                init: None,
            };
            let m = Model::new(&config, 7, tch::Device::Cpu).unwrap();
            let maps = m.class_maps(&x);
            assert_eq!(maps.size(), [3, 7, 8, 8], "{head:?}");
            let mean = maps.mean_dim([2, 3].as_slice(), false, tch::Kind::Float);
            let logits = tch::no_grad(|| m.forward_head(&m.forward_features(&x, false)));
            assert!(
                mean.allclose(&logits, 1e-4, 1e-5, false),
                "{head:?}: {mean} vs {logits}"
            );
        }
    }

    fn cfg(arch: Arch, head: Head) -> ModelConfig {
        ModelConfig {
            arch,
            head,
            stem: Stem::Small,
            bilateral: false,
            init: None,
        }
    }

    /// `[model] init`: every tensor copied exactly; a classifier of another shape re-initialised
    /// (and said); another network's file refused with each mismatch named, from its header alone.
    #[test]
    fn init_files_fill_the_network_or_are_refused_naming_each_tensor() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(1);
        let src = Model::new(&cfg(Arch::Resnet8, Head::Linear), 3, tch::Device::Cpu).unwrap();
        let file = dir.path().join("init.safetensors");
        src.save(&file).unwrap();
        let same = |a: &Model, b: &Model, fc: bool| {
            let (va, vb) = (a.vs.variables(), b.vs.variables());
            va.iter()
                .filter(|(n, _)| fc || !n.starts_with("fc."))
                .all(|(n, t)| t.equal(&vb[n]))
        };
        tch::manual_seed(2);
        let mut m = Model::new(&cfg(Arch::Resnet8, Head::Linear), 3, tch::Device::Cpu).unwrap();
        assert!(!same(&m, &src, false));
        let said = m.load_init(&file).unwrap();
        assert!(same(&m, &src, true), "every tensor, the classifier's too");
        assert!(said.starts_with("37 tensors from"), "{said}");
        // 5 classes: the backbone from the file, the classifier fresh
        tch::manual_seed(2);
        let mut five = Model::new(&cfg(Arch::Resnet8, Head::Linear), 5, tch::Device::Cpu).unwrap();
        let fresh = five.vs.variables()["fc.weight"].copy();
        let said = five.load_init(&file).unwrap();
        assert!(same(&five, &src, false) && five.vs.variables()["fc.weight"].equal(&fresh));
        assert!(
            said.ends_with("the classifier re-initialised for 5 classes (the file's fc.weight: [3, 64])"),
            "{said}"
        );
        // a cosine head ([D, C], no bias) is a classifier of another shape, not an error
        let mut cos = Model::new(&cfg(Arch::Resnet8, Head::Cosine), 3, tch::Device::Cpu).unwrap();
        cos.load_init(&file).unwrap();
        assert!(same(&cos, &src, false));
        // ResNet-20 has blocks ResNet-8 has not: refused, each named, before reading the weights
        let deeper = ModelConfig {
            init: Some(file.clone()),
            ..cfg(Arch::Resnet20, Head::Linear)
        };
        let e = Model::check_init(&deeper).unwrap_err().to_string();
        assert!(
            e.contains("[model] init does not fit arch = \"resnet20\" with stem = \"small\"")
                && e.contains(
                    "tensor `layers.1.conv1.weight` is [32, 16, 3, 3], the model's is [16, 16, 3, 3]"
                )
                && e.contains("and 68 more"),
            "{e}"
        );
        let e = init_fits(
            &Model::new(&cfg(Arch::Resnet20, Head::Linear), 3, tch::Device::Cpu)
                .unwrap()
                .shapes(),
            &tensor_shapes(&file).unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.len(),
            80,
            "blocks 1, 2: 10 tensors of other shapes each; blocks 3 to 8 missing"
        );
        assert!(
            e.iter()
                .any(|w| w == "missing tensor `layers.3.conv1.weight` [32, 16, 3, 3]"),
            "{e:?}"
        );
        // ResNet-18's small stem against ResNet-8's: shapes differ, names too
        let e = init_fits(
            &Model::new(&cfg(Arch::Resnet18, Head::Linear), 3, tch::Device::Cpu)
                .unwrap()
                .shapes(),
            &tensor_shapes(&file).unwrap(),
        )
        .unwrap_err();
        assert!(
            e.iter()
                .any(|w| w == "unexpected tensor `conv.weight` [16, 3, 3, 3]"),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|w| w == "missing tensor `conv1.weight` [64, 3, 3, 3]"),
            "{e:?}"
        );
        // not a safetensors file: named
        std::fs::write(
            dir.path().join("bad.safetensors"),
            b"\xff\xff\xff\xff\xff\xff\xff\x7f{}",
        )
        .unwrap();
        let e = tensor_shapes(&dir.path().join("bad.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("not a safetensors file"),
            "{e}"
        );
    }

    #[test]
    fn shapes_and_head_reset() {
        let mut m = Model::new(
            &ModelConfig {
                arch: Arch::Resnet8,
                head: Head::Cosine,
                stem: Stem::Small,
                bilateral: false,
                init: None,
            },
            10,
            tch::Device::Cpu,
        )
        .unwrap();
        let x = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let f = m.forward_features(&x, false);
        assert_eq!(f.size(), [2, 64]);
        let logits = m.forward_head(&f);
        assert_eq!(logits.size(), [2, 10]);
        // cosine logits lie in [-1, 1]
        assert!(logits.abs().max().double_value(&[]) <= 1.0 + 1e-5);
        m.reset_head(5).unwrap();
        assert_eq!(m.forward(&x, false).size(), [2, 5]);
        let f2 = m.forward_features(&x, false);
        assert!(
            f.allclose(&f2, 1e-6, 1e-6, false),
            "reset_head keeps the backbone"
        );
    }
}
