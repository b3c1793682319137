"""The diagnosis rules on hand-made series: each threshold from both sides."""

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from keras_gradwatch import diagnosis
from keras_gradwatch._findings import REMEDIES
from keras_gradwatch.diagnosis import (
    CAUSE_ORDER,
    KINDS,
    Finding,
    Series,
    Thresholds,
    diagnose,
    new_findings,
)

EPOCHS = 10
HEALTHY = 0.1
"""A gradient/weight ratio every kernel of a healthy net could have."""


def make(
    ratio,
    *,
    paths=None,
    norm=None,
    mean_abs=None,
    dead=None,
    nonfinite=None,
    weight_change=None,
    loss=None,
    kernels=None,
):
    """A series from its [T, K] gradient/weight ratios; weights of norm 1."""
    ratio = np.asarray(ratio, dtype=float)
    steps, count = ratio.shape
    return Series(
        epochs=np.arange(steps),
        paths=paths or [f"net/dense_{i}/kernel" for i in range(count)],
        grad_norm=ratio if norm is None else norm,
        grad_mean_abs=ratio / 10 if mean_abs is None else mean_abs,
        grad_to_weight=ratio,
        grad_dead_units=np.zeros_like(ratio) if dead is None else dead,
        grad_nonfinite=np.zeros_like(ratio) if nonfinite is None else nonfinite,
        weight_change=weight_change,
        loss=loss,
        kernels=kernels,
    )


def healthy_ratio(count=4, steps=EPOCHS):
    rng = np.random.default_rng(0)
    return HEALTHY * rng.uniform(0.5, 2.0, size=(steps, count))


def falling_loss(steps=EPOCHS):
    return 1.0 / (1.0 + np.arange(steps))


def kinds(findings):
    return [f.kind for f in findings]


def test_healthy_run_has_no_findings():
    ratio = healthy_ratio()
    series = make(
        ratio,
        dead=np.full(ratio.shape, 0.2),
        weight_change=np.full(ratio.shape, 1e-2),
        loss=falling_loss(),
    )
    assert diagnose(series) == []


def test_empty_series_has_no_findings():
    assert diagnose(make(np.zeros((0, 3)))) == []


# --- vanishing -------------------------------------------------------------


@pytest.mark.parametrize(("relative", "flagged"), [(0.0099, True), (0.0101, False)])
def test_vanishing_threshold_on_ratio_to_output_layer(relative, flagged):
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 0] = HEALTHY * relative
    findings = diagnose(make(ratio, loss=falling_loss()))
    if not flagged:
        assert findings == []
        return
    (finding,) = findings
    assert finding.kind == "vanishing"
    assert finding.weights == ("net/dense_0/kernel",)
    assert finding.epochs == tuple(range(EPOCHS))
    assert finding.evidence["relative_grad_to_weight/net/dense_0/kernel"] == (
        pytest.approx(relative)
    )
    assert finding.evidence["threshold"] == 1e-2
    assert "net/dense_3/kernel" in finding.message  # the reference layer
    assert "ReLU" in finding.remedy


def test_vanishing_is_relative_not_absolute():
    # Everything 1e-9 (below any absolute floor) but no layer behind another.
    assert diagnose(make(np.full((EPOCHS, 4), 1e-9))) == []


def test_gru_conv_case_is_flagged_by_ratio():
    """Conv kernel gradients ~1e-5 on weights ~1e-1 under a healthy head."""
    paths = [
        "sentiment/embedding/embeddings",
        "sentiment/gru/gru_cell/kernel",
        "sentiment/gru/gru_cell/recurrent_kernel",
        "sentiment/gru/gru_cell/bias",
        "sentiment/conv_1/kernel",
        "sentiment/conv_1/bias",
        "sentiment/conv_2/kernel",
        "sentiment/conv_2/bias",
        "sentiment/dense/kernel",
        "sentiment/dense/bias",
        "sentiment/output/kernel",
        "sentiment/output/bias",
    ]
    conv = [4, 6]
    size = np.full(len(paths), 32.0)  # elements per weight
    size[conv] = 5 * 32 * 32
    mean_abs = np.full((EPOCHS, len(paths)), 3e-3)
    weight = np.full(len(paths), 0.1)  # typical |w|
    mean_abs[:, conv] = 1e-5
    mean_abs[:, [5, 7]] = 1e-6  # conv biases: tiny too, but biases are not judged
    weight[10] = 0.3
    norm = mean_abs * np.sqrt(size)
    ratio = norm / (weight * np.sqrt(size))
    change = np.full(ratio.shape, 1e-2)
    change[:, conv] = 1e-4  # the ~0.01% updates per step the user saw
    series = make(
        ratio,
        paths=paths,
        norm=norm,
        mean_abs=mean_abs,
        weight_change=change,
        loss=falling_loss(),
    )
    # SageMaker's and DeepDiagnosis' absolute floor (mean |g| < 1e-7) misses it.
    assert (series.grad_mean_abs > 1e-7).all()

    (finding,) = diagnose(series)

    assert finding.kind == "vanishing"
    assert finding.weights == ("sentiment/conv_1/kernel", "sentiment/conv_2/kernel")
    relative = finding.evidence["relative_grad_to_weight/sentiment/conv_1/kernel"]
    assert relative == pytest.approx(1e-4 / (3e-3 / 0.3))
    # Whether they still move tells "vanished" from "converged".
    assert finding.evidence["weight_change/sentiment/conv_1/kernel"] == 1e-4
    assert "change 1.0e-04 per logged epoch" in finding.message


