//! Integration tests of the data layer on committed fixtures (tests/data) and, where present, on
//! the real archives in ../shared/data (skipped with a note when absent).
use autosampler::data::augment::{Augment, Normalize};
use autosampler::data::cache::{self, Cache};
use autosampler::data::formats::cifar::{write_records, PIXELS};
use autosampler::data::loader::{for_each_batch, for_each_batch_shares, LoaderConfig, Shares};
use autosampler::data::randaugment::RandAugment;
use autosampler::data::source::Cifar100Label;
use autosampler::data::Catalog;
use autosampler::data::{
    DataConfig, Dataset, Format, Part, Pool, Profile, Resize, SourceConfig, Split, SplitConfig,
};
use autosampler::precision::Precision;
use autosampler::rundir::RunDir;
use autosampler::sampler::Sampler;
use autosampler::train::stage1::Fast;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

fn shared_data(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(name);
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipped: {} not present", p.display());
        None
    }
}

fn no_progress(_: u64) {}

/// libtorch's random generator is one per process, and `cargo test` runs a file's tests on several
/// threads: a test that seeds it and compares what two trainings give failed when another test's
/// draws (a model built, a seed set) landed between its seed and its own draws (seen once:
/// `agent_group_and_reward_change_only_the_policy`, global encoders differing). Every test here that
/// builds or trains a network holds this lock for its whole length.
fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The default split with `k` validation images per class held out.
fn holdout(k: usize) -> SplitConfig {
    SplitConfig {
        val_per_class: k,
        ..Default::default()
    }
}

/// The image-folder fixture prepared with `k` validation images per class (and its cache folder,
/// which lives as long as the returned guard).
fn folder_dataset(k: usize) -> (tempfile::TempDir, Dataset) {
    let caches = tempfile::tempdir().unwrap();
    let c = cfg(
        SourceConfig::new(Format::ImageFolder, fixtures().join("folder")),
        SplitConfig {
            val_per_class: k,
            ..Default::default()
        },
    );
    let ds = Dataset::prepare(&c, caches.path(), &no_progress).unwrap();
    (caches, ds)
}

fn cfg(source: SourceConfig, split: SplitConfig) -> DataConfig {
    DataConfig { source, split }
}

/// (37·class + 11·index + 5·y + 3·x + 60·channel) mod 256: the fixture PNGs' pixels.
fn fixture_pixel(class: usize, index: usize, y: usize, x: usize, c: usize) -> u8 {
    ((37 * class + 11 * index + 5 * y + 3 * x + 60 * c) % 256) as u8
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn image_folder_decodes_exact_pixels_and_reopens_from_split() {
    let (caches, ds) = folder_dataset(1);
    assert_eq!(ds.split.classes, ["a", "b", "c"]);
    assert_eq!(ds.split.counts.train, [5, 3, 1]);
    assert_eq!(ds.split.counts.val, [1, 1, 1]);
    assert_eq!(ds.split.counts.test, [1, 1, 1]);
    let test = ds.view(Part::Test);
    assert_eq!(test.size, 8);
    // test image of class b is index 100 of class 1
    let img = test.image(1);
    assert_eq!(test.labels[1], 1);
    for (y, x, ch) in [(0, 0, 0), (3, 5, 1), (7, 7, 2)] {
        assert_eq!(img[(y * 8 + x) * 3 + ch], fixture_pixel(1, 100, y, x, ch));
    }
    // every training image is the fixture image its split index names
    let train = ds.view(Part::Train);
    for i in 0..train.len() {
        let pool_index = ds.split.train[i] as usize;
        let (class, within) = match pool_index {
            0..=5 => (0, pool_index),
            6..=9 => (1, pool_index - 6),
            _ => (2, pool_index - 10),
        };
        assert_eq!(train.labels[i] as usize, class);
        assert_eq!(
            train.image(i)[(2 * 8 + 3) * 3],
            fixture_pixel(class, within, 2, 3, 0)
        );
    }
    // split.json alone rebuilds the same dataset
    let dir = tempfile::tempdir().unwrap();
    ds.split.save(&dir.path().join("split.json")).unwrap();
    let again = Dataset::open(
        Split::load(&dir.path().join("split.json")).unwrap(),
        caches.path(),
        &no_progress,
    )
    .unwrap();
    assert_eq!(again.split, ds.split);
    assert_eq!(again.view(Part::Train).image(2), train.image(2));
}

#[test]
fn archive_and_folder_give_the_same_cache() {
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("folder.tar.gz");
    {
        let f = std::fs::File::create(&tgz).unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
        b.append_dir_all("folder", fixtures().join("folder")).unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let caches = dir.path().join("caches");
    let from_dir = Catalog::scan(&SourceConfig::new(Format::ImageFolder, fixtures().join("folder"))).unwrap();
    let from_tgz = Catalog::scan(&SourceConfig::new(Format::ImageFolder, &tgz)).unwrap();
    let a = Cache::open_or_build(&from_dir, &caches, &no_progress).unwrap();
    let b = Cache::open_or_build(&from_tgz, &caches, &no_progress).unwrap();
    assert_eq!(a.meta.checksum, b.meta.checksum);
    assert_eq!(a.dir, b.dir, "same content, same cache");
    assert_eq!(
        std::fs::read_dir(&caches).unwrap().count(),
        1,
        "no temporary folder left"
    );
}

#[test]
fn corrupt_image_names_the_file_and_leaves_no_cache() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    copy_dir(&fixtures().join("folder"), &root);
    std::fs::copy(fixtures().join("corrupt.jpg"), root.join("train/b/zz.jpg")).unwrap();
    let caches = dir.path().join("caches");
    let c = cfg(SourceConfig::new(Format::ImageFolder, &root), holdout(0));
    let e = Dataset::prepare(&c, &caches, &no_progress)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("train/b/zz.jpg") && e.contains("cannot decode image"),
        "{e}"
    );
    let left: Vec<_> = std::fs::read_dir(&caches)
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "half-built cache left behind: {left:?}");
}

#[test]
fn bad_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let scan = |root: &Path| {
        Catalog::scan(&SourceConfig::new(Format::ImageFolder, root))
            .err()
            .unwrap()
            .to_string()
    };
    // empty class folder
    let r = dir.path().join("empty");
    copy_dir(&fixtures().join("folder"), &r);
    std::fs::create_dir_all(r.join("train/d")).unwrap();
    let e = scan(&r);
    assert!(e.contains("train/d") && e.contains("empty class folder"), "{e}");
    // a non-image file
    let r = dir.path().join("txt");
    copy_dir(&fixtures().join("folder"), &r);
    std::fs::write(r.join("train/a/notes.txt"), "hello").unwrap();
    let e = scan(&r);
    assert!(
        e.contains("train/a/notes.txt") && e.contains("not an image"),
        "{e}"
    );
    // no test folder
    let r = dir.path().join("notest");
    copy_dir(&fixtures().join("folder/train"), &r.join("train"));
    let e = scan(&r);
    assert!(e.contains("test") && e.contains("missing folder"), "{e}");
    // missing root
    let e = scan(&dir.path().join("nowhere"));
    assert!(e.contains("nowhere"), "{e}");
}

#[test]
fn mixed_sizes_need_a_resize_policy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    copy_dir(&fixtures().join("folder"), &root);
    image::RgbImage::from_pixel(12, 10, image::Rgb([200, 100, 50]))
        .save(root.join("train/a/big.png"))
        .unwrap();
    let caches = dir.path().join("caches");
    let mut src = SourceConfig::new(Format::ImageFolder, &root);
    let c = cfg(src.clone(), holdout(0));
    let e = Dataset::prepare(&c, &caches, &no_progress)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("big.png") && e.contains("12×10") && e.contains("expected 8×8"),
        "{e}"
    );
    for resize in [Resize::Stretch, Resize::CenterCrop] {
        src.resize = resize;
        let c = cfg(src.clone(), holdout(0));
        let ds = Dataset::prepare(&c, &caches, &no_progress).unwrap();
        let train = ds.view(Part::Train);
        let i = (0..train.len()).find(|&i| ds.split.train[i] == 6).unwrap(); // big.png sorts first in a/
        assert_eq!(&train.image(i)[..3], [200, 100, 50], "{resize:?}");
    }
}

