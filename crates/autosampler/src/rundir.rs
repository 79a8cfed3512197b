//! [`RunDir`]: every path of a run folder, named once. A leaf: the stages, stage 1's trainer, the
//! patch agent, the features and the report take a `RunDir` (or an [`AgentDir`]) and ask it for
//! their files; no other module spells a run folder's file names.
use crate::data::Part;
use std::path::{Path, PathBuf};

/// A run folder. Every artifact's path comes from here; no other code joins names onto a run
/// folder's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

/// A pipeline stage that commits through a manifest (`manifests/<name>.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Split,
    Agent,
    Locations,
    Stage1,
    Eval,
    Features,
    Search,
    Stage2,
    Export,
}

impl Stage {
    /// The stage's name in manifests and messages.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Split => "split",
            Stage::Agent => "agent",
            Stage::Locations => "locations",
            Stage::Stage1 => "stage1",
            Stage::Eval => "eval",
            Stage::Features => "features",
            Stage::Search => "search",
            Stage::Stage2 => "stage2",
            Stage::Export => "export",
        }
    }
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The resolved config the run was last accepted with.
    pub fn config_toml(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn split(&self) -> PathBuf {
        self.root.join("split.json")
    }
    pub fn class_histogram(&self) -> PathBuf {
        self.root.join("data").join("class_histogram.png")
    }
    /// `manifests/<stage>.json`: written last, by one rename, when the stage is complete.
    pub fn manifest(&self, stage: Stage) -> PathBuf {
        self.root.join("manifests").join(format!("{}.json", stage.name()))
    }
    pub fn stage1(&self) -> Stage1Paths {
        Stage1Paths {
            dir: self.root.join("stage1"),
        }
    }
    pub fn eval(&self) -> PathBuf {
        self.root.join("eval.json")
    }
    pub fn features_dir(&self) -> PathBuf {
        self.root.join("features")
    }
    /// `features/<part>.safetensors`.
    pub fn features(&self, part: Part) -> PathBuf {
        let name = match part {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        };
        self.features_dir().join(format!("{name}.safetensors"))
    }
    pub fn search_dir(&self) -> PathBuf {
        self.root.join("search")
    }
    pub fn best_weights(&self) -> PathBuf {
        self.search_dir().join("best_weights.json")
    }
    pub fn best_weights_csv(&self) -> PathBuf {
        self.search_dir().join("best_weights.csv")
    }
    pub fn trajectories(&self) -> PathBuf {
        self.search_dir().join("trajectories.jsonl")
    }
    pub fn search_reward_curve(&self) -> PathBuf {
        self.search_dir().join("reward_curve.png")
    }
    pub fn search_weights_png(&self) -> PathBuf {
        self.search_dir().join("weights.png")
    }
    pub fn stage2_dir(&self) -> PathBuf {
        self.root.join("stage2")
    }
    pub fn stage2_eval(&self) -> PathBuf {
        self.stage2_dir().join("eval.json")
    }
    pub fn stage2_head(&self) -> PathBuf {
        self.stage2_dir().join("head.safetensors")
    }
    pub fn agent_dir(&self) -> PathBuf {
        self.root.join("agent")
    }
    /// The patch agent's folder (`agent/`).
    pub fn agent(&self) -> AgentDir {
        AgentDir::new(self.agent_dir())
    }
    pub fn agent_metrics(&self) -> PathBuf {
        self.agent().metrics()
    }
    /// The agent's epoch checkpoint (its commit point, from which `agent.safetensors` is written).
    pub fn agent_last(&self) -> PathBuf {
        self.agent().last()
    }
    pub fn agent_state(&self) -> PathBuf {
        self.agent().state()
    }
    pub fn agent_reward_curve(&self) -> PathBuf {
        self.agent().figure("reward_curve")
    }
    pub fn locations(&self) -> PathBuf {
        self.agent().locations()
    }
    /// The exported model: backbone, chosen classifier and its card (`export`).
    pub fn model(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }
    pub fn report_dir(&self) -> PathBuf {
        self.root.join("report")
    }
    /// Where the Python package writes a run's TensorBoard scalars by default.
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join("tensorboard")
    }
    pub fn report_index(&self) -> PathBuf {
        self.report_dir().join("index.html")
    }
    /// A plot of the report (`report/<name>.png`).
    pub fn report_png(&self, name: &str) -> PathBuf {
        self.report_dir().join(format!("{name}.png"))
    }
    /// A path relative to the run folder, for manifests (`stage1/model.safetensors`).
    pub fn relative<'a>(&self, p: &'a Path) -> &'a Path {
        p.strip_prefix(&self.root).unwrap_or(p)
    }
    /// The name of the run: the folder's last component.
    pub fn name(&self) -> String {
        self.root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Stage 1's files (`<run>/stage1/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage1Paths {
    pub dir: PathBuf,
}

impl Stage1Paths {
    /// The epoch checkpoint: weights, optimiser and loop state (the commit point).
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// The `[model]` and `[train]` it was started with (a resume must match).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
}

/// A patch agent's folder: a run's `agent/`, or another run's that `agent.from` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDir {
    pub dir: PathBuf,
}

impl AgentDir {
    pub fn new(dir: impl Into<PathBuf>) -> AgentDir {
        AgentDir { dir: dir.into() }
    }
    /// The trained agent's spec.
    pub fn spec(&self) -> PathBuf {
        self.dir.join("agent.json")
    }
    /// The trained agent's weights.
    pub fn weights(&self) -> PathBuf {
        self.dir.join("agent.safetensors")
    }
    /// The epoch checkpoint (the commit point while it trains).
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The `[agent]` it was started with (a resume must match).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }
    /// Every training image's salient patch.
    pub fn locations(&self) -> PathBuf {
        self.dir.join("locations.bin")
    }
    /// One of the agent's figures (`patches`, `cutmix_compare`, `triples`, `centres`).
    pub fn figure(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.png"))
    }
}
