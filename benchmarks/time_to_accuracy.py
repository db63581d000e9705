"""Time to accuracy: each recipe as a user runs it, test accuracy against wall-clock seconds.

For every recipe and seed, runs the whole command ``fmnist train --recipe NAME --seed S --out
DIR`` in a fresh process and measures its wall clock from spawn to exit (imports, data,
compilation, training, evaluation with the recipe's views, saving, report), then reads the
test accuracy from DIR/metrics.json. ``best-15m`` is ``--recipe best --time-budget 15m``.
The optional PyTorch reference (``--torch``; needs the bench extra) trains the issue's
5-conv VGG net in plain PyTorch eager (channels_last, crop ±2 px + flip, label smoothing 0.1,
SGD-Nesterov one-cycle to 0.2, batch 128, 8 epochs) and records test accuracy after each
epoch against its training seconds (evaluation time excluded, as the reference did).
Writes a table to stdout, results to benchmarks/time_to_accuracy.json and the plot
benchmarks/time_to_accuracy.png (accuracy against seconds, log x). Results: BENCHMARKS.md.

    python benchmarks/time_to_accuracy.py [--recipes tutorial,mlp,best,best-15m] [--seeds 0,1] [--torch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
COMMANDS = {  # name -> extra arguments of `fmnist train`
    "tutorial": ["--recipe", "tutorial"],
    "mlp": ["--recipe", "mlp"],
    "best": ["--recipe", "best"],
    "best-15m": ["--recipe", "best", "--time-budget", "15m"],
}


def run_recipe(name: str, seed: int, workdir: Path) -> dict:
    out = workdir / f"{name}-{seed}"
    fmnist = Path(sys.executable).parent / "fmnist"
    t = time.perf_counter()
    subprocess.run([str(fmnist), "train", *COMMANDS[name], "--seed", str(seed), "--out", str(out)], check=True)
    seconds = time.perf_counter() - t
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    return {
        "name": name, "seed": seed, "seconds": round(seconds, 1), "accuracy": metrics["accuracy"],
        "accuracy_single_view": metrics.get("accuracy_single_view", metrics["accuracy"]),
        "steps": config["steps_run"], "epochs": config["epochs_run"],
    }  # fmt: skip


def run_torch_reference(seed: int, epochs: int = 8, batch: int = 128) -> list[dict]:
    """The issue's PyTorch eager reference; one point per epoch: (training seconds, test accuracy)."""
    import numpy as np
    import torch

    from fmnist import data

    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(seed)
    (x, y), (xt, yt) = data.load_data()
    X = torch.from_numpy(x).unsqueeze(1).float() / 255
    XT = torch.from_numpy(xt).unsqueeze(1).float() / 255
    mean, std = X.mean(), X.std()
    X, XT, Y = (X - mean) / std, (XT - mean) / std, torch.from_numpy(y.astype(np.int64))

    def cbr(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    net = nn.Sequential(
        *cbr(1, 32), *cbr(32, 32), nn.MaxPool2d(2), *cbr(32, 64), *cbr(64, 64), nn.MaxPool2d(2), *cbr(64, 128),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    ).to(memory_format=torch.channels_last)  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * (len(X) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.2, total_steps=steps, pct_start=0.25)
    gen = np.random.default_rng(seed)

    def accuracy():
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(XT[i : i + 1000].contiguous(memory_format=torch.channels_last))
                                for i in range(0, len(XT), 1000)])  # fmt: skip
        net.train()
        return float((logits.argmax(1).numpy() == yt).mean())

    points, trained = [], 0.0
    for epoch in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(X))
        for k in range(len(X) // batch):
            idx = perm[k * batch : (k + 1) * batch]
            i, j = gen.integers(0, 5, 2)  # one random crop of the 2-px padded batch per step
            xb = F.pad(X[idx], (2, 2, 2, 2), value=float(-mean / std))[:, :, i : i + 28, j : j + 28]
            xb = torch.where((torch.rand(len(idx)) < 0.5)[:, None, None, None], xb.flip(3), xb)
            loss = F.cross_entropy(net(xb.contiguous(memory_format=torch.channels_last)), Y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        trained += time.perf_counter() - t
        points.append({"epoch": epoch + 1, "seconds": round(trained, 1), "accuracy": accuracy()})
        print(f"torch reference seed {seed} epoch {epoch + 1}: {trained:.0f} s, test {points[-1]['accuracy']:.4f}")
    return points


def plot(results: list[dict], torch_points: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        ax.scatter([r["seconds"] for r in rs], [100 * r["accuracy"] for r in rs], label=f"fmnist --recipe {name}")
    for seed, points in torch_points.items():
        label = "PyTorch eager reference (training time only)" if seed == min(torch_points) else None
        ax.plot([p["seconds"] for p in points], [100 * p["accuracy"] for p in points], "k.--", alpha=0.6, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock seconds (log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("Fashion-MNIST: accuracy against time, 2 CPU cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(COMMANDS), help=f"comma-separated, from {', '.join(COMMANDS)}")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    parser.add_argument("--torch", action="store_true", help="also run the PyTorch eager reference per seed")
    parser.add_argument("--merge", action="store_true", help="keep earlier results of recipes not rerun")
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    results_path = HERE / "time_to_accuracy.json"
    previous = json.loads(results_path.read_text()) if args.merge and results_path.is_file() else {}
    names = [n for n in args.recipes.split(",") if n]
    results = [r for r in previous.get("results", []) if r["name"] not in names]
    torch_points = {int(k): v for k, v in previous.get("torch", {}).items()} if not args.torch else {}
    print(f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory(prefix="fmnist-tta-") as tmp:
        for name in names:
            for seed in seeds:
                results.append(run_recipe(name, seed, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
    if args.torch:
        torch_points = {seed: run_torch_reference(seed) for seed in seeds}
    results_path.write_text(json.dumps({"results": results, "torch": torch_points}, indent=1) + "\n")
    print("\n| recipe | seeds | test accuracy (mean) | single view | wall clock s (mean) | steps |")
    print("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        print(f"| {name} | {len(rs)} | {statistics.mean(r['accuracy'] for r in rs):.4f} | "
              f"{statistics.mean(r['accuracy_single_view'] for r in rs):.4f} | "
              f"{statistics.mean(r['seconds'] for r in rs):.0f} | {rs[0]['steps']} |")  # fmt: skip
    for seed, points in torch_points.items():
        print(f"| PyTorch reference, seed {seed} | 1 | {points[-1]['accuracy']:.4f} | – | "
              f"{points[-1]['seconds']:.0f} (training only) | {len(points)} epochs |")  # fmt: skip
    plot(results, torch_points, HERE / "time_to_accuracy.png")


if __name__ == "__main__":
    main()
