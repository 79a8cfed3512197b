//! `bench-search-diagnostics`: why a class-weight search does or does not pay off, on the stage-1
//! features of one finished run.
//! - (a) **proxy fidelity**: for the fixed samplers and `--draws` Dirichlet draws (α cycling over
//!   0.3, 1, 3), Spearman ρ between each proxy's reward and the stage-2 val and test top-1 of the
//!   same weights (stage 2 = the run's `[stage2]` or its defaults). Proxies: the default search's
//!   (stage 2's recipe, R seeds, on the search half of validation) with each reward (balanced
//!   accuracy, top-1, log-likelihood), and the paper's (one epoch, one run, top-1, all of validation);
//!   the default balanced-accuracy proxy again with each shortcut a large training set gets (bf16
//!   products, at most `--cap` (20) training images per class, at most 3 epochs) and with all three, each
//!   with the Spearman ρ of its rewards against the full proxy's (`rho_vs_default`) and its wall
//!   time;
//! - (b) **reward noise**: for 6 weight vectors, the std of the reward over 8 proxy seeds (one seed
//!   per reward), against the std of the rewards over all the weight vectors;
//! - (c) **learning**: the mean reward of the M samples over the first and the last 10 trajectories
//!   of the default search (seed 0), and the same for the paper's;
//! - (d) with `--ceiling`, **how much any class weights can give** over class-balanced cRT, chosen
//!   with the test labels (an upper bound no honest choice reaches in expectation): stage 2 with
//!   power weights n_c^q for q from 1 (instance) through 0 (class-balanced) to −1 (tail
//!   over-weighted), mean of 3 stage-2 seeds; and the default search run *on the test set* (top-1
//!   reward, the best single draw), its weights' stage-2 test top-1.
//!
//! One JSON line.
//!
//!   bench-search-diagnostics --run runs/bench/search/c10lt_ir100_s0 [--draws 50] [--cap 20] [--ceiling | --ceiling-only]
use anyhow::{Context, Result};
use autosampler::sampler::power_weights;
use autosampler::search::{self, split_validation, Proxy, Score, SearchConfig, FIXED};
use autosampler::train::stage2::{self, Parts};
use rand_distr::{Distribution, Gamma};
use serde_json::json;
use std::path::PathBuf;

mod common;
use common::{arg, open_run};

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

