"""find_spikes: the documented robust rule, by hand and on edge cases."""

import numpy as np
import pytest

from keras_gradwatch.spikes import find_spikes


def test_docstring_example():
    norms = [1.0, 1.1, 0.9, 1.0, 1.05, 40.0, 1.0]
    np.testing.assert_array_equal(find_spikes(range(7), norms), [5])


def test_rule_by_hand():
    """Five earlier norms 1, 2, 3, 4, 5: median 3, MAD 1, scale 1.4826; with
    z = 2 the bound is 5.965."""
    steps = [10, 20, 30, 40, 50, 60]
    assert find_spikes(steps, [1, 2, 3, 4, 5, 5.96], z=2).tolist() == []
    assert find_spikes(steps, [1, 2, 3, 4, 5, 5.97], z=2).tolist() == [60]


def test_spikes_in_a_noisy_falling_series():
    rng = np.random.default_rng(0)
    norms = 5 * np.exp(-np.arange(500) / 200) * rng.uniform(0.8, 1.2, 500)
    spiky = norms.copy()
    spiky[[40, 41, 300]] *= 1000
    assert find_spikes(np.arange(500), norms).tolist() == []
    # Two spikes in a row: the median does not let the first hide the second.
    assert find_spikes(np.arange(500), spiky).tolist() == [40, 41, 300]


def looped(norms, window=50, z=6.0, floor=0.1, min_points=5):
    """The rule of the module docstring, one point at a time."""
    found = []
    for i in range(min_points, len(norms)):
        before = norms[max(0, i - window) : i]
        middle = np.median(before)
        scale = max(1.4826 * np.median(np.abs(before - middle)), floor * middle)
        if norms[i] > middle + z * scale:
            found.append(i)
    return found


@pytest.mark.parametrize("window", [1, 7, 50])
def test_blocks_judge_as_one_point_at_a_time(window):
    """A long series (past one block of sliding windows) with bursts of
    spikes: the vectorized rule finds exactly what the loop finds."""
    rng = np.random.default_rng(window)
    norms = np.exp(rng.normal(0, 0.3, 20_000))
    norms[rng.choice(20_000, 300, replace=False)] *= rng.uniform(2, 1e3, 300)
    want = looped(norms, window=window, min_points=min(5, window))
    got = find_spikes(
        np.arange(20_000), norms, window=window, min_points=min(5, window)
    )
    assert len(want) > 100
    assert got.tolist() == want


def test_edge_cases():
    assert find_spikes([], []).tolist() == []
    assert find_spikes([0], [1.0]).tolist() == []
    flat = [2.0] * 10
    assert find_spikes(range(10), flat).tolist() == []
    # The floor: a flat series has MAD 0; 10% of the median x 6 = 60%.
    assert find_spikes(range(11), [*flat, 3.1]).tolist() == []
    assert find_spikes(range(11), [*flat, 3.3]).tolist() == [10]
    # Unsorted steps; NaN/Inf are neither spikes nor in the windows.
    steps = [5, 4, 3, 2, 1, 0, 6, 7]
    norms = [1.0, 1.0, np.nan, 1.0, 1.0, 1.0, np.inf, 1.0]
    assert find_spikes(steps, norms, min_points=4).tolist() == []
    assert find_spikes([0, 1, 2, 3, 4, 5], [0.0] * 5 + [1e-9]).tolist() == [5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": [1, 2], "norms": [1.0]}, r"same length.*2 steps and 1 norms"),
        ({"window": 0}, r"`window` must be an int >= 1"),
        ({"min_points": 9, "window": 5}, r"`min_points` must be an int in"),
        ({"z": 0}, r"`z` must be > 0"),
    ],
)
def test_errors(kwargs, message):
    args = {"steps": [1], "norms": [1.0], **kwargs}
    with pytest.raises(ValueError, match=message):
        find_spikes(**args)
