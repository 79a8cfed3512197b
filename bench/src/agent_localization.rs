//! `bench-agent-localization`: how well the trained patch agent of a run finds the object. On the
//! run's test part (Tiny-ImageNet-200's labelled val set, with boxes), the agent's salient patch
//! (Section 3.3.3's choice) is scored against the annotated box: the fraction of patches whose
//! centre lies in the box, and the mean IoU of patch and box; the same for a uniformly random
//! patch (16 draws per image) and for the centre patch. Also the agent's top-1 after the glance
//! alone and after all T steps. One JSON line.
//!
//!   autosampler agent train --config configs/bench/agent_tiny.toml --out runs/bench/agent_tiny
//!   bench-agent-localization --run runs/bench/agent_tiny [--threads 2]
use anyhow::{Context, Result};
use autosampler::agent::train::{evaluate, locate_view, AgentLog};
use autosampler::agent::Agent;
use autosampler::data::augment::Normalize;
use autosampler::data::{Dataset, Part, Split};
use rand::Rng;
use std::path::PathBuf;

mod common;
use common::arg;

/// (centre in box, IoU) of a square patch at (x, y) of side `p` against an inclusive box.
fn score(x: f32, y: f32, p: f32, b: [f32; 4]) -> (bool, f64) {
    let (bx0, by0, bx1, by1) = (b[0], b[1], b[2] + 1.0, b[3] + 1.0);
    let (cx, cy) = (x + p / 2.0, y + p / 2.0);
    let inside = cx >= bx0 && cx < bx1 && cy >= by0 && cy < by1;
    let iw = ((x + p).min(bx1) - x.max(bx0)).max(0.0);
    let ih = ((y + p).min(by1) - y.max(by0)).max(0.0);
    let inter = (iw * ih) as f64;
    let union = (p * p) as f64 + ((bx1 - bx0) * (by1 - by0)) as f64 - inter;
    (inside, inter / union)
}

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    let run = PathBuf::from(arg("--run").context("--run DIR (a run with a trained agent/)")?);
    let threads: usize = arg("--threads").map(|t| t.parse()).transpose()?.unwrap_or(2);
    tch::set_num_threads(threads as i32);
    let split = Split::load(&run.join("split.json"))?;
    let cache_root = arg("--cache-dir")
        .map(PathBuf::from)
        .unwrap_or_else(autosampler::data::cache::default_cache_root);
    let ds = Dataset::open(split, &cache_root, &|_| {})?;
    let agent = Agent::open(&run.join("agent"), tch::Device::Cpu)?;
    let test = ds.view(Part::Test);
    let norm = Normalize::default();
    let t0 = std::time::Instant::now();
    let locs = locate_view(&agent, &test, &norm, threads)?;
    let locate_s = t0.elapsed().as_secs_f64();
    let s = test.size as f32;
    let p = locs.first().map(|l| l.side).unwrap_or(s / 2.0);
    let mut rng = autosampler::rng::chacha(0, &[77]);
    let (mut n, mut hit, mut iou) = (0usize, [0f64; 3], [0f64; 3]);
    for (i, l) in locs.iter().enumerate() {
        let Some(b) = test.bbox(i) else { continue };
        n += 1;
        let (h, u) = score(l.col, l.row, p, b);
        hit[0] += h as u8 as f64;
        iou[0] += u;
        let draws = 16;
        let (mut rh, mut ru) = (0.0, 0.0);
        for _ in 0..draws {
            let (x, y) = (rng.random_range(0.0..=s - p), rng.random_range(0.0..=s - p));
            let (h, u) = score(x.floor(), y.floor(), p, b);
            rh += h as u8 as f64;
            ru += u;
        }
        hit[1] += rh / draws as f64;
        iou[1] += ru / draws as f64;
        let c = ((s - p) / 2.0).floor();
        let (h, u) = score(c, c, p, b);
        hit[2] += h as u8 as f64;
        iou[2] += u;
    }
    let (glance, all) = evaluate(&agent, &test, &norm, threads)?;
    let logs: Vec<AgentLog> = std::fs::read_to_string(run.join("agent/metrics.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let per_stage = [1, 2, 3].map(|st| logs.iter().filter(|l| l.stage == st).count());
    let pct = |x: f64| (x * 1000.0 / n.max(1) as f64).round() / 10.0;
    let r3 = |x: f64| (x * 1000.0 / n.max(1) as f64).round() / 1000.0;
    let out = serde_json::json!({
        "bench": "agent_localization",
        "run": run.display().to_string(),
        "train_images": ds.view(Part::Train).len(),
        "classes": ds.split.num_classes(),
        "image_px": test.size, "patch_px": p, "steps": agent.spec.steps, "arch": agent.spec.arch,
        "agent_epochs_per_stage": per_stage,
        "agent_train_s": (logs.iter().map(|l| l.seconds).sum::<f64>()).round(),
        "scored_images": n,
        "centre_in_box_pct": {"agent": pct(hit[0]), "random": pct(hit[1]), "centre": pct(hit[2])},
        "mean_iou": {"agent": r3(iou[0]), "random": r3(iou[1]), "centre": r3(iou[2])},
        "top1_glance": (glance * 100.0).round() / 100.0,
        "top1_all_steps": (all * 100.0).round() / 100.0,
        "locate_s": (locate_s * 100.0).round() / 100.0,
        "threads": threads,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::score;

    #[test]
    fn patch_scores() {
        // a 32 px patch at (0, 0) against the inclusive box (0, 0)-(31, 31): the same square
        let (h, u) = score(0.0, 0.0, 32.0, [0.0, 0.0, 31.0, 31.0]);
        assert!(h && (u - 1.0).abs() < 1e-12);
        // half overlap: patch (16, 0), box (0, 0)-(31, 31) → inter 16·32, union 2·1024 − 512
        let (h, u) = score(16.0, 0.0, 32.0, [0.0, 0.0, 31.0, 31.0]);
        assert!(!h && (u - 512.0 / 1536.0).abs() < 1e-12);
    }
}