def test_gru_conv_case_with_flat_loss_is_vanishing_not_stalled():
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 1] = 1e-4
    change = np.full(ratio.shape, 1e-2)
    change[:, 1] = 1e-4
    series = make(ratio, weight_change=change, loss=np.full(EPOCHS, 0.4))
    # The stall has a cause; the cause is the finding.
    assert kinds(diagnose(series)) == ["vanishing"]
    healthy = make(
        np.full((EPOCHS, 4), HEALTHY), weight_change=change, loss=np.full(EPOCHS, 0.4)
    )
    (stalled,) = diagnose(healthy)
    assert stalled.kind == "stalled"
    assert stalled.weights == ("net/dense_1/kernel",)


def test_biases_are_not_judged_by_layer_wise_rules():
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 0] = 1e-8  # a bias
    ratio[:, 1] = 1e4
    paths = ["net/a/bias", "net/b/bias", "net/c/kernel", "net/d/kernel"]
    assert diagnose(make(ratio, paths=paths)) == []


def test_all_zero_gradient_is_dead_not_vanishing():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[:, 0] = 0.0
    dead = np.zeros_like(ratio)
    dead[:, 0] = 1.0
    assert kinds(diagnose(make(ratio, dead=dead))) == ["dead_units"]


def test_explicit_kernel_mask():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[:, 0] = 1e-6
    paths = ["net/a/gamma", "net/b/gamma", "net/c/gamma"]
    assert diagnose(make(ratio, paths=paths)) == []
    (finding,) = diagnose(make(ratio, paths=paths, kernels=[True, True, True]))
    assert finding.weights == ("net/a/gamma",)


# --- exploding -------------------------------------------------------------


@pytest.mark.parametrize(("relative", "flagged"), [(100.1, True), (99.9, False)])
def test_exploding_threshold_toward_input(relative, flagged):
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[:, 0] = HEALTHY * relative
    findings = diagnose(make(ratio))
    assert kinds(findings) == (["exploding"] if flagged else [])
    if flagged:
        assert findings[0].weights == ("net/dense_0/kernel",)
        assert findings[0].evidence["threshold"] == 100


def growth_series(growth=1000.0, ratio_after=2.0, loss_after=(0.9, 2.0)):
    """Two kernels whose norms jump `growth`-fold at epochs 3 and 4."""
    norm = np.ones((6, 2))
    norm[3:5] = growth
    ratio = np.full((6, 2), HEALTHY)
    ratio[3:5] = ratio_after
    loss = np.array([1.0, 0.8, 0.7, *loss_after, np.nan])
    norm[5] = ratio[5] = np.nan  # not logged
    return make(ratio, norm=norm, loss=loss)


def test_exploding_over_time():
    (finding,) = diagnose(growth_series())
    assert finding.kind == "exploding"
    assert finding.epochs == (3, 4)
    assert finding.weights == ("net/dense_0/kernel", "net/dense_1/kernel")
    assert finding.evidence["grad_norm_growth/net/dense_0/kernel"] == 1000
    assert "grew" in finding.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"growth": 999.0},  # not three orders of magnitude
        {"ratio_after": 0.99},  # the gradient is still small next to the weight
        {"loss_after": (0.6, 0.5)},  # the loss keeps improving: fitting, not exploding
    ],
    ids=["growth", "grad-to-weight", "loss-improving"],
)
def test_exploding_over_time_needs_all_three(kwargs):
    assert diagnose(growth_series(**kwargs)) == []


def test_exploding_over_time_without_loss():
    series = growth_series()
    series.loss = None
    (finding,) = diagnose(series)
    assert finding.kind == "exploding"
    assert "loss" not in finding.message


# --- non_finite ------------------------------------------------------------


def test_non_finite_lists_weights_and_first_epoch():
    ratio = np.full((EPOCHS, 4), HEALTHY)
    nonfinite = np.zeros_like(ratio)
    nonfinite[2, 3] = 5
    nonfinite[4:, 0] = 1
    nonfinite[6, 1] = np.nan  # not logged: no evidence of anything
    (finding,) = diagnose(make(ratio, nonfinite=nonfinite))
    assert finding.kind == "non_finite"
    assert finding.weights == ("net/dense_0/kernel", "net/dense_3/kernel")
    assert finding.epochs == (2, 4, 5, 6, 7, 8, 9)
    assert finding.evidence["first_epoch"] == 2
    assert finding.evidence["grad_nonfinite/net/dense_3/kernel"] == 5
    assert "epoch 2" in finding.message