#[test]
fn cifar_binary_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&root).unwrap();
    let rec = |label: u8, v: u8| {
        let mut px = vec![0u8; PIXELS];
        for (p, x) in px.iter_mut().enumerate() {
            *x = v.wrapping_add((p / 1024) as u8 * 50); // plane c holds v + 50c
        }
        (vec![label], px)
    };
    for b in 1..=5 {
        let recs: Vec<_> = (0..4)
            .map(|i| rec((i + b) as u8 % 10, b as u8 * 10 + i as u8))
            .collect();
        write_records(&root.join(format!("data_batch_{b}.bin")), &recs).unwrap();
    }
    write_records(&root.join("test_batch.bin"), &[rec(3, 7), rec(9, 8)]).unwrap();
    let caches = tempfile::tempdir().unwrap();
    let caches = caches.path();
    // the root holding the single folder is entered automatically
    let src = SourceConfig::new(Format::Cifar10Bin, dir.path());
    let cat = Catalog::scan(&src).unwrap();
    assert_eq!(cat.classes[3], "cat");
    assert_eq!(cat.pool(Pool::Train).unwrap().len(), 20);
    let cache = Cache::open_or_build(&cat, caches, &no_progress).unwrap();
    let test = cache.pool(Pool::Test).unwrap();
    assert_eq!(test.labels, [3, 9]);
    // planar R,G,B → interleaved: pixel 0 is (v, v+50, v+100)
    assert_eq!(&test.image(1)[..3], [8, 58, 108]);
    assert_eq!(cache.pool(Pool::Train).unwrap().image(5)[..3], [21, 71, 121]);

    // truncated: data_batch_3.bin loses 1,500 bytes of its last (fourth) record
    let p = root.join("data_batch_3.bin");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 1500]).unwrap();
    let e = Catalog::scan(&src).err().unwrap().to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("record 3") && e.contains("byte offset 9219"),
        "{e}"
    );
    assert!(e.contains("expected 3073 bytes, found 1573"), "{e}");
    std::fs::write(&p, &bytes).unwrap();
    // label out of range
    let mut bad = bytes.clone();
    bad[3073] = 12;
    std::fs::write(&p, &bad).unwrap();
    let e = Catalog::scan(&src).err().unwrap().to_string();
    assert!(
        e.contains("data_batch_3.bin") && e.contains("record 1") && e.contains("label 12"),
        "{e}"
    );
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let dir = tempfile::tempdir().unwrap();
    let recs: Vec<_> = (0..6u8)
        .map(|i| (vec![i % 20, 50 + i], vec![i; PIXELS]))
        .collect();
    write_records(&dir.path().join("train.bin"), &recs).unwrap();
    write_records(&dir.path().join("test.bin"), &recs[..2]).unwrap();
    let mut src = SourceConfig::new(Format::Cifar100Bin, dir.path());
    let fine = Catalog::scan(&src).unwrap();
    assert_eq!(fine.classes.len(), 100);
    assert_eq!(fine.labels(Pool::Train), [50, 51, 52, 53, 54, 55]);
    src.cifar100_label = Cifar100Label::Coarse;
    let coarse = Catalog::scan(&src).unwrap();
    assert_eq!(coarse.classes.len(), 20);
    assert_eq!(coarse.labels(Pool::Test), [0, 1]);
}

#[test]
fn tiny_imagenet_layout_with_boxes() {
    let caches = tempfile::tempdir().unwrap();
    let mut src = SourceConfig::new(Format::TinyImagenet, fixtures().join("tiny"));
    let cat = Catalog::scan(&src).unwrap();
    // wnids.txt lists n01629819 first; classes are sorted
    assert_eq!(cat.classes, ["n01443537", "n01629819"]);
    let train = cat.pool(Pool::Train).unwrap();
    assert_eq!(train.len(), 6);
    assert_eq!(train[1].bbox, Some([14.0, 2.0, 54.0, 49.0]));
    let test = cat.pool(Pool::Test).unwrap();
    assert_eq!(test.len(), 4);
    // val images sorted by name: val_1054 (n01629819), val_23 (n01629819), val_611, val_68
    assert_eq!(cat.labels(Pool::Test), [1, 1, 0, 0]);
    assert_eq!(test[3].bbox, Some([10.0, 19.0, 63.0, 42.0]));
    // decoding at 32 px with stretch halves the boxes
    src.image_size = Some(32);
    src.resize = Resize::Stretch;
    let c = cfg(src, holdout(1));
    let ds = Dataset::prepare(&c, caches.path(), &no_progress).unwrap();
    let t = ds.view(Part::Test);
    assert_eq!(t.size, 32);
    let i = (0..t.len()).find(|&i| ds.split.test[i] == 3).unwrap(); // val_68.JPEG
    assert_eq!(t.bbox(i), Some([5.0, 9.5, 31.5, 21.0]));
    assert_eq!(ds.view(Part::Train).len(), 4);
}

#[test]
fn split_lists_with_val_and_errors() {
    let d = fixtures();
    let mut src = SourceConfig::new(Format::SplitList, d.join("folder"));
    src.train_list = Some(d.join("lists/train.txt"));
    src.test_list = Some(d.join("lists/test.txt"));
    src.val_list = Some(d.join("lists/val.txt"));
    src.class_names = Some(d.join("lists/names.txt"));
    let caches = tempfile::tempdir().unwrap();
    let ds = Dataset::prepare(
        &cfg(src.clone(), SplitConfig::default()),
        caches.path(),
        &no_progress,
    )
    .unwrap();
    assert_eq!(ds.split.classes, ["alpha", "beta", "gamma"]);
    assert_eq!(ds.split.val_pool, Pool::Val);
    assert_eq!(ds.split.counts.val, [1, 1, 0]);
    assert_eq!(
        ds.split.counts.train,
        [6, 4, 2],
        "no hold-out when the source has a val list"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "train/a/000.png 0\ntrain/a/999.png 0\n").unwrap();
    let mut s = src.clone();
    s.train_list = Some(bad.clone());
    let e = Catalog::scan(&s).err().unwrap().to_string();
    assert!(
        e.contains("bad.txt: line 2") && e.contains("train/a/999.png") && e.contains("not found"),
        "{e}"
    );
    std::fs::write(&bad, "train/a/000.png 0\ntrain/a/001.png 7\n").unwrap();
    let e = Catalog::scan(&s).err().unwrap().to_string();
    assert!(
        e.contains("bad.txt: line 2") && e.contains("unknown class 7"),
        "{e}"
    );
    std::fs::write(&bad, "train/a/000.png zero\n").unwrap();
    let e = Catalog::scan(&s).err().unwrap().to_string();
    assert!(e.contains("bad.txt: line 1") && e.contains("`zero`"), "{e}");
}

