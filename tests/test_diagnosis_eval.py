"""Issue 14's must-show: the rules judge models they were not tuned on
(benchmarks/diagnosis_eval.py), better than AUTOTRAINER's on the same logs.

One seed (the benchmark runs three) of `CI_SCENARIOS`: 21 of the 42, every
kind, the six original families and three of the five added for issue 23,
the issue's six causes and the healthy traps, about 3 minutes on 2 CPU
cores (the numeric tests run twice in CI, with oneDNN on and off). Left
out, as near repeats of a kept one: sigmoid_deep, cnn_sigmoid_deep and
text_rnn_long (vanishing, kept in tanh_saturated and rnn_long_first_step),
cnn_negative_bias, the huge learning rates but the transformer's, the tiny
ones but plain SGD's, gru_bidirectional, and most of issue 23's families
(the benchmark runs them).

Also the live side: GradWatch logs one warning per new finding while training.
"""

import contextlib
import dataclasses
import io
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from helpers import load_script
from keras_gradwatch import GradWatch, _report
from keras_gradwatch.diagnosis import KINDS, Finding, Series

pytestmark = pytest.mark.numeric

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
EVAL = load_script(BENCHMARKS / "diagnosis_eval.py")
AUTOTRAINER = load_script(BENCHMARKS / "autotrainer.py")
TARGET = 0.95
"""Precision and recall, each kind and overall (issue 14)."""
CI_SCENARIOS = (
    # the six causes
    "rnn_long_first_step", "tanh_chaotic_deep", "linear_deep_adam",
    "relu_huge_step", "nan_feature", "tanh_saturated",
    # healthy traps
    "relu_he", "adam_tiny_loss", "sigmoid_deep_bn", "resnet_deep",
    "lstm_short", "cnn_healthy", "text_pool", "transformer",
    # more failures
    "rnn_exploding_time", "relu_negative_bias", "sgd_tiny_lr",
    "transformer_huge_lr",
    # families added for issue 23: a failure and a healthy trap
    "l2_collapse", "reg_unscaled_sgd", "conv1d_tcn",
)  # fmt: skip


@pytest.fixture(scope="module")
def result():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        out = EVAL.main(["--seeds", "0", "--only", ",".join(CI_SCENARIOS)])
    print(printed.getvalue())  # the table, shown where a test fails
    return out | {"printed": printed.getvalue()}


def test_scenarios_span_the_families_and_kinds():
    split = EVAL.HALVES["design"] + EVAL.HALVES["heldout"]
    families = {EVAL.SCENARIOS[n].family for n in split}
    assert len(EVAL.SCENARIOS) >= 25
    assert families >= {"mlp", "cnn", "recurrent", "residual_bn", "text", "attention"}
    added = {"regression", "autoencoder", "conv1d", "regularization", "modern_act"}
    assert families >= added
    for family in added:  # a failure and a healthy trap in each
        kinds = [sc.intended for sc in EVAL.SCENARIOS.values() if sc.family == family]
        assert frozenset() in kinds, family
        assert any(kinds), family
    intended = set().union(*(sc.intended for sc in EVAL.SCENARIOS.values()))
    assert intended == set(KINDS)
    healthy = [n for n, sc in EVAL.SCENARIOS.items() if not sc.intended]
    assert len(healthy) >= 8, healthy
    chosen = [EVAL.SCENARIOS[n] for n in CI_SCENARIOS]
    assert {sc.family for sc in chosen} >= families - added
    assert set().union(*(sc.intended for sc in chosen)) == set(KINDS)


def test_the_halves_split_every_kind():
    halves = EVAL.HALVES
    assert set(halves) == {"design", "heldout", "confirm", "confirm2"}
    assert sorted(sum(halves.values(), ())) == sorted(EVAL.SCENARIOS)
    for half in halves.values():
        kinds = [EVAL.SCENARIOS[n].intended for n in half]
        assert frozenset() in kinds
        assert set().union(*kinds) == set(KINDS)


def test_no_run_has_contradictory_findings(result):
    assert result["contradictions"] == []


def test_contradictions_are_caught():
    both = series([[1.0, 1.0]] * 3)
    findings = [
        Finding("exploding", ("d0/kernel",), (0, 1, 2), {}, "m", "r"),
        Finding("vanishing", ("d1/kernel",), (0, 1, 2), {}, "m", "r"),
    ]
    run = _report.RunData("x", both, findings)
    assert EVAL.contradictions(run) == ["vanishing and exploding"]
    run.findings[1] = dataclasses.replace(findings[1], current=False)
    assert EVAL.contradictions(run) == []  # history: it ended
    zero = series([[1.0, 1.0], [0.0, 0.0]])
    run = _report.RunData("x", zero, findings[:1])
    assert EVAL.contradictions(run) == ["exploding with every gradient 0"]