def test_single_non_finite_epoch_is_reported():
    ratio = np.full((EPOCHS, 2), HEALTHY)
    nonfinite = np.zeros_like(ratio)
    nonfinite[9, 1] = 1
    (finding,) = diagnose(make(ratio, nonfinite=nonfinite))
    assert finding.epochs == (9,)


# --- dead_units ------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "flagged"), [(0.7, True), (0.69, False)])
def test_dead_units_threshold(fraction, flagged):
    ratio = np.full((EPOCHS, 3), HEALTHY)
    dead = np.zeros_like(ratio)
    dead[5:, 1] = fraction
    findings = diagnose(make(ratio, dead=dead))
    assert kinds(findings) == (["dead_units"] if flagged else [])
    if flagged:
        assert findings[0].weights == ("net/dense_1/kernel",)
        assert findings[0].epochs == (5, 6, 7, 8, 9)
        assert findings[0].evidence["grad_dead_units/net/dense_1/kernel"] == 0.7


def test_dead_units_in_one_epoch_only_is_not_reported():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    dead = np.zeros_like(ratio)
    dead[4, 1] = 0.9
    assert diagnose(make(ratio, dead=dead)) == []


def test_collapsed_network():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[7:] = 0.0
    dead = np.zeros_like(ratio)
    dead[7:] = 1.0
    (finding,) = diagnose(make(ratio, dead=dead))
    assert finding.kind == "dead_units"
    assert finding.weights == tuple(f"net/dense_{i}/kernel" for i in range(3))
    assert finding.epochs == (7, 8, 9)
    assert "collapsed" in finding.message


# --- stalled ---------------------------------------------------------------


def plateau_loss(dip):
    """The best loss of the last 5 epochs beats the one before by `dip`,
    at epochs 6 and 7 (relative improvement exactly `dip` there)."""
    return np.array([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5 * (1 - dip), 0.5 * (1 - dip)])


@pytest.mark.parametrize(("dip", "flagged"), [(0.00099, True), (0.00101, False)])
def test_stalled_loss_threshold(dip, flagged):
    ratio = np.full((8, 3), HEALTHY)
    change = np.full(ratio.shape, 1e-2)
    change[:, 0] = 1e-4
    findings = diagnose(make(ratio, weight_change=change, loss=plateau_loss(dip)))
    assert kinds(findings) == (["stalled"] if flagged else [])
    if flagged:
        (finding,) = findings
        assert finding.weights == ("net/dense_0/kernel",)
        assert finding.epochs == (6, 7)
        assert finding.evidence["weight_change/net/dense_0/kernel"] == 1e-4
        assert finding.evidence["loss_improvement"] == pytest.approx(dip)
        assert "converged" in finding.message


@pytest.mark.parametrize(("change", "flagged"), [(0.99e-3, True), (1.01e-3, False)])
def test_stalled_update_threshold(change, flagged):
    ratio = np.full((8, 2), HEALTHY)
    changes = np.full(ratio.shape, change)
    findings = diagnose(make(ratio, weight_change=changes, loss=plateau_loss(0)))
    assert kinds(findings) == (["stalled"] if flagged else [])


@pytest.mark.parametrize(("ratio", "flagged"), [(0.99e-3, True), (1.01e-3, False)])
def test_stalled_falls_back_on_grad_to_weight(ratio, flagged):
    # No vanishing: every kernel is equally small.
    findings = diagnose(make(np.full((8, 2), ratio), loss=plateau_loss(0)))
    assert kinds(findings) == (["stalled"] if flagged else [])
    if flagged:
        assert "grad_to_weight/net/dense_0/kernel" in findings[0].evidence


@pytest.mark.parametrize(
    ("dip", "change", "flagged"),
    [(0.0099, 0.99e-5, True), (0.0101, 0.99e-5, False), (0.0099, 1.01e-5, False)],
)
def test_frozen_kernels_stall_a_creeping_loss(dip, change, flagged):
    ratio = np.full((8, 2), HEALTHY)
    changes = np.full(ratio.shape, change)
    findings = diagnose(make(ratio, weight_change=changes, loss=plateau_loss(dip)))
    assert kinds(findings) == (["stalled"] if flagged else [])


def test_measured_update_beats_gradient_size():
    # Tiny gradients, but Adam still moves the weights 1% per epoch.
    ratio = np.full((8, 2), 1e-5)
    change = np.full(ratio.shape, 1e-2)
    assert diagnose(make(ratio, weight_change=change, loss=plateau_loss(0))) == []


def test_plateau_that_training_left_is_history():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    change = np.full(ratio.shape, 1e-4)
    loss = np.full(EPOCHS, 0.69)
    loss[8:] = [0.6, 0.5]  # the loss moves again at the end
    (left,) = diagnose(make(ratio, weight_change=change, loss=loss))
    assert left.kind == "stalled"
    assert not left.current
    assert left.epochs[-1] < 8
    assert left.when().endswith("not since")
    loss[8:] = 0.69
    (held,) = diagnose(make(ratio, weight_change=change, loss=loss))
    assert held.kind == "stalled"
    assert held.current
    assert held.epochs[-1] == EPOCHS - 1


