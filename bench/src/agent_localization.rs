//! `bench-agent-localization`: how well a locator finds the object. On a run's test part
//! (Tiny-ImageNet-200's labelled val set, with boxes), each locator's salient patch is scored
//! against the annotated box: the fraction of patches whose centre lies in the box, and the mean
//! IoU of patch and box. Locators: the run's trained patch agent (Section 3.3.3's choice, when the
//! run has `agent/`); the class activation map of the `--cam` model (a `model.safetensors`
//! written by `autosampler run`) read two ways, the window of largest mean activation
//! (`cam_peak_*`) and the patch centred on the CAM paper's box (`cam_box_*`), each for the
//! predicted class (`*_predicted`, no labels, like the agent) and the true class (`*_label`, what
//! `cam-cutmix` uses in training); a uniformly random patch (16 draws per image); the centre
//! patch. Also the agent's top-1 after the glance alone and after all T steps, and its reward
//! landscape: the classifier's confidence after the glance and one patch at each of a
//! `--scan G` × G grid of placements (default 5; 0: none), and the local encoder's on the patch alone.
//! Each one's best placement for the label (`scan_*_label`) or the predicted class
//! (`scan_*_predicted`) is scored like a locator, beside every grid placement averaged
//! (`scan_grid_mean`), with the spread of p(label) within an image (the placement's signal) and
//! between images (what the critic must explain); and the mean and spread of the agent's patch
//! centres beside the boxes' (a policy stuck in one place has spread 0). One JSON line.
//!
//!   autosampler agent train --config configs/bench/agent_tiny.toml --out runs/bench/agent_tiny
//!   bench-agent-localization --run runs/bench/agent_tiny [--cam runs/x/model.safetensors]
//!       [--patch PX] [--scan G] [--threads 2]
//!
//! Without an agent the patch side is `--patch` (default: half the image side).
use anyhow::{Context, Result};
use autosampler::agent::train::{evaluate, locate_view, AgentLog};
use autosampler::agent::Agent;
use autosampler::data::augment::Normalize;
use autosampler::data::loader::{for_each_batch, LoaderConfig};
use autosampler::data::{Dataset, Part, Split};
use autosampler::mix::cam::{Cam, ClassChoice, Pick};
use autosampler::rundir::RunDir;
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

/// Share of patches (top-left corners, side `p`) whose centre is in the box, and mean IoU, over
/// the images with boxes.
fn scores(corners: &[(f32, f32)], p: f32, boxes: &[Option<[f32; 4]>]) -> (f64, f64, usize) {
    let (mut n, mut hit, mut iou) = (0usize, 0.0, 0.0);
    for (&(x, y), b) in corners.iter().zip(boxes) {
        let Some(b) = b else { continue };
        let (h, u) = score(x, y, p, *b);
        n += 1;
        hit += h as u8 as f64;
        iou += u;
    }
    let d = n.max(1) as f64;
    (
        (hit * 1000.0 / d).round() / 10.0,
        (iou * 1000.0 / d).round() / 1000.0,
        n,
    )
}

/// Mean and population standard deviation (0, 0 for none).
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt())
}

