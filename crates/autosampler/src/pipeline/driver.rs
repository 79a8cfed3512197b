//! The stage driver: every stage after the data stage is a [`Step`] (the list, in order, is
//! `stages::STEPS`), and one driver
//! does for each what every stage must do in the same order — reuse a complete stage, refuse what
//! cannot be reused, invalidate (where a damaged output is rebuilt or refused, see
//! [`manifest::invalidate`]), tell the other ranks whether to work, work, commit.
//!
//! [`super::run_parallel`] on rank 0, [`follow`] on the other ranks, [`super::finished`] and the
//! partial commands ([`run_to`]) all iterate the same list, so the order of the stages and of the
//! go-ahead broadcasts is written once.
use super::manifest::{self, Inputs, Manifest, Work};
use super::{Observer, RunDir, Stage};
use crate::config::Config;
use crate::data::{Dataset, Split};
use crate::distributed::{self, Collective};
use crate::Result;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;

/// The manifests this process found complete or committed, so that a stage's upstream is not
/// hashed again for every stage that reads it.
pub(crate) type Done = RefCell<Vec<Manifest>>;

/// What a stage reads while it runs on rank 0: its pass (config, run folder, dataset, front end,
/// ranks; through `Deref`) and whether its go-ahead went out.
pub(crate) struct Cx<'a> {
    pass: &'a Pass<'a>,
    /// Whether this stage's go-ahead went to the other ranks.
    told: Cell<bool>,
    shared: bool,
}

impl<'a> std::ops::Deref for Cx<'a> {
    type Target = Pass<'a>;
    fn deref(&self) -> &Pass<'a> {
        self.pass
    }
}

impl Cx<'_> {
    /// A complete upstream stage's manifest (see [`super::upstream`]), from this process's
    /// drive when it has one.
    pub fn upstream(&self, stage: Stage) -> Result<Manifest> {
        let name = stage.name();
        if let Some(m) = self.done.borrow().iter().find(|m| m.stage == name) {
            return Ok(m.clone());
        }
        super::upstream(self.run, stage)
    }

    /// Whether `stage` continues a started training from its checkpoint.
    pub fn resume(&self, stage: Stage) -> bool {
        self.fresh != Some(stage)
    }

    /// Tells the other ranks (in [`follow`]) whether they take part in this stage's work: a
    /// shared stage calls it once, when its own checks are done and the shared work starts.
    /// Nothing for a stage rank 0 does alone.
    pub fn go_ahead(&self, work: bool) -> Result<()> {
        if self.shared && !self.told.replace(true) {
            distributed::broadcast_usize(self.comm, work as usize)?;
        }
        Ok(())
    }
}

/// What a stage reads on a rank other than 0: the split and the models rank 0 wrote.
pub(crate) struct Fx<'a> {
    pub cfg: &'a Config,
    pub run: &'a RunDir,
    pub ds: &'a Dataset,
    pub comm: &'a dyn Collective,
}

/// A stage of a run folder after the data stage.
pub(crate) trait Step: Sync {
    /// Its manifest's name.
    fn stage(&self) -> Stage;
    /// Whether the config has this stage.
    fn wanted(&self, cfg: &Config) -> bool;
    /// The stages it reads (what a partial command runs before it).
    fn needs(&self, cfg: &Config) -> Vec<Stage>;
    /// Whether every rank of a data-parallel group takes part in its work.
    fn shared(&self) -> bool {
        false
    }
    /// Said before anything else (e.g. where an agent is read from).
    fn announce(&self, _cx: &Cx) -> Result<()> {
        Ok(())
    }
    /// What its manifest records: the config it reads and its upstream stages' digests.
    fn inputs(&self, cx: &Cx) -> Result<Inputs>;
    /// The line said when it is reused (`None`: nothing said).
    fn reused(&self, _cx: &Cx) -> Option<String> {
        None
    }
    /// A stage that finished with other inputs and must not be replaced refuses here, before
    /// anything is invalidated.
    fn refuse(&self, _cx: &Cx, _inputs: &Inputs) -> Result<()> {
        Ok(())
    }
    /// The device and threads of its work, for the manifest's provenance.
    fn work(&self, cx: &Cx) -> Result<Work>;
    /// Its work on rank 0, for `inputs`; returns the files to commit. A shared stage calls
    /// [`Cx::go_ahead`] once before its shared work.
    fn run(&self, cx: &Cx, inputs: &Inputs) -> Result<Vec<PathBuf>>;
    /// A follower's part of the work, when rank 0's go-ahead said to.
    fn follow(&self, _fx: &Fx) -> Result<()> {
        Ok(())
    }
    /// What the front end shows once the stage is complete (its results as text).
    fn show(&self, _cx: &Cx) -> Result<()> {
        Ok(())
    }
}