def test_no_loss_no_stalled():
    assert diagnose(make(np.full((EPOCHS, 2), 1e-5))) == []


def test_stalled_needs_a_full_window():
    # 5 logged epochs: no loss before the window to compare with.
    assert diagnose(make(np.full((5, 2), 1e-5), loss=np.full(5, 0.5))) == []


# --- reporting -------------------------------------------------------------


def test_vanishing_and_dead_units_that_training_left_are_history():
    """BatchNorm rescues a deep sigmoid net after a few epochs: what held at
    the start and no longer holds is reported with its epochs, not current
    (the live run warned then, and the report says the same)."""
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[:4, 1] = 1e-6
    dead = np.zeros_like(ratio)
    dead[:4, 0] = 0.9
    findings = diagnose(make(ratio, dead=dead))
    assert kinds(findings) == ["dead_units", "vanishing"]
    assert [f.current for f in findings] == [False, False]
    assert all(f.epochs == (0, 1, 2, 3) for f in findings)
    findings = diagnose(make(ratio[:4], dead=dead[:4]))
    assert kinds(findings) == ["dead_units", "vanishing"]
    assert [f.current for f in findings] == [True, True]


def test_persistent_condition_is_one_finding():
    ratio = np.full((50, 4), HEALTHY)
    ratio[:, :2] = 1e-6
    (finding,) = diagnose(make(ratio))
    assert finding.epochs == tuple(range(50))
    assert finding.weights == ("net/dense_0/kernel", "net/dense_1/kernel")


def test_single_logged_epoch_is_enough_when_only_one_is_logged():
    ratio = np.full((1, 3), HEALTHY)
    ratio[0, 0] = 1e-6
    assert kinds(diagnose(make(ratio))) == ["vanishing"]


def test_min_epochs_threshold():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[7:, 0] = 1e-6
    assert kinds(diagnose(make(ratio), thresholds=Thresholds(min_epochs=3))) == [
        "vanishing"
    ]
    assert diagnose(make(ratio), thresholds=Thresholds(min_epochs=4)) == []


def test_findings_come_in_cause_order():
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 1] = 1e-6
    ratio[:, 2] = 1e3
    dead = np.zeros_like(ratio)
    dead[:, 0] = 0.8  # on the input side: it explains neither of the others
    nonfinite = np.zeros_like(ratio)
    nonfinite[9, 2] = 1
    change = np.full(ratio.shape, 1e-6)
    series = make(
        ratio,
        dead=dead,
        nonfinite=nonfinite,
        weight_change=change,
        loss=np.full(EPOCHS, 0.7),
    )
    # `stalled` is left out when another rule explains the stall.
    assert kinds(diagnose(series)) == list(CAUSE_ORDER[:-1])
    assert CAUSE_ORDER == (
        "non_finite", "exploding", "dead_units", "vanishing", "stalled"
    )  # fmt: skip
    assert sorted(CAUSE_ORDER) == sorted(KINDS)


def test_new_findings_by_kind_and_weights():
    def finding(kind, weights, epochs):
        return Finding(kind, weights, epochs, {}, "m", "r")

    old = [finding("vanishing", ("a",), (0, 1))]
    current = [
        finding("vanishing", ("a",), (0, 1, 2)),  # the same, one epoch later
        finding("vanishing", ("a", "b"), (2,)),  # spread to another layer
        finding("dead_units", ("a",), (2,)),
    ]
    assert new_findings(old, current) == current[1:]
    assert new_findings([], current) == current
    assert new_findings(current, current) == []


def test_to_dict_is_valid_json():
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[:, 0] = 1e-6
    (finding,) = diagnose(make(ratio))
    data = finding.to_dict()
    assert data["kind"] == "vanishing"
    assert set(data) == {
        "kind", "weights", "epochs", "message", "remedy", "evidence", "current"
    }  # fmt: skip
    assert data["current"] is True
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    odd = Finding("exploding", ("a",), (1,), {"x": float("inf")}, "m", "r")
    assert odd.to_dict()["evidence"] == {"x": None}


def test_messages_are_one_line():
    ratio = np.full((EPOCHS, 12), HEALTHY)
    ratio[:, :8] = 1e-6
    (finding,) = diagnose(make(ratio))
    assert "\n" not in finding.message
    assert "\n" not in finding.remedy
    assert "and 5 more" in finding.message
    assert len(finding.weights) == 8


# --- validation ------------------------------------------------------------


