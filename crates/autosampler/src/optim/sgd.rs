//! SGD with momentum, Nesterov and weight decay, exactly PyTorch's `torch.optim.SGD` update
//! (dampening 0): g = ∇ + wd·p; b = g on the first step, else μ·b + g; p −= lr·(g + μ·b if
//! Nesterov else b).
//!
//! Written by hand for two reasons. The momentum buffer can be checkpointed and restored, so a
//! resumed run continues bit for bit. And the parameters live in one flat buffer (each parameter a
//! view of it, in its own memory order, channels-last included): an update is a handful of kernels
//! over the flat buffer instead of several per parameter, which on a GPU is what PyTorch's
//! multi-tensor (`foreach`) SGD buys and `tch` does not expose.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// `[train.sam]`: sharpness-aware minimisation around each step (two forward and backward passes
/// a batch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sam {
    /// The neighbourhood's radius ρ (0.05 for SAM on CIFAR; ASAM's is larger, 0.5–2).
    pub rho: f64,
    /// ASAM: the radius scaled by each weight's magnitude (scale-invariant).
    #[serde(default)]
    pub adaptive: bool,
}

impl Sam {
    /// ρ is a finite number > 0.
    pub fn check(&self) -> crate::Result<()> {
        crate::check::Ranges("train.sam").positive("rho", self.rho)
    }
}

pub struct Sgd {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    names: Vec<String>,
    params: Vec<Tensor>,
    channels_last: Vec<bool>,
    flat: Tensor,
    buf: Option<Tensor>,
}

/// True when a 4-d tensor is stored channels-last (NHWC in memory).
fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    size.len() == 4 && size[1] > 1 && stride[1] == 1 && stride[3] == size[1]
}

/// The elements of `t` flattened in its memory order (NCHW, or NHWC when channels-last).
fn memory_order(t: &Tensor, cl: bool) -> Tensor {
    if cl {
        t.permute([0, 2, 3, 1]).reshape([-1])
    } else {
        t.reshape([-1])
    }
}

impl Sgd {
    /// Optimises `params` (named, for checkpoints). Their storage moves into one flat buffer.
    pub fn new(params: Vec<(String, Tensor)>, momentum: f64, nesterov: bool, weight_decay: f64) -> Sgd {
        let (names, params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        let channels_last: Vec<bool> = params.iter().map(is_channels_last).collect();
        let flat = tch::no_grad(|| {
            let parts: Vec<Tensor> = params
                .iter()
                .zip(&channels_last)
                .map(|(p, &cl)| memory_order(p, cl))
                .collect();
            if parts.is_empty() {
                Tensor::zeros([0], (Kind::Float, tch::Device::Cpu))
            } else {
                Tensor::cat(&parts, 0)
            }
        });
        let mut off = 0;
        for (p, &cl) in params.iter().zip(&channels_last) {
            let n = p.numel() as i64;
            let size = p.size();
            let part = flat.narrow(0, off, n);
            let view = if cl {
                part.view([size[0], size[2], size[3], size[1]])
                    .permute([0, 3, 1, 2])
            } else {
                part.view(size.as_slice())
            };
            let mut p = p.shallow_clone();
            p.set_data(&view);
            off += n;
        }
        Sgd {
            momentum,
            nesterov,
            weight_decay,
            names,
            params,
            channels_last,
            flat,
            buf: None,
        }
    }

    /// Back-propagates `loss` to the parameters and applies one update with learning rate `lr`.
    /// Gradients are returned by the autograd engine, not accumulated into `.grad`, so there is
    /// nothing to zero.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) {
        let g = self.gradient(loss);
        self.update(g, lr);
    }

