//! `autosampler._native`: the Rust library seen from Python. The pure-Python package around it
//! (`python/autosampler`) converts torch tensors to and from numpy (a view where torch allows, one
//! copy into libtorch here) and returns typed results.
//!
//! Tensors cross as numpy arrays rather than through pyo3-tch: that crate turns on tch's
//! `python-extension` feature, which cargo would unify into every binary of the workspace (the
//! command line and the tests would then need libtorch_python and a Python interpreter).
use autosampler::agent::{Agent as RsAgent, Located};
use autosampler::config::Config;
use autosampler::data::split::{self, PoolLabels};
use autosampler::data::{Profile, SplitConfig};
use autosampler::features::Features;
use autosampler::linear::Recipe;
use autosampler::pipeline::{self, RunDir};
use autosampler::sampler::Sampler;
use autosampler::search::{self, SearchConfig};
use autosampler::train::stage1::Silent;
use autosampler::train::stage2::Stage2Config;
use numpy::{
    IntoPyArray, PyArray2, PyArray4, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray4,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::path::PathBuf;
use tch::{Device, Tensor};

fn err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The long-tailed subset and the balanced hold-out of a training set, drawn as the CLI and
/// LDAM-DRW's numpy code do (per class, in order, one `RandomState(seed)`): `val_per_class` images
/// of each class to validation first, then `n_c = n_max · (1/ir)^(c/(C−1))` to training. Returns
/// (train indices, val indices, training count per class).
#[pyfunction]
#[pyo3(signature = (labels, num_classes, imbalance_ratio, seed = 0, val_per_class = 0))]
fn longtail_split(
    labels: Vec<u32>,
    num_classes: usize,
    imbalance_ratio: f64,
    seed: u32,
    val_per_class: usize,
) -> PyResult<(Vec<u32>, Vec<u32>, Vec<usize>)> {
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
        return Err(err(format!(
            "labels: {bad} is not below num_classes = {num_classes}"
        )));
    }
    let pools = PoolLabels {
        num_classes,
        train: &labels,
        val: None,
        test: &[],
    };
    let cfg = SplitConfig {
        longtail: Profile::Exp {
            imbalance_ratio,
            n_max: None,
        },
        val_per_class,
        seed,
    };
    let d = split::draw(&pools, &cfg).map_err(err)?;
    Ok((d.train, d.val, d.counts.train))
}

/// A fixed sampler's class weights (summing to 1) for class counts: `instance`, `square-root`,
/// `class-balanced`, `progressive` (at `epoch` of `epochs`), `reversed`.
#[pyfunction]
#[pyo3(signature = (counts, kind, epoch = 0, epochs = 1))]
fn class_weights(counts: Vec<usize>, kind: &str, epoch: usize, epochs: usize) -> PyResult<Vec<f64>> {
    let s: Sampler = serde_json::from_value(serde_json::json!({ "kind": kind }))
        .map_err(|e| err(format!("sampler kind {kind:?}: {e}")))?;
    s.weights(&counts, epoch, epochs).map_err(err)
}

fn features(x: &PyReadonlyArray2<f32>, y: &PyReadonlyArray1<i64>, what: &str) -> PyResult<Features> {
    let shape = x.shape();
    let (n, d) = (shape[0] as i64, shape[1] as i64);
    if y.len() != shape[0] {
        return Err(err(format!(
            "{what}: {} feature rows but {} labels",
            shape[0],
            y.len()
        )));
    }
    Ok(Features {
        x: Tensor::from_slice(x.as_slice()?).reshape([n, d]),
        y: Tensor::from_slice(y.as_slice()?),
    })
}