def test_default_kernels():
    paths = [
        "m/dense/kernel",
        "m/dense/bias",
        "m/gru/gru_cell/recurrent_kernel",
        "m/embedding/embeddings",
        "m/sep/depthwise_kernel",
        "m/bn/gamma",
    ]
    series = make(np.ones((2, len(paths))), paths=paths)
    assert series.kernels.tolist() == [True, False, True, True, True, False]
    assert series.kernel_columns().tolist() == [0, 2, 3, 4]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grad_norm", np.ones((3, 2))),
        ("weight_change", np.ones((2, 3))),
        ("loss", np.ones(3)),
        ("kernels", [True]),
    ],
)
def test_series_rejects_wrong_shapes(field, value):
    with pytest.raises(ValueError, match=field):
        make(np.ones((2, 2)), **{{"grad_norm": "norm"}.get(field, field): value})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vanishing_ratio": 0.0},
        {"vanishing_ratio": 1.5},
        {"exploding_ratio": 0.5},
        {"dead_fraction": 1.5},
        {"stall_loss": -1.0},
        {"exploding_growth": float("nan")},
        {"stall_window": 0},
        {"min_epochs": 1.5},
        {"min_epochs": True},
    ],
)
def test_thresholds_reject_out_of_range(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        Thresholds(**kwargs)


def test_diagnosis_does_not_import_tensorflow():
    path = Path(diagnosis.__file__)
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("diagnosis", {str(path)!r})
module = importlib.util.module_from_spec(spec)
sys.modules["diagnosis"] = module
spec.loader.exec_module(module)
heavy = [m for m in ("tensorflow", "keras", "tensorboard") if m in sys.modules]
assert not heavy, heavy
print(module.KINDS)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "vanishing" in result.stdout


# --- evidence cites what the message cites ---------------------------------


def _cited(message):
    """The numbers a message prints in scientific or percent notation."""
    return re.findall(r"\d\.\de[+-]\d\d|\d+%", message)


def test_evidence_holds_the_number_the_message_cites():
    """The worst value sits at an early epoch, not the last one where the
    rule held: evidence per weight is its extreme over those epochs."""
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 0] = HEALTHY * np.linspace(900.0, 200.0, EPOCHS)  # exploding, easing
    ratio[:, 1] = HEALTHY * np.linspace(1e-4, 5e-3, EPOCHS)  # vanishing, easing
    ratio[:, 2] = HEALTHY * np.linspace(2e-4, 6e-3, EPOCHS)
    dead = np.zeros_like(ratio)
    dead[:, 0] = np.linspace(1.0, 0.75, EPOCHS)
    findings = diagnose(make(ratio, dead=dead, loss=falling_loss()))
    assert kinds(findings) == ["exploding", "dead_units", "vanishing"]
    exploding, dead_units, vanishing = findings
    assert vanishing.evidence["relative_grad_to_weight/net/dense_1/kernel"] == (
        pytest.approx(1e-4)
    )
    assert vanishing.evidence["relative_grad_to_weight/net/dense_2/kernel"] == (
        pytest.approx(2e-4)
    )
    assert _cited(vanishing.message) == ["1.0e-04"]
    assert exploding.evidence["relative_grad_to_weight/net/dense_0/kernel"] == (
        pytest.approx(900.0)
    )
    assert _cited(exploding.message) == ["9.0e+02"]
    assert dead_units.evidence["grad_dead_units/net/dense_0/kernel"] == 1.0
    assert _cited(dead_units.message) == ["100%"]


# --- the backward signal ---------------------------------------------------

LAYERS = ["net/dense_0", "net/dense_1", "net/dense_2", "net/dense_3"]


def with_signal(signal, *, ratio=None, dead=None, time=None, activations=None, **kw):
    """A series whose four Dense layers logged `signal` = act_grad_norm [T, 4]."""
    signal = np.asarray(signal, dtype=float)
    ratio = np.full(signal.shape, HEALTHY) if ratio is None else ratio
    series = make(ratio, dead=dead, **kw)
    series.layers = list(LAYERS)
    series.act_grad_norm = signal
    series.time_grad_ratio = time
    series.activations = activations or {}
    return series


@pytest.mark.parametrize(("gain", "flagged"), [(0.99e-3, True), (1.01e-3, False)])
def test_vanishing_signal_threshold(gain, flagged):
    signal = np.ones((EPOCHS, 4))
    signal[:, 0] = gain
    findings = diagnose(with_signal(signal, loss=falling_loss()))
    assert kinds(findings) == (["vanishing"] if flagged else [])
    if flagged:
        (finding,) = findings
        assert finding.weights == ("net/dense_0/kernel",)
        assert finding.evidence["act_grad_gain/net/dense_0"] == pytest.approx(gain)
        assert "backward signal vanishes" in finding.message


@pytest.mark.parametrize(("gain", "flagged"), [(1.01e3, True), (0.99e3, False)])
def test_exploding_signal_threshold_inside_the_stack(gain, flagged):
    # The output side's signal dips: the input side is 1e3 times the signal
    # at dense_2, and only 10 times the output layer's.
    signal = np.tile([10.0, 10.0, 10.0 / gain, 1.0], (EPOCHS, 1))
    findings = diagnose(with_signal(signal, loss=falling_loss()))
    assert "vanishing" not in kinds(findings)  # dense_2 is not behind dense_3
    assert kinds(findings) == (["exploding"] if flagged else [])
    if flagged:
        assert findings[0].weights == ("net/dense_0/kernel", "net/dense_1/kernel")


