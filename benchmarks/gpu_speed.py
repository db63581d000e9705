"""fmnist.fit against PyTorch at its best on the same device, per steady epoch; and time to accuracy.

Nets (the torch ones are built layer for layer after fmnist's models.py, parameter counts asserted equal):
  mlp  the seed model: Rescaling, Flatten, Dense 128 relu, Dense 10;
  cnn  ModelSpec(arch="cnn"): two blocks conv3x3 (no bias), BatchNorm, relu, 2x2 max pool (32, 64), Dense 128;
  vgg  ModelSpec(arch="vgg", conv_filters=(32, 64, 128)): 5 convs, global max pool, Dense 10.
All train with Adam (lr 1e-3, epsilon 1e-7 as Keras), sparse cross-entropy, on uint8 images already on
the device, scaled to 0-1 inside the net. Trainers:
  fmnist          fmnist.fit (compiled chunks of steps; --chunk-steps tries other chunk sizes)
  torch-compiled  torch.compile(net + loss, mode="reduce-overhead"): CUDA graphs; backward and a fused Adam outside
  torch-graphed   the whole step (gather, forward, backward, Adam with capturable=True) captured by hand with
                  torch.cuda.CUDAGraph around a torch.compile'd net: one launch a step (CUDA only)
  torch-eager     the same net, step by step
Both sides: channels_last and cudnn.benchmark for torch, TF32 the same (--tf32, default on: JAX's default
matmul precision on a GPU and torch's "high"), the same images per epoch (whole batches only) and precision.
Each epoch is timed to a device sync; the steady epoch is the median of epochs 2..E; the first epoch's extra
time (compilation, CUDA graph capture, cudnn autotuning) is reported apart as compile_s.
``--budgets`` runs ``fmnist train --recipe R --time-budget S`` as a user would and reports the command's wall
clock and test accuracy (time to 94% / 95%). One JSON line per figure on stdout (and appended to --out),
each with the device's name, the date and the versions.

    python benchmarks/gpu_speed.py --platform gpu --models mlp,cnn,vgg --batches 128,512 --budgets 60
    JAX_PLATFORMS=cpu python benchmarks/gpu_speed.py --platform cpu --limit 600 --epochs 2   # a CPU dry run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPECS = {  # name -> keyword arguments of fmnist.models.ModelSpec
    "mlp": {},
    "cnn": {"arch": "cnn"},
    "vgg": {"arch": "vgg", "conv_filters": (32, 64, 128)},
}
TRAINERS = ("fmnist", "torch-compiled", "torch-graphed", "torch-eager")
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.01  # Keras' BatchNormalization defaults, in torch's terms (1 - 0.99)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--platform", choices=("cpu", "gpu"), default=None, help="JAX's and torch's device kind")
    p.add_argument("--models", default="mlp,cnn,vgg")
    p.add_argument("--batches", default="128,512")
    p.add_argument("--trainers", default=",".join(TRAINERS), help="any of " + ", ".join(TRAINERS))
    p.add_argument("--epochs", type=int, default=5, help="epochs per fit: the first compiles, the rest are timed")
    p.add_argument("--limit", type=int, default=None, help="train on the first N images (a dry run)")
    p.add_argument("--chunk-steps", default="", help="fmnist only: also time these chunk sizes, e.g. 16,64,256")
    p.add_argument("--precision", choices=("float32", "mixed"), default="float32")
    p.add_argument("--tf32", choices=("on", "off"), default="on")
    p.add_argument("--budgets", default="", help="time budgets (s) of `fmnist train --recipe R`, e.g. 60,300")
    p.add_argument("--recipes", default="best", help="recipes for --budgets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from fmnist import accelerator

    accelerator.select(args.platform)  # before anything starts JAX's backends
    # A fresh Inductor cache: compile_s is a cold compile, as on a fresh machine, not a disk-cache hit.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="gpu_speed_inductor_"))
    import jax
    import torch

    from fmnist import data

    on_gpu = accelerator.current_kind() == "gpu"
    dev = torch.device("cuda" if on_gpu else "cpu")
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("JAX sees a GPU but torch does not: install a CUDA build of torch")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    torch.set_float32_matmul_precision("high" if args.tf32 == "on" else "highest")
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if args.tf32 == "on" else "float32")

    (x, y), _ = data.load_data()
    x, y = (x[: args.limit], y[: args.limit]) if args.limit else (x, y)
    common = header(accelerator, torch, dev, args)
    emit(args.out, {**common, "what": "start", "argv": sys.argv[1:]})
    trainers = [t for t in args.trainers.split(",") if t and (t != "torch-graphed" or dev.type == "cuda")]
    for name in filter(None, args.models.split(",")):
        twins(name)
        for batch in map(int, filter(None, args.batches.split(","))):
            n = len(x) // batch * batch  # whole batches only, the same images per epoch on both sides
            xb, yb = x[:n], y[:n]
            figures = {}
            for trainer in trainers:
                chunks = [None] + [int(c) for c in args.chunk_steps.split(",") if c] if trainer == "fmnist" else [None]
                for chunk in chunks:
                    log(f"{name} batch {batch}: {trainer}{f' chunk {chunk}' if chunk else ''}")
                    if trainer == "fmnist":
                        seconds, params = fmnist_epochs(name, xb, yb, batch, args, chunk)
                    else:
                        seconds, params = torch_epochs(name, xb, yb, batch, args, trainer.split("-")[1], dev)
                    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
                    label = trainer if chunk is None else f"fmnist chunk {chunk}"
                    figures[label] = steady
                    emit(args.out, {**common, "what": "steady_epoch", "model": name, "batch": batch,
                                    "trainer": label, "images": n, "params": params,
                                    "steady_epoch_s": round(steady, 5), "compile_s": round(seconds[0] - steady, 3),
                                    "epochs_s": [round(s, 5) for s in seconds]})  # fmt: skip
            if "fmnist" in figures:
                ratios = {t: round(s / figures["fmnist"], 3) for t, s in figures.items() if t.startswith("torch")}
                emit(args.out, {**common, "what": "fmnist_speedup", "model": name, "batch": batch, "over": ratios})
    failed = 0
    for recipe in filter(None, args.recipes.split(",")):
        for budget in map(float, filter(None, args.budgets.split(","))):
            record = time_to_accuracy(recipe, budget, args)
            failed += "error" in record
            emit(args.out, {**common, **record})
    return 1 if failed else 0


# --------------------------------------------------------------------------- fmnist
def fmnist_epochs(name, x, y, batch, args, chunk_steps=None) -> tuple[list[float], dict]:
    import fmnist
    from fmnist import accelerator, models
    from fmnist._backend import keras

    class Timer(keras.callbacks.Callback):  # each epoch ends after its last chunk's loss is read: a device sync
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    keras.utils.set_random_seed(args.seed)
    with accelerator.precision_scope(args.precision):
        model = models.compile_model(models.build_model(models.ModelSpec(**SPECS[name])))
    timer = Timer()
    fmnist.fit(model, x, y, epochs=args.epochs, batch_size=batch, seed=args.seed, callbacks=[timer], verbose=0,
               chunk_steps=chunk_steps)  # fmt: skip
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    return timer.seconds, {"trainable": trainable, "other": model.count_params() - trainable}


# --------------------------------------------------------------------------- torch
def torch_net(name: str):
    """The torch twin of fmnist's ``build_model(ModelSpec(**SPECS[name]))``, layer for layer."""
    import torch

    nn = torch.nn

    class Pixels(nn.Module):  # Rescaling(1/255) and, for convs, the Reshape to one channel
        def __init__(self, image: bool):
            super().__init__()
            self.image = image

        def forward(self, x):
            x = x.float() * (1 / 255)
            return x.unsqueeze(1).contiguous(memory_format=torch.channels_last) if self.image else x.flatten(1)

    def conv_bn_relu(cin, cout):
        bn = nn.BatchNorm2d(cout, eps=BN_EPSILON, momentum=BN_MOMENTUM)
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), bn, nn.ReLU()]

    if name == "mlp":
        return nn.Sequential(Pixels(False), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "cnn":
        layers, cin, side = [Pixels(True)], 1, 28
        for f in (32, 64):
            layers += [*conv_bn_relu(cin, f), nn.MaxPool2d(2)]
            cin, side = f, side // 2
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * side * side, 128), nn.ReLU(), nn.Linear(128, 10))
    filters, layers, cin = SPECS["vgg"]["conv_filters"], [Pixels(True)], 1
    for i, f in enumerate(filters):
        for _ in range(1 if i == len(filters) - 1 else 2):
            layers += conv_bn_relu(cin, f)
            cin = f
        if i < len(filters) - 1:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


