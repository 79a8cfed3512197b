//! The one Adam of the library (PyTorch's update): the patch agent's policy and the class-weight
//! search use it.
use std::collections::HashMap;
use tch::Tensor;

/// Adam (PyTorch's update, no weight decay) over named tensors, with its moments saveable.
pub struct Adam {
    pub lr: f64,
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: i64,
}

impl Adam {
    pub fn new(params: Vec<(String, Tensor)>, lr: f64) -> Adam {
        let (names, params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        let m = params.iter().map(|p| p.zeros_like().detach()).collect();
        let v = params.iter().map(|p| p.zeros_like().detach()).collect();
        Adam {
            lr,
            names,
            params,
            m,
            v,
            step: 0,
        }
    }

    /// Back-propagates `loss` and applies one update (β = 0.9, 0.999; ε = 1e-8).
    pub fn backward_step(&mut self, loss: &Tensor) {
        let grads = Tensor::run_backward(&[loss], &self.params, false, false);
        self.step(&grads);
    }

    /// One update with the given gradients (one per parameter; undefined ones are skipped), to
    /// minimise. The search ascends by passing the negated gradient of its objective.
    pub fn step(&mut self, grads: &[Tensor]) {
        self.step += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        tch::no_grad(|| {
            for (((p, g), m), v) in self.params.iter().zip(grads).zip(&mut self.m).zip(&mut self.v) {
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(b1).g_add_(&(g * (1.0 - b1)));
                let _ = v.g_mul_scalar_(b2).g_add_(&(g * g * (1.0 - b2)));
                let denom = (&*v / c2).sqrt() + eps;
                let _ = p.shallow_clone().g_add_(&(&*m / &denom * (-self.lr / c1)));
            }
        });
    }

    /// The moments and the step count as named tensors.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        for ((n, m), v) in self.names.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("{n}.adam_m"), m.shallow_clone()));
            out.push((format!("{n}.adam_v"), v.shallow_clone()));
        }
        out.push(("adam_step".into(), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restores [`Adam::state`] (missing entries leave a fresh optimiser).
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) {
        let Some(step) = state.get("adam_step") else {
            return;
        };
        tch::no_grad(|| {
            for ((n, m), v) in self.names.iter().zip(&mut self.m).zip(&mut self.v) {
                if let (Some(a), Some(b)) = (
                    state.get(&format!("{n}.adam_m")),
                    state.get(&format!("{n}.adam_v")),
                ) {
                    m.copy_(a);
                    v.copy_(b);
                }
            }
        });
        self.step = step.int64_value(&[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn adam_matches_pytorch_and_resumes() {
        // p = torch.tensor([1., -2.], requires_grad=True); o = torch.optim.Adam([p], lr=0.1)
        // two steps of (0.5 * (p * p).sum()).backward(); o.step()
        // -> [0.9000000357627869, -1.899999976158142], [0.8004122376441956, -1.8001664876937866]
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Adam::new(vec![("p".into(), p.shallow_clone())], 0.1);
        let step = |opt: &mut Adam| {
            let l = (&p * &p).sum(Kind::Float) * 0.5;
            opt.backward_step(&l);
        };
        step(&mut opt);
        let state: HashMap<String, Tensor> = opt.state().into_iter().map(|(n, t)| (n, t.copy())).collect();
        step(&mut opt);
        let after: Vec<f32> = p.detach().try_into().unwrap();
        assert!(
            (after[0] - 0.800_412_24).abs() < 1e-6 && (after[1] + 1.800_166_5).abs() < 1e-6,
            "{after:?}"
        );
        // A resumed optimiser takes the same second step.
        tch::no_grad(|| p.shallow_clone().copy_(&Tensor::from_slice(&[0.9f32, -1.9])));
        let mut fresh = Adam::new(vec![("p".into(), p.shallow_clone())], 0.1);
        fresh.load_state(&state);
        step(&mut fresh);
        let again: Vec<f32> = p.detach().try_into().unwrap();
        for (a, b) in after.iter().zip(&again) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn adam_ascends_a_quadratic_in_f64() {
        // what the search does: one f64 vector, the negated gradient of an objective to maximise
        let x = Tensor::from_slice(&[0.0f64, 0.0]);
        let mut opt = Adam::new(vec![("mu".into(), x.shallow_clone())], 0.1);
        for _ in 0..500 {
            let v: Vec<f64> = Vec::try_from(&x).unwrap();
            let g = [-(v[0] - 1.0), -(v[1] + 2.0)];
            opt.step(&[-Tensor::from_slice(&g)]);
        }
        let v: Vec<f64> = Vec::try_from(&x).unwrap();
        assert!((v[0] - 1.0).abs() < 1e-2 && (v[1] + 2.0).abs() < 1e-2, "{v:?}");
        assert_eq!(x.kind(), Kind::Double);
    }
}