def test_explosion_with_uniform_weight_gradients_is_not_vanishing():
    """The 10-layer linear net with N(0, 1) weights: the signal grows toward
    the input while the activations grow forward, so weight ratios would
    call the first layer vanishing; the signal says exploding."""
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 0] = HEALTHY * 1e-3  # what the weight-ratio rule would flag
    signal = np.tile([1.6e5, 3e3, 60.0, 1.0], (EPOCHS, 1))
    assert kinds(diagnose(with_signal(signal, ratio=ratio))) == ["exploding"]


def test_dead_output_side_is_dead_units_only():
    """98% dead units in front of the output layer: the signal behind them
    collapses, and their grad/weight next to the others' is no evidence."""
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[:, 3] = HEALTHY * 1e-3  # the output kernel's inputs are mostly 0
    dead = np.zeros_like(ratio)
    dead[:, 2] = 0.98
    signal = np.tile([1e-9, 1e-8, 1e-2, 1.0], (EPOCHS, 1))
    series = with_signal(signal, ratio=ratio, dead=dead, activations={
        LAYERS[2]: "relu"})  # fmt: skip
    (finding,) = diagnose(series)
    assert finding.kind == "dead_units"
    assert "dying ReLU" in finding.message
    # Without the signal (older logs) the weight ratios would say exploding.
    assert kinds(diagnose(make(ratio, dead=dead))) == ["dead_units"]


def test_saturated_tanh_is_vanishing_not_dying_relu():
    dead = np.zeros((EPOCHS, 4))
    dead[:, 1] = 0.8
    series = with_signal(
        np.ones((EPOCHS, 4)),
        dead=dead,
        activations={layer: "tanh" for layer in LAYERS},
    )
    (finding,) = diagnose(series)
    assert finding.kind == "vanishing"
    assert "tanh is saturated" in finding.message
    assert "ReLU" not in finding.message
    relu = with_signal(np.ones((EPOCHS, 4)), dead=dead, activations={
        LAYERS[1]: "relu"})  # fmt: skip
    (finding,) = diagnose(relu)
    assert finding.kind == "dead_units"
    assert "(dying ReLU)" in finding.message


@pytest.mark.parametrize(
    ("ratio", "kind"), [(1e-14, "vanishing"), (0.9e-3, "vanishing"), (1.1e-3, None),
                        (0.9e3, None), (1.1e3, "exploding")],
)  # fmt: skip
def test_through_time(ratio, kind):
    """SimpleRNN over 200 steps, label on the first step: first/last ~1e-14,
    while every weight's ratio looks normal."""
    time = np.full((EPOCHS, 4), np.nan)
    time[:, 1] = ratio
    series = with_signal(np.ones((EPOCHS, 4)), time=time, loss=falling_loss())
    findings = diagnose(series)
    assert kinds(findings) == ([kind] if kind else [])
    if kind:
        assert findings[0].weights == ("net/dense_1/kernel",)
        assert "through time" in findings[0].message
        assert findings[0].evidence["time_grad_ratio/net/dense_1"] == ratio


def test_nan_weights_with_zero_gradients_are_non_finite_not_dead():
    """NaN input feature under oneDNN: the first layer's weights are NaN,
    the fused MatMul+BiasAdd+Relu gives 0, every gradient is 0."""
    ratio = np.full((EPOCHS, 4), HEALTHY)
    ratio[2:] = 0.0
    dead = np.zeros_like(ratio)
    dead[2:] = 1.0
    weight_nonfinite = np.zeros_like(ratio)
    weight_nonfinite[2:, 0] = 40
    series = make(ratio, dead=dead, loss=falling_loss())
    series.weight_nonfinite = weight_nonfinite
    (finding,) = diagnose(series)
    assert finding.kind == "non_finite"
    assert finding.weights == ("net/dense_0/kernel",)
    assert finding.epochs == tuple(range(2, EPOCHS))
    assert finding.evidence["weight_nonfinite/net/dense_0/kernel"] == 40
    assert "the weights net/dense_0/kernel" in finding.message
    # Without the weights' count, the same gradients read as a collapse.
    series.weight_nonfinite = None
    assert kinds(diagnose(series)) == ["dead_units"]


def test_logged_nan_loss_is_non_finite():
    loss = falling_loss()
    loss[6:] = np.nan
    series = make(np.full((EPOCHS, 3), HEALTHY), loss=loss)
    assert diagnose(series) == []  # NaN alone means "not logged"
    series.loss_logged = np.ones(EPOCHS, dtype=bool)
    (finding,) = diagnose(series)
    assert finding.kind == "non_finite"
    assert finding.evidence["first_epoch"] == 6
    assert "the training loss" in finding.message


