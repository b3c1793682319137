"""The benchmark scripts still run (tiny settings; no timing is asserted)."""

import logging
from pathlib import Path

from helpers import load_script

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    return load_script(BENCHMARKS / f"{name}.py")


def test_histogram_benchmark_runs():
    medians = load("histogram").main(["--elements", "8192", "--repeats", "1"])
    assert len(medians) == 3


def test_overhead_benchmark_runs(tmp_path, capsys):
    out = tmp_path / "raw.json"
    overhead = load("overhead")
    log = logging.getLogger("keras_gradwatch")
    handlers, level = list(log.handlers), log.level
    assert overhead.main(["--quick", "--models", "a", "--json", str(out)]) == 0
    # A handler left on this test's captured stderr would fail every later
    # log record with "I/O operation on closed file".
    assert (log.handlers, log.level) == (handlers, level)
    assert "| (a) two-circles MLP |" in capsys.readouterr().out
    assert overhead.main(["--from-json", str(out)]) == 0
    assert "per epoch" in capsys.readouterr().out


def test_autoclip_benchmark_runs(capsys):
    ratios = load("autoclip").main(["--quick"])
    assert set(ratios) == {
        "none",
        "keras_global_clipnorm",
        "autoclip_zscore",
        "autoclip_zscore_again",
        "autoclip_percentile",
        "autoclip_every_step",
        "sgd_autoclip_spike_test_only",
        "sgd_autoclip",
    }
    out = capsys.readouterr().out
    assert "SGD: AutoClip() vs its spike test alone (the step bound)" in out
    assert "AutoClip (zscore) per-step ratio" in out
    assert "every_n_steps=1 vs AutoClip() per-step ratio" in out
    assert "Control, a second AutoClip() against the first" in out
    assert "steps that write vs steps that do not" in out
    assert all(ratio > 0 for ratio in ratios.values())


def test_autoclip_early_benchmark_runs(capsys):
    result = load("autoclip_early").main(["--quick"])
    assert {r["mode"] for r in result["corrupted"]} == {"zscore", "percentile"}
    assert len(result["clean"]) == 8
    assert "Corrupted labels" in capsys.readouterr().out


def test_autoclip_floor_benchmark_runs(capsys):
    rows = load("autoclip_floor").main(["--quick", "--floors", "3,1e9"])
    assert {(r["floor"], r["run"]) for r in rows} == {
        (3.0, "corrupted"), (3.0, "healthy_digits_adam"),
        (1e9, "corrupted"), (1e9, "healthy_digits_adam"),
    }  # fmt: skip
    assert "corrupted-labels seeds lost" in capsys.readouterr().out


def test_autoclip_floor_table_counts():
    """Healthy shares under 5% and lost seeds, on hand-made rows."""
    rows = [
        {"floor": 3.0, "run": "a", "seed": 0, "share": 0.049},
        {"floor": 3.0, "run": "a", "seed": 1, "share": 0.05},
        {"floor": 3.0, "run": "corrupted", "seed": 0, "mse": 0.0199},
        {"floor": 3.0, "run": "corrupted", "seed": 1, "mse": 0.02},
        {"floor": 3.0, "run": "corrupted", "seed": 2, "mse": float("inf")},
    ]
    line = load("autoclip_floor").table(rows, [3.0], ["a"]).splitlines()[-1]
    assert line == "| 3 | 4.9% / 5.0% | 1/2 | 2/3: 1 (0.02), 2 (inf) |"


def test_report_benchmark_runs(tmp_path, capsys):
    from eventfiles import gradwatch_events, name, write

    write(tmp_path / "run" / "heldout" / name(), gradwatch_events(range(3)))
    result = load("report").main(["--logdir", str(tmp_path), "--repeats", "1"])
    assert set(result) == {
        "wall_median_s",
        "wall_max_s",
        "cpu_median_s",
        "cpu_max_s",
        "peak_rss_median_mb",
        "peak_rss_max_mb",
    }
    assert 0 < result["peak_rss_max_mb"] < 250
    assert "| wall time |" in capsys.readouterr().out


