"""`gradwatch report`: real event files in, table / JSON / picture out."""

import dataclasses
import json
import shutil
import struct
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import read_run
from keras_gradwatch import GradWatch, WeightNorms, _report, _rules, tags
from keras_gradwatch._cli import main
from keras_gradwatch.diagnosis import KINDS, Finding, Series, Thresholds

pytestmark = pytest.mark.numeric

EPOCHS = 3
SYNTHETIC = ["syn/dense_0/kernel", "syn/dense_1/kernel", "syn/dense_2/kernel"]
PNG = b"\x89PNG\r\n\x1a\n"
FINDING_KEYS = ("kind", "weights", "epochs", "message", "remedy", "evidence")


def write_scalars(run_dir, steps):
    """Writes `steps` (a list of {tag: value} per step) as scalar summaries."""
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        for step, values in enumerate(steps):
            for tag, value in values.items():
                if value is not None:
                    tf.summary.scalar(tag, value, step=step)
    writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """``relu/``: a 3-layer net trained for 3 epochs with GradWatch, WeightNorms
    and Keras' TensorBoard; ``synthetic/heldout``: hand-written gradients that
    vanish toward the input."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("logs")
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden_1"),
            keras.layers.Dense(16, activation="relu", name="hidden_2"),
            keras.layers.Dense(1, name="output"),
        ],
        name="mlp",
    )
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    history = model.fit(
        x,
        y,
        epochs=EPOCHS,
        verbose=0,
        callbacks=[
            keras.callbacks.TensorBoard(root / "relu"),
            GradWatch(root / "relu", held_out=(x[:32], y[:32])),
            WeightNorms(root / "relu"),
        ],
    )
    paths = [w.path for w in model.trainable_weights]
    ratio = [1e-6, 0.1, 0.1]  # the first kernel gets 1e-5 of the last one's
    write_scalars(
        root / "synthetic" / "heldout",
        [
            {
                f"{prefix}/{p}": r
                for p, r in zip(SYNTHETIC, ratio, strict=True)
                for prefix in ("grad_norm", "grad_to_weight", "grad_mean_abs")
            }
        ]
        * EPOCHS,
    )
    return root, paths, history.history["loss"]


def run_named(runs, name):
    (run,) = [r for r in runs if r.name == name]
    return run


def test_runs_are_named_by_their_path(logdir):
    root, *_ = logdir
    assert [r.name for r in _report.load(root).runs] == [
        "relu/heldout",
        "synthetic/heldout",
    ]


def test_series_is_what_was_logged(logdir):
    root, paths, losses = logdir
    series = run_named(_report.load(root).runs, "relu/heldout").series
    # Tags come back in the order GradWatch wrote them: trainable_weights'.
    assert series.paths == paths
    assert series.epochs.tolist() == list(range(EPOCHS))
    logged = read_run(root / "relu" / "heldout")
    for j, path in enumerate(paths):
        for prefix in ("grad_norm", "grad_to_weight", "grad_dead_units"):
            expected = [float(logged[f"{prefix}/{path}"][e]) for e in range(EPOCHS)]
            np.testing.assert_array_equal(getattr(series, prefix)[:, j], expected)
    np.testing.assert_allclose(series.loss, losses, rtol=1e-6)
    weights = read_run(root / "relu" / tags.WEIGHTS_RUN)
    change = [[weights[f"weight_change/{p}"][e] for p in paths] for e in range(EPOCHS)]
    np.testing.assert_array_equal(series.weight_change, change)


def test_table_rows_go_input_to_output(logdir, capsys):
    root, paths, *_ = logdir
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("run relu/")))
    assert f"{EPOCHS} logged epochs (0-{EPOCHS - 1}), train loss" in lines[start]
    assert lines[start + 1].split()[0] == "weight"
    rows = [line.split() for line in lines[start + 2 : start + 2 + len(paths)]]
    assert [row[0] for row in rows] == paths
    assert all(row[-1] != "-" for row in rows)  # weight change joined


def test_table_shows_findings_with_remedies(logdir, capsys):
    root, *_ = logdir
    assert main(["report", str(root / "synthetic")]) == 0
    out = capsys.readouterr().out
    assert "run heldout:" in out
    assert f"vanishing (epochs 0-{EPOCHS - 1}, current): " in out
    assert SYNTHETIC[0] in out
    assert "    try: Use ReLU" in out


def test_json_schema(logdir, capsys):
    root, paths, _ = logdir
    assert main(["report", str(root), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # compact: one line
    data = json.loads(out)
    assert set(data) == {"runs", "autoclip", "notes"}
    assert data["autoclip"] == []  # no AutoClip step norms in these logs
    assert data["notes"] == []
    relu, synthetic = data["runs"]
    assert set(relu) == {"run", "axis", "epochs", "weights", "findings"}
    assert relu["axis"] == "epoch"
    assert relu["run"] == "relu/heldout"
    assert relu["epochs"] == list(range(EPOCHS))
    assert [w["path"] for w in relu["weights"]] == paths
    for weight in relu["weights"]:
        assert set(weight) == {
            "path",
            "grad_norm",
            "grad_to_weight",
            "dead_units",
            "weight_change",
        }
        assert isinstance(weight["grad_norm"], float)
        assert isinstance(weight["weight_change"], float)
    (finding,) = synthetic["findings"]
    assert set(finding) == {
        "kind",
        "weights",
        "epochs",
        "message",
        "remedy",
        "evidence",
        "current",
    }
    assert finding["kind"] == "vanishing"
    assert finding["weights"] == SYNTHETIC[:1]
    assert finding["epochs"] == list(range(EPOCHS))
    # Not logged -> null, never NaN (which is not JSON).
    assert synthetic["weights"][0]["dead_units"] is None
    assert synthetic["weights"][0]["weight_change"] is None


def test_plot_writes_a_png(logdir, tmp_path, capsys):
    root, *_ = logdir
    picture = tmp_path / "flow.png"
    assert main(["report", str(root), "--plot", str(picture)]) == 0
    data = picture.read_bytes()
    assert data.startswith(PNG)
    assert len(data) > 1000
    assert "run relu/heldout" in capsys.readouterr().out


def test_plot_without_matplotlib(logdir, tmp_path, capsys, monkeypatch):
    root, *_ = logdir
    for module in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["report", str(root), "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install keras_gradwatch[plot]" in capsys.readouterr().err


def test_missing_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "gradwatch: error: no such directory" in err
    assert "nope" in err


def test_directory_without_gradwatch_data(logdir, tmp_path, capsys):
    root, *_ = logdir
    assert main(["report", str(tmp_path)]) == 2
    assert "no GradWatch logs" in capsys.readouterr().err
    # Keras' own runs alone are not enough either.
    shutil.copytree(root / "relu" / "train", tmp_path / "keras_only" / "train")
    assert main(["report", str(tmp_path / "keras_only")]) == 2
    assert "no GradWatch logs" in capsys.readouterr().err


def test_bad_usage_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert main(["report"]) == 2
    assert "give LOGDIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["report", "--explain", "sad"])
    assert info.value.code == 2


@pytest.mark.parametrize("kind", KINDS)
def test_explain_prints_each_kinds_documentation(kind, capsys):
    """Every kind is documented in full (what fires, its thresholds with
    their values, why, a run it fires on and one it is silent on), and
    ``--explain`` prints that text."""
    doc = _rules.DOCS[kind]
    assert doc.complete() == []
    assert main(["report", "--explain", kind]) == 0
    out = capsys.readouterr().out
    assert out.startswith(kind)
    for section in ("Thresholds:", "Why:", "Fires on:", "Silent on:"):
        assert section in out
    for name in doc.thresholds:
        assert f"{name} = {getattr(Thresholds(), name)!r}" in out
    assert " ".join(doc.mechanism.split())[:60] in " ".join(out.split())


def test_incomplete_documentation_is_caught():
    doc = _rules.DOCS["stalled"]
    broken = dataclasses.replace(doc, example=" ", thresholds=("stall_nope",))
    assert broken.complete() == ["example", "threshold stall_nope"]


def test_truncated_last_record_still_reads(logdir, tmp_path):
    root, paths, *_ = logdir
    run = tmp_path / "cut" / "heldout"
    shutil.copytree(root / "relu" / "heldout", run)
    (events,) = run.glob("*tfevents*")
    data = events.read_bytes()
    # TFRecord framing: u64 length, u32 crc, data, u32 crc. Cut inside the
    # last epoch's record of the last weight's grad_nonfinite.
    starts, position = [], 0
    while position < len(data):
        starts.append(position)
        position += 16 + struct.unpack("<Q", data[position : position + 8])[0]
    wanted = f"grad_nonfinite/{paths[-1]}".encode()
    last = max(i for i, start in enumerate(starts) if wanted in data[start:][:400])
    events.write_bytes(data[: starts[last] + 20])
    original = run_named(_report.load(root).runs, "relu/heldout").series
    loaded = _report.load(tmp_path)
    (cut,) = loaded.runs
    assert cut.series.paths == paths
    # Everything before the cut is intact; the cut record's value is missing.
    np.testing.assert_array_equal(cut.series.grad_norm, original.grad_norm)
    (note,) = loaded.notes
    assert note.startswith(f"cut/heldout: {events.name}: its last record is cut short")
    missing = np.isnan(cut.series.grad_nonfinite)
    assert missing.tolist() == [[False] * len(paths)] * (EPOCHS - 1) + [
        [False] * (len(paths) - 1) + [True]
    ]


def test_run_still_being_written(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path / "live" / "heldout"))
    with writer.as_default():
        for path in SYNTHETIC:
            tf.summary.scalar(f"grad_norm/{path}", 0.1, step=0)
    writer.flush()  # not closed: the callback is still running
    (run,) = _report.load(tmp_path).runs
    assert run.series.paths == SYNTHETIC
    assert run.series.epochs.tolist() == [0]
    writer.close()


def test_python_m_keras_gradwatch(logdir):
    root, *_ = logdir
    result = subprocess.run(
        [sys.executable, "-m", "keras_gradwatch", "report", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "run relu/heldout" in result.stdout
    assert "run synthetic/heldout" in result.stdout


def test_report_loads_neither_tensorflow_nor_keras(logdir):
    root, *_ = logdir
    code = (
        "import sys\n"
        "from keras_gradwatch._cli import main\n"
        "status = main(['report', sys.argv[1], '--json'])\n"
        "heavy = sorted({'tensorflow', 'keras', 'tf_keras'} & set(sys.modules))\n"
        "print('status', status, 'heavy', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.splitlines()[-1] == "status 0 heavy []", result.stderr
    assert result.stderr == ""  # no TensorFlow start-up lines either


def test_values_match_tensorboards_reader_for_every_run(logdir):
    """Every value the report reads, in every run next to it, is the one
    TensorBoard's own reader gives."""
    root, paths, _ = logdir
    series = run_named(_report.load(root).runs, "relu/heldout").series
    heldout = read_run(root / "relu" / "heldout")
    train = read_run(root / "relu" / "train")
    np.testing.assert_array_equal(
        series.loss, [float(train["epoch_loss"][e]) for e in range(EPOCHS)]
    )
    for j, path in enumerate(paths):
        for prefix in ("grad_mean_abs", "grad_nonfinite"):
            expected = [float(heldout[f"{prefix}/{path}"][e]) for e in range(EPOCHS)]
            np.testing.assert_array_equal(getattr(series, prefix)[:, j], expected)


