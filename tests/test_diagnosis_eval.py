"""Must show 2: the rules judge trained models right (benchmarks/diagnosis_eval.py).

Also the live side: GradWatch logs one warning per new finding while training.
"""

import logging
from pathlib import Path

import numpy as np
import pytest

from helpers import load_script
from keras_gradwatch import GradWatch

pytestmark = pytest.mark.numeric

EVAL = load_script(
    Path(__file__).resolve().parent.parent / "benchmarks" / "diagnosis_eval.py"
)


def test_scenarios_get_the_expected_verdicts(capsys):
    result = EVAL.main(["--epochs", "100"])
    for name, kinds in result["found"].items():
        expected = EVAL.SCENARIOS[name].expected
        assert kinds <= expected, (name, kinds)
        assert bool(kinds) == bool(expected), (name, kinds)
    assert result["precision"] == 1.0
    assert result["recall"] == 1.0
    assert "precision 1.00, recall 1.00" in capsys.readouterr().out


def fit_live(name, epochs, tmp_path, caplog):
    x, y, xt, yt = EVAL.two_circles()
    model = EVAL.SCENARIOS[name].build()
    with caplog.at_level(logging.WARNING, logger="keras_gradwatch"):
        model.fit(
            x, y, epochs=epochs, batch_size=32, verbose=0,
            callbacks=[GradWatch(tmp_path, held_out=(xt[:256], yt[:256]))],
        )  # fmt: skip
    return [r.getMessage() for r in caplog.records if "diagnosis" in r.getMessage()]


def test_live_warning_once_per_new_finding(tmp_path, caplog):
    lines = fit_live("sigmoid_deep", 6, tmp_path, caplog)
    assert len(lines) == 1, lines
    assert lines[0].startswith("GradWatch diagnosis, epoch ")
    assert "Gradients vanish toward the input" in lines[0]
    assert "Try: Use ReLU or leaky ReLU" in lines[0]


def test_live_quiet_on_a_healthy_net(tmp_path, caplog):
    np.random.seed(0)
    assert fit_live("relu_he", 6, tmp_path, caplog) == []