    /// Back-propagates `loss` to the parameters: their gradient as one flat tensor, in the flat
    /// buffer's order (what [`Sgd::step_summed`] sums; gradients of micro-batches or ranks add up here).
    pub fn gradient(&self, loss: &Tensor) -> Tensor {
        let grads = Tensor::run_backward(&[loss], &self.params, false, false);
        tch::no_grad(|| {
            let parts: Vec<Tensor> = grads
                .iter()
                .zip(&self.params)
                .zip(&self.channels_last)
                .map(|((g, p), &cl)| {
                    if g.defined() {
                        memory_order(g, cl)
                    } else {
                        p.zeros_like().reshape([-1])
                    }
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    }

    /// A zero flat gradient (a rank with no images in a batch still joins its all-reduce).
    fn zero_gradient(&self) -> Tensor {
        self.flat.zeros_like()
    }

    /// Adds to `acc` the gradient of `loss`, the mean loss of a share of `part` images of a batch
    /// of `whole`, weighted by `part / whole`: summed over the batch's shares (and ranks), these
    /// are the gradient of the whole batch's mean loss. The whole batch's own loss is taken as it
    /// is.
    pub fn add_share_gradient(&self, acc: &mut Option<Tensor>, loss: &Tensor, part: usize, whole: usize) {
        let g = if part == whole {
            self.gradient(loss)
        } else {
            self.gradient(&(loss * (part as f64 / whole as f64)))
        };
        *acc = Some(match acc.take() {
            Some(a) => a + g,
            None => g,
        });
    }

    /// One update with the gradients `acc` of this rank's shares summed over the ranks of `comm`
    /// (a rank without images in the batch adds zeros).
    pub fn step_summed(
        &mut self,
        acc: Option<Tensor>,
        comm: &dyn crate::distributed::Collective,
        lr: f64,
    ) -> crate::Result<()> {
        let g = self.summed(acc, comm)?;
        self.update(g, lr);
        Ok(())
    }

    /// The gradients `acc` of this rank's shares summed over the ranks of `comm`.
    pub fn summed(
        &self,
        acc: Option<Tensor>,
        comm: &dyn crate::distributed::Collective,
    ) -> crate::Result<Tensor> {
        let g = acc.unwrap_or_else(|| self.zero_gradient());
        comm.all_reduce_sum(&g)?;
        Ok(g)
    }

    /// Sharpness-aware minimisation's ascent (SAM, Foret et al.; ASAM, Kwon et al., when
    /// `adaptive`): moves the parameters to w + e, e = ρ·T²g / ‖T·g‖ (T = |w| for ASAM, else 1),
    /// `g` the batch's loss gradient (no weight decay), and returns `e`. The gradient at w + e is
    /// then taken, [`Sgd::descend`] returns to w and applies it: the reference implementation's
    /// `first_step` and `second_step` (davda54/sam).
    pub fn ascend(&self, g: &Tensor, sam: &Sam) -> Tensor {
        tch::no_grad(|| {
            let t = if sam.adaptive {
                self.flat.abs()
            } else {
                self.flat.ones_like()
            };
            let norm = (&t * g).norm().double_value(&[]);
            let e = &t * &t * g * (sam.rho / (norm + 1e-12));
            let mut flat = self.flat.shallow_clone();
            let _ = flat.g_add_(&e);
            e
        })
    }

    /// Back from w + `e` to w, then one update with `g` (the gradient taken at w + `e`).
    pub fn descend(&mut self, e: &Tensor, g: Tensor, lr: f64) {
        tch::no_grad(|| {
            let _ = self.flat.g_sub_(e);
        });
        self.update(g, lr);
    }

    /// Makes every rank's parameters and momentum buffer rank 0's (a data-parallel start or
    /// resume). The flat buffer holds every parameter, so this is one or two broadcasts.
    pub fn broadcast(&mut self, c: &dyn crate::distributed::Collective) -> crate::Result<()> {
        c.broadcast(&self.flat, 0)?;
        if crate::distributed::broadcast_usize(c, self.buf.is_some() as usize)? == 1 {
            let b = self.buf.get_or_insert_with(|| self.flat.zeros_like());
            c.broadcast(b, 0)?;
        } else {
            self.buf = None;
        }
        Ok(())
    }

    /// The update for the flat gradient `g`.
    fn update(&mut self, mut g: Tensor, lr: f64) {
        tch::no_grad(|| {
            if self.weight_decay != 0.0 {
                g = g.g_add(&(&self.flat * self.weight_decay));
            }
            if self.momentum != 0.0 {
                let b = match &mut self.buf {
                    Some(b) => {
                        let _ = b.g_mul_scalar_(self.momentum).g_add_(&g);
                        b.shallow_clone()
                    }
                    None => {
                        let b = g.copy();
                        self.buf = Some(b.shallow_clone());
                        b
                    }
                };
                g = if self.nesterov { g + b * self.momentum } else { b };
            }
            let _ = self.flat.g_add_(&(g * -lr));
        });
    }

    /// The momentum buffers as named tensors (`<param>.momentum_buffer`, parameter-shaped).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let Some(b) = &self.buf else { return Vec::new() };
        let mut off = 0;
        let mut out = Vec::new();
        for ((n, p), &cl) in self.names.iter().zip(&self.params).zip(&self.channels_last) {
            let k = p.numel() as i64;
            let s = p.size();
            let part = b.narrow(0, off, k);
            let t = if cl {
                part.view([s[0], s[2], s[3], s[1]]).permute([0, 3, 1, 2])
            } else {
                part.view(s.as_slice())
            };
            out.push((format!("{n}.momentum_buffer"), t.contiguous()));
            off += k;
        }
        out
    }

    /// Restores buffers saved by [`Sgd::state`] (all of them, or none: the first step then
    /// starts the buffer afresh, as PyTorch does).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) {
        let parts: Option<Vec<Tensor>> = self
            .names
            .iter()
            .zip(&self.channels_last)
            .map(|(n, &cl)| {
                state
                    .get(&format!("{n}.momentum_buffer"))
                    .map(|t| memory_order(t, cl))
            })
            .collect();
        if let Some(parts) = parts.filter(|p| !p.is_empty()) {
            self.buf = Some(tch::no_grad(|| {
                Tensor::cat(&parts, 0).to_device(self.flat.device())
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    // p = torch.tensor([1.0, -2.0], requires_grad=True); q = torch.tensor([[0.5]], requires_grad=True)
    // opt = torch.optim.SGD([p, q], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=N)
    // for _ in range(3):
    //     opt.zero_grad(); ((p ** 2).sum() + (q ** 3).sum()).backward(); opt.step()
    // print(p.tolist(), q.tolist())
    // -> nesterov: [-0.11165107786655426, 0.22330215573310852] [[0.10745562613010406]]
    //    plain:    [0.05819422006607056, -0.11638844013214111] [[0.16419918835163116]]
    #[test]
    fn matches_torch_sgd() {
        for (nesterov, want_p, want_q) in [
            (
                true,
                [-0.11165107786655426f64, 0.22330215573310852],
                0.10745562613010406f64,
            ),
            (
                false,
                [0.05819422006607056, -0.11638844013214111],
                0.16419918835163116,
            ),
        ] {
            let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
            let q = Tensor::from_slice(&[0.5f32]).view([1, 1]).set_requires_grad(true);
            let mut opt = Sgd::new(
                vec![("p".into(), p.shallow_clone()), ("q".into(), q.shallow_clone())],
                0.9,
                nesterov,
                0.01,
            );
            for _ in 0..3 {
                let l = p.pow_tensor_scalar(2).sum(Kind::Float) + q.pow_tensor_scalar(3).sum(Kind::Float);
                opt.backward_step(&l, 0.1);
            }
            let got = Vec::<f32>::try_from(&p.detach()).unwrap();
            for (g, w) in got.iter().zip(want_p) {
                assert!(
                    (*g as f64 - w).abs() < 1e-6,
                    "nesterov {nesterov}: {got:?} vs {want_p:?}"
                );
            }
            assert!((q.double_value(&[0, 0]) - want_q).abs() < 1e-6);
            // the state round-trips
            let st: HashMap<String, Tensor> = opt.state().into_iter().collect();
            assert_eq!(st["q.momentum_buffer"].size(), [1, 1]);
        }
    }

    // SAM and ASAM as davda54/sam's first_step / second_step around torch.optim.SGD:
    // W = torch.tensor([[0.1 * ((i * 4 + j) % 7) - 0.3 for j in range(4)] for i in range(3)])
    // b = torch.tensor([0.05, -0.02, 0.01]); X = [[((i*3 + j*5) % 11) / 10 - 0.5 for j in 4] for i in 5]
    // y = [0, 2, 1, 2, 0]; SGD(lr 0.1, momentum 0.9, weight_decay 5e-4); two steps of
    //   loss = cross_entropy(X @ W.T + b, y); backward; grad_norm = ‖(|p| if adaptive else 1) · grad‖
    //   e = (p² if adaptive else 1) · grad · rho / (grad_norm + 1e-12); p += e
    //   cross_entropy again; backward; p -= e; opt.step()
    // print(W.flatten().tolist(), b.tolist(), the losses at w + e): the values below; SAM with
    // rho 0.05, ASAM with rho 0.5
    #[test]
    fn sam_and_asam_match_the_reference_implementation() {
        let cases = [
            (
                Sam {
                    rho: 0.05,
                    adaptive: false,
                },
                [
                    -0.33867794275283813f64,
                    -0.18807601928710938,
                    -0.09776809066534042,
                    -0.013553827069699764,
                    0.11471167206764221,
                    0.1762475073337555,
                    0.29636794328689575,
                    -0.2731277346611023,
                    -0.1759757548570633,
                    -0.08815699815750122,
                    0.0013711490901187062,
                    0.08671056479215622,
                ],
                [0.0635257214307785f64, -0.05223279073834419, 0.02870126999914646],
                [1.1365101337432861f64, 1.1295840740203857],
            ),
            (
                Sam {
                    rho: 0.5,
                    adaptive: true,
                },
                [
                    -0.3393465578556061,
                    -0.18767468631267548,
                    -0.09790694713592529,
                    -0.013644344173371792,
                    0.1147509440779686,
                    0.17595091462135315,
                    0.2963086664676666,
                    -0.2728302776813507,
                    -0.17534641921520233,
                    -0.08826174587011337,
                    0.0015692878514528275,
                    0.08650358766317368,
                ],
                [0.06348494440317154, -0.05051509663462639, 0.027024345472455025],
                [1.1513206958770752, 1.144724726676941],
            ),
        ];
        for (sam, want_w, want_b, want_loss) in cases {
            let w: Vec<f32> = (0..12).map(|k| 0.1 * ((k % 7) as f32) - 0.3).collect();
            let w = Tensor::from_slice(&w).view([3, 4]).set_requires_grad(true);
            let b = Tensor::from_slice(&[0.05f32, -0.02, 0.01]).set_requires_grad(true);
            let x: Vec<f32> = (0..5)
                .flat_map(|i| (0..4).map(move |j| ((i * 3 + j * 5) % 11) as f32 / 10.0 - 0.5))
                .collect();
            let x = Tensor::from_slice(&x).view([5, 4]);
            let y = Tensor::from_slice(&[0i64, 2, 1, 2, 0]);
            let mut opt = Sgd::new(
                vec![("w".into(), w.shallow_clone()), ("b".into(), b.shallow_clone())],
                0.9,
                false,
                5e-4,
            );
            let loss = || (x.matmul(&w.tr()) + &b).cross_entropy_for_logits(&y);
            for want in want_loss {
                let g = opt.gradient(&loss());
                let e = opt.ascend(&g, &sam);
                let l = loss();
                assert!(
                    (l.double_value(&[]) - want).abs() < 1e-6,
                    "{sam:?}: loss at w + e {l}"
                );
                let g = opt.gradient(&l);
                opt.descend(&e, g, 0.1);
            }
            let got_w = Vec::<f32>::try_from(&w.detach().view([-1])).unwrap();
            let got_b = Vec::<f32>::try_from(&b.detach()).unwrap();
            for (g, w) in got_w.iter().zip(want_w).chain(got_b.iter().zip(want_b)) {
                assert!((*g as f64 - w).abs() < 1e-6, "{sam:?}: {got_w:?} {got_b:?}");
            }
        }
    }

    #[test]
    fn channels_last_parameters_keep_their_layout_and_values() {
        let w = Tensor::randn([4, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
        let cl = w
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2])
            .set_requires_grad(true);
        assert!(is_channels_last(&cl));
        let before = cl.detach().copy();
        let mut opt = Sgd::new(vec![("w".into(), cl.shallow_clone())], 0.0, false, 0.0);
        assert!(cl.allclose(&before, 0.0, 0.0, false));
        // d/dw of sum(w * k) is k: one step with lr 1 subtracts k exactly
        let k = Tensor::randn([4, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
        opt.backward_step(&(&cl * &k).sum(Kind::Float), 1.0);
        assert!(cl.detach().allclose(&(before - k), 1e-6, 1e-6, false));
    }
}