def test_a_run_written_again_is_not_spliced(tmp_path, capsys):
    """The example's situation: 10 epochs, then a re-run of 4 epochs into the
    same directory. The newest session wins, and stderr says so."""
    run = tmp_path / "again" / "heldout"
    first = [{f"grad_norm/{p}": 1.0 for p in SYNTHETIC}] * 10
    write_scalars(run, first)
    time.sleep(0.01)  # a later first event, as a later process would have
    write_scalars(run, [{f"grad_norm/{p}": 2.0 for p in SYNTHETIC}] * 4)
    old, new = sorted(run.glob("*tfevents*"), key=lambda f: f.stat().st_mtime)
    assert main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "run again/heldout: 4 logged epochs (0-3)" in captured.out
    (note,) = captured.err.splitlines()
    assert note.startswith("gradwatch: note: again/heldout: 2 sessions wrote")
    assert f"using {new.name} (steps 0-3), leaving out {old.name} (steps 0-9)" in note
    (loaded,) = _report.load(tmp_path).runs
    np.testing.assert_array_equal(loaded.series.grad_norm, np.full((4, 3), 2.0))


def test_two_callbacks_on_one_run_are_said(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")
    model.fit(
        x,
        y,
        epochs=2,
        verbose=0,
        callbacks=[
            GradWatch(tmp_path, held_out=(x, y)),
            GradWatch(tmp_path, held_out=(2 * x, y)),
        ],
    )
    loaded = _report.load(tmp_path)
    (run,) = loaded.runs
    assert run.series.epochs.tolist() == [0, 1]
    (note,) = loaded.notes
    assert note.startswith("heldout: 2 sessions wrote the same steps")


def test_table_says_what_to_fix_first_and_what_is_history():
    ones = np.ones((3, 1))
    series = Series(
        epochs=np.arange(3), paths=["net/a/kernel"], grad_norm=ones,
        grad_mean_abs=ones, grad_to_weight=ones, grad_dead_units=0 * ones,
        grad_nonfinite=0 * ones,
    )  # fmt: skip
    old = Finding("vanishing", ("net/a/kernel",), (0, 1), {}, "m1.", "r1", False)
    now = Finding("stalled", ("net/a/kernel",), (1, 2), {}, "m2.", "r2")
    text = _report.table([_report.RunData("x", series, [old, now])])
    assert "  fix first: vanishing" in text
    assert "  vanishing (epochs 0-1, not since): m1." in text
    assert "  stalled (epochs 1-2, current): m2." in text
    alone = _report.table([_report.RunData("x", series, [now])])
    assert "fix first" not in alone
