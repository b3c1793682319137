"""The live diagnosis' cost per epoch, early and late in a long run.

GradWatch feeds each logged epoch to the rules (`keras_gradwatch._rules`)
and logs the findings new with it. This times that step alone, on synthetic
rows shaped like a transformer's log (``--weights`` weights: a kernel and a
bias for each measured layer), early and late in ``--epochs``, in two runs:

- ``healthy``: nothing holds; no finding is ever built.
- ``failing``: a vanishing signal and dead units hold at every epoch, so
  those rules keep growing their record of epochs.

Reported per run: the median time of one epoch's update over epochs 50-99
and over the last 50, and their ratio (the issue's target: at most 1.5 at
5,000 epochs). No TensorFlow; NumPy only.

Usage::

    python benchmarks/diagnosis_cost.py [--epochs 5000] [--weights 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from keras_gradwatch import _rules

WINDOW = 50


def rows(kind: str, epochs: int, weights: int, layers: int, seed: int = 0):
    """Synthetic logged epochs; `kind` is ``healthy`` or ``failing``."""
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        ratio = 0.1 * rng.uniform(0.5, 2.0, weights)
        act = rng.uniform(0.5, 2.0, layers)
        dead = rng.uniform(0.0, 0.3, weights)
        loss = 1.0 / (1 + epoch)
        if kind == "failing":
            ratio[: weights // 4] *= 1e-6
            act[: layers // 4] *= 1e-6
            dead[: weights // 8 : 2] = 0.9  # kernels of the first layers
            loss = 0.7
        yield _rules.Row(
            epoch=epoch,
            grad_norm=ratio,
            grad_to_weight=ratio,
            grad_dead_units=dead,
            grad_nonfinite=np.zeros(weights),
            loss=loss,
            loss_logged=True,
            weight_change=np.full(weights, 1e-4 if kind == "failing" else 1e-2),
            weight_nonfinite=np.zeros(weights),
            act_grad_norm=act,
            time_grad_ratio=np.full(layers, np.nan),
        )


def run(kind: str, epochs: int, weights: int, layers: int) -> dict[str, float]:
    """Per-epoch update times early and late; their ratio."""
    paths = [
        f"net/layer_{i // 2}/{'kernel' if i % 2 == 0 else 'bias'}"
        for i in range(weights)
    ]
    names = [f"net/layer_{i}" for i in range(layers)]
    diagnoser = _rules.Diagnoser(paths, layers=names)
    times = []
    found = 0
    for row in rows(kind, epochs, weights, layers):
        start = time.perf_counter()
        found += len(diagnoser.update(row))
        times.append(time.perf_counter() - start)
    early = float(np.median(times[WINDOW : 2 * WINDOW]))  # past the start
    late = float(np.median(times[-WINDOW:]))
    return {
        "early_ms": early * 1e3,
        "late_ms": late * 1e3,
        "ratio": late / early,
        "new_findings": found,
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5000)
    parser.add_argument("--weights", type=int, default=400)
    args = parser.parse_args(argv)
    if args.epochs < 2 * WINDOW:
        parser.error(f"--epochs must be at least {2 * WINDOW}")
    result = {}
    print(
        f"Live diagnosis per epoch, {args.weights} weights, "
        f"{args.weights // 2} layers: "
        f"epochs {WINDOW}-{2 * WINDOW - 1} vs the last {WINDOW} "
        f"of {args.epochs}"
    )
    print("| run | early (ms) | late (ms) | late / early | findings logged |")
    print("|---|---:|---:|---:|---:|")
    for kind in ("healthy", "failing"):
        result[kind] = figures = run(kind, args.epochs, args.weights, args.weights // 2)
        print(
            f"| {kind} | {figures['early_ms']:.3f} | {figures['late_ms']:.3f} | "
            f"{figures['ratio']:.2f} | {figures['new_findings']:.0f} |"
        )
    return result


if __name__ == "__main__":
    main()