/// Defects "split lists read outside `root`" and "accept duplicate lines", and "a label typo is
/// reported as val_per_class too large": each is refused naming the list file and the line.
#[test]
fn split_lists_refuse_paths_outside_root_duplicates_and_label_gaps() {
    let d = fixtures();
    let mut src = SourceConfig::new(Format::SplitList, d.join("folder"));
    src.test_list = Some(d.join("lists/test.txt"));
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("train.txt");
    src.train_list = Some(list.clone());
    let scan = |text: &str| {
        std::fs::write(&list, text).unwrap();
        Catalog::scan(&src)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = scan(
        "train/a/000.png 0
../folder/train/a/001.png 0
",
    );
    assert!(
        e.contains("train.txt: line 2") && e.contains("not a path inside root"),
        "{e}"
    );
    // a leading `/` is the root's (Places-LT's lists, read as `root + line` by the field's
    // loaders): a path of this machine is looked for under the root, and not found there
    let e = scan(&format!(
        "train/a/000.png 0
{}/train/a/001.png 0
",
        std::fs::canonicalize(d.join("folder")).unwrap().display()
    ));
    assert!(e.contains("line 2") && e.contains("not found under"), "{e}");
    assert_eq!(
        scan("/train/a/000.png 0\n/train/b/000.png 1\n/train/c/000.png 2\n"),
        "",
        "root-relative lines are read"
    );
    let e = scan(
        "train/a/000.png 0
train/b/000.png 1
train/a/000.png 0
",
    );
    assert!(
        e.contains("train.txt: line 3") && e.contains("listed twice") && e.contains("line 1"),
        "{e}"
    );
    // a test image in the training list
    let e = scan(
        "train/a/000.png 0
test/a/100.png 0
",
    );
    assert!(
        e.contains("test.txt: line 1") && e.contains("listed twice"),
        "{e}"
    );
    // 99 where 1 was meant: classes 2..98 would have no training image
    let e = scan(
        "train/a/000.png 0
train/b/000.png 99
train/c/000.png 2
",
    );
    assert!(
        e.contains("train.txt: line 2") && e.contains("label 99, but class 1 has no training image"),
        "{e}"
    );
    assert_eq!(
        scan(
            "train/a/000.png 0
train/b/000.png 1
train/c/000.png 2
"
        ),
        ""
    );
}

#[test]
fn bad_split_parameters() {
    let caches = tempfile::tempdir().unwrap();
    let src = SourceConfig::new(Format::ImageFolder, fixtures().join("folder"));
    let e = Dataset::prepare(&cfg(src.clone(), holdout(2)), caches.path(), &no_progress)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("val_per_class 2 is too large") && e.contains("only 2"),
        "{e}"
    );
    let lt = SplitConfig {
        longtail: Profile::Exp {
            imbalance_ratio: 0.5,
            n_max: None,
        },
        val_per_class: 0,
        seed: 0,
    };
    let e = Dataset::prepare(&cfg(src, lt), caches.path(), &no_progress)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("imbalance_ratio 0.5") && e.contains("≥ 1"), "{e}");
}

fn collect_batches(ds: &Dataset, threads: usize, aug: Augment) -> Vec<(Vec<f32>, Vec<i64>)> {
    collect_batches_ra(ds, threads, aug, None)
}

