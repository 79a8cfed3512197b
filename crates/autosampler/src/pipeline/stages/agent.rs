//! The patch agent (`agent/`): trained with every rank (resumed, or reused when complete) or
//! opened `from` another run; then the training images' salient patches (`locations.bin`), the
//! reward curve and the figures.
use crate::agent::guide as agent_guide;
use crate::agent::train::{self as agent_train, AgentLog, AgentState};
use crate::agent::Agent as PatchAgent;
use crate::config::Config;
use crate::data::Part;
use crate::pipeline::driver::{Cx, Fx, Step};
use crate::pipeline::manifest::{self, Inputs, Work};
use crate::pipeline::{text, RunDir, Stage};
use crate::precision::Precision;
use crate::report::plot;
use crate::train::stage1;
use crate::{fsx, invalid, Error, Result};
use std::path::PathBuf;
use std::time::Instant;

/// The agent's training (`agent/agent.safetensors`), when the config trains one (no `from`).
pub(crate) struct Agent;

/// Every training image's salient patch (`agent/locations.bin`) and the figures.
pub(crate) struct Locations;

/// The `[agent]` section, or an error saying the stage needs it.
fn section(cfg: &Config) -> Result<&crate::agent::AgentConfig> {
    cfg.agent
        .as_ref()
        .ok_or_else(|| invalid!("the config has no [agent] section"))
}

impl Step for Agent {
    fn stage(&self) -> Stage {
        Stage::Agent
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.agent.as_ref().is_some_and(|a| a.from.is_none())
    }
    fn needs(&self, _: &Config) -> Vec<Stage> {
        Vec::new()
    }
    fn shared(&self) -> bool {
        true
    }
    fn announce(&self, cx: &Cx) -> Result<()> {
        if let Some(init) = &section(cx.cfg)?.init {
            cx.obs
                .note(&format!("agent     encoders start from {}", init.display()));
        }
        Ok(())
    }
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        let ac = section(cx.cfg)?;
        let mut inputs = Inputs::new()
            .value(
                "agent",
                &agent_train::started_config(&agent_train::resolved(ac, &cx.run.agent_dir())?),
            )
            .upstream(&cx.upstream(Stage::Split)?);
        if let Some(init) = &ac.init {
            inputs = inputs.value("init_model", &manifest::file_digest(init)?.sha256);
        }
        Ok(inputs)
    }
    fn reused(&self, cx: &Cx) -> Option<String> {
        Some(format!(
            "agent     {} (complete, reused)",
            cx.run.agent_dir().display()
        ))
    }
    fn work(&self, cx: &Cx) -> Result<Work> {
        let ac = section(cx.cfg)?;
        Ok(Work::start(&ac.device, ac.threads))
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let (ac, run) = (section(cx.cfg)?, cx.run);
        let out = run.agent_dir();
        std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        // an agent that finished training before its manifest was written is read, not trained
        let finished = run.agent_state().is_file() && fsx::read_json::<AgentState>(&run.agent_state())?.done;
        let print = |l: &AgentLog| cx.obs.note(&text::agent_epoch(l));
        cx.go_ahead(!finished)?;
        let resume = cx.resume(Stage::Agent) || finished;
        agent_train::train_with(cx.ds, ac, &out, resume, cx.obs, &print, cx.comm)?;
        reward_curve(run)?;
        Ok(vec![run.agent().spec(), run.agent().weights()])
    }
    fn follow(&self, fx: &Fx) -> Result<()> {
        let quiet = |_: &AgentLog| {};
        let ac = section(fx.cfg)?;
        agent_train::train_with(
            fx.ds,
            ac,
            &fx.run.agent_dir(),
            true,
            &stage1::Silent,
            &quiet,
            fx.comm,
        )?;
        Ok(())
    }
}

/// The fingerprint of the agent the config uses: `agent.from`'s files, or this run's agent stage.
pub(crate) fn agent_fingerprint(cx: &Cx) -> Result<String> {
    let Some(ac) = &cx.cfg.agent else {
        return Err(invalid!(
            "[train.mix] kind = \"agent-cutmix\" needs the patch agent: add an [agent] section (or agent.from)"
        ));
    };
    match &ac.from {
        Some(from) => PatchAgent::fingerprint(from),
        None => Ok(cx.upstream(Stage::Agent)?.digest()),
    }
}