fn step<'a>(steps: &[&'a dyn Step], stage: Stage) -> &'a dyn Step {
    *steps
        .iter()
        .find(|s| s.stage() == stage)
        .expect("every stage after the data stage is a step")
}

/// Where a pass over the stages runs: what each stage's [`Cx`] reads.
pub(crate) struct Pass<'a> {
    pub cfg: &'a Config,
    pub run: &'a RunDir,
    pub ds: &'a Dataset,
    pub obs: &'a dyn Observer,
    pub comm: &'a dyn Collective,
    /// The stage that must not continue a started training (a partial command without
    /// `--resume`); every other stage resumes.
    pub fresh: Option<Stage>,
    pub done: Done,
}

impl<'a> Pass<'a> {
    /// One stage on rank 0: reused when complete, else refused or invalidated, worked and
    /// committed.
    pub fn drive(&self, st: &dyn Step) -> Result<Manifest> {
        let cx = self.cx(st);
        let m = drive(st, &cx)?;
        self.done.borrow_mut().push(m.clone());
        Ok(m)
    }

    /// The stage's results shown ([`Step::show`]).
    pub fn show(&self, st: &dyn Step) -> Result<()> {
        st.show(&self.cx(st))
    }

    fn cx(&'a self, st: &dyn Step) -> Cx<'a> {
        Cx {
            pass: self,
            told: Cell::new(false),
            shared: st.shared(),
        }
    }
}

fn drive(st: &dyn Step, cx: &Cx) -> Result<Manifest> {
    let (run, obs) = (cx.run, cx.obs);
    let cx = &cx;
    st.announce(cx)?;
    let inputs = st.inputs(cx)?;
    let m = match manifest::complete(run, st.stage(), &inputs) {
        Some(m) => {
            cx.go_ahead(false)?;
            if let Some(line) = st.reused(cx) {
                obs.note(&line);
            }
            m
        }
        None => {
            st.refuse(cx, &inputs)?;
            manifest::invalidate(run, st.stage())?;
            let work = st.work(cx)?;
            let files = st.run(cx, &inputs)?;
            // a shared stage that found nothing to share still tells the others
            cx.go_ahead(false)?;
            manifest::commit(run, st.stage(), inputs, &files, work)?
        }
    };
    Ok(m)
}

/// The stages `target` needs (each the config has) and `target` itself (asked for by name: the
/// features of a config that neither searches nor re-trains are still extracted), in the order of
/// `steps`, on one process; `fresh` names a stage that must not continue a started training.
pub(crate) fn run_to(
    steps: &[&dyn Step],
    cfg: &Config,
    run: &RunDir,
    ds: &Dataset,
    target: Stage,
    fresh: Option<Stage>,
    obs: &dyn Observer,
) -> Result<()> {
    let mut want = vec![target];
    let mut i = 0;
    while i < want.len() {
        for s in step(steps, want[i]).needs(cfg) {
            if !want.contains(&s) {
                want.push(s);
            }
        }
        i += 1;
    }
    let pass = Pass {
        cfg,
        run,
        ds,
        obs,
        comm: &distributed::Alone,
        fresh,
        done: Done::default(),
    };
    for st in steps {
        if st.stage() == target || (want.contains(&st.stage()) && st.wanted(cfg)) {
            pass.drive(*st)?;
        }
    }
    Ok(())
}

/// A rank other than 0 follows rank 0 through the stages they share (the patch agent's training
/// and its locations, stage 1, the evaluation and the features): before each, rank 0 says whether
/// it is to be done (1) or was reused (0). Writes nothing: it opens the split and the models rank
/// 0 wrote, once rank 0's data stage is done (its first go-ahead).
pub(crate) fn follow(steps: &[&dyn Step], cfg: &Config, run: &RunDir, comm: &dyn Collective) -> Result<()> {
    let mut ds: Option<Dataset> = None;
    for st in steps.iter().filter(|s| s.shared() && s.wanted(cfg)) {
        let go = distributed::broadcast_usize(comm, 0)? == 1;
        if ds.is_none() {
            let split = Split::load(&run.split())?;
            ds = Some(Dataset::open(split, &cfg.cache_root(), &|_| {})?);
        }
        if go {
            let fx = Fx {
                cfg,
                run,
                ds: ds.as_ref().expect("opened above"),
                comm,
            };
            st.follow(&fx)?;
        }
    }
    Ok(())
}

/// Whether the stages whose results a table reads (eval, the search, stage 2), each the config
/// has, are complete with intact outputs (what `sweep` skips; the config itself is compared by
/// [`super::finished`]).
pub(crate) fn results_complete(steps: &[&dyn Step], cfg: &Config, run: &RunDir) -> bool {
    steps
        .iter()
        .filter(|s| s.wanted(cfg) && matches!(s.stage(), Stage::Eval | Stage::Search | Stage::Stage2))
        .all(|s| manifest::read(run, s.stage()).is_some_and(|m| manifest::outputs_intact(run, &m)))
}