def test_every_label_is_confirmed_by_its_measurement(result):
    assert result["unconfirmed"] == []
    assert "labels not confirmed: none" in result["printed"]


@pytest.mark.parametrize("kind", [*KINDS, "overall"])
def test_precision_and_recall_meet_the_target(result, kind):
    ours = result["per_seed"][0]["gradwatch"][kind]
    theirs = result["per_seed"][0]["autotrainer"][kind]
    wrong = [
        (o.name, sorted(o.label), sorted(o.found))
        for o in result["outcomes"]
        if o.label - o.found or o.found - o.label - o.tolerated
    ]
    assert ours["precision"] >= TARGET, wrong
    assert ours["recall"] >= TARGET, wrong
    assert ours["precision"] >= theirs["precision"], (ours, theirs)
    assert ours["recall"] >= theirs["recall"], (ours, theirs)


def series(grad_norm, dead=0.0, nonfinite=0.0, loss=None):
    """Logs of two kernels, first and last, over `len(grad_norm)` epochs."""
    grad_norm = np.asarray(grad_norm, dtype=float)
    t, k = grad_norm.shape
    return Series(
        epochs=np.arange(t),
        paths=[f"d{j}/kernel" for j in range(k)],
        grad_norm=grad_norm,
        grad_mean_abs=grad_norm,
        grad_to_weight=grad_norm,
        grad_dead_units=np.full((t, k), dead),
        grad_nonfinite=np.full((t, k), nonfinite),
        loss=np.full(t, 0.7) if loss is None else np.asarray(loss, dtype=float),
    )


SHAPES = {"d0/kernel": (2, 4), "d1/kernel": (4, 1)}
EPOCHS = 20
RISING = {0: 0.5, **dict.fromkeys(range(1, EPOCHS), 0.55)}
"""Below AUTOTRAINER's Theta (0.7), but not flat: only the check past half the
epochs (epoch 12 of 20) decides."""


def detect(s, accuracy=RISING):
    return AUTOTRAINER.detect(s, accuracy, {}, SHAPES, EPOCHS)


def test_autotrainer_vanish_after_three_checks_below_theta():
    vanishing = series([[1e-6, 1e-2]] * EPOCHS)
    assert detect(vanishing) == ["vanishing"]
    good = {0: 0.5, **dict.fromkeys(range(1, EPOCHS), 0.9)}
    assert detect(vanishing, good) == []
    # The ratio is below beta_1, but the first norm is not below beta_2.
    assert detect(series([[1e-3, 2.0]] * EPOCHS)) == []


def test_autotrainer_flat_accuracy_without_a_gradient_problem_is_not_converge():
    flat = dict.fromkeys(range(EPOCHS), 0.5)
    assert detect(series([[1.0, 1.0]] * EPOCHS), flat) == ["stalled"]


def test_autotrainer_explode_relu_and_nan():
    assert detect(series([[80.0, 1.0]] * EPOCHS)) == ["exploding"]
    assert detect(series([[1.0, 1.0]] * EPOCHS, dead=0.8)) == ["dead_units"]
    nan = series(
        [[1.0, 1.0]] + [[math.nan, math.nan]] * (EPOCHS - 1),
        nonfinite=1.0,
        loss=[0.7, *[math.nan] * (EPOCHS - 1)],
    )
    assert detect(nan) == ["non_finite"]


def fit_live(name, epochs, tmp_path, caplog):
    scenario = EVAL.SCENARIOS[name]
    x, y, xt, yt = scenario.data(1)
    model = scenario.build()
    fit_live.model_name = model.name
    with caplog.at_level(logging.WARNING, logger="keras_gradwatch"):
        model.fit(
            x, y, epochs=epochs, batch_size=32, verbose=0,
            callbacks=[GradWatch(tmp_path, held_out=(xt[:256], yt[:256]))],
        )  # fmt: skip
    return [r.getMessage() for r in caplog.records if "diagnosis" in r.getMessage()]


def test_live_warning_once_per_new_finding(tmp_path, caplog):
    lines = fit_live("sigmoid_deep", 6, tmp_path, caplog)
    assert len(lines) == 1, lines
    where = tmp_path / "heldout"
    name = fit_live.model_name
    assert lines[0].startswith(f"GradWatch diagnosis of {name!r} ({where}), epoch ")
    assert "Gradients vanish toward the input" in lines[0]
    assert "Try: Use ReLU or leaky ReLU" in lines[0]


def test_live_quiet_on_a_healthy_net(tmp_path, caplog):
    np.random.seed(0)
    assert fit_live("relu_he", 6, tmp_path, caplog) == []