fn main() -> Result<()> {
    autosampler::runtime::tune_allocator();
    let run = PathBuf::from(arg("--run").context("--run DIR (a run whose test part has boxes)")?);
    let threads: usize = arg("--threads").map(|t| t.parse()).transpose()?.unwrap_or(2);
    tch::set_num_threads(threads as i32);
    let split = Split::load(&RunDir::new(&run).split())?;
    let cache_root = arg("--cache-dir")
        .map(PathBuf::from)
        .unwrap_or_else(autosampler::data::cache::default_cache_root);
    let ds = Dataset::open(split, &cache_root, &|_| {})?;
    let test = ds.view(Part::Test);
    let s = test.size as f32;
    let boxes: Vec<Option<[f32; 4]>> = (0..test.len()).map(|i| test.bbox(i)).collect();
    let has_agent = RunDir::new(&run).agent().spec().is_file();
    let agent = has_agent
        .then(|| Agent::open(&RunDir::new(&run).agent_dir(), tch::Device::Cpu))
        .transpose()?;
    let p: f32 = match (&agent, arg("--patch")) {
        (_, Some(v)) => v.parse()?,
        (Some(a), None) => a.spec.patch_size as f32 * s / a.spec.image_size as f32,
        (None, None) => (s / 2.0).floor(),
    };
    let mut out = serde_json::json!({
        "bench": "agent_localization",
        "run": run.display().to_string(),
        "train_images": ds.view(Part::Train).len(),
        "classes": ds.split.num_classes(),
        "image_px": test.size, "patch_px": p,
        "threads": threads,
    });
    let (mut hit, mut iou) = (serde_json::Map::new(), serde_json::Map::new());
    let mut put = |name: &str, (h, u, n): (f64, f64, usize)| {
        hit.insert(name.into(), h.into());
        iou.insert(name.into(), u.into());
        n
    };
    if let Some(agent) = &agent {
        let norm = Normalize::default();
        let t0 = std::time::Instant::now();
        let locs = locate_view(agent, &test, &norm, threads, &autosampler::distributed::Alone)?;
        out["locate_s"] = ((t0.elapsed().as_secs_f64() * 100.0).round() / 100.0).into();
        anyhow::ensure!(
            locs.first().is_none_or(|l| (l.side - p).abs() < 0.5),
            "--patch {p} differs from the agent's patch {}",
            locs[0].side
        );
        let corners: Vec<(f32, f32)> = locs.iter().map(|l| (l.col, l.row)).collect();
        put("agent", scores(&corners, p, &boxes));
        // does the policy move? the mean and the spread over images of its patches' centres
        // (px; a policy stuck in one place has spread 0), beside the boxes' centres
        let spread = |v: &[(f32, f32)]| {
            let (mr, sr) = mean_sd(&v.iter().map(|x| x.1 as f64).collect::<Vec<_>>());
            let (mc, sc) = mean_sd(&v.iter().map(|x| x.0 as f64).collect::<Vec<_>>());
            let r2 = |x: f64| (x * 100.0).round() / 100.0;
            serde_json::json!({
                "mean_row_col": [r2(mr), r2(mc)],
                "std_row_col": [r2(sr), r2(sc)],
            })
        };
        let half = p / 2.0;
        let centres: Vec<(f32, f32)> = corners.iter().map(|&(x, y)| (x + half, y + half)).collect();
        out["agent_patch_centres_px"] = spread(&centres);
        let box_centres: Vec<(f32, f32)> = boxes
            .iter()
            .flatten()
            .map(|b| ((b[0] + b[2] + 1.0) / 2.0, (b[1] + b[3] + 1.0) / 2.0))
            .collect();
        out["box_centres_px"] = spread(&box_centres);
        let (glance, all) = evaluate(agent, &test, &norm, threads, &autosampler::distributed::Alone)?;
        let logs: Vec<AgentLog> = std::fs::read_to_string(RunDir::new(&run).agent_metrics())?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        out["steps"] = agent.spec.steps.into();
        out["arch"] = serde_json::to_value(agent.spec.arch)?;
        out["agent_epochs_per_stage"] = [1, 2, 3]
            .map(|st| logs.iter().filter(|l| l.stage == st).count())
            .into();
        out["agent_train_s"] = (logs.iter().map(|l| l.seconds).sum::<f64>()).round().into();
        out["top1_glance"] = ((glance * 100.0).round() / 100.0).into();
        out["top1_all_steps"] = ((all * 100.0).round() / 100.0).into();
        // the reward landscape: every placement of a grid × grid scan after the glance, read by
        // the recurrent classifier (the reward's) and by the local encoder on the patch alone
        let grid: usize = arg("--scan").map(|g| g.parse()).transpose()?.unwrap_or(5);
        if grid > 0 {
            let origins = agent.scan_origins(grid);
            let kk = origins.len();
            let scale = s / agent.spec.image_size as f32;
            let at = |k: i64| {
                let (r, c) = origins[k as usize];
                (c as f32 * scale, r as f32 * scale)
            };
            // [reward, alone] × [label, predicted]: best placements; p(label) per image per placement
            let mut best: [[Vec<(f32, f32)>; 2]; 2] = Default::default();
            let mut py: [Vec<Vec<f64>>; 2] = Default::default();
            let plan: Vec<usize> = (0..test.len()).collect();
            for_each_batch(&test, &plan, &LoaderConfig::evaluation(&norm, threads), 0, |b| {
                let x = agent.fit(&b.images);
                let (reward, alone) = agent.scan(&x, grid); // [K, B, C] each
                for (j, probs) in [reward, alone].iter().enumerate() {
                    let pick = |cls: &tch::Tensor| {
                        probs
                            .gather(2, &cls.view([1, -1, 1]).expand([kk as i64, -1, 1], false), false)
                            .squeeze_dim(-1) // [K, B]
                    };
                    let k_label = pick(&b.labels);
                    let k_pred = pick(&probs.mean_dim(0, false, tch::Kind::Float).argmax(-1, false));
                    for (m, t) in [&k_label, &k_pred].into_iter().enumerate() {
                        let ks: Vec<i64> = t.argmax(0, false).try_into()?;
                        best[j][m].extend(ks.into_iter().map(at));
                    }
                    let t: Vec<f32> = k_label.transpose(0, 1).contiguous().reshape([-1]).try_into()?;
                    py[j].extend(t.chunks(kk).map(|c| c.iter().map(|&v| v as f64).collect()));
                }
                Ok(())
            })?;
            for (j, name) in ["scan_reward", "scan_alone"].iter().enumerate() {
                put(&format!("{name}_label"), scores(&best[j][0], p, &boxes));
                put(&format!("{name}_predicted"), scores(&best[j][1], p, &boxes));
            }
            // every grid placement equally likely: the baseline the scans' arg-max must beat
            let (mut gh, mut gu, mut gn) = (0.0, 0.0, 0);
            for k in 0..kk {
                let (h, u, m) = scores(&vec![at(k as i64); test.len()], p, &boxes);
                (gh, gu, gn) = (gh + h / kk as f64, gu + u / kk as f64, m);
            }
            put(
                "scan_grid_mean",
                ((gh * 10.0).round() / 10.0, (gu * 1000.0).round() / 1000.0, gn),
            );
            // how much of p(label)'s variance is the placement's (within an image) and how much the
            // image's (between images): PPO's signal against what the critic must explain
            let landscape = |py: &[Vec<f64>]| {
                let per_image: Vec<(f64, f64)> = py.iter().map(|v| mean_sd(v)).collect();
                let (grand, between) = mean_sd(&per_image.iter().map(|m| m.0).collect::<Vec<_>>());
                let n = py.len().max(1) as f64;
                let within = (per_image.iter().map(|m| m.1 * m.1).sum::<f64>() / n).sqrt();
                let gain = py
                    .iter()
                    .zip(&per_image)
                    .map(|(v, m)| v.iter().cloned().fold(f64::MIN, f64::max) - m.0)
                    .sum::<f64>()
                    / n;
                let r4 = |x: f64| (x * 1e4).round() / 1e4;
                serde_json::json!({
                    "mean_p_label": r4(grand),
                    "within_image_std": r4(within),
                    "between_image_std": r4(between),
                    "best_minus_mean": r4(gain),
                })
            };
            out["scan"] = serde_json::json!({
                "grid": grid,
                "reward": landscape(&py[0]),
                "alone": landscape(&py[1]),
            });
        }
    }
    if let Some(model) = arg("--cam") {
        let mut cam = Cam::open(
            &PathBuf::from(&model),
            p as i64,
            test.size as i64,
            Some(&ds.split.classes),
            tch::Device::Cpu,
        )?;
        anyhow::ensure!(
            cam.choice == ClassChoice::Label,
            "{model}: its classes are not the run's; cam_label needs the same classes"
        );
        let norm = cam.model.card.normalize;
        let plan: Vec<usize> = (0..test.len()).collect();
        let picks = [Pick::Peak, Pick::Box];
        let mut found: Vec<[Vec<(f32, f32)>; 2]> = vec![Default::default(), Default::default()];
        let t0 = std::time::Instant::now();
        for_each_batch(&test, &plan, &LoaderConfig::evaluation(&norm, threads), 0, |b| {
            for (k, &pick) in picks.iter().enumerate() {
                cam.pick = pick;
                let as_f = |v: Vec<(i64, i64)>| v.into_iter().map(|(r, c)| (c as f32, r as f32));
                found[k][0].extend(as_f(cam.corners(&b.images, None)));
                found[k][1].extend(as_f(cam.corners(&b.images, Some(&b.labels))));
            }
            Ok(())
        })?;
        out["cam_model"] = model.into();
        out["cam_arch"] = serde_json::to_value(cam.model.card.model.arch)?;
        out["cam_locate_s"] = ((t0.elapsed().as_secs_f64() * 100.0).round() / 100.0).into();
        for (k, name) in ["cam_peak", "cam_box"].iter().enumerate() {
            put(&format!("{name}_predicted"), scores(&found[k][0], p, &boxes));
            put(&format!("{name}_label"), scores(&found[k][1], p, &boxes));
        }
    }
    // the random patch (16 draws per image, averaged) and the centre patch
    let mut rng = autosampler::rng::chacha(0, &[77]);
    let draws = 16;
    let mut random: Vec<Vec<(f32, f32)>> = vec![Vec::new(); draws];
    for _ in 0..test.len() {
        for r in random.iter_mut() {
            let (x, y) = (rng.random_range(0.0..=s - p), rng.random_range(0.0..=s - p));
            r.push((x.floor(), y.floor()));
        }
    }
    let (mut rh, mut ru, mut n) = (0.0, 0.0, 0);
    for r in &random {
        let (h, u, m) = scores(r, p, &boxes);
        (rh, ru, n) = (rh + h / draws as f64, ru + u / draws as f64, m);
    }
    put(
        "random",
        ((rh * 10.0).round() / 10.0, (ru * 1000.0).round() / 1000.0, n),
    );
    let c = ((s - p) / 2.0).floor();
    let n = put("centre", scores(&vec![(c, c); test.len()], p, &boxes));
    out["scored_images"] = n.into();
    out["centre_in_box_pct"] = hit.into();
    out["mean_iou"] = iou.into();
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
