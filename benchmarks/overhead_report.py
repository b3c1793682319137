"""The tables and verdicts `overhead.py` prints, from its results.

Formatting only: every figure is one the measurements computed (see
`overhead_passes.py` and `overhead_fit.py`), so a saved `--json` run prints
the same report without measuring. No TensorFlow here.

A result is one model's dict as `overhead.run_model` returns it; `settings`
has the run's `repeats`, `epochs`, `steps`, `rounds` and `quick`.
"""

from __future__ import annotations

import math
from typing import Any

Result = dict[str, Any]


def report(results: list[Result], settings: Any) -> str:
    """The whole report in Markdown: four tables, with notes, and the verdicts."""
    sections = [
        passes_table(results),
        notes(settings),
        one_time_table(results),
        weight_norms_table(results),
        in_fit_table(results),
        verdicts(results, settings),
    ]
    return "\n\n".join(sections)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def passes_table(results: list[Result]) -> str:
    """Per model: the passes against a training step, and the three fits."""
    lines = [
        "| model | params | batch | train step (ms) | GradWatch pass (ms) | ratio "
        "| TensorBoard(hist) pass (ms) | ratio | fit no-cb (s) "
        "| fit +GradWatch (s, %) | fit +TensorBoard (s, %) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p, f = r["passes"], r["fit"]
        batch = (
            str(r["batch"])
            if r["batch"] == r["held_out"]
            else f"{r['batch']} (held-out {r['held_out']})"
        )
        med, pct = f["fit_median_s"], f["overhead_pct"]
        lines.append(
            f"| ({r['key']}) {r['name']} | {r['params']:,} | {batch} "
            f"| {fmt_ms(p['train_step_median_s'])} "
            f"| {fmt_ms(p['gw_pass_median_s'])} | {p['gw_ratio']:.2f} "
            f"| {fmt_ms(p['tb_pass_median_s'])} | {p['tb_ratio']:.2f} "
            f"| {med['none']:.2f} "
            f"| {med['gradwatch']:.2f} ({pct['gradwatch']:+.1f}%) "
            f"| {med['tensorboard']:.2f} ({pct['tensorboard']:+.1f}%) |"
        )
    return "\n".join(lines)


def notes(settings: Any) -> str:
    return (
        f"Train step: median `train_on_batch` on a batch of the held-out size "
        f"({settings.repeats} calls, interleaved with the passes). fit: "
        f"{settings.epochs} epoch(s) x {settings.steps} steps, median of "
        f"{settings.rounds} round(s); % is relative to fit with no callback."
    )


def one_time_table(results: list[Result]) -> str:
    lines = [
        "One-time costs outside fit (ms): first train_on_batch (traces the "
        "train function); GradWatch on_train_begin (traces its function) and "
        "first pass; TensorBoard set_model + on_train_begin and first epoch end.",
        "",
        "| model | train fn trace | GradWatch on_train_begin | GradWatch 1st pass "
        "| TensorBoard setup | TensorBoard 1st pass |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["passes"]
        lines.append(
            f"| ({r['key']}) | {fmt_ms(p['train_first_s'])} "
            f"| {fmt_ms(p['gw_train_begin_s'])} | {fmt_ms(p['gw_first_pass_s'])} "
            f"| {fmt_ms(p['tb_set_model_s'] + p['tb_train_begin_s'])} "
            f"| {fmt_ms(p['tb_first_pass_s'])} |"
        )
    return "\n".join(lines)


def weight_norms_table(results: list[Result]) -> str:
    lines = [
        "WeightNorms (every trainable weight's L1/L2 norm and relative change; "
        "`histograms=True` adds weight histograms): one epoch-end pass, "
        "interleaved with the same training steps. Target: ratio <= 0.05 on "
        "(b), (c).",
        "",
        "| model | train step (ms) | WeightNorms pass (ms) | ratio "
        "| with histograms (ms) | ratio | on_train_begin (ms) | 1st pass (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["passes"]
        if "wn_ratio" not in p:  # a --json saved before WeightNorms existed
            continue
        lines.append(
            f"| ({r['key']}) | {fmt_ms(p['train_step_median_s'])} "
            f"| {fmt_ms(p['wn_pass_median_s'])} | {p['wn_ratio']:.3f} "
            f"| {fmt_ms(p['wnh_pass_median_s'])} | {p['wnh_ratio']:.3f} "
            f"| {fmt_ms(p['wn_train_begin_s'])} | {fmt_ms(p['wn_first_pass_s'])} |"
        )
    return "\n".join(lines)


def in_fit_table(results: list[Result]) -> str:
    """The callbacks' hooks inside the timed fits: setup, first, later."""
    lines = [
        "The callbacks' own hooks inside the timed fits (ms, medians): setup = "
        "every hook but on_epoch_end, once per fit; 1st = the first on_epoch_end "
        "of a fit; later = the other epoch ends, also as % of one no-callback "
        "epoch (fit no-cb / epochs). fit step = fit no-cb / (epochs x steps).",
        "",
        "| model | fit step | GradWatch setup | GradWatch 1st "
        "| GradWatch later (% epoch) | GradWatch own % of fit | epochs to <= 3% "
        "| TensorBoard setup | TensorBoard 1st | TensorBoard later (% epoch) "
        "| TensorBoard own % of fit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        split = r["fit"]["in_fit"]
        cells = [f"({r['key']})", fmt_ms(r["fit_step_s"])]
        for config in ("gradwatch", "tensorboard"):
            c = split[config]
            later = c["later_epoch_end_median_s"]
            cells += [
                fmt_ms(c["setup_per_fit_median_s"]),
                fmt_ms(c["first_epoch_end_median_s"]),
                "n/a (1 epoch)"
                if math.isnan(later)
                else f"{fmt_ms(later)} ({c['later_epoch_end_pct_of_epoch']:.1f}%)",
                f"{c['own_pct_of_fit']:.1f}%",
            ]
            if config == "gradwatch":
                needed = c["epochs_to_3pct"]
                cells.append("never" if needed is None else str(max(needed, 1)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results: list[Result], settings: Any) -> str:
    """`ok` / `MISSED` for each target, per model."""
    lines = [
        "Targets (GradWatch): ratio <= 1.0 on (b), (c); fit overhead <= 3% "
        "(per epoch once set up; own % of this fit, setup included).",
    ]
    for r in results:
        ratio = r["passes"]["gw_ratio"]
        c = r["fit"]["in_fit"]["gradwatch"]
        steady, own = c["later_epoch_end_pct_of_epoch"], c["own_pct_of_fit"]
        verdict = []
        if r["key"] in ("b", "c"):
            verdict.append(f"ratio {ratio:.2f} {'ok' if ratio <= 1.0 else 'MISSED'}")
        verdict.append(f"per epoch {steady:.1f}% {'ok' if steady <= 3.0 else 'MISSED'}")
        verdict.append(
            f"{settings.epochs}-epoch fit {own:.1f}% {'ok' if own <= 3.0 else 'MISSED'}"
        )
        if r["key"] in ("b", "c") and "wn_ratio" in r["passes"]:
            wn = r["passes"]["wn_ratio"]
            verdict.append(
                f"WeightNorms ratio {wn:.3f} {'ok' if wn <= 0.05 else 'MISSED'}"
            )
        lines.append(f"- ({r['key']}): " + ", ".join(verdict))
    if settings.quick:
        lines.append(
            "- (--quick: small batches and few steps; not a measurement of the targets)"
        )
    return "\n".join(lines)