def twins(name: str) -> dict:
    """The parameter counts of fmnist's net and its torch twin, asserted equal (trainable, and BatchNorm's others)."""
    from fmnist import models

    model = models.build_model(models.ModelSpec(**SPECS[name]))
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    ours, theirs = {"trainable": trainable, "other": model.count_params() - trainable}, count(torch_net(name))
    assert ours == theirs, f"{name}: fmnist's net has {ours} parameters, the torch twin {theirs}"
    return ours


def count(net) -> dict:
    trainable = sum(p.numel() for p in net.parameters())
    other = sum(b.numel() for n, b in net.named_buffers() if not n.endswith("num_batches_tracked"))
    return {"trainable": trainable, "other": other}  # other: BatchNorm's moving mean and variance, as in Keras


def torch_epochs(name, x, y, batch, args, mode, dev) -> tuple[list[float], dict]:
    import torch
    import torch.nn.functional as F

    torch.compiler.reset()  # each net and batch compiles afresh (and never meets dynamo's recompile limit)
    torch.manual_seed(args.seed)
    net = torch_net(name).to(dev).to(memory_format=torch.channels_last)
    params = count(net)
    X, Y = torch.from_numpy(x).to(dev), torch.from_numpy(y.astype("int64")).to(dev)  # on the device, once
    cuda = dev.type == "cuda"
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7, **({"fused": True} if cuda else {"foreach": True}),
                           **({"capturable": True} if mode == "graphed" else {}))  # fmt: skip
    mixed = args.precision == "mixed"

    def loss_of(xb, yb):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):
            return F.cross_entropy(net(xb).float(), yb)

    if mode == "compiled":
        compiled = torch.compile(loss_of, mode="reduce-overhead")

        def step(idx):
            torch.compiler.cudagraph_mark_step_begin()
            loss = compiled(X[idx], Y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach().clone()  # a CUDA graph's output is overwritten by its next replay
    elif mode == "graphed":
        step = graphed_step(torch.compile(loss_of), opt, X, Y, batch)
    else:

        def step(idx):
            loss = loss_of(X[idx], Y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

    seconds, steps = [], len(x) // batch
    for _ in range(args.epochs):
        perm = torch.randperm(len(x), device=dev)
        start, total = time.perf_counter(), torch.zeros((), device=dev)
        for i in range(steps):
            total += step(perm[i * batch : (i + 1) * batch])
        float(total)  # the device sync that ends the epoch
        seconds.append(time.perf_counter() - start)
    return seconds, params


def graphed_step(loss_of, opt, X, Y, batch):
    """PyTorch's "whole network capture": warm up on a side stream, capture one step, then replay it."""
    import torch

    idx = torch.zeros(batch, dtype=torch.int64, device=X.device)  # static input: the batch's indices

    def body():
        loss = loss_of(X[idx], Y[idx])
        loss.backward()
        opt.step()
        return loss.detach()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compiles, autotunes and allocates outside the capture
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = body()

    def step(batch_idx):
        idx.copy_(batch_idx)
        graph.replay()
        return static_loss.clone()  # the next replay overwrites it

    return step


# --------------------------------------------------------------------------- time to accuracy
def time_to_accuracy(recipe: str, budget: float, args) -> dict:
    """``fmnist train --recipe R --time-budget S`` in a fresh process: its wall clock and test accuracy."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-m", "fmnist.cli", "train", "--recipe", recipe, "--time-budget", f"{budget:g}",
                   "--seed", str(args.seed), "--out", str(out)]  # fmt: skip
        command += ["--limit", str(args.limit)] if args.limit else []
        command += ["--platform", args.platform] if args.platform else []  # else the best there is, as fmnist's
        log(" ".join(command[1:]))
        start = time.perf_counter()
        done = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        sys.stderr.write(done.stderr)
        if done.returncode != 0:  # fmnist's one-line error (or a traceback's last line), recorded, not a figure
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return {"what": "time_to_accuracy", "recipe": recipe, "time_budget_s": budget, "error": why}
        metrics = json.loads((out / "metrics.json").read_text())
        config = json.loads((out / "config.json").read_text())
    accuracy = metrics["accuracy"]
    return {"what": "time_to_accuracy", "recipe": recipe, "time_budget_s": budget, "wall_s": round(wall, 1),
            "accuracy": accuracy, "accuracy_single_view": metrics.get("accuracy_single_view", accuracy),
            "steps": config.get("steps_run"), "limit": args.limit, "trained_on": config.get("device"),
            "reached": {"0.94": accuracy >= 0.94, "0.95": accuracy >= 0.95, "0.96": accuracy >= 0.96}}  # fmt: skip


# --------------------------------------------------------------------------- records
def header(accelerator, torch, dev, args) -> dict:
    import jax
    import jaxlib

    from fmnist._backend import keras

    torch_device = f"gpu: {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else accelerator.describe("cpu")
    return {"bench": "gpu_speed", "device": accelerator.describe(), "torch_device": torch_device,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                         "keras": keras.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                         "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
                         "fmnist": git_commit()},
            "tf32": args.tf32, "precision": args.precision}  # fmt: skip


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        return done.stdout.strip() or None
    except OSError:
        return None


def emit(path: Path | None, record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if path is not None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.exit(main())