fn std(v: &[f64]) -> f64 {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1).max(1) as f64).sqrt()
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    tch::set_num_threads(1);
    let dir = PathBuf::from(arg("--run").context("--run DIR (a finished run with features)")?);
    let draws: usize = arg("--draws").map(|s| s.parse()).transpose()?.unwrap_or(50);
    // the per-class cap of the capped proxies (a large set's default: 20)
    let cap: usize = arg("--cap").map(|s| s.parse()).transpose()?.unwrap_or(20);
    let r = open_run(&dir)?;
    if std::env::args().any(|a| a == "--ceiling-only") {
        let parts = Parts {
            train: &r.train,
            val: &r.val,
            test: &r.test,
        };
        let out = json!({"bench": "search_diagnostics", "run": dir.display().to_string(),
                         "stage2": r.stage2, "search": r.search, "ceiling": ceiling(&r, &parts)?});
        println!("{out}");
        return Ok(());
    }
    let (w0, b0, counts, ft) = (&r.w0, &r.b0, &r.counts, &r.stage2);
    let parts = Parts {
        train: &r.train,
        val: &r.val,
        test: &r.test,
    };
    let c = counts.len();
    // the weight vectors: fixed samplers, then Dirichlet draws
    let mut ws: Vec<Vec<f64>> = FIXED.iter().map(|(_, q)| power_weights(counts, *q)).collect();
    let mut rng = autosampler::rng::chacha(0, &[99]);
    for k in 0..draws {
        let g = Gamma::new([0.3, 1.0, 3.0][k % 3], 1.0)?;
        let v: Vec<f64> = (0..c).map(|_| g.sample(&mut rng) + 1e-12).collect();
        let s: f64 = v.iter().sum();
        ws.push(v.iter().map(|x| x / s).collect());
    }
    // stage 2 of each
    let (mut s2_val, mut s2_test) = (Vec::new(), Vec::new());
    for w in &ws {
        let f = stage2::finetune(&parts, (w0, b0), w, counts, ft)?;
        s2_val.push(f.val.top1);
        s2_test.push(f.test.top1);
    }
    // the proxies
    let d = &r.search;
    let val_labels = Vec::<i64>::try_from(&r.val.y)?;
    let (search_pos, _) = split_validation(&val_labels, d.holdout, d.seed);
    let stage2 = ft.recipe();
    let mut fidelity = serde_json::Map::new();
    let mut noise = serde_json::Map::new();
    let paper = SearchConfig::paper();
    // (name, reward, recipe, validation rows, seeds, bf16, per-class cap): the default proxy, its
    // shortcuts for large training sets one at a time and together (what such a set gets), the
    // other rewards, and the paper's
    let default = d.recipe(&stage2);
    let epochs3 = autosampler::linear::Recipe {
        epochs: default.epochs.min(3),
        ..default
    };
    let sp = Some(&search_pos);
    let rs = d.reward_seeds;
    let proxies = [
        ("default_balanced", Score::Balanced, default, sp, rs, false, None),
        (
            "default_balanced_bf16",
            Score::Balanced,
            default,
            sp,
            rs,
            true,
            None,
        ),
        (
            "default_balanced_cap",
            Score::Balanced,
            default,
            sp,
            rs,
            false,
            Some(cap),
        ),
        (
            "default_balanced_epochs3",
            Score::Balanced,
            epochs3,
            sp,
            rs,
            false,
            None,
        ),
        (
            "default_balanced_large",
            Score::Balanced,
            epochs3,
            sp,
            rs,
            true,
            Some(cap),
        ),
        ("default_top1", Score::Top1, default, sp, rs, false, None),
        (
            "default_log_likelihood",
            Score::LogLikelihood,
            default,
            sp,
            rs,
            false,
            None,
        ),
        ("paper", Score::Top1, paper.recipe(&stage2), None, 1, false, None),
    ];
    let mut fp32_rewards: Option<Vec<f64>> = None;
    for (name, score, recipe, pos, seeds, bf16, cap) in proxies {
        let proxy = Proxy::new(
            &r.train,
            &r.val,
            pos.map(|p| p.as_slice()),
            (w0, b0),
            recipe,
            score,
            bf16,
        )?
        .capped(cap, d.seed);
        let t = std::time::Instant::now();
        let rewards = proxy.evaluate(&ws, seeds, d.seed, 1_000_000);
        let secs = t.elapsed().as_secs_f64();
        let mut entry = json!({"rho_stage2_val": r3(spearman(&rewards, &s2_val)), "rho_stage2_test": r3(spearman(&rewards, &s2_test)),
                   "reward_seeds": seeds, "val_images": pos.map_or(r.val.y.size()[0] as usize, |p| p.len()), "seconds": r3(secs),
                   "epochs": recipe.epochs, "cap": cap, "train_images": proxy.trainer.epoch_len()});
        // a shortcut against the full default proxy: how alike they rank the vectors
        match &fp32_rewards {
            None => fp32_rewards = Some(rewards.clone()),
            Some(f) if name.starts_with("default_balanced_") => {
                entry["rho_vs_default"] = json!(r3(spearman(&rewards, f)))
            }
            _ => {}
        }
        fidelity.insert(name.into(), entry);
        // noise: 8 single-seed rewards of 6 vectors (the fixed samplers and 3 draws)
        let six: Vec<Vec<f64>> = ws.iter().take(6).cloned().collect();
        let single: Vec<Vec<f64>> = (0..8)
            .map(|j| proxy.evaluate(&six, 1, d.seed, 2_000_000 + j))
            .collect();
        let within: Vec<f64> = (0..six.len())
            .map(|k| std(&single.iter().map(|r| r[k]).collect::<Vec<_>>()))
            .collect();
        noise.insert(
            name.into(),
            json!({"seed_std_per_vector": within.iter().map(|x| r3(x * 100.0)).collect::<Vec<_>>(),
                   "mean_seed_std": r3(within.iter().sum::<f64>() / within.len() as f64 * 100.0),
                   "std_over_vectors": r3(std(&rewards) * 100.0)}),
        );
    }
    let fixed_rho = json!({
        "rho_stage2_val_vs_test": r3(spearman(&s2_val, &s2_test)),
    });
    // learning
    let mut learning = serde_json::Map::new();
    for (name, cfg) in [("default", d.clone()), ("paper", paper)] {
        let (_, log) = search::run(&r.train, &r.val, (w0, b0), &stage2, &cfg, |_| {})?;
        let n = log.len().min(10);
        let mean = |s: &[search::Step]| s.iter().map(|s| s.mean_reward).sum::<f64>() / s.len() as f64 * 100.0;
        learning.insert(
            name.into(),
            json!({"first10_mean_reward": r3(mean(&log[..n])), "last10_mean_reward": r3(mean(&log[log.len() - n..])),
                   "mu_moved": r3(log.last().unwrap().mu.iter().zip(&log[0].mu).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt())}),
        );
    }
    let ceiling = if std::env::args().any(|a| a == "--ceiling") {
        ceiling(&r, &parts)?
    } else {
        serde_json::Value::Null
    };
    let out = json!({
        "bench": "search_diagnostics", "ceiling": ceiling, "run": dir.display().to_string(), "vectors": ws.len(),
        "stage2": ft, "search": d,
        "stage2_test_top1_range": [r3(s2_test.iter().cloned().fold(f64::MAX, f64::min)), r3(s2_test.iter().cloned().fold(f64::MIN, f64::max))],
        "fidelity": fidelity, "stage2_val_test": fixed_rho, "noise": noise, "learning": learning,
    });
    println!("{out}");
    Ok(())
}