/// The agent the run locates with: `agent.from`'s, or the one this run trained.
fn open_agent(cfg: &Config, run: &RunDir) -> Result<PatchAgent> {
    let ac = section(cfg)?;
    let device = stage1::parse_device(&ac.device)?;
    match &ac.from {
        Some(from) => PatchAgent::open(from, device).map_err(|e| {
            invalid!(
                "agent.from = {}: not a trained agent folder ({e})",
                from.display()
            )
        }),
        None => {
            // in the precision it was trained in, as training left it
            let mut agent = PatchAgent::open(&run.agent_dir(), device)?;
            agent.bf16 = agent_train::resolved(ac, &run.agent_dir())?.precision == Some(Precision::Bf16);
            Ok(agent)
        }
    }
}

impl Step for Locations {
    fn stage(&self) -> Stage {
        Stage::Locations
    }
    fn wanted(&self, cfg: &Config) -> bool {
        cfg.agent.is_some()
    }
    fn needs(&self, _: &Config) -> Vec<Stage> {
        vec![Stage::Agent]
    }
    fn shared(&self) -> bool {
        true
    }
    /// An agent read `from` another run is opened here (a folder that holds none is refused
    /// before anything else) and said.
    fn announce(&self, cx: &Cx) -> Result<()> {
        let ac = section(cx.cfg)?;
        if let Some(from) = &ac.from {
            let agent = open_agent(cx.cfg, cx.run)?;
            cx.obs.note(&format!(
                "agent     {} ({} classes, {} px, patch {} px)",
                from.display(),
                agent.spec.num_classes,
                agent.spec.image_size,
                agent.spec.patch_size
            ));
        }
        Ok(())
    }
    fn inputs(&self, cx: &Cx) -> Result<Inputs> {
        Ok(Inputs::new()
            .value("agent", &agent_fingerprint(cx)?)
            .upstream(&cx.upstream(Stage::Split)?))
    }
    fn reused(&self, cx: &Cx) -> Option<String> {
        Some(format!(
            "locations {} (complete, reused)",
            cx.run.locations().display()
        ))
    }
    fn work(&self, cx: &Cx) -> Result<Work> {
        let ac = section(cx.cfg)?;
        Ok(Work::start(&ac.device, ac.threads))
    }
    fn run(&self, cx: &Cx, _: &Inputs) -> Result<Vec<PathBuf>> {
        let started = Instant::now();
        let (ac, run) = (section(cx.cfg)?, cx.run);
        let out = run.agent_dir();
        std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        let agent = open_agent(cx.cfg, run)?;
        let train = cx.ds.view(Part::Train);
        tch::set_num_threads(ac.threads.max(1) as i32);
        cx.go_ahead(true)?;
        let locs = agent_train::locate_view(&agent, &train, &Default::default(), ac.threads, cx.comm)?;
        agent_guide::write_locations(&run.locations(), train.size as f32, &locs)?;
        cx.obs.note(&format!(
            "agent: located {} training images' salient patches in {:.1}s → {}",
            locs.len(),
            started.elapsed().as_secs_f64(),
            run.locations().display()
        ));
        let figs = crate::agent::figures::write_all(&out, &train, &locs, 8, ac.seed)?;
        for f in &figs {
            cx.obs.note(&format!("figure:   {}", f.display()));
        }
        let mut files = vec![run.locations()];
        files.extend(figs);
        Ok(files)
    }
    fn follow(&self, fx: &Fx) -> Result<()> {
        let ac = section(fx.cfg)?;
        let agent = open_agent(fx.cfg, fx.run)?;
        tch::set_num_threads(ac.threads.max(1) as i32);
        let train = fx.ds.view(Part::Train);
        agent_train::locate_view(&agent, &train, &Default::default(), ac.threads, fx.comm)?;
        Ok(())
    }
}

/// The reward curve of the agent's PPO stage, batch by batch (moving mean over 20 batches).
fn reward_curve(run: &RunDir) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(run.agent_metrics()) else {
        return Ok(());
    };
    let trace: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<AgentLog>(l).ok())
        .flat_map(|l| l.reward_trace)
        .collect();
    if trace.is_empty() {
        return Ok(());
    }
    let k = 20.min(trace.len());
    let smooth: Vec<f64> = (0..trace.len())
        .map(|i| {
            let lo = (i + 1).saturating_sub(k);
            100.0 * trace[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64
        })
        .collect();
    plot::lines(
        &run.agent_reward_curve(),
        "patch agent, PPO (stage 2): summed reward per image",
        "batch",
        "reward, points of p(y) (moving mean of 20 batches)",
        &[("p_T(y) - p_1(y), x100", smooth)],
    )
}
