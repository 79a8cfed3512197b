#!/usr/bin/env python3
"""224 px training and inference of the ImageNet ResNets, autosampler beside torchvision, in one
run: the same network (torchvision's resnet18 / resnet50 and autosampler's, same parameter count),
batch, threads and precision on both sides; SGD (0.9, wd 1e-4), 3 warm-up steps, `--steps` timed
steps on random images and labels; inference on batches of `--infer-batch`. Each side runs in its
own process (so its peak memory is its own), alternately, `--repeats` times; medians. One JSON
line per (arch, precision): {"bench": "train_throughput", "arch", "image_size", "precision",
"train_ratio", "infer_ratio", peak memory of each}.

  eval "$(./x env)"; python bench/train_throughput_224.py --threads 2 --batch 32 --steps 5 \\
      --archs resnet18,resnet50 --precisions fp32,bf16
"""
import argparse, json, os, resource, statistics, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--infer-batch", type=int, default=32)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--repeats", type=int, default=1)
p.add_argument("--image-size", type=int, default=224)
p.add_argument("--classes", type=int, default=1000)
p.add_argument("--archs", default="resnet18,resnet50")
p.add_argument("--precisions", default="fp32,bf16")
p.add_argument("--device", default="cpu")
p.add_argument("--binary", default=os.path.join(here, "../target/release/bench-train-throughput"))
p.add_argument("--torch-side", help=argparse.SUPPRESS)  # internal: run torchvision's side here
a = p.parse_args()

if a.torch_side:
    import time, torch, torchvision
    arch, precision = a.torch_side.split(":")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    bf16 = precision == "bf16"
    model = getattr(torchvision.models, arch)(num_classes=a.classes).to(dev)
    cl = torch.channels_last
    model = model.to(memory_format=cl)  # what a PyTorch user turns on with bf16; fp32 too (faster here)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.image_size, a.image_size, device=dev).to(memory_format=cl)
    y = torch.randint(a.classes, (a.batch,), device=dev)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    ac = lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    def step():
        opt.zero_grad(set_to_none=True)
        with ac():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    for _ in range(3):
        step()
    sync(); t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(); train = a.steps * a.batch / (time.perf_counter() - t)
    model.eval()
    xi = torch.randn(a.infer_batch, 3, a.image_size, a.image_size, device=dev).to(memory_format=cl)
    with torch.no_grad(), ac():
        model(xi); sync(); t = time.perf_counter()
        for _ in range(a.steps):
            model(xi)
        sync(); infer = a.steps * a.infer_batch / (time.perf_counter() - t)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"train_img_per_s": round(train, 2), "infer_img_per_s": round(infer, 2), "params": params,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
    sys.exit(0)


def last_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


for arch in a.archs.split(","):
    for precision in a.precisions.split(","):
        ours, theirs = [], []
        for _ in range(a.repeats):
            ours.append(last_json([a.binary, "--arch", arch, "--image-size", str(a.image_size), "--classes", str(a.classes),
                                   "--batch", str(a.batch), "--infer-batch", str(a.infer_batch), "--steps", str(a.steps),
                                   "--threads", str(a.threads), "--device", a.device, "--precision", precision,
                                   "--channels-last", "true"]))
            theirs.append(last_json([sys.executable, __file__, "--torch-side", f"{arch}:{precision}",
                                     *[f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                                       if k in ("threads", "batch", "infer_batch", "steps", "image_size", "classes", "device")]]))
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        print(json.dumps({
            "bench": "train_throughput", "arch": arch, "image_size": a.image_size, "classes": a.classes,
            "precision": precision, "channels_last": True, "batch": a.batch, "infer_batch": a.infer_batch,
            "steps": a.steps, "threads": a.threads, "device": a.device, "repeats": a.repeats,
            "reference": f"torchvision {__import__('torchvision').__version__} models.{arch}",
            "autosampler_train_img_per_s": med(ours, "train_img_per_s"), "torch_train_img_per_s": med(theirs, "train_img_per_s"),
            "train_ratio": round(med(ours, "train_img_per_s") / med(theirs, "train_img_per_s"), 3),
            "autosampler_infer_img_per_s": med(ours, "infer_img_per_s"), "torch_infer_img_per_s": med(theirs, "infer_img_per_s"),
            "infer_ratio": round(med(ours, "infer_img_per_s") / med(theirs, "infer_img_per_s"), 3),
            "autosampler_peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
            "torch_peak_rss_mb": max(r["peak_rss_mb"] for r in theirs),
            "params": theirs[0]["params"]}), flush=True)