fn collect_batches_ra(
    ds: &Dataset,
    threads: usize,
    aug: Augment,
    randaugment: Option<RandAugment>,
) -> Vec<(Vec<f32>, Vec<i64>)> {
    let view = ds.view(Part::Train);
    let mut rng = autosampler::rng::chacha(1, &[]);
    let plan = Sampler::ClassBalanced
        .plan(&view.labels, 0, 1, false, &mut rng)
        .unwrap();
    let lc = LoaderConfig {
        randaugment,
        autoaugment: None,
        cutout: None,
        batch_size: 4,
        threads,
        augment: aug,
        normalize: Normalize::CIFAR10,
        drop_last: false,
        seed: 9,
    };
    let mut out = Vec::new();
    for_each_batch(&view, &plan, &lc, 3, |b| {
        assert_eq!(b.images.size()[1..], [3, 8, 8]);
        out.push((
            Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap(),
            Vec::<i64>::try_from(&b.labels).unwrap(),
        ));
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn loader_is_deterministic_across_thread_counts() {
    let (_caches, ds) = folder_dataset(0);
    for aug in [Augment::cifar(), Augment::resized_crop(8), Augment::None] {
        let one = collect_batches(&ds, 1, aug.clone());
        let three = collect_batches(&ds, 3, aug);
        assert_eq!(one.len(), 3, "12 images in batches of 4");
        assert_eq!(one, three);
    }
    // the class-balanced plan gives each class 4 of the 12 draws
    let labels: Vec<i64> = collect_batches(&ds, 2, Augment::None)
        .into_iter()
        .flat_map(|b| b.1)
        .collect();
    for c in 0..3 {
        assert_eq!(labels.iter().filter(|&&l| l == c).count(), 4);
    }
}

#[test]
fn randaugment_changes_images_not_labels_and_is_deterministic() {
    let (_caches, ds) = folder_dataset(0);
    let ra = Some(RandAugment::default());
    let plain = collect_batches(&ds, 2, Augment::cifar());
    let one = collect_batches_ra(&ds, 1, Augment::cifar(), ra);
    assert_eq!(one, collect_batches_ra(&ds, 3, Augment::cifar(), ra));
    // same plan, same labels; the pixels differ
    assert_eq!(
        one.iter().map(|b| &b.1).collect::<Vec<_>>(),
        plain.iter().map(|b| &b.1).collect::<Vec<_>>()
    );
    assert_ne!(one, plain);
}

#[test]
fn randaugment_with_saved_agent_locations_is_refused_before_training() {
    let t = TrainConfig {
        randaugment: Some(RandAugment::default()),
        mix: autosampler::mix::MixConfig::AgentCutmix {
            prob: 0.5,
            tau: 0.4,
            fixed_lambda: None,
            per_batch: false,
        },
        ..Default::default()
    };
    let e = t.check().unwrap_err().to_string();
    assert!(e.contains("randaugment") && e.contains("per_batch = true"), "{e}");
    let per_batch = TrainConfig {
        mix: autosampler::mix::MixConfig::AgentCutmix {
            prob: 0.5,
            tau: 0.4,
            fixed_lambda: None,
            per_batch: true,
        },
        ..t.clone()
    };
    per_batch.check().unwrap();
    let bad = TrainConfig {
        randaugment: Some(RandAugment {
            ops: 2,
            magnitude: 40,
            bins: 31,
        }),
        ..per_batch
    };
    let e = bad.check().unwrap_err().to_string();
    assert!(e.contains("randaugment.magnitude") && e.contains("40"), "{e}");
    // a config without it serialises as before (stage fingerprints of earlier runs still match)
    assert!(!serde_json::to_string(&TrainConfig::default())
        .unwrap()
        .contains("randaugment"));
}

#[test]
fn loader_shares_cut_the_whole_batch_into_parts() {
    // what data-parallel ranks assemble: each image exactly as in the whole batch, the union over
    // shares the whole batch, in order, also for a last batch smaller than the number of shares
    let (_caches, ds) = folder_dataset(0);
    let view = ds.view(Part::Train);
    let plan: Vec<usize> = (0..view.len()).chain(0..view.len()).take(21).collect();
    let lc = LoaderConfig {
        randaugment: None,
        autoaugment: None,
        cutout: None,
        batch_size: 8,
        threads: 2,
        augment: Augment::cifar(),
        normalize: Normalize::CIFAR10,
        drop_last: false,
        seed: 4,
    };
    let collect = |shares: Shares| {
        let mut out = Vec::new();
        for_each_batch_shares(&view, &plan, &lc, 2, shares, |b| {
            out.push((
                b.whole,
                Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap(),
                b.index,
            ));
            Ok(())
        })
        .unwrap();
        out
    };
    let whole = collect(Shares::ALL);
    assert_eq!(whole.iter().map(|b| b.0).collect::<Vec<_>>(), [8, 8, 5]);
    let parts = [
        collect(Shares {
            from: 0,
            to: 1,
            of: 6,
        }),
        collect(Shares {
            from: 1,
            to: 4,
            of: 6,
        }),
        collect(Shares {
            from: 4,
            to: 6,
            of: 6,
        }),
    ];
    for (i, (n, pixels, index)) in whole.iter().enumerate() {
        let cat_px: Vec<f32> = parts.iter().flat_map(|p| p[i].1.clone()).collect();
        let cat_ix: Vec<usize> = parts.iter().flat_map(|p| p[i].2.clone()).collect();
        assert_eq!((&cat_px, &cat_ix), (pixels, index), "batch {i}");
        assert!(parts.iter().all(|p| p[i].0 == *n));
    }
    // shares 0..1 of 6 of the last batch of 5 images hold none (5·1/6 = 0)
    assert!(parts[0][2].2.is_empty() && Shares::range(5, 0, 6).is_empty());
    let bad = for_each_batch_shares(
        &view,
        &plan,
        &lc,
        0,
        Shares {
            from: 2,
            to: 2,
            of: 4,
        },
        |_| Ok(()),
    );
    assert!(bad.unwrap_err().to_string().contains("loader shares 2..2 of 4"));
}

#[test]
fn loader_stops_on_the_first_error() {
    let (_caches, ds) = folder_dataset(0);
    let view = ds.view(Part::Train);
    let plan: Vec<usize> = (0..view.len()).collect();
    let lc = LoaderConfig {
        randaugment: None,
        autoaugment: None,
        cutout: None,
        batch_size: 2,
        threads: 2,
        augment: Augment::None,
        normalize: Normalize::CIFAR10,
        drop_last: true,
        seed: 0,
    };
    let mut seen = 0;
    let r = for_each_batch(&view, &plan, &lc, 0, |_| {
        seen += 1;
        if seen == 2 {
            return Err(autosampler::invalid!("stop here"));
        }
        Ok(())
    });
    assert_eq!(seen, 2);
    assert!(r.unwrap_err().to_string().contains("stop here"));
}

// ---------------------------------------------------------------- real archives in ../shared/data

#[test]
fn real_cifar10_lt_matches_ldam_and_the_reference_split() {
    let Some(archive) = shared_data("cifar10-jpeg.tar.gz") else {
        return;
    };
    let caches = tempfile::tempdir().unwrap();
    let src = SourceConfig::new(Format::ImageFolder, &archive);
    let cat = Catalog::scan(&src).unwrap();
    let cache = Cache::open_or_build(&cat, caches.path(), &no_progress).unwrap();
    assert_eq!(cache.pool(Pool::Train).unwrap().len(), 50_000);
    assert_eq!(cache.pool(Pool::Test).unwrap().len(), 10_000);
    let draw = |ir: f64, k: usize| {
        let c = cfg(
            src.clone(),
            SplitConfig {
                longtail: Profile::Exp {
                    imbalance_ratio: ir,
                    n_max: None,
                },
                val_per_class: k,
                seed: 0,
            },
        );
        autosampler::data::draw_split(&cache, &c).unwrap()
    };
    // LDAM-DRW sizes without a hold-out
    for (ir, n) in [(100.0, 12_406), (50.0, 13_996), (10.0, 20_431)] {
        let s = draw(ir, 0);
        assert_eq!(s.train.len(), n, "IR {ir}");
        assert_eq!(s.test.len(), 10_000);
    }
    // torch_reference.py's protocol (../shared/bench/results/ref_c10lt_ir100_e30_s0.json)
    let s = draw(100.0, 20);
    assert_eq!(
        s.counts.train,
        [4980, 2985, 1789, 1072, 643, 385, 231, 138, 83, 49]
    );
    assert_eq!(s.train.len(), 12_355);
    assert_eq!(s.counts.val, [20; 10]);
    // the same images: numpy RandomState(0) shuffles class 0's indices 0..5000, then class 1's
    //   rs = np.random.RandomState(0); a = np.arange(5000); rs.shuffle(a); print(a[:3], a[20:23])
    //   -> [ 398 3833 4836] [ 159 1563  402]
    //   b = np.arange(5000, 10000); rs.shuffle(b); print(b[:3], b[20:23])
    //   -> [5597 5332 5521] [7192 6766 6261]
    assert_eq!(&s.val[..3], [398, 3833, 4836]);
    assert_eq!(&s.train[..3], [159, 1563, 402]);
    assert_eq!(&s.val[20..23], [5597, 5332, 5521]);
    assert_eq!(&s.train[4980..4983], [7192, 6766, 6261]);
    assert_eq!(
        (
            s.shot_groups.many.len(),
            s.shot_groups.medium.len(),
            s.shot_groups.few.len()
        ),
        (8, 2, 0)
    );
}

#[test]
fn real_tiny_imagenet_catalog_has_every_box() {
    let Some(archive) = shared_data("tiny-imagenet-200.tar.gz") else {
        return;
    };
    let cat = Catalog::scan(&SourceConfig::new(Format::TinyImagenet, &archive)).unwrap();
    assert_eq!(cat.classes.len(), 200);
    let train = cat.pool(Pool::Train).unwrap();
    let test = cat.pool(Pool::Test).unwrap();
    assert_eq!((train.len(), test.len()), (100_000, 10_000));
    assert!(train.iter().chain(test).all(|i| i.bbox.is_some()));
    let mut per_class = vec![0; 200];
    for i in test {
        per_class[i.label as usize] += 1;
    }
    assert!(per_class.iter().all(|&n| n == 50));
    // the llt stand-in for ImageNet-LLT draws from these pools: 50..400 images per class
    let labels = cat.labels(Pool::Train);
    let test_labels = cat.labels(Pool::Test);
    let pools = autosampler::data::split::PoolLabels {
        num_classes: 200,
        train: &labels,
        val: None,
        test: &test_labels,
    };
    let d = autosampler::data::split::draw(
        &pools,
        &SplitConfig {
            longtail: Profile::Llt {
                num_classes: 100,
                min: 50,
                max: 400,
            },
            val_per_class: 20,
            seed: 0,
        },
    )
    .unwrap();
    assert_eq!(d.counts.train[0], 400);
    assert_eq!(d.counts.train[99], 50);
    assert_eq!(d.test.len(), 5_000);
    let _ = cache::default_cache_root();
}

// ---------------------------------------------------------------- models and training

use autosampler::distributed::Alone;
use autosampler::model::{save_tensors, Arch, Head, Model, ModelConfig, Stem};
use autosampler::train::stage1::{self, Silent, TrainConfig};

fn resnet8() -> ModelConfig {
    ModelConfig {
        arch: Arch::Resnet8,
        head: Head::Linear,
        stem: Stem::Small,
        bilateral: false,
        init: None,
    }
}

fn python_with_torch() -> Option<String> {
    for py in ["python", "python3"] {
        let ok = std::process::Command::new(py)
            .args(["-c", "import torch, safetensors"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Some(py.to_string());
        }
    }
    eprintln!("skipped: no python with torch and safetensors on PATH (./x test provides one)");
    None
}

#[test]
fn safetensors_checkpoint_loads_into_pytorch_with_the_same_logits() {
    let _rng = torch_rng();
    let Some(py) = python_with_torch() else { return };
    tch::manual_seed(3);
    let cfg = ModelConfig {
        arch: Arch::Resnet32,
        head: Head::Linear,
        stem: Stem::Small,
        bilateral: false,
        init: None,
    };
    let model = Model::new(&cfg, 10, tch::Device::Cpu).unwrap();
    // move the BatchNorm statistics away from 0/1 so that eval mode exercises them
    let x = tch::Tensor::randn([16, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let _ = model.forward(&x, true);
    let input = tch::Tensor::randn([4, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let logits = tch::no_grad(|| model.forward(&input, false));
    let dir = tempfile::tempdir().unwrap();
    model.save(&dir.path().join("m.safetensors")).unwrap();
    save_tensors(
        &dir.path().join("io.safetensors"),
        &[("input".into(), input), ("logits".into(), logits)],
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/load_safetensors.py");
    let out = std::process::Command::new(py)
        .arg(script)
        .arg(dir.path().join("m.safetensors"))
        .arg(dir.path().join("io.safetensors"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let diff: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(diff < 1e-4, "max abs logit difference {diff}");
    // and back: the file loads into a fresh model
    let mut again = Model::new(&cfg, 10, tch::Device::Cpu).unwrap();
    again.load(&dir.path().join("m.safetensors")).unwrap();
}

fn tiny_train_config(epochs: usize, lr: f64) -> TrainConfig {
    let mut t: TrainConfig = autosampler::config::parse_toml("", "inline").unwrap();
    t.epochs = epochs;
    t.batch_size = 4;
    t.lr = lr;
    t.warmup_epochs = 1;
    t.threads = 1;
    t
}

#[test]
fn nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint() {
    let _rng = torch_rng();
    let (_caches, ds) = folder_dataset(1);
    let run = tempfile::tempdir().unwrap();
    let m = resnet8();
    let e = stage1::train(
        &ds,
        &m,
        &tiny_train_config(50, 1e9),
        &RunDir::new(run.path()),
        false,
        &Silent,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("the loss is") && e.contains("training stopped"), "{e}");
    let state: stage1::State =
        autosampler::fsx::read_json(&run.path().join("stage1/state.json")).unwrap_or_default();
    assert!(!state.done);
    if state.epochs_done > 0 {
        assert!(run.path().join("stage1/last.safetensors").is_file());
        assert!(e.contains("the last good checkpoint is kept in"), "{e}");
    } else {
        // no epoch ended: the message does not promise a checkpoint it did not write
        assert!(e.contains("there is no checkpoint to keep"), "{e}");
    }
    // starting again without --resume is refused when a stage 1 is there
    if state.epochs_done > 0 {
        let e = stage1::train(
            &ds,
            &m,
            &tiny_train_config(50, 0.1),
            &RunDir::new(run.path()),
            false,
            &Silent,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--resume"), "{e}");
    }
}

#[test]
fn training_learns_the_fixture_and_evaluates() {
    let _rng = torch_rng();
    let (_caches, ds) = folder_dataset(0);
    let run = tempfile::tempdir().unwrap();
    let m = resnet8();
    let mut t = tiny_train_config(30, 0.05);
    t.augment = Some(Augment::None);
    let (_, state) = stage1::train(&ds, &m, &t, &RunDir::new(run.path()), false, &Silent).unwrap();
    assert!(state.done && state.epochs_done == 30);
    let last = state.history.last().unwrap();
    // 12 synthetic images whose colours identify the class: memorised after 30 epochs
    assert!(last.train_loss < state.history[0].train_loss);
    let r = stage1::evaluate_run(&ds, &m, &t, &RunDir::new(run.path()), &Alone).unwrap();
    assert_eq!(r.last.test.n, 3);
    let lines = std::fs::read_to_string(run.path().join("stage1/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 30);
}

#[test]
fn resume_with_another_training_config_is_refused() {
    let _rng = torch_rng();
    let caches = tempfile::tempdir().unwrap();
    let c = cfg(
        SourceConfig::new(Format::ImageFolder, fixtures().join("folder")),
        holdout(1),
    );
    let ds = Dataset::prepare(&c, caches.path(), &no_progress).unwrap();
    let run = tempfile::tempdir().unwrap();
    let m = ModelConfig {
        arch: Arch::Resnet8,
        head: Head::Linear,
        stem: Stem::Small,
        bilateral: false,
        init: None,
    };
    stage1::train(
        &ds,
        &m,
        &tiny_train_config(1, 0.05),
        &RunDir::new(run.path()),
        false,
        &Silent,
    )
    .unwrap();
    // the same config resumes (nothing left to do), another one is refused
    let mut t = tiny_train_config(1, 0.05);
    t.threads = 2;
    stage1::train(&ds, &m, &t, &RunDir::new(run.path()), true, &Silent).unwrap();
    let e = stage1::train(
        &ds,
        &m,
        &tiny_train_config(1, 0.01),
        &RunDir::new(run.path()),
        true,
        &Silent,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("another [model] or [train] config"), "{e}");
    // the message names the key that differs, with both values
    assert!(e.contains("[train] lr = 0.05 when started, 0.01 now"), "{e}");
    // a stage 1 is resumed in the precision it started with: `auto` takes it, another is refused
    let started = stage1::TrainConfig::default().precision().on(tch::Device::Cpu);
    let other = if started == Precision::Bf16 {
        Precision::Fp32
    } else {
        Precision::Bf16
    };
    let mut p = tiny_train_config(1, 0.05);
    p.precision = Some(other);
    let e = stage1::train(&ds, &m, &p, &RunDir::new(run.path()), true, &Silent)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!(
            "was started with [train] precision = \"{}\"",
            started.name()
        )) && e.contains("autosampler run --config <config> --out <new folder>"),
        "{e}"
    );
    p.precision = Some(started);
    stage1::train(&ds, &m, &p, &RunDir::new(run.path()), true, &Silent).unwrap();
}

/// Every config shipped in configs/ parses (unknown keys are errors) and its data profile,
/// mixing and schedule are valid.
#[test]
fn every_shipped_config_parses() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs"),
        &mut files,
    );
    assert!(files.len() >= 80, "{} configs", files.len());
    for f in files {
        // a config may read a model another shipped config's run writes under runs/, or weights
        // a user converts into configs/large/weights/ (absent on a clean checkout): only those
        // errors are let through, and the rest is still checked
        let c = match autosampler::config::Config::load(&f) {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                assert!(
                    (e.contains("no such file (a model.safetensors") && e.contains("/runs/"))
                        || (e.contains("[model] init = ") && e.contains("configs/large/weights/")),
                    "{e}"
                );
                autosampler::config::Config::load_unchecked(&f).unwrap_or_else(|e| panic!("{e}"))
            }
        };
        c.data
            .split
            .longtail
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if let Some(t) = &c.train {
            t.mix.validate().unwrap();
            if let autosampler::train::schedule::Schedule::Step { milestones, factors } = &t.schedule {
                assert_eq!(milestones.len(), factors.len(), "{}", f.display());
            }
            if let Some(d) = &t.drw {
                assert!(d.start_epoch < t.epochs, "{}", f.display());
            }
        }
    }
}

/// Copies stage 1's files at the end of epochs 1 and 2 (what a kill would have left on disk).
struct Snapshots {
    run: PathBuf,
    into: PathBuf,
}

impl autosampler::train::stage1::Progress for Snapshots {
    fn epoch_start(&self, _: usize, _: usize, _: usize) {}
    fn batch(&self, _: f64) {}
    fn epoch_end(&self, log: &autosampler::train::stage1::EpochLog) {
        for f in ["state.json", "last.safetensors", "best.safetensors"] {
            std::fs::copy(
                self.run.join("stage1").join(f),
                self.into.join(format!("e{}-{f}", log.epoch)),
            )
            .unwrap();
        }
    }
}

/// Defect "a kill between checkpoint writes silently changes a resumed run": epoch 2's
/// checkpoint on disk next to epoch 1's state.json (a kill after the checkpoint's rename) used to
/// resume epoch 2's weights as epoch 1 and train an epoch twice. The checkpoint now carries its
/// own state: the resumed run ends with the uninterrupted run's bytes.
#[test]
fn a_kill_between_checkpoint_and_state_resumes_to_the_same_bytes() {
    let _rng = torch_rng();
    use autosampler::train::stage1::{self, Silent};
    let (_caches, ds) = folder_dataset(0);
    let m = resnet8();
    let t = tiny_train_config(3, 0.05);
    let full = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    let progress = Snapshots {
        run: full.path().to_path_buf(),
        into: snaps.path().to_path_buf(),
    };
    let (_, done) = stage1::train(&ds, &m, &t, &RunDir::new(full.path()), false, &progress).unwrap();
    // the folder as a kill after epoch 2's checkpoint and before its state.json left it
    let killed = tempfile::tempdir().unwrap();
    let s1 = killed.path().join("stage1");
    std::fs::create_dir_all(&s1).unwrap();
    std::fs::copy(full.path().join("stage1/config.json"), s1.join("config.json")).unwrap();
    std::fs::copy(snaps.path().join("e1-state.json"), s1.join("state.json")).unwrap();
    std::fs::copy(
        snaps.path().join("e2-last.safetensors"),
        s1.join("last.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        snaps.path().join("e2-best.safetensors"),
        s1.join("best.safetensors"),
    )
    .unwrap();
    let (_, resumed) = stage1::train(&ds, &m, &t, &RunDir::new(killed.path()), true, &Silent).unwrap();
    assert_eq!(resumed.epochs_done, 3);
    assert_eq!(resumed.history.len(), 3, "an epoch was trained twice");
    assert_eq!(resumed.best_epoch, done.best_epoch);
    let losses = |s: &stage1::State| {
        s.history
            .iter()
            .map(|l| (l.train_loss, l.val_top1))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&resumed), losses(&done));
    let bytes = |d: &Path| std::fs::read(d.join("stage1/model.safetensors")).unwrap();
    assert!(
        bytes(killed.path()) == bytes(full.path()),
        "the resumed model differs"
    );
}

/// Defect "features are done when the file exists": a truncated features file blocked every later
/// stage until deleted by hand; now it is extracted again.
#[test]
fn truncated_features_are_extracted_again() {
    let _rng = torch_rng();
    use autosampler::features;
    let (_caches, ds) = folder_dataset(1);
    let run = tempfile::tempdir().unwrap();
    let model =
        autosampler::model::Model::new(&resnet8(), ds.split.num_classes() as i64, tch::Device::Cpu).unwrap();
    let extract = || {
        features::extract_all(
            &model,
            &ds,
            &RunDir::new(run.path()),
            &Normalize::CIFAR10,
            1,
            Fast::PLAIN,
            &Alone,
        )
        .unwrap()
    };
    extract();
    let p = RunDir::new(run.path()).features(Part::Train);
    let whole = std::fs::read(&p).unwrap();
    std::fs::write(&p, &whole[..whole.len() / 2]).unwrap();
    assert!(features::load(&RunDir::new(run.path()), Part::Train).is_err());
    extract();
    assert_eq!(std::fs::read(&p).unwrap(), whole);
}

/// Defect "the packed cache is trusted blindly": a flipped label byte changed results silently,
/// and a label out of range dropped images silently. Both are errors at open now, naming the file
/// and saying how to rebuild.
#[test]
fn a_damaged_cache_is_refused_at_open() {
    let (_caches, ds) = folder_dataset(1);
    let dir = ds.cache.dir.clone();
    let labels = dir.join("train.labels");
    let good = std::fs::read(&labels).unwrap();
    Cache::open(&dir).unwrap();
    // a flipped label byte: the recorded checksum no longer matches
    let mut bad = good.clone();
    bad[0] ^= 1;
    std::fs::write(&labels, &bad).unwrap();
    let e = Cache::open(&dir).err().unwrap().to_string();
    assert!(
        e.contains("train.labels") && e.contains("damaged") && e.contains("rebuild"),
        "{e}"
    );
    // a cache without checksums (built before they were recorded) still gets the label range check
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    for p in meta["pools"].as_array_mut().unwrap() {
        let p = p.as_object_mut().unwrap();
        p.remove("labels_sha256");
        p.remove("boxes_sha256");
    }
    let stripped = serde_json::to_string_pretty(&meta).unwrap();
    std::fs::write(dir.join("meta.json"), stripped).unwrap();
    let mut out_of_range = good.clone();
    out_of_range[..4].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&labels, &out_of_range).unwrap();
    let e = Cache::open(&dir).err().unwrap().to_string();
    assert!(e.contains("image 0 has label 99"), "{e}");
    std::fs::write(&labels, &good).unwrap();
    Cache::open(&dir).unwrap();
}

/// Defect "flipped pixel bytes change results silently": the pixels' SHA-256 is recorded when
/// the cache is built and checked on demand (`Cache::verify`, `autosampler data verify`).
#[test]
fn flipped_pixels_are_found_by_verify() {
    let (_caches, ds) = folder_dataset(1);
    let dir = ds.cache.dir.clone();
    assert_eq!(ds.cache.verify().unwrap(), 12 + 3);
    drop(ds);
    let images = dir.join("train.images");
    let mut px = std::fs::read(&images).unwrap();
    px[100] ^= 1;
    std::fs::write(&images, &px).unwrap();
    // the cheap check at open does not read the pixels; verify does
    let cache = Cache::open(&dir).unwrap();
    let e = cache.verify().err().unwrap().to_string();
    assert!(
        e.contains("train.images") && e.contains("damaged") && e.contains("rebuild"),
        "{e}"
    );
}

/// A patch agent small enough for the 16 px fixture: 8 px patches, batch 2, GRUs of width 8.
fn tiny_agent_config(epochs: [usize; 3]) -> autosampler::agent::AgentConfig {
    autosampler::agent::AgentConfig {
        image_size: Some(16),
        patch_size: Some(8),
        epochs,
        batch_size: 2,
        hidden: 8,
        threads: 1,
        ..Default::default()
    }
}

/// Defect "the agent's checkpoints have the same window": epoch 2's agent checkpoint beside
/// epoch 1's state.json (a kill after the checkpoint's rename) resumed epoch 2's weights as epoch 1
/// and trained an epoch twice. The agent's checkpoint now carries its own state.
#[test]
fn an_agent_killed_between_checkpoint_and_state_resumes_to_the_same_bytes() {
    let _rng = torch_rng();
    use autosampler::agent::train::{self as agent_train, AgentLog};
    use autosampler::train::stage1::Silent;
    let (_caches, ds) = folder_dataset(1);
    let cfg = tiny_agent_config([1, 1, 1]);
    let full = tempfile::tempdir().unwrap();
    let snaps = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0);
    let snapshot = |_: &AgentLog| {
        n.set(n.get() + 1);
        for f in ["state.json", "last.safetensors"] {
            std::fs::copy(
                full.path().join(f),
                snaps.path().join(format!("e{}-{f}", n.get())),
            )
            .unwrap();
        }
    };
    agent_train::train(&ds, &cfg, full.path(), false, &Silent, &snapshot).unwrap();
    assert_eq!(n.get(), 3);
    let killed = tempfile::tempdir().unwrap();
    std::fs::copy(full.path().join("config.json"), killed.path().join("config.json")).unwrap();
    std::fs::copy(
        snaps.path().join("e1-state.json"),
        killed.path().join("state.json"),
    )
    .unwrap();
    std::fs::copy(
        snaps.path().join("e2-last.safetensors"),
        killed.path().join("last.safetensors"),
    )
    .unwrap();
    let trained = std::cell::Cell::new(0);
    let count = |_: &AgentLog| trained.set(trained.get() + 1);
    agent_train::train(&ds, &cfg, killed.path(), true, &Silent, &count).unwrap();
    assert_eq!(trained.get(), 1, "only epoch 3 was left to train");
    let state: autosampler::agent::train::AgentState =
        autosampler::fsx::read_json(&killed.path().join("state.json")).unwrap();
    assert_eq!(state.history.len(), 3, "an epoch was trained twice");
    let bytes = |d: &Path| std::fs::read(d.join("agent.safetensors")).unwrap();
    assert!(
        bytes(killed.path()) == bytes(full.path()),
        "the resumed agent differs"
    );
}

/// `[agent] group` and `reward` reach PPO and nothing else: from one seed, stage 1 (the
/// encoders) gives the same bytes whatever they are, and each changes the policy PPO learns. The
/// `alone` reward is a confidence (in [0, 1]); GFNet's gain is a difference of two.
#[test]
fn agent_group_and_reward_change_only_the_policy() {
    let _rng = torch_rng();
    use autosampler::agent::train as agent_train;
    use autosampler::agent::{Agent, AgentConfig, Reward};
    use autosampler::train::stage1::Silent;
    let (_caches, ds) = folder_dataset(1);
    let base = tiny_agent_config([1, 1, 0]);
    let train = |cfg: &AgentConfig| {
        let dir = tempfile::tempdir().unwrap();
        let logs = std::cell::RefCell::new(Vec::new());
        let keep = |l: &agent_train::AgentLog| logs.borrow_mut().push(l.clone());
        let agent = agent_train::train(&ds, cfg, dir.path(), false, &Silent, &keep).unwrap();
        (agent, logs.into_inner())
    };
    let group = |a: &Agent, g: &str| -> Vec<Vec<f32>> {
        a.state_dict()
            .into_iter()
            .filter(|(n, _)| n.starts_with(g))
            .map(|(_, t)| t.reshape([-1]).try_into().unwrap())
            .collect()
    };
    let (plain, _) = train(&base);
    let (grouped, _) = train(&AgentConfig {
        group: 3,
        ..base.clone()
    });
    let (alone, logs) = train(&AgentConfig {
        reward: Reward::Alone,
        ..base.clone()
    });
    for other in [&grouped, &alone] {
        assert_eq!(group(&plain, "global."), group(other, "global."));
        assert_eq!(group(&plain, "clf."), group(other, "clf."));
        assert_ne!(group(&plain, "policy."), group(other, "policy."));
    }
    let ppo = logs.iter().find(|l| l.stage == 2).unwrap();
    assert_eq!(ppo.reward.len(), 2);
    assert!(
        ppo.reward.iter().all(|r| (0.0..=1.0).contains(r)),
        "{:?}",
        ppo.reward
    );
}

/// Defect "a full disk prints a Debug-formatted `IoError(Os {…})`": tensors are serialised in
/// memory and written by the atomic writer, whose errors name the file and the OS's reason. The
/// bytes are those tch writes, and a failed write leaves nothing behind.
#[test]
fn tensors_are_written_as_tch_writes_them_and_errors_name_the_file() {
    use tch::Tensor;
    let dir = tempfile::tempdir().unwrap();
    let tensors = vec![
        (
            "b.weight".to_string(),
            Tensor::from_slice(&[1.5f32, -2.0, 3.25]).reshape([3, 1]),
        ),
        ("a.count".to_string(), Tensor::from_slice(&[7i64])),
        ("state".to_string(), Tensor::from_slice(b"{\"x\":1}".as_slice())),
    ];
    let ours = dir.path().join("ours.safetensors");
    autosampler::model::save_tensors(&ours, &tensors).unwrap();
    let theirs = dir.path().join("theirs.safetensors");
    Tensor::write_safetensors(&tensors, &theirs).unwrap();
    assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"").unwrap();
    let e = autosampler::model::save_tensors(&blocked.join("m.safetensors"), &tensors)
        .err()
        .unwrap()
        .to_string();
    assert!(
        !e.contains("Os {") && e.contains(&format!("{}: File exists (os error 17)", blocked.display())),
        "{e}"
    );
}

/// A stage 1 started before `precision` existed (its `stage1/config.json` and its manifest's
/// `train` input, taken from a committed 200-epoch run folder) keeps its fingerprint under a
/// config that leaves precision and layout to their defaults, and resolves to the fp32 it ran in;
/// asking it for bf16 is refused, naming the command that starts a new run.
#[test]
fn a_stage1_started_before_precision_keeps_its_fingerprint_and_its_fp32() {
    let recorded = r#"{"epochs":200,"batch_size":128,"lr":0.1,"momentum":0.9,"nesterov":false,"weight_decay":0.0002,"warmup_epochs":5,"schedule":{"kind":"step","milestones":[160,180],"factors":[0.01,0.0001]},"loss":{"kind":"ce","label_smoothing":0.0},"drw":null,"sampler":{"kind":"instance"},"replacement":false,"mix":{"kind":"agent-cutmix","prob":0.7,"tau":0.5,"fixed_lambda":null,"per_batch":false},"augment":null,"normalize":{"mean":[0.4914,0.4822,0.4465],"std":[0.247,0.2435,0.2616]},"threads":0,"device":"","channels_last":true,"bf16":false,"seed":0,"method":"standard"}"#;
    let run = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(run.path().join("stage1")).unwrap();
    let model = r#"{"arch":"resnet32","head":"linear","stem":"small","bilateral":false}"#;
    std::fs::write(
        run.path().join("stage1/config.json"),
        format!(r#"{{"model":{model},"train":{recorded}}}"#),
    )
    .unwrap();
    // the same [train] as a user writes it now: precision and channels_last left out
    let mut now: TrainConfig = serde_json::from_str(recorded).unwrap();
    (now.precision, now.bf16, now.channels_last) = (None, None, None);
    (now.device, now.threads) = ("cpu".into(), 2);
    let resolved = now.resolved(&RunDir::new(run.path())).unwrap();
    assert_eq!(resolved.precision(), Precision::Fp32);
    assert!(resolved.channels_last());
    assert_eq!(
        serde_json::to_string(&stage1::started_config(&resolved)).unwrap(),
        recorded
    );
    // an explicit precision that differs is refused; the recorded one is accepted
    now.precision = Some(Precision::Bf16);
    let e = now.resolved(&RunDir::new(run.path())).unwrap_err().to_string();
    assert!(
        e.contains("was started with [train] precision = \"fp32\" and this config asks for \"bf16\"")
            && e.contains("autosampler run --config <config> --out <new folder>"),
        "{e}"
    );
    now.precision = Some(Precision::Fp32);
    assert_eq!(
        serde_json::to_string(&stage1::started_config(
            &now.resolved(&RunDir::new(run.path())).unwrap()
        ))
        .unwrap(),
        recorded
    );
    // a new folder takes the device's fastest: bf16 where native, channels-last
    let fresh = tempfile::tempdir().unwrap();
    now.precision = None;
    let r = now.resolved(&RunDir::new(fresh.path())).unwrap();
    assert_eq!(r.bf16_on(), autosampler::precision::native_bf16(tch::Device::Cpu));
    assert!(r.channels_last());
}

/// `predict` on an image of another size than an exact-resize model takes: the message names the
/// file and what to do with the image, not the data stage's `resize` key, which predict has not.
#[test]
fn predict_on_a_wrong_sized_image_says_to_resize_the_image() {
    use autosampler::export::{inputs, ModelCard, FORMAT};
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.png");
    image::RgbImage::new(16, 12).save(&f).unwrap();
    let card = ModelCard {
        format: FORMAT.into(),
        model: resnet8(),
        classes: vec!["a".into(), "b".into()],
        input_size: 8,
        resize: Resize::Exact,
        normalize: Normalize::CIFAR10,
        classifier: "stage 1".into(),
        run: "r".into(),
    };
    let e = inputs(&card, std::slice::from_ref(&f)).unwrap_err().to_string();
    assert!(
        e.contains("big.png") && e.contains("image is 16×12") && e.contains("resize it to 8×8 first"),
        "{e}"
    );
    assert!(!e.contains("set `resize"), "{e}");
    // an 8×8 image is read
    image::RgbImage::new(8, 8).save(&f).unwrap();
    assert_eq!(inputs(&card, &[f]).unwrap().size(), [1, 3, 8, 8]);
}

/// Defect "a huge image with `resize = "exact"` is fully decoded before its size is refused":
/// the size comes from the header. A PNG cut in the middle of its pixel data (it claims
/// 4000 × 3000 and cannot be decoded) is refused for its size, which only the header can have said.
#[test]
fn an_image_of_the_wrong_size_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.png");
    image::RgbImage::new(4000, 3000).save(&f).unwrap();
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = autosampler::data::decode::decode_file(&f, 16, Resize::Exact)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("big.png") && e.contains("image is 4000×3000: expected 16×16"),
        "{e}"
    );
    // with a resize policy the whole image is needed, and the cut file is a decoding error
    let e = autosampler::data::decode::decode_file(&f, 16, Resize::Stretch)
        .unwrap_err()
        .to_string();
    assert!(e.contains("big.png") && !e.contains("4000×3000"), "{e}");
}

/// The config reference (docs/config-reference.md) lists every key that any shipped config
/// resolves to, in its section: a key added to a config section without a line in the reference
/// fails here.
#[test]
fn the_config_reference_lists_every_key_of_every_shipped_config() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    fn keys(v: &toml::Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let here = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    keys(v, &here, out);
                }
            }
            _ => {
                out.insert(at.to_string());
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/config-reference.md")).unwrap();
    // the reference's sections: `## `[train]`` … up to the next `## `
    let section = |name: &str| -> &str {
        let head = format!("## `[{name}]`");
        let at = doc.find(&head).unwrap_or_else(|| panic!("no section {head}"));
        let rest = &doc[at + head.len()..];
        &rest[..rest.find("\n## ").unwrap_or(rest.len())]
    };
    let mut files = Vec::new();
    walk(&root.join("configs"), &mut files);
    let mut all = std::collections::BTreeSet::new();
    for f in files {
        let c = autosampler::config::Config::load_unchecked(&f).unwrap_or_else(|e| panic!("{e}"));
        keys(&toml::from_str(&c.to_toml()).unwrap(), "", &mut all);
    }
    assert!(all.len() >= 100, "{} keys", all.len());
    let mut missing = Vec::new();
    for k in &all {
        let (sec, key) = match k.split_once('.') {
            None => ("Top level", k.as_str()),
            Some(("data", rest)) if rest.starts_with("source.") => ("data.source", &rest["source.".len()..]),
            Some(("data", _)) => ("data.split", k.as_str()),
            Some((s, rest)) => (s, rest),
        };
        let text = if sec == "Top level" {
            &doc[doc.find("## Top level").unwrap()..doc.find("## `[data.source]`").unwrap()]
        } else {
            section(sec)
        };
        if !text.contains(&format!("`{key}`")) {
            missing.push(k.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "keys missing from docs/config-reference.md: {missing:?}"
    );
}

/// The smallest config with a `[train]` section (its data is never read: refusals come first).
const TRAIN: &str =
    "[data.source]\nformat = \"cifar10-bin\"\nroot = \"x\"\n[model]\narch = \"resnet8\"\n[train]\n";

/// The error a config text is refused with at load ("" when it loads).
fn load_error(toml: &str) -> String {
    autosampler::config::Config::parse(toml, "c.toml")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// [`load_error`] of the smallest config with `extra` in its `[train]`.
fn train_error(extra: &str) -> String {
    load_error(&format!("{TRAIN}{extra}"))
}

/// [`load_error`] of the smallest config with a class-balanced `[stage2]` and `extra` in it.
fn stage2_error(extra: &str) -> String {
    load_error(&format!(
        "{TRAIN}[stage2]\nsampler = {{ kind = \"class-balanced\" }}\n{extra}"
    ))
}

/// Bad input for the recipe's augmentations: Cutout larger than the image and AutoAugment beside
/// RandAugment are refused at load, naming the key.
#[test]
fn cutout_larger_than_the_image_and_two_policies_are_refused_at_load() {
    let parse = train_error;
    let e = parse("cutout = { size = 40 }\n");
    assert!(
        e.contains("[train] cutout.size = 40 is larger than the 32 px images"),
        "{e}"
    );
    let e = parse("cutout = { size = 0 }\n");
    assert!(e.contains("cutout.size"), "{e}");
    let e = parse("autoaugment = \"cifar10\"\nrandaugment = { ops = 2, magnitude = 9 }\n");
    assert!(e.contains("autoaugment and randaugment are both set"), "{e}");
    let e = parse("autoaugment = \"imagenet\"\n");
    assert!(e.contains("autoaugment") && e.contains("cifar10"), "{e}");
    assert_eq!(parse("autoaugment = \"cifar10\"\ncutout = { size = 16 }\n"), "");
}

/// Bad input for SAM: a zero, negative or NaN radius and SAM with BBN are refused at load, naming
/// the key and the value.
#[test]
fn sam_with_a_bad_radius_or_with_bbn_is_refused_at_load() {
    let parse = train_error;
    for (rho, shown) in [("0.0", "0"), ("-0.05", "-0.05"), ("nan", "NaN")] {
        let e = parse(&format!("sam = {{ rho = {rho} }}\n"));
        assert!(
            e.contains(&format!(
                "[train.sam] rho must be a finite number > 0, got {shown}"
            )),
            "{e}"
        );
    }
    let e = parse("method = \"bbn\"\nsam = { rho = 0.05 }\n");
    assert!(e.contains("[train.sam] with method = \"bbn\""), "{e}");
    let e = parse("sam = { rho = 0.05, adaptiv = true }\n");
    assert!(e.contains("adaptiv"), "{e}");
    assert_eq!(parse("sam = { rho = 0.05 }\n"), "");
    assert_eq!(parse("sam = { rho = 1.0, adaptive = true }\n"), "");
}

/// Bad input for stage 2's weight balancing: a negative weight decay, a MaxNorm t outside [0, 1],
/// MaxNorm from a zero classifier or on the images path are refused at load, naming the key.
#[test]
fn stage2_weight_decay_and_max_norm_out_of_range_are_refused_at_load() {
    let parse = stage2_error;
    let e = parse("weight_decay = -0.1\n");
    assert!(
        e.contains("[stage2] weight_decay must be a finite number ≥ 0, got -0.1"),
        "{e}"
    );
    let e = parse("max_norm = 1.5\n");
    assert!(e.contains("[stage2] max_norm must be in [0, 1], got 1.5"), "{e}");
    let e = parse("max_norm = 0.1\nreinit = true\n");
    assert!(e.contains("[stage2] max_norm = 0.1 with reinit = true"), "{e}");
    let e = parse("max_norm = 0.1\npath = \"images\"\n");
    assert!(
        e.contains("[stage2] max_norm = 0.1 with path = \"images\""),
        "{e}"
    );
    assert_eq!(parse("weight_decay = 0.1\nmax_norm = 0.1\nlr = 0.01\n"), "");
}

/// Bad input for label-aware smoothing: ε outside [0, 1), an unknown shape or key are refused at
/// load, naming the key and the value.
#[test]
fn stage2_label_aware_smoothing_out_of_range_is_refused_at_load() {
    let parse = stage2_error;
    let e = parse("label_aware_smoothing = { head = 1.2, tail = 0.0 }\n");
    assert!(
        e.contains("[stage2.label_aware_smoothing] head must be in [0, 1), got 1.2"),
        "{e}"
    );
    let e = parse("label_aware_smoothing = { head = 0.3, tail = -0.1 }\n");
    assert!(
        e.contains("[stage2.label_aware_smoothing] tail must be in [0, 1), got -0.1"),
        "{e}"
    );
    let e = parse("label_aware_smoothing = { head = 0.3, tail = 0.0, shape = \"round\" }\n");
    assert!(e.contains("round") && e.contains("concave"), "{e}");
    let e = parse("label_aware_smoothing = { head = 0.3 }\n");
    assert!(e.contains("tail"), "{e}");
    assert_eq!(
        parse("label_aware_smoothing = { head = 0.3, tail = 0.0, shape = \"convex\" }\n"),
        ""
    );
}