/// The class-weight search on features the caller computed: `train_x [N, D]`, `train_y [N]`,
/// `val_x`, `val_y`, and the stage-1 classifier `fc_weight [C, D]`, `fc_bias [C]`. `config` and
/// `stage2` are the `[search]` and `[stage2]` sections as JSON (missing keys take their
/// defaults). Returns (the chosen weights and how they were chosen, the trajectory log), as JSON.
#[pyfunction]
#[pyo3(signature = (train_x, train_y, val_x, val_y, fc_weight, fc_bias, config = "{}", stage2 = "{}"))]
#[allow(clippy::too_many_arguments)]
fn search_weights(
    py: Python<'_>,
    train_x: PyReadonlyArray2<f32>,
    train_y: PyReadonlyArray1<i64>,
    val_x: PyReadonlyArray2<f32>,
    val_y: PyReadonlyArray1<i64>,
    fc_weight: PyReadonlyArray2<f32>,
    fc_bias: PyReadonlyArray1<f32>,
    config: &str,
    stage2: &str,
) -> PyResult<(String, String)> {
    let sc: SearchConfig = serde_json::from_str(config).map_err(|e| err(format!("search config: {e}")))?;
    sc.check().map_err(err)?;
    let s2: Stage2Config = serde_json::from_str(stage2).map_err(|e| err(format!("stage2 config: {e}")))?;
    s2.check().map_err(err)?;
    let recipe: Recipe = s2.recipe();
    let train = features(&train_x, &train_y, "train")?;
    let val = features(&val_x, &val_y, "val")?;
    let ws = fc_weight.shape();
    let w = Tensor::from_slice(fc_weight.as_slice()?).reshape([ws[0] as i64, ws[1] as i64]);
    let b = Tensor::from_slice(fc_bias.as_slice()?);
    // The CLI searches on one intra-op thread (the proxy's tensors are small); the same thread
    // count gives the same sums, hence the same weights.
    let threads = tch::get_num_threads();
    let result = py.allow_threads(move || {
        tch::set_num_threads(1);
        let r = search::run(&train, &val, (&w, &b), &recipe, &sc, |_| {});
        tch::set_num_threads(threads);
        r
    });
    let (best, log) = result.map_err(err)?;
    Ok((
        serde_json::to_string(&best).expect("serialisable"),
        serde_json::to_string(&log).expect("serialisable"),
    ))
}

/// A trained patch agent (`<run>/agent`), on the CPU.
#[pyclass(unsendable)]
struct Agent {
    inner: RsAgent,
}

#[pymethods]
impl Agent {
    #[new]
    fn new(folder: PathBuf) -> PyResult<Agent> {
        Ok(Agent {
            inner: RsAgent::open(&folder, Device::Cpu).map_err(err)?,
        })
    }
    /// Side of the images the agent sees (others are resized to it).
    #[getter]
    fn image_size(&self) -> i64 {
        self.inner.spec.image_size
    }
    /// Side of its patches, in pixels of `image_size`.
    #[getter]
    fn patch_size(&self) -> i64 {
        self.inner.spec.patch_size
    }
    /// The classes it was trained on.
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.spec.classes.clone()
    }
    /// Each image's salient patch as `[x0, y0, x1, y1]` in pixels of `images` (`[B, 3, S, S]`,
    /// normalised as the agent was trained: CIFAR-10's statistics, `Normalize::default()`).
    fn locate<'py>(
        &self,
        py: Python<'py>,
        images: PyReadonlyArray4<f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let s = images.shape();
        let x = Tensor::from_slice(images.as_slice()?).reshape([
            s[0] as i64,
            s[1] as i64,
            s[2] as i64,
            s[3] as i64,
        ]);
        let rects: Vec<f32> = self.inner.locate(&x).iter().flat_map(Located::rect).collect();
        Ok(numpy::ndarray::Array2::from_shape_vec((s[0], 4), rects)
            .expect("4 per image")
            .into_pyarray(py))
    }
}

/// A mixed batch for Python: the images, each image's partner, the weight of its own label.
type Mixed<'py> = (Bound<'py, PyArray4<f32>>, Vec<i64>, f64);

/// Guided CutMix of a batch (`images [B, C, S, S]`, each image's salient patch `rects [B, 4]` in
/// its pixels), with probability `prob`: the batch is shuffled, and each image receives its
/// partner's patch at the corner farthest from its own patch. λ, the pasted patch's label weight,
/// is `fixed_lambda` or `(patch_side / image_side)^(2τ)`. Returns `None`, or (the mixed images,
/// the partner of each image, the weight of each image's own label `1 − λ`). Seeded: the same
/// `seed` gives the same mix.
#[pyfunction]
#[pyo3(signature = (images, rects, patch_side, image_side, prob = 1.0, tau = 0.5, fixed_lambda = None, seed = 0))]
#[allow(clippy::too_many_arguments)]
fn guided_cutmix<'py>(
    py: Python<'py>,
    images: PyReadonlyArray4<f32>,
    rects: PyReadonlyArray2<f32>,
    patch_side: f64,
    image_side: f64,
    prob: f64,
    tau: f64,
    fixed_lambda: Option<f64>,
    seed: u64,
) -> PyResult<Option<Mixed<'py>>> {
    use autosampler::mix::guided::{mixes, paste_shuffled};
    let s = images.shape().to_vec();
    if rects.shape() != [s[0], 4] {
        return Err(err(format!(
            "rects has shape {:?}: expected [{}, 4] (one [x0, y0, x1, y1] per image)",
            rects.shape(),
            s[0]
        )));
    }
    let mut rng = autosampler::rng::chacha(seed, &[2]);
    if !mixes(prob, &mut rng) {
        return Ok(None);
    }
    let x =
        Tensor::from_slice(images.as_slice()?).reshape([s[0] as i64, s[1] as i64, s[2] as i64, s[3] as i64]);
    let r: Vec<[f32; 4]> = rects
        .as_slice()?
        .chunks(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let m = paste_shuffled(&r, (patch_side, image_side), tau, fixed_lambda, &x, &mut rng);
    let data: Vec<f32> = Vec::try_from(m.images.flatten(0, -1)).map_err(err)?;
    let perm: Vec<i64> = Vec::try_from(&m.perm).map_err(err)?;
    let arr = numpy::ndarray::Array4::from_shape_vec((s[0], s[1], s[2], s[3]), data).expect("same shape");
    Ok(Some((arr.into_pyarray(py), perm, m.lambda)))
}

