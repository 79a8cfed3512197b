#!/usr/bin/env python3
"""`torch_reference.py train` with a checkpoint after every epoch, so a run longer than a working
session (200 epochs on a 2-core CPU take about 4 hours) can be killed and resumed.

Everything but the training function is the reference's own code, imported from it (data loading,
the long-tailed split, the network, augmentation, evaluation, the argument parser and the JSON it
writes). Its training function is copied here (the learning-rate rule is a closure inside it), plus
one checkpoint per epoch (weights, optimiser, the generator that draws the
permutations and augmentations, step and image counters, training seconds so far), written to a
temporary name and renamed. A resumed run is the uninterrupted run: the reference's RNG use after
the model's initialisation is the generator alone, and its state is restored.

  python bench/torch_reference_resumable.py --checkpoint runs/ref/ckpt.pt -- \
      train --data DIR --ir 100 --epochs 200 --schedule step --seed 0 --out ref.json
  # killed? the same command resumes at the epoch after the last checkpoint

`--stop-after N` ends the process after epoch N's checkpoint (used to test a resume).
"""
import argparse, importlib.util, json, math, os, random, sys, time

here = os.path.dirname(os.path.abspath(__file__))


def load_reference(path):
    spec = importlib.util.spec_from_file_location("torch_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def train(ref, args, checkpoint, stop_after):
    torch, np, F = ref.torch, ref.np, ref.F
    torch.set_num_threads(args.threads)
    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
    device = torch.device(args.device)
    xtr_all, ytr_all, classes = ref.load_folder(os.path.join(args.data, "train"))
    xte, yte, _ = ref.load_folder(os.path.join(args.data, "test"))
    tr, va, counts = ref.long_tail(xtr_all, ytr_all, args.ir, args.seed, args.val_per_class)
    xtr, ytr = xtr_all[tr], ytr_all[tr]
    model = ref.ResNetCifar(32, len(classes)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    steps_per_epoch = math.ceil(len(xtr) / args.batch)
    total = steps_per_epoch * args.epochs
    warm = steps_per_epoch * min(5, args.epochs)
    gen = torch.Generator().manual_seed(args.seed)

    def lr_at(step):  # the reference's rule, unchanged
        if step < warm:
            return args.lr * (step + 1) / warm
        if args.schedule == "step":
            epoch = step // steps_per_epoch
            return args.lr * (1e-4 if epoch >= 180 * args.epochs // 200 else 1e-2 if epoch >= 160 * args.epochs // 200 else 1.0)
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    # what must match for a checkpoint to be resumed: every argument that changes the run
    key = {k: getattr(args, k) for k in ("data", "ir", "epochs", "batch", "lr", "wd", "seed", "val_per_class", "schedule")}
    start, step, seen, wall_before = 0, 0, 0, 0.0
    if os.path.exists(checkpoint):
        ck = torch.load(checkpoint, map_location=device, weights_only=False)
        if ck["key"] != key:
            sys.exit(f"error: {checkpoint} was written by a run with other arguments: {ck['key']} (now {key}); "
                     "remove it or pass another --checkpoint")
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); gen.set_state(ck["gen"])
        start, step, seen, wall_before = ck["epoch"], ck["step"], ck["seen"], ck["wall_s"]
        print(f"resumed from {checkpoint} after epoch {start}", flush=True)

    t0 = time.perf_counter()
    for epoch in range(start, args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen).numpy()
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            xb = ref.augment(xtr[idx], gen).to(device)
            yb = torch.from_numpy(ytr[idx]).to(device)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            step += 1; seen += len(idx)
        wall = wall_before + time.perf_counter() - t0
        tmp = checkpoint + ".tmp"
        torch.save({"key": key, "model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "epoch": epoch + 1, "step": step, "seen": seen, "wall_s": wall}, tmp)
        os.replace(tmp, checkpoint)
        print(f"epoch {epoch + 1}/{args.epochs} {wall:.0f}s", flush=True)
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < args.epochs:
            print(f"stopped after epoch {epoch + 1} (--stop-after)", flush=True)
            sys.exit(3)
    wall = wall_before + time.perf_counter() - t0
    res = {"torch": torch.__version__, "device": str(device), "ir": args.ir, "epochs": args.epochs,
           "schedule": args.schedule,
           "seed": args.seed, "train_counts": counts, "train_size": int(len(xtr)),
           "train_wall_s": round(wall, 1), "train_img_per_s": round(seen / wall, 1) if wall > 0 else None,
           "val": ref.evaluate(model, xtr_all[va], ytr_all[va], counts, device) if len(va) else None,
           "test": ref.evaluate(model, xte, yte, counts, device),
           "resumable": True}
    print(json.dumps({k: v for k, v in res.items() if k not in ("val",)} | {"test_top1": res["test"]["top1"]}))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the checkpoint file (written after every epoch, read at start)")
    p.add_argument("--stop-after", type=int, help="exit (status 3) after this epoch's checkpoint")
    p.add_argument("--reference", default=os.path.join(here, "../../shared/bench/torch_reference.py"))
    a, rest = p.parse_known_args()
    rest = [x for x in rest if x != "--"]
    if not rest or rest[0] != "train":
        sys.exit("error: expected `-- train ARGS` (the reference's train arguments) after the wrapper's options")
    ref = load_reference(a.reference)
    # the reference's own argument parser, so its defaults and names are the reference's
    argv, sys.argv = sys.argv, [a.reference] + rest
    real_train = ref.train
    ref.train = lambda args: train(ref, args, a.checkpoint, a.stop_after)
    try:
        ref.main()
    finally:
        sys.argv, ref.train = argv, real_train


if __name__ == "__main__":
    main()
