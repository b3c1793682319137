"""The clip policies and the global norm, one step at a time, against NumPy."""

import math

import numpy as np
import pytest
import tensorflow as tf

from helpers import NpAutoClip
from keras_gradwatch import _clipping

pytestmark = pytest.mark.numeric

# Spikes, a NaN and an Inf step (skipped), a zero norm, and more steps than
# the percentile window holds.
NORMS = [1.0, 2.0, math.nan, 1.5, math.inf, 30.0, 1.2, 0.0, 5.0, 1.1, 40.0, 1.3]

POLICIES = {
    "zscore": (_clipping.ZScore(1.0, 3), {"z": 1.0, "warmup": 3}),
    "percentile": (_clipping.Percentile(50.0, 4), {"percentile": 50.0, "window": 4}),
    "fixed": (_clipping.Fixed(2.0), {"threshold": 2.0}),
}


def f64(value):
    return tf.constant(value, tf.float64)


@pytest.mark.parametrize("mode", POLICIES)
def test_policy_matches_numpy_step_by_step(mode):
    policy, kwargs = POLICIES[mode]
    reference = NpAutoClip(mode, **kwargs)
    memory = _clipping.Memory(f64([math.inf] * policy.history_size))
    seen, clipped, applied = 0, 0, False
    for step, norm in enumerate(NORMS):
        finite = math.isfinite(norm)
        bound, to, _, after = policy(
            memory, f64(norm if finite else 0.0), tf.constant(finite),
            tf.constant(seen, tf.int64),
        )  # fmt: skip
        want = reference.factor(norm)
        if not finite:
            assert want is None
            for old, new in zip(memory, after, strict=True):
                np.testing.assert_array_equal(old.numpy(), new.numpy())
        else:
            bound = float(bound.numpy())
            got = float(to.numpy()) / norm if norm > bound else 1.0
            # Held (see _autoclip_state.decide): the first step, and before
            # any applied step one above 3 x the low median of the earlier.
            earlier = [n for n in NORMS[:step] if math.isfinite(n)]
            earlier = sorted(earlier[max(0, len(earlier) - policy.history_size) :])
            middle = earlier[(len(earlier) - 1) // 2] if earlier else 0.0
            spike = middle > 0 and norm > 3.0 * middle
            if policy.holds_first and (seen == 0 or (not applied and spike)):
                got = 0.0
            applied = applied or got > 0.0
            assert got == pytest.approx(want, rel=1e-12), f"step {step}"
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
    middle = float(np.sort(history.numpy())[12])
    seen, memory, finite = (
        tf.constant(25, tf.int64),
        _clipping.Memory(history),
        tf.constant(True),
    )
    bound = float(policy(memory, f64(1.0), finite, seen)[0])
    for norm in [1.5 * bound, 3.0 * bound, 10.0 * bound, 1000.0 * bound]:
        to = policy(memory, f64(norm), finite, seen)[1]
        zclip = middle + (bound - middle) ** 2 / (norm - middle)
        want = zclip * min(1.0, 3.0 * bound / norm)
        assert float(to) == pytest.approx(want, rel=1e-12)
    assert float(to) < 0.01 * middle


def test_global_norm_edge_cases():
    norm = _clipping.global_norm
    assert float(norm([])) == 0.0
    assert float(norm([None, None])) == 0.0
    g = [tf.constant([3.0, 4.0]), None, tf.constant([[12.0]])]
    assert float(norm(g)) == 13.0
    # Squares overflow float32 (1e40 > 3.4e38): the norm is still exact.
    assert float(norm([tf.fill([4], 1e20)])) == pytest.approx(2e20, rel=1e-7)
    assert math.isnan(float(norm([tf.constant([1.0, math.nan])])))
    assert math.isinf(float(norm([tf.constant([1.0, math.inf])])))
