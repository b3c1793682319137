"""The clip policies and the global norm, one step at a time, against NumPy,
on the backend of this run (`KERAS_BACKEND`)."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from helpers import NpAutoClip
from keras_gradwatch import _clipping, _stats_ops

pytestmark = pytest.mark.numeric

# Spikes, a NaN and an Inf step (skipped), a zero norm, and more steps than
# the percentile window holds.
NORMS = [1.0, 2.0, math.nan, 1.5, math.inf, 30.0, 1.2, 0.0, 5.0, 1.1, 40.0, 1.3]

POLICIES = {
    "zscore": (_clipping.ZScore(1.0, 3), {"z": 1.0, "warmup": 3}),
    "percentile": (_clipping.Percentile(50.0, 4), {"percentile": 50.0, "window": 4}),
    "fixed": (_clipping.Fixed(2.0), {"threshold": 2.0}),
}


WIDE = _stats_ops.wide_dtype()
REL = 1e-12 if WIDE == "float64" else 1e-5
"""Agreement with NumPy's float64: to float64 rounding, or in float32 (JAX
without x64) to 1e-5: each value passes through under ten float32
operations of relative error 6e-8 each (at most 6e-7), with 10x margin."""


def f64(value):
    return ops.convert_to_tensor(value, WIDE)


def f32(value):
    return ops.convert_to_tensor(np.asarray(value, np.float32))


def count(value):
    return ops.convert_to_tensor(value, "int64" if WIDE == "float64" else "int32")


@pytest.mark.parametrize("mode", POLICIES)
def test_policy_matches_numpy_step_by_step(mode):
    policy, kwargs = POLICIES[mode]
    reference = NpAutoClip(mode, **kwargs)
    memory = _clipping.Memory(f64([math.inf] * policy.history_size))
    seen, clipped, applied = 0, 0, False
    for step, norm in enumerate(NORMS):
        finite = math.isfinite(norm)
        bound, to, _, after = policy(
            memory, f64(norm if finite else 0.0), ops.convert_to_tensor(finite),
            count(seen),
        )  # fmt: skip
        want = reference.factor(norm)
        if not finite:
            assert want is None
            for old, new in zip(memory, after, strict=True):
                np.testing.assert_array_equal(
                    ops.convert_to_numpy(old), ops.convert_to_numpy(new)
                )
        else:
            bound = float(bound)
            got = float(to) / norm if norm > bound else 1.0
            # Held (see _autoclip_state.decide): the first step, and before
            # any applied step one above 3 x the low median of the earlier.
            earlier = [n for n in NORMS[:step] if math.isfinite(n)]
            earlier = sorted(earlier[max(0, len(earlier) - policy.history_size) :])
            middle = earlier[(len(earlier) - 1) // 2] if earlier else 0.0
            spike = middle > 0 and norm > 3.0 * middle
            if policy.holds_first and (seen == 0 or (not applied and spike)):
                got = 0.0
            applied = applied or got > 0.0
            assert got == pytest.approx(want, rel=REL), f"step {step}"
            clipped += got < 1.0
            seen += 1
        memory = after
    assert 0 < clipped < len(NORMS)


def test_zscore_gross_spike_redescends():
    """Up to 3 x the bound, ZClip's reciprocal value about the median; beyond,
    that value times 3 x bound / norm, towards 0."""
    policy = _clipping.ZScore(2.5, 25)
    rng = np.random.default_rng(0)
    history = f64(rng.uniform(0.9, 1.1, 25))
    middle = float(np.sort(ops.convert_to_numpy(history))[12])
    seen, memory, finite = (
        count(25),
        _clipping.Memory(history),
        ops.convert_to_tensor(True),
    )
    bound = float(policy(memory, f64(1.0), finite, seen)[0])
    for norm in [1.5 * bound, 3.0 * bound, 10.0 * bound, 1000.0 * bound]:
        to = policy(memory, f64(norm), finite, seen)[1]
        zclip = middle + (bound - middle) ** 2 / (norm - middle)
        want = zclip * min(1.0, 3.0 * bound / norm)
        assert float(to) == pytest.approx(want, rel=REL)
    assert float(to) < 0.01 * middle


def test_global_norm_edge_cases():
    def norm(grads):
        return float(_clipping.global_norm(grads, WIDE))

    assert norm([]) == 0.0
    assert norm([None, None]) == 0.0
    assert norm([f32([3.0, 4.0]), None, f32([[12.0]])]) == 13.0
    # Squares overflow float32 (1e40 > 3.4e38): the norm is still exact, to
    # float32's rounding of 1e20 (6e-8) and of the scaled sum.
    assert norm([f32(np.full([4], 1e20))]) == pytest.approx(2e20, rel=1e-6)
    big = [f32(np.full([4], 1e20)), f32([3e20, 0.0]), f32([[0.0]])]
    assert norm(big) == pytest.approx(math.sqrt(13) * 1e20, rel=1e-6)
    assert math.isnan(norm([f32([1.0, math.nan])]))
    assert math.isinf(norm([f32([1.0, math.inf])]))
    assert math.isinf(norm([f32([1.0, math.inf]), f32([math.nan])])) or math.isnan(
        norm([f32([1.0, math.inf]), f32([math.nan])])
    )


def test_step_limits_against_numpy():
    """Kernels only (2+ dims), each held to relative x max(||w||, 1e-3) per
    step of rate x ||g||; +inf within it; exact where float32 overflows."""
    rng = np.random.default_rng(0)
    weights = [
        rng.normal(size=(4, 3)),  # kernel, gradient above the bound
        rng.normal(size=(3,)),  # bias: never limited
        rng.normal(size=(3, 2)),  # kernel, gradient within the bound
        np.zeros((2, 2)),  # zero kernel: its norm counts as 1e-3
        rng.normal(size=(2, 2)),  # no gradient
        rng.normal(size=(2, 5)),  # gradient whose float32 squares overflow
    ]
    grads = [
        10.0 * rng.normal(size=(4, 3)),
        100.0 * rng.normal(size=(3,)),
        1e-4 * rng.normal(size=(3, 2)),
        rng.normal(size=(2, 2)),
        None,
        np.full((2, 5), 1e25),
    ]
    rate, relative = 0.1, 0.016
    got = _clipping.step_limits(
        [None if g is None else f32(g) for g in grads],
        [keras.Variable(w, dtype="float32") for w in weights],
        relative,
        f32(rate),
        WIDE,
    )
    want = NpAutoClip.step_limits(
        [np.zeros(1) if g is None else g for g in grads], weights, rate, relative
    )
    assert got[1] is None
    assert got[4] is None
    for i in (0, 2, 3, 5):
        assert float(got[i]) == pytest.approx(want[i], rel=1e-6), i
    assert math.isinf(float(got[2]))
    assert float(got[0]) < 1.0
    assert float(got[3]) < 1.0
    assert float(_clipping.least(got, WIDE)) == pytest.approx(min(want), rel=1e-6)
    assert math.isinf(float(_clipping.least([None, None], WIDE)))


def test_scale_takes_each_gradient_to_its_limit():
    grads = [f32([3.0, 4.0]), None, f32([[1.0]])]
    limits = [f64(0.5), None, f64(2.0)]
    out = _clipping.scale(grads, f64(0.8), limits)
    np.testing.assert_allclose(ops.convert_to_numpy(out[0]), [1.5, 2.0])
    assert out[1] is None
    np.testing.assert_allclose(ops.convert_to_numpy(out[2]), [[0.8]])
    # Nothing to scale: the gradients pass unchanged.
    same = _clipping.scale(grads, f64(1.0), [f64(math.inf), None, None])
    np.testing.assert_array_equal(ops.convert_to_numpy(same[0]), [3.0, 4.0])


def test_a_step_held_to_the_step_bound_counts_as_clipped():
    from keras_gradwatch._autoclip_state import ClipState, decide

    state = ClipState(1)
    policy = _clipping.Fixed(10.0)
    state.reset(policy.config)
    for limit, counted in [(None, 0), (f64(2.0), 0), (f64(0.5), 1), (f64(0.1), 2)]:
        factor, finite, _ = decide(state, policy, f64(1.0), limit)
        assert float(factor) == 1.0
        assert bool(finite)
        assert int(state.clipped.value) == counted
    decide(state, policy, f64(math.nan), f64(0.1))  # skipped, not clipped
    assert int(state.clipped.value) == 2
    assert int(state.skipped.value) == 1
