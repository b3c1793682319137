"""AUTOTRAINER's detection rules, replayed on GradWatch's logs: the baseline.

Zhang, Xiao, Zhai, Dong, Li, Sun and Zhang, "AUTOTRAINER: An Automatic DNN
Training Problem Detection and Repair System", ICSE 2021; code at
github.com/shiningrain/AUTOTRAINER (``AutoTrainer/utils/monitor.py``:
``gradient_issue``, ``weights_issue``, ``loss_issue``, ``ol_judge``,
``IssueMonitor.judge_issue``; ``utils.py``: ``default_param`` and
``LossHistory.on_epoch_end``; ``modules.py``: ``problem_evaluation`` and
``filtered_issue``). Its defaults: beta_1 = 1e-3, beta_2 = 1e-4, beta_3 = 70,
gamma = 0.7, zeta = 0.03, eta = 0.2, delta = 0.01, Theta = 0.7; checks every
3 epochs (``model_train``'s ``checktype='epoch_3'``), a gradient condition
counts once it held at 3 checks (``determine_threshold=3``).

At a check epoch e (e % 3 == 0), from the gradients of one batch:

- ``nan_gradient``: any NaN/Inf gradient (the counts below are then skipped);
- ``vanish`` += 1 when ‖g_first kernel‖/‖g_last kernel‖ < beta_1 and
  ‖g_first kernel‖ < beta_2; ``explode`` += 1 when that ratio > beta_3;
  ``relu`` += 1 when the fraction of zero gradient elements over all weights
  is >= gamma ("kernels" are the weights with more than one axis);
- ``nan_weight``: any NaN/Inf weight;
- from the loss and accuracy so far: ``nan_loss`` (NaN/Inf or >= 1e3),
  ``abnormal_loss`` (negative); once e + 1 >= 0.3 x epochs - 3:
  ``unstable`` (accuracy oscillates by >= zeta in >= eta of the epochs),
  ``not_converge`` (best accuracy < Theta), ``sc_accuracy`` (no epoch
  raised the accuracy by delta).

The problem decision runs when the loss was NaN/large or negative, or the
accuracy flat, or once at the first check past half the epochs: NaN loss
with NaN weights or gradients -> explode; not converged or flat accuracy ->
relu, else explode, else vanish (by their counts), else not_converge (both);
oscillating accuracy -> unstable. Of several, the one of highest priority is
kept, and the first problem found stops the run.

What GradWatch's logs give instead of AUTOTRAINER's own hooks:

- the gradients are GradWatch's on its held-out batch, per weight
  (``grad_norm``, ``grad_nonfinite``); AUTOTRAINER takes the first training
  batch;
- the zero-element fraction is approximated by ``grad_dead_units`` (units
  whose whole gradient is zero) weighted by each weight's size; for biases
  it is exact, for kernels it counts only the zeros of dead units;
- NaN weights come from WeightNorms' ``weight_l2``; loss and accuracy from
  ``keras.callbacks.TensorBoard``'s ``train`` run, and stand in for the
  validation ones too (no validation split is run);
- the checks on layer outputs (``abnormal_data``, ``activation_issue``) and
  on the loss function (``loss_issue`` for a loss that does not fit the
  output) need what the logs do not hold and are left out; every scenario
  uses a loss that fits its output.

The flags are sticky, as in AUTOTRAINER: once set they stay set. For runs of
fewer than 14 epochs the accuracy checks start at the first epoch, whose
one-epoch history counts as flat.

Problems map to our kinds: vanish -> vanishing, explode -> non_finite where
a NaN/Inf was seen (loss, weights or gradients), else exploding, relu ->
dead_units, not_converge -> stalled; unstable counts as a false positive of
no kind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from keras_gradwatch import _events
from keras_gradwatch.diagnosis import Series

PARAMS = {
    "beta_1": 1e-3,
    "beta_2": 1e-4,
    "beta_3": 70.0,
    "gamma": 0.7,
    "zeta": 0.03,
    "eta": 0.2,
    "delta": 0.01,
    "Theta": 0.7,
}
CHECK_GAP = 3
DETERMINE_THRESHOLD = 3
PRIORITY = {"vanish": 2, "explode": 2, "relu": 2, "not_converge": 1, "unstable": 1}
KIND = {"vanish": "vanishing", "relu": "dead_units", "not_converge": "stalled"}


def read_scalars(run_dir: str, run: str, prefixes: Sequence[str]) -> dict:
    """``{tag: {epoch: value}}`` of `run` under `run_dir`, for tags that
    start with one of `prefixes`."""
    directory = os.path.join(run_dir, run)
    if not os.path.isdir(directory):
        return {}
    files = _events.walk(directory).runs.get(directory, [])
    wanted = lambda tag: tag.startswith(tuple(prefixes))  # noqa: E731
    return _events.read_run(run, files, wanted).values


def _ol_judge(acc: list[float], threshold: float, rate: float) -> bool:
    maximum, minimum = [], []
    for i in range(1, len(acc) - 1):
        if acc[i] - acc[i - 1] >= 0 and acc[i] - acc[i + 1] >= 0:
            maximum.append(acc[i])
        if acc[i] - acc[i - 1] <= 0 and acc[i] - acc[i + 1] <= 0:
            minimum.append(acc[i])
    count = sum(
        maximum[i] - minimum[i] >= threshold
        for i in range(min(len(maximum), len(minimum)))
    )
    return count >= rate * len(acc)


def _max_delta(acc: list[float]) -> float:
    return max([0.0, *(b - a for a, b in zip(acc, acc[1:], strict=False))])


def detect(
    series: Series,
    accuracy: dict[int, float],
    weight_l2: dict[str, dict[int, float]],
    shapes: dict[str, tuple[int, ...]],
    epochs: int,
) -> list[str]:
    """AUTOTRAINER's problems for one run (at most one), as our kinds (or
    ``unstable``)."""
    p = PARAMS
    kernel = [j for j, path in enumerate(series.paths) if len(shapes[path]) > 1]
    sizes = np.array([max(1, math.prod(shapes[path])) for path in series.paths])
    f = dict.fromkeys(("vanish", "explode", "relu"), 0)
    flags: dict[str, bool] = {}
    seen_nonfinite = False
    mid_check = True
    loss_all = series.loss if series.loss is not None else np.full(epochs, np.nan)
    for e in range(min(epochs, series.epochs.size)):
        if e % CHECK_GAP:
            continue
        row = list(series.epochs).index(e) if e in series.epochs else None
        decide = (
            flags.get("abnormal_loss") or flags.get("nan_loss")
            or flags.get("sc_accuracy") or (epochs * 0.5 <= e and mid_check)
        )  # fmt: skip
        if epochs * 0.5 <= e and mid_check:
            mid_check = False
        if row is not None:
            if (
                np.nansum(series.grad_nonfinite[row]) > 0
                or not np.isfinite(series.grad_norm[row]).all()
            ):
                flags["nan_gradient"] = True
            elif kernel:
                first, last = (
                    series.grad_norm[row, kernel[0]],
                    series.grad_norm[row, kernel[-1]],
                )
                rate = first / last if last else math.inf
                f["vanish"] += bool(rate < p["beta_1"] and first < p["beta_2"])
                f["explode"] += bool(rate > p["beta_3"])
                dead = np.nan_to_num(series.grad_dead_units[row])
                f["relu"] += bool((dead * sizes).sum() / sizes.sum() >= p["gamma"])
        if any(not math.isfinite(v.get(e, 0.0)) for v in weight_l2.values()):
            flags["nan_weight"] = True
        loss = [float(v) for v in loss_all[: e + 1]]
        acc = [accuracy.get(i, math.nan) for i in range(e + 1)]
        if loss:
            if any(not math.isfinite(v) for v in loss) or max(loss) >= 1e3:
                flags["nan_loss"] = True
            else:
                if min(loss) < 0:
                    flags["abnormal_loss"] = True
                if e + 1 >= 0.3 * epochs - CHECK_GAP:
                    if _ol_judge(acc, p["zeta"], p["eta"]):
                        flags["unstable"] = True
                    if max(acc) < p["Theta"]:
                        flags["not_converge"] = True
                    if _max_delta(acc) < p["delta"]:
                        flags["sc_accuracy"] = True
        seen_nonfinite = seen_nonfinite or bool(
            flags.get("nan_gradient") or flags.get("nan_weight")
            or any(not math.isfinite(v) for v in loss)
        )  # fmt: skip
        if not decide:
            continue
        issues = []
        if flags.get("nan_loss") and (
            flags.get("nan_weight") or flags.get("nan_gradient")
        ):
            issues.append("explode")
        if flags.get("not_converge") or flags.get("sc_accuracy"):
            if f["relu"] >= DETERMINE_THRESHOLD:
                issues.append("relu")
            elif f["explode"] >= DETERMINE_THRESHOLD:
                issues.append("explode")
            elif f["vanish"] >= DETERMINE_THRESHOLD:
                issues.append("vanish")
            elif flags.get("not_converge") and flags.get("sc_accuracy"):
                issues.append("not_converge")
        if flags.get("unstable"):
            issues.append("unstable")
        if issues:
            best = issues[0]
            for issue in issues[1:]:
                if PRIORITY[issue] > PRIORITY[best]:
                    best = issue
            if best == "explode":
                return ["non_finite" if seen_nonfinite else "exploding"]
            return [KIND.get(best, best)]
    return []