/// Runs every stage of a config (as `autosampler run`) into `out` (default: runs/<name>), with
/// `section.key=value` overrides; returns the run's typed results as JSON.
#[pyfunction]
#[pyo3(signature = (config, out = None, overrides = Vec::new()))]
fn run(py: Python<'_>, config: PathBuf, out: Option<PathBuf>, overrides: Vec<String>) -> PyResult<String> {
    let cfg = Config::load_with(&config, &overrides).map_err(err)?;
    let dir = out.unwrap_or_else(|| {
        let name = cfg
            .name
            .clone()
            .or_else(|| config.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "default".into());
        PathBuf::from("runs").join(name)
    });
    let run = RunDir::new(&dir);
    let o = py
        .allow_threads(|| pipeline::run(&cfg, &run, &Silent))
        .map_err(err)?;
    let model = run.model();
    Ok(serde_json::json!({
        "run": run.root(),
        "classes": o.dataset.split.classes,
        "train_counts": o.dataset.split.counts.train,
        "eval": o.eval,
        "search": o.search,
        "stage2": o.stage2,
        "model": model.is_file().then_some(model),
        "report": o.report,
    })
    .to_string())
}

/// The files of a run folder that the package reads, by what they hold (the run folder's names
/// are the library's, `autosampler::rundir`).
#[pyfunction]
fn run_files(run: PathBuf) -> std::collections::BTreeMap<&'static str, PathBuf> {
    let r = RunDir::new(run);
    std::collections::BTreeMap::from([
        ("stage1_metrics", r.stage1().metrics()),
        ("agent_metrics", r.agent_metrics()),
        ("search_trajectories", r.trajectories()),
        ("tensorboard", r.tensorboard()),
    ])
}

/// Trains (or reuses) the patch agent of a config's `[agent]` into `<out>/agent` (the data stage,
/// then the agent stage of `autosampler run`) and returns that folder.
#[pyfunction]
#[pyo3(signature = (config, out, overrides = Vec::new()))]
fn train_agent(py: Python<'_>, config: PathBuf, out: PathBuf, overrides: Vec<String>) -> PyResult<PathBuf> {
    let cfg = Config::load_with(&config, &overrides).map_err(err)?;
    if cfg.agent.is_none() {
        return Err(err(format!(
            "{}: the config has no [agent] section",
            config.display()
        )));
    }
    let run = RunDir::new(&out);
    py.allow_threads(|| {
        let ds = pipeline::prepare(&cfg, &run, &Silent)?;
        pipeline::agent(&cfg, &run, &ds, true, &Silent)
    })
    .map_err(err)?;
    Ok(run.agent_dir())
}

/// The process group of `torch.distributed`, seen from the Rust training loop: each collective
/// calls the Python object's method of the same name with the tensor's address, element count,
/// dtype and device, and the Python side wraps that memory in a `torch.Tensor` view (no copy)
/// for `torch.distributed` (`autosampler/distributed.py`).
struct PyCollective {
    obj: Py<PyAny>,
    rank: usize,
    world: usize,
}

