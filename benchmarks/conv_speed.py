"""Convolutional nets: fmnist.fit against plain PyTorch eager on the identical network, same CPU.

Networks (fmnist.models.build_model; PyTorch mirrors them layer for layer, weights layout aside):
  cnn  Rescaling → [conv3×3 (no bias) → BatchNorm → relu → maxpool 2]×(32, 64) → Flatten →
       Dense 128 relu → Dense 10 softmax                       (`fmnist train --arch cnn`)
  cnn-pf  the same with each block conv3×3 → maxpool 2 → BatchNorm → relu
                                                                (the best recipe's until 2026-12-01)
  cnn-s   conv 32 → maxpool 2 → BatchNorm → relu, then conv 64 and conv 128 at stride 2 (each
          → BatchNorm → relu), Dense 128                        (the best recipe's network)
  vgg  conv 32-32-pool-64-64-pool-128 (each conv → BatchNorm → relu) → global max pool →
       Dense 10 softmax                                         (the issue's PyTorch reference net)
Adam (lr 1e-3), cross-entropy, batches of uint8 images divided by 255 inside the step. Each
trainer first trains one untimed pass (compilation, allocator warm-up), then the trainers
alternate over --reps timed passes of --images images; the figure is milliseconds per
training image (median) and the ratio PyTorch / fmnist (median of the per-repetition
ratios). A pass is one epoch over the images: fmnist's is the second epoch of a two-epoch
fit, because every fit call first traces its program to look it up among the compiled ones
(~0.6 s for the cnn, paid once per fit, not per epoch); that per-fit cost is printed apart.
PyTorch runs at its best on this CPU: channels_last memory format (the faster
layout here), 2 threads, foreach Adam; its default NCHW layout is timed too. Results:
BENCHMARKS.md. Needs the bench extra: pip install -e '.[bench]'.

    python benchmarks/conv_speed.py [--reps 5] [--images 6400] [--nets cnn:32,cnn:128,cnn-s:64,vgg:128]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from fmnist import data, engine, models
from fmnist._backend import keras
from fmnist.train import EpochTimer

SPECS = {
    "cnn": models.ModelSpec(arch="cnn"),
    "cnn-pf": models.ModelSpec(arch="cnn", pool_first=True),
    "cnn-s": models.ModelSpec(arch="cnn", conv_filters=(32, 64, 128), conv_strides=(1, 2, 2), pool_first=True),
    "vgg": models.ModelSpec(arch="vgg", conv_filters=(32, 64, 128)),
}


def fmnist_trainer(spec, x, y, batch_size):
    keras.utils.set_random_seed(0)
    model = models.compile_model(models.build_model(spec))

    per_fit = []  # the fit's wall clock less two steady epochs: tracing and program lookup

    def one_pass():
        timer, t = EpochTimer(), time.perf_counter()
        engine.fit(model, x, y, epochs=2, batch_size=batch_size, seed=0, verbose=0, callbacks=[timer])
        per_fit.append(time.perf_counter() - t - 2 * timer.seconds[1])
        return timer.seconds[1]

    one_pass.per_fit = per_fit
    return one_pass


def torch_net(spec, nn):
    def cbr(i, o, stride=1):
        conv = nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)
        return [conv, nn.BatchNorm2d(o, eps=1e-3, momentum=0.01), nn.ReLU()]

    if spec.arch == "cnn":
        layers, cin, side = [], 1, 28
        for f, stride in zip(spec.conv_filters, spec.conv_strides or [1] * len(spec.conv_filters), strict=True):
            conv, *norm_relu = cbr(cin, f, stride)
            if stride > 1:  # the same output size as Keras' SAME padding; its pixel offset may differ
                layers += [conv, *norm_relu]
                side = -(-side // stride)
            else:
                pooled = [conv, nn.MaxPool2d(2), *norm_relu] if spec.pool_first else [conv, *norm_relu, nn.MaxPool2d(2)]
                layers += pooled
                side //= 2
            cin = f
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * side * side, 128), nn.ReLU(), nn.Linear(128, 10))
    a, b, c = spec.conv_filters
    return nn.Sequential(
        *cbr(1, a), *cbr(a, a), nn.MaxPool2d(2), *cbr(a, b), *cbr(b, b), nn.MaxPool2d(2), *cbr(b, c),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, 10),
    )  # fmt: skip


def torch_trainer(spec, x, y, batch_size, channels_last: bool):
    import torch

    torch.manual_seed(0)
    net = torch_net(spec, torch.nn)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, foreach=True)
    xt, yt = torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def one_pass():
        t = time.perf_counter()
        perm = torch.randperm(len(xt))
        for k in range(0, len(xt), batch_size):
            idx = perm[k : k + batch_size]
            xb = (xt[idx].float() / 255).contiguous(memory_format=layout)
            loss = loss_fn(net(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    return one_pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed passes per trainer")
    parser.add_argument("--images", type=int, default=6400, help="training images per pass")
    parser.add_argument("--nets", default="cnn:32,cnn:128,cnn-s:64,vgg:128", help="network:batch pairs")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    (x, y), _ = data.load_data()
    x, y = x[: args.images], y[: args.images]
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, keras {keras.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); {args.images} images per pass")  # fmt: skip
    for item in args.nets.split(","):
        name, batch = item.split(":")
        spec, batch = SPECS[name], int(batch)
        trainers = {
            "fmnist.fit": fmnist_trainer(spec, x, y, batch),
            "torch channels_last": torch_trainer(spec, x, y, batch, channels_last=True),
            "torch NCHW": torch_trainer(spec, x, y, batch, channels_last=False),
        }
        for one_pass in trainers.values():
            one_pass()  # warm-up: compilation, allocator
        ms = {t: [] for t in trainers}
        for rep in range(args.reps):
            order = list(trainers) if rep % 2 == 0 else list(trainers)[::-1]
            for t in order:
                ms[t].append(1000 * trainers[t]() / len(x))
        ours = ms["fmnist.fit"]
        per_fit = statistics.median(trainers["fmnist.fit"].per_fit)
        print(
            f"\n{name} ({spec.describe()}), batch {batch}: ms per training image, median of {args.reps}; "
            f"fmnist.fit's per-fit cost (tracing, program lookup) {per_fit:.2f} s"
        )
        for t, values in ms.items():
            ratio = statistics.median(v / o for v, o in zip(values, ours, strict=True))
            print(f"  {t:20} {statistics.median(values):6.3f} ms/image ({60 * statistics.median(values):5.1f} s/epoch)"
                  f"  {'' if t == 'fmnist.fit' else f'fmnist.fit is {ratio:.2f}x as fast'}"
                  f"   [{', '.join(f'{v:.3f}' for v in values)}]", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