def test_live_update_logs_what_diagnose_finds_once():
    """Fed one epoch at a time, the rules report each finding once, the
    epoch it first holds, and end with `diagnose`'s findings."""
    from keras_gradwatch import _rules

    rng = np.random.default_rng(1)
    steps = 30
    ratio = HEALTHY * rng.uniform(0.5, 2.0, (steps, 4))
    ratio[12:, 0] = 1e-6
    dead = np.zeros_like(ratio)
    dead[20:, 2] = 0.9
    series = make(ratio, dead=dead, loss=falling_loss(steps))
    diagnoser = _rules.Diagnoser(series.paths)
    logged = {}
    for t in range(steps):
        for finding in diagnoser.update(series.row(t)):
            logged[finding.key] = t
        prefix = make(
            ratio[: t + 1], dead=dead[: t + 1], loss=falling_loss(steps)[: t + 1]
        )
        assert {f.key for f in diagnose(prefix)} <= set(logged)
    assert logged == {
        ("vanishing", ("net/dense_0/kernel",)): 13,
        ("dead_units", ("net/dense_2/kernel",)): 21,
    }
    assert diagnoser.findings() == diagnose(series)


def test_head_the_loss_ignores_is_no_failure():
    """A second head with loss weight 0: its gradients are exactly 0 because
    the loss does not depend on it (its own backward signal is 0), not
    because its sigmoid saturated or its units died."""
    dead = np.zeros((EPOCHS, 4))
    dead[:, 3] = 1.0
    signal = np.ones((EPOCHS, 4))
    signal[:, 3] = 0.0
    series = with_signal(signal, dead=dead, activations={LAYERS[3]: "sigmoid"})
    assert diagnose(series) == []


def test_gradients_all_zero_after_diverging_is_one_collapse():
    """Norms grow a million-fold, then every gradient is exactly 0: one
    story, the collapse that followed the growth, not exploding as well."""
    ratio = np.full((EPOCHS, 3), HEALTHY)
    ratio[:6] = HEALTHY * np.logspace(0, 6, 6)[:, None]
    ratio[6:] = 0.0
    dead = np.zeros_like(ratio)
    dead[6:] = 1.0
    findings = diagnose(make(ratio, dead=dead, norm=ratio))
    current = [f for f in findings if f.current]
    assert [f.kind for f in current] == ["dead_units"]
    assert "collapsed" in current[0].message


@pytest.mark.parametrize(
    ("loss", "change", "said"),
    [
        (0.69, 1e-4, "at chance"),  # learned nothing: stalled, said so
        (0.40, 1e-4, None),  # converged well below chance: weights still move
        (0.40, 1e-7, "stalled"),  # below chance but frozen: the rate is too small
        (0.69, 1e-2, "moving"),  # at chance while the weights move: going nowhere
    ],
)
def test_stalled_against_the_chance_level(loss, change, said):
    """ln 2 is the chance level of balanced binary labels."""
    ratio = np.full((EPOCHS, 3), HEALTHY)
    series = make(
        ratio, weight_change=np.full(ratio.shape, change), loss=np.full(EPOCHS, loss)
    )
    series.chance_loss = math.log(2)
    findings = diagnose(series)
    if said is None:
        assert findings == []
        return
    (finding,) = findings
    assert finding.kind == "stalled"
    assert finding.current
    at_chance = "at the chance level of the task (0.6931" in finding.message
    assert at_chance == (said in ("at chance", "moving"))
    moving = "while the weights still move" in finding.message
    assert moving == (said == "moving")
    assert finding.remedy == REMEDIES["stalled_at_chance" if moving else "stalled"]
    assert finding.evidence.get("chance_loss", math.log(2)) == math.log(2)
    # Without a known chance level, a plateau on kernels that barely move is
    # a stall (or convergence); one on moving kernels is not judged.
    series.chance_loss = math.nan
    assert kinds(diagnose(series)) == ([] if said == "moving" else ["stalled"])


@pytest.mark.parametrize(
    ("activation", "labels", "units", "share"),
    [
        ("sigmoid", [0.0, 0.5, 1.0, 1.5, -0.1], (1,), 2 / 5),  # ends reachable
        ("tanh", [[-1.0, 2.0], [0.0, 1.0]], (2,), 1 / 4),
        ("relu", [3.0, -2.0, 0.0, 7.0], (1,), 1 / 4),
        ("relu6", [6.0, 6.5], (1,), 1 / 2),
        ("sigmoid", np.full((2, 3, 4), 2.0), (None, 4), 1.0),  # any length
        ("sigmoid", {"out": [2.0, 0.5]}, (1,), 1 / 2),  # one output's labels
        ("linear", [255.0], (1,), math.nan),  # unbounded: nothing to say
        ("softmax", [[0.0, 1.0]], (2,), math.nan),  # not a per-value range
        ("sigmoid", [3, 1, 0], (4,), math.nan),  # class indices, not one per unit
        ("sigmoid", np.full((2, 3, 4), 2.0), (None, 5), math.nan),
        ("sigmoid", [0.5, math.nan], (1,), math.nan),
    ],
)
def test_share_of_labels_an_output_cannot_produce(activation, labels, units, share):
    from keras_gradwatch._chance import outside_range

    got = outside_range(activation, labels, units, loss="mse")
    assert got == share or (math.isnan(got) and math.isnan(share))


