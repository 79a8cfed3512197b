//! SGD with momentum, Nesterov and weight decay, exactly PyTorch's `torch.optim.SGD` update
//! (dampening 0): g = ∇ + wd·p; b = g on the first step, else μ·b + g; p −= lr·(g + μ·b if
//! Nesterov else b). Written by hand so the momentum buffers can be checkpointed and restored:
//! a resumed run continues bit for bit.
use tch::Tensor;

pub struct Sgd {
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    params: Vec<(String, Tensor)>,
    bufs: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Optimises `params` (named, for checkpoints).
    pub fn new(params: Vec<(String, Tensor)>, momentum: f64, nesterov: bool, weight_decay: f64) -> Sgd {
        let n = params.len();
        Sgd {
            momentum,
            nesterov,
            weight_decay,
            params,
            bufs: (0..n).map(|_| None).collect(),
        }
    }

    /// One update with learning rate `lr`; gradients are then zeroed.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for ((_, p), buf) in self.params.iter_mut().zip(self.bufs.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if self.weight_decay != 0.0 {
                    &g + &*p * self.weight_decay
                } else {
                    g.shallow_clone()
                };
                if self.momentum != 0.0 {
                    let b = match buf {
                        Some(b) => {
                            let _ = b.g_mul_scalar_(self.momentum).g_add_(&d);
                            b.shallow_clone()
                        }
                        None => {
                            let b = d.detach().copy();
                            *buf = Some(b.shallow_clone());
                            b
                        }
                    };
                    d = if self.nesterov { d + b * self.momentum } else { b };
                }
                let _ = p.g_add_(&(d * -lr));
                let _ = g.shallow_clone().zero_();
            }
        });
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// The momentum buffers as named tensors (`<param>.momentum_buffer`).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.bufs)
            .filter_map(|((n, _), b)| {
                b.as_ref()
                    .map(|b| (format!("{n}.momentum_buffer"), b.shallow_clone()))
            })
            .collect()
    }

    /// Restores buffers saved by [`Sgd::state`].
    pub fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) {
        tch::no_grad(|| {
            for ((n, p), buf) in self.params.iter().zip(self.bufs.iter_mut()) {
                if let Some(t) = state.get(&format!("{n}.momentum_buffer")) {
                    *buf = Some(t.to_device(p.device()).copy());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    // p = torch.tensor([1.0, -2.0], requires_grad=True)
    // opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    // for _ in range(3):
    //     opt.zero_grad(); (p ** 2).sum().backward(); opt.step()
    // print(p.tolist())  -> nesterov: [-0.11165107786655426, 0.22330215573310852]
    //                      plain:    [0.05819422006607056, -0.11638844013214111]
    #[test]
    fn matches_torch_sgd() {
        for (nesterov, want) in [
            (true, [-0.11165107786655426f64, 0.22330215573310852]),
            (false, [0.05819422006607056, -0.11638844013214111]),
        ] {
            let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
            let mut opt = Sgd::new(vec![("p".into(), p.shallow_clone())], 0.9, nesterov, 0.01);
            for _ in 0..3 {
                opt.zero_grad();
                p.pow_tensor_scalar(2).sum(Kind::Float).backward();
                opt.step(0.1);
            }
            let got = Vec::<f32>::try_from(&p.detach()).unwrap();
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (*g as f64 - w).abs() < 1e-6,
                    "nesterov {nesterov}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
