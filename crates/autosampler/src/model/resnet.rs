//! ResNet bodies. CIFAR: 3×3 conv 16 → three stages of n basic blocks (16, 32, 64 channels,
//! strides 1, 2, 2) with option-A (parameter-free) shortcuts, as kaidic/LDAM-DRW's
//! `resnet_cifar.py`; names `conv`, `bn`, `layers.{i}.conv1` … ImageNet-style ResNet-18 (basic)
//! and ResNet-50 (bottleneck) with torchvision's names (`conv1`, `bn1`, `layer1.0.downsample.0`).
use super::{Arch, ModelConfig, Stem};
use tch::nn::{self, ModuleT};
use tch::Tensor;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
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

/// A bottleneck block (1×1, 3×3 with the stride, 1×1 ×4).
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
    fn new(p: &nn::Path, cin: i64, width: i64, stride: i64) -> Bottleneck {
        let cout = width * 4;
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
            c2: conv(p / "conv2", width, width, 3, stride),
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

/// The backbone of a model: stem, blocks, global average pool.
pub struct Body {
    stem: nn::Conv2D,
    stem_bn: nn::BatchNorm,
    max_pool: bool,
    blocks: Vec<Block>,
    dim: i64,
}

impl Body {
    pub fn new(root: &nn::Path, cfg: &ModelConfig) -> Body {
        match cfg.arch {
            Arch::Resnet8 | Arch::Resnet20 | Arch::Resnet32 | Arch::Resnet56 => {
                let n = match cfg.arch {
                    Arch::Resnet8 => 1,
                    Arch::Resnet20 => 3,
                    Arch::Resnet32 => 5,
                    _ => 9,
                };
                let layers = root / "layers";
                let mut blocks = Vec::new();
                let mut cin = 16;
                for (cout, stride) in [(16, 1), (32, 2), (64, 2)] {
                    for i in 0..n {
                        let s = if i == 0 { stride } else { 1 };
                        let p = &layers / blocks.len();
                        blocks.push(Block::Basic(Box::new(Basic::new(&p, cin, cout, s, true))));
                        cin = cout;
                    }
                }
                Body {
                    stem: conv(root / "conv", 3, 16, 3, 1),
                    stem_bn: bn(root / "bn", 16),
                    max_pool: false,
                    blocks,
                    dim: 64,
                }
            }
            Arch::Resnet18 | Arch::Resnet50 => {
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
                let bottleneck = cfg.arch == Arch::Resnet50;
                let mut blocks = Vec::new();
                let mut cin = 64;
                for (stage, (width, stride)) in
                    [(64, 1), (128, 2), (256, 2), (512, 2)].into_iter().enumerate()
                {
                    for i in 0..2 + if bottleneck { [1, 2, 4, 1][stage] } else { 0 } {
                        let p = root / format!("layer{}", stage + 1) / i;
                        let s = if i == 0 { stride } else { 1 };
                        if bottleneck {
                            blocks.push(Block::Bottleneck(Box::new(Bottleneck::new(&p, cin, width, s))));
                            cin = width * 4;
                        } else {
                            blocks.push(Block::Basic(Box::new(Basic::new(&p, cin, width, s, false))));
                            cin = width;
                        }
                    }
                }
                Body {
                    stem,
                    stem_bn: bn(root / "bn1", 64),
                    max_pool,
                    blocks,
                    dim: cin,
                }
            }
        }
    }

    pub fn dim(&self) -> i64 {
        self.dim
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
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
        h.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn params(arch: Arch, c: i64) -> i64 {
        Model::new(
            &ModelConfig {
                arch,
                head: Head::Linear,
                stem: Stem::Small,
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
    }

    #[test]
    fn shapes_and_head_reset() {
        let mut m = Model::new(
            &ModelConfig {
                arch: Arch::Resnet8,
                head: Head::Cosine,
                stem: Stem::Small,
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
