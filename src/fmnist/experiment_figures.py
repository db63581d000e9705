"""The experiments' figures: per-seed records in, matplotlib Figures out (mean ± std over seeds).

Each function draws one experiment's plots from the records ``fmnist.experiments`` measured;
``experiment_report`` saves them as PNGs. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import statistics

from fmnist.trials import aggregate


def _means(stats, names, key):
    return [stats[n][key].mean for n in names], [stats[n][key].std for n in names]


def _curve(recs: list[dict], key: str):
    """Mean and std per epoch of ``history[key]`` over seeds (cut to the shortest run)."""
    import numpy as np

    curves = [r["history"][key] for r in recs if key in r.get("history", {})]
    n = min(map(len, curves))
    arr = np.array([c[:n] for c in curves])
    return arr.mean(axis=0), arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(n)


def hidden_units(records):
    from fmnist import plots

    stats, names = aggregate(records), list(records)
    widths = [int(n.split()[0]) for n in names]
    panels = [
        (label, *_means(stats, names, key))
        for label, key in (("test accuracy", "accuracy"), ("seconds per epoch", "seconds_per_epoch"))
    ]
    return {"accuracy_vs_width": plots.mean_std_vs_x(widths, panels, "hidden units", logx=True)}


def depth(records):
    from fmnist import plots

    stats, names = aggregate(records), list(records)
    panels = [
        (label, *_means(stats, names, key))
        for label, key in (("test accuracy", "accuracy"), ("seconds per epoch", "seconds_per_epoch"))
    ]
    return {"depth": plots.mean_std_bars(names, panels)}


def epochs(records):
    from fmnist import plots

    names = list(records)
    recs = records[names[-1]]
    marks = [round(statistics.fmean(r["epochs_run"] for r in records[n])) for n in names[:-1]]
    panels = [
        (metric, {"training": _curve(recs, metric), "validation": _curve(recs, f"val_{metric}")})
        for metric in ("loss", "accuracy")
    ]
    return {"learning_curves": plots.mean_std_curves(panels, marks=marks)}


def normalization(records):
    from fmnist import plots

    panels = [
        (f"training {metric}", {name: _curve(recs, metric) for name, recs in records.items()})
        for metric in ("loss", "accuracy")
    ]
    return {"curves": plots.mean_std_curves(panels)}


def early_stop(records):
    from fmnist import plots

    stats, names = aggregate(records), list(records)
    panels = [
        (label, *_means(stats, names, key))
        for label, key in (
            ("epochs trained", "epochs_run"),
            ("training seconds", "train_seconds"),
            ("test accuracy", "accuracy"),
        )
    ]
    return {"early_stop": plots.mean_std_bars(names, panels)}