def test_setup_cost_benchmark_runs(capsys):
    cases = ["stats:3", "transformer1", "refit", "circles"]
    results = load("setup_cost").main(
        ["--cases", ",".join(cases), "--rounds", "1", "--epochs", "2", "--fits", "2"]
    )
    assert set(results) == set(cases)
    assert results["stats:3"]["ops"] > 0
    assert len(results["transformer1"]["gw_setup_s"]) == 1
    assert results["refit"]["traces"] == 1  # one trace for both fits
    assert len(results["circles"]["ratios"]) == 1
    assert "GradWatch setup per fit" in capsys.readouterr().out


def test_diagnosis_cost_benchmark_runs(capsys):
    result = load("diagnosis_cost").main(["--epochs", "200", "--weights", "40"])
    assert set(result) == {"healthy", "failing"}
    assert result["healthy"]["new_findings"] == 0
    assert result["failing"]["new_findings"] == 2  # vanishing, dead units
    assert "late / early" in capsys.readouterr().out


def test_step_cost_benchmark_runs(capsys):
    result = load("step_cost").main(["--rounds", "1", "--steps", "4", "--every", "2"])
    assert set(result) == {"none", "hook", "every_2"}
    assert result["none"]["ratios"] == [1.0]
    assert "ratio to none" in capsys.readouterr().out


def test_autoclip_eval_runs(capsys):
    saved = load("autoclip_eval").main(["--quick"])
    assert {r["config"] for r in saved.values()} == {
        "reference",
        "none",
        "clipnorm",
        "autoclip",
    }
    assert all("error" not in r for r in saved.values())
    out = capsys.readouterr().out
    assert "| late_glitch | mse <= 1.25 x ref + 0.01 |" in out
    assert "runs that met their criterion" in out


def test_autoclip_scenarios_criteria():
    """The written criteria, on hand-made values: (value, ref, none, clipped)."""
    scenarios = load("autoclip_scenarios").SCENARIOS
    assert len(scenarios) >= 12
    halves = {s.half for s in scenarios.values()}
    assert halves == {"design", "heldout"}
    for half in halves:  # at least 4 healthy runs in all, failures in each half
        kinds = [s.kind for s in scenarios.values() if s.half == half]
        assert kinds.count("failure") >= 4
    assert sum(s.kind == "healthy" for s in scenarios.values()) >= 4
    mse = scenarios["late_glitch"]  # mse <= 1.25 x ref + 0.01
    assert mse.passes(0.135, 0.1, float("nan"), None)
    assert not mse.passes(0.136, 0.1, 0.1, None)
    assert not mse.passes(float("nan"), 0.1, 0.1, None)
    acc = scenarios["finetune_lr_too_high"]  # acc >= ref - 0.03
    assert acc.passes(0.92, 0.95, 0.1, None)
    assert not acc.passes(0.91, 0.95, 0.1, None)
    healthy = scenarios["healthy_cnn_sgd"]  # within 0.02 of none, < 5% clipped
    assert healthy.passes(0.96, 0.0, 0.975, 0.049)
    assert not healthy.passes(0.96, 0.0, 0.975, 0.05)
    assert not healthy.passes(1.0, 0.0, 0.975, None)
    noisy = scenarios["label_noise_30_sgd"]  # acc >= none - 0.02
    assert noisy.passes(0.88, 0.9, 0.9, 0.9)
    assert not noisy.passes(0.87, 0.9, 0.9, None)


def test_event_writing_benchmark_runs(capsys):
    results = load("event_writing").main(["--repeats", "2"])
    assert set(results) == set(load("event_writing").SIZES)
    assert all(row["writer_ms"] > 0 and row["ratio"] > 0 for row in results.values())
