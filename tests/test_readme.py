"""The README's Python snippets run as shown, on small data, so they cannot
drift from the API (a snippet that leaves out `compile` fails here)."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
MAX_EPOCHS = 2


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 3


def namespace():
    """What the snippets take as given: x, y, xv, yv and an uncompiled model."""
    rng = np.random.default_rng(0)
    x, xv = (rng.uniform(-1, 1, (64, 2)).astype("float32") for _ in range(2))
    y, yv = ((a[:, 0] * a[:, 1] > 0).astype("float32") for a in (x, xv))
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(4, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    fit = model.fit

    def short_fit(*args, **kwargs):
        # The snippets train for 50-500 epochs; a few show that they run.
        kwargs["epochs"] = min(kwargs.get("epochs", 1), MAX_EPOCHS)
        return fit(*args, verbose=0, **kwargs)

    model.fit = short_fit
    return {"x": x, "y": y, "xv": xv, "yv": yv, "model": model}


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs_as_shown(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = namespace()
    code = compile(BLOCKS[index], f"README.md, python block {index + 1}", "exec")
    exec(code, scope)
    runs = sorted(p.name for p in (tmp_path / "logs" / "run1").iterdir())
    assert runs, "the snippet wrote no logs"
    history = scope["model"].history
    assert len(history.epoch) == MAX_EPOCHS