@pytest.mark.parametrize(
    ("loss", "weights", "known"),
    [
        ("mse", None, True),
        ("binary_crossentropy", None, True),
        ("cosine_similarity", None, False),  # scale-free: any range fits
        (lambda y, p: (y / 255 - p) ** 2, None, False),  # may rescale itself
        ("mse", np.ones(2), False),  # a weight of 0 marks labels that do not count
    ],
)
def test_labels_outside_only_where_the_loss_compares_them(loss, weights, known):
    from keras_gradwatch._chance import outside_range

    got = outside_range("sigmoid", [2.0, 0.5], (1,), loss=loss, sample_weight=weights)
    assert got == 0.5 if known else math.isnan(got)


def test_saturated_output_chasing_labels_it_cannot_produce():
    """A sigmoid output asked for 0-255 saturates: the finding names the
    labels and its remedy puts bringing them into range first."""
    dead = np.zeros((EPOCHS, 4))
    dead[:, 3] = 0.9
    activations = {layer: "relu" for layer in LAYERS[:3]} | {LAYERS[3]: "sigmoid"}
    series = with_signal(np.ones((EPOCHS, 4)), dead=dead, activations=activations)
    (plain,) = diagnose(series)
    assert plain.kind == "vanishing"
    assert plain.remedy == REMEDIES["saturated"]
    series.target_outside = {LAYERS[3]: 0.99}
    (finding,) = diagnose(series)
    assert finding.kind == "vanishing"
    assert finding.weights == plain.weights
    assert finding.message == (
        f"{plain.message} 99% of the held-out label values lie outside the range "
        "of the output layer's sigmoid (net/dense_3: 0 to 1), which it cannot "
        "produce."
    )
    assert finding.remedy.startswith(REMEDIES["target_outside"])
    assert finding.remedy.endswith(REMEDIES["saturated"][1:])
    assert finding.evidence["target_outside"] == 0.99
    # A share for another layer than the saturated one changes nothing.
    series.target_outside = {LAYERS[0]: 0.99}
    assert diagnose(series) == [plain]


def test_dead_relu_output_on_negative_labels():
    """A ReLU output asked for negative values dies: dead_units, naming the
    labels, with their fix first."""
    dead = np.zeros((EPOCHS, 4))
    dead[:, 3] = 1.0
    series = with_signal(
        np.ones((EPOCHS, 4)), dead=dead, activations=dict.fromkeys(LAYERS, "relu")
    )
    series.target_outside = {LAYERS[3]: 1.0}
    (finding,) = diagnose(series)
    assert finding.kind == "dead_units"
    assert "(net/dense_3: 0 and above), which it cannot produce" in finding.message
    assert finding.remedy.startswith(REMEDIES["target_outside"])


@pytest.mark.parametrize(("loss", "change"), [(3.0e4, 1e-2), (1.0e3, 1e-7)])
def test_stall_with_labels_the_output_cannot_produce(loss, change):
    """A stall (above the chance level with moving weights, or below it on
    frozen ones) names labels out of the output's range; their fix first,
    then the stall's own remedy."""
    ratio = np.full((EPOCHS, 4), HEALTHY)
    series = with_signal(
        np.ones((EPOCHS, 4)),
        ratio=ratio,
        activations={LAYERS[3]: "sigmoid"},
        weight_change=np.full(ratio.shape, change),
        loss=np.full(EPOCHS, loss),
    )
    series.chance_loss = 8.4e3
    (plain,) = diagnose(series)
    series.target_outside = {LAYERS[3]: 0.5}
    (finding,) = diagnose(series)
    assert finding.kind == "stalled"
    above = "above the chance level of the task (8400" in finding.message
    assert above == (loss > 8.4e3)
    assert finding.message.startswith(plain.message)
    assert "50% of the held-out label values lie outside" in finding.message
    assert finding.remedy == (
        f"{REMEDIES['target_outside']} Then, if it persists: "
        f"{plain.remedy[0].lower()}{plain.remedy[1:]}"
    )


@pytest.mark.parametrize(("drop_at", "named"), [(3, True), (1, False)])
def test_signal_vanishing_across_an_output_chasing_labels(drop_at, named):
    """A saturated sigmoid output gates the backward signal: a drop across
    it names labels it cannot produce; a drop lower in the net is the net's
    own."""
    signal = np.ones((EPOCHS, 4))
    signal[:, :drop_at] = 1e-5
    series = with_signal(
        signal, activations={LAYERS[3]: "sigmoid"} | dict.fromkeys(LAYERS[:3], "relu")
    )
    series.target_outside = {LAYERS[3]: 0.75}
    (finding,) = diagnose(series)
    assert finding.kind == "vanishing"
    assert "The backward signal vanishes toward the input" in finding.message
    said = "75% of the held-out label values lie outside the range of the output"
    assert (said in finding.message) == named
    assert finding.remedy.startswith(REMEDIES["target_outside"]) == named
    assert finding.remedy.endswith(REMEDIES["vanishing"][1:])


def test_target_outside_holds_shares():
    series = make(np.full((EPOCHS, 2), HEALTHY))
    assert (
        replace(series, target_outside={"net/dense_1": math.nan}).target_outside == {}
    )
    with pytest.raises(ValueError, match=r"target_outside holds shares, in \[0, 1\]"):
        replace(series, target_outside={"net/dense_1": 5.0})