impl PyCollective {
    fn call(&self, method: &str, t: &Tensor, root: Option<usize>) -> autosampler::Result<()> {
        if !t.is_contiguous() {
            return Err(autosampler::invalid!("{method}: the tensor is not contiguous"));
        }
        let kind = match t.kind() {
            tch::Kind::Float => "float32",
            tch::Kind::Double => "float64",
            tch::Kind::Int64 => "int64",
            k => {
                return Err(autosampler::invalid!(
                    "{method}: tensors of kind {k:?} are not sent"
                ))
            }
        };
        let device = match t.device() {
            Device::Cpu => "cpu".to_string(),
            Device::Cuda(i) => format!("cuda:{i}"),
            d => return Err(autosampler::invalid!("{method}: device {d:?} is not supported")),
        };
        if let Device::Cuda(i) = t.device() {
            // the Python side's collective runs on torch's current stream, after our kernels
            tch::Cuda::synchronize(i as i64);
        }
        let (ptr, n) = (t.data_ptr() as usize, t.numel());
        Python::with_gil(|py| {
            let r = match root {
                Some(root) => self.obj.call_method1(py, method, (ptr, n, kind, device, root)),
                None => self.obj.call_method1(py, method, (ptr, n, kind, device)),
            };
            r.map(|_| ()).map_err(|e| {
                autosampler::invalid!(
                    "rank {} of {}: torch.distributed {method} failed: {e}",
                    self.rank,
                    self.world
                )
            })
        })
    }
}

impl autosampler::distributed::Collective for PyCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, t: &Tensor) -> autosampler::Result<()> {
        self.call("all_reduce", t, None)
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> autosampler::Result<()> {
        self.call("broadcast", t, Some(root))
    }
    fn barrier(&self) -> autosampler::Result<()> {
        Python::with_gil(|py| self.obj.call_method0(py, "barrier").map(|_| ()))
            .map_err(|e| autosampler::invalid!("torch.distributed barrier failed: {e}"))
    }
}

/// Rank 0's progress: the pipeline's notes and stage results, and one line per epoch, on stderr.
struct Printer;

impl autosampler::train::stage1::Progress for Printer {
    fn epoch_start(&self, _: usize, _: usize, _: usize) {}
    fn batch(&self, _: f64) {}
    fn epoch_end(&self, l: &autosampler::train::stage1::EpochLog) {
        eprintln!(
            "epoch {:>3}  lr {:.4}  loss {:.4}  train {:5.1}%  val {:5.1}%  {:>7.0} img/s  {:6.1}s",
            l.epoch, l.lr, l.train_loss, l.train_acc, l.val_top1, l.img_per_s, l.seconds
        );
    }
}

impl pipeline::Observer for Printer {
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
    fn show(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// The resolved devices of a config (after overrides): `[train] device` (None without `[train]`)
/// and `[agent] device` (None without an agent to train).
#[pyfunction]
#[pyo3(signature = (config, overrides = Vec::new()))]
fn devices(config: PathBuf, overrides: Vec<String>) -> PyResult<(Option<String>, Option<String>)> {
    let cfg = Config::load_with(&config, &overrides).map_err(err)?;
    let agent = cfg.agent.filter(|a| a.from.is_none()).map(|a| a.device);
    Ok((cfg.train.map(|t| t.device), agent))
}

/// [`run`] as rank `rank` of `world` in a data-parallel group: `comm` has `all_reduce`,
/// `broadcast` and `barrier` over `torch.distributed` (see `autosampler.distributed`). Rank 0
/// prints progress and returns the run's results as JSON; the other ranks return None.
#[pyfunction]
#[pyo3(signature = (config, out, comm, rank, world, overrides = Vec::new()))]
fn run_distributed(
    py: Python<'_>,
    config: PathBuf,
    out: PathBuf,
    comm: Py<PyAny>,
    rank: usize,
    world: usize,
    overrides: Vec<String>,
) -> PyResult<Option<String>> {
    let cfg = Config::load_with(&config, &overrides).map_err(err)?;
    let run = RunDir::new(&out);
    let comm = PyCollective {
        obj: comm,
        rank,
        world,
    };
    let o = py
        .allow_threads(|| {
            if rank == 0 {
                pipeline::run_parallel(&cfg, &run, &Printer, &comm)
            } else {
                pipeline::run_parallel(&cfg, &run, &Silent, &comm)
            }
        })
        .map_err(err)?;
    Ok(o.map(|o| {
        serde_json::json!({
            "run": run.root(),
            "eval": o.eval,
            "stage2": o.stage2,
            "report": o.report,
        })
        .to_string()
    }))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(longtail_split, m)?)?;
    m.add_function(wrap_pyfunction!(class_weights, m)?)?;
    m.add_function(wrap_pyfunction!(search_weights, m)?)?;
    m.add_function(wrap_pyfunction!(guided_cutmix, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(run_files, m)?)?;
    m.add_function(wrap_pyfunction!(train_agent, m)?)?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(run_distributed, m)?)?;
    m.add_class::<Agent>()?;
    Ok(())
}
