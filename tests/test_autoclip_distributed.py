"""Must show 3: AutoClip on 2 replicas and under mixed_float16; step scalars.

The replicas are two logical CPU devices, which must be configured before
TensorFlow starts, so the steps run in a fresh process
(`tests/scripts/autoclip_replicas.py`).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.numeric

SCRIPT = Path(__file__).resolve().parent / "scripts" / "autoclip_replicas.py"


@pytest.fixture(scope="module")
def outcome():
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["by"] = {
        (r["replicas"], r["policy"], r["clipping"]): r for r in report["results"]
    }
    return report


@pytest.mark.parametrize(
    ("replicas", "policy", "rtol"),
    [(2, "float32", 1e-6), (1, "mixed_float16", 1e-3), (2, "mixed_float16", 1e-3)],
)
def test_norm_of_the_summed_unscaled_gradient_and_update_at_threshold(
    outcome, replicas, policy, rtol
):
    result = outcome["by"][(replicas, policy, "autoclip")]
    threshold = outcome["threshold"]
    # The measured norm is the single-device float32 norm of the whole batch:
    # summed across replicas, and not multiplied by the loss scale (32768).
    assert result["measured_norm"] == pytest.approx(outcome["reference_norm"], rel=rtol)
    assert result["measured_norm"] > 1000 * threshold
    assert result["update_norm"] == pytest.approx(threshold, rel=1e-4)
    assert result["skipped"] == 0


def test_keras_global_clipnorm_clips_per_replica(outcome):
    """The failure AutoClip exists to avoid, measured in the same process."""
    result = outcome["by"][(2, "float32", "keras")]
    assert result["update_norm"] > 1.2 * outcome["threshold"]


def test_every_step_written_once_across_replicas(outcome):
    """every_n_steps=1 on 2 replicas: one point per step (not per replica),
    each the cross-replica norm (the epoch's largest is its max_norm)."""
    logged = outcome["every_step"]
    assert logged["steps"] == [0, 1, 2, 3]
    norms = logged["norms"]
    for epoch, largest in enumerate(logged["max_norm"]):
        step_max = max(norms[2 * epoch : 2 * epoch + 2])
        assert step_max == pytest.approx(largest, rel=1e-6)


def test_step_bound_holds_on_the_summed_unscaled_gradient(outcome):
    """AutoClip() with SGD(1.0): every kernel's update is held to 0.016 of
    its norm, on one device, on two replicas and under mixed precision
    alike (the same updates: the bound is taken on the summed, unscaled
    gradient). The first steps are held (no update)."""
    one, two, mixed = outcome["step_bound"]
    for run in (one, two, mixed):
        applied = [step for step in run["steps"] if step[0]["update"] > 0]
        assert len(applied) >= 2
        for step in applied:
            assert len(step) == 2
            for kernel in step:
                bound = 0.016 * kernel["weight"]
                assert kernel["update"] == pytest.approx(bound, rel=1e-4)

    def flat(run):
        return [k[name] for step in run["steps"] for k in step for name in k]

    assert flat(one) == pytest.approx(flat(two), rel=1e-5)