/// (d): the test-selected ceiling of class weights over class-balanced cRT.
fn ceiling(r: &common::Run, parts: &Parts) -> Result<serde_json::Value> {
    let head = (&r.w0, &r.b0);
    let stage2_test = |w: &[f64]| -> Result<(f64, f64)> {
        let (mut v, mut t) = (0.0, 0.0);
        for seed in 0..3 {
            let ft = stage2::Stage2Config {
                seed,
                ..r.stage2.clone()
            };
            let f = stage2::finetune(parts, head, w, &r.counts, &ft)?;
            v += f.val.top1 / 3.0;
            t += f.test.top1 / 3.0;
        }
        Ok((r3(v), r3(t)))
    };
    let mut power = Vec::new();
    let mut best = f64::MIN;
    for q in [1.0, 0.5, 0.0, -0.25, -0.5, -0.75, -1.0] {
        let (v, t) = stage2_test(&power_weights(&r.counts, q))?;
        best = best.max(t);
        power.push(json!({"q": q, "val_top1": v, "test_top1": t}));
    }
    let cb = stage2_test(&power_weights(&r.counts, 0.0))?.1;
    let cfg = SearchConfig {
        select: search::Select::BestDraw,
        holdout: 0.0,
        reward: Score::Top1,
        ..r.search.clone()
    };
    let t = std::time::Instant::now();
    let (found, _) = search::run(&r.train, &r.test, head, &r.stage2.recipe(), &cfg, |_| {})?;
    let oracle = stage2_test(&found.weights)?.1;
    best = best.max(oracle);
    Ok(json!({
        "power_weights": power, "class_balanced_test_top1": cb,
        "search_on_test_test_top1": oracle, "search_on_test_seconds": r3(t.elapsed().as_secs_f64()),
        "best_test_selected_top1": r3(best), "headroom_over_class_balanced": r3(best - cb),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_by_hand() {
        assert_eq!(ranks(&[3.0, 1.0, 2.0, 1.0]), vec![4.0, 1.5, 3.0, 1.5]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }
}
