"""The benchmark scripts still run (tiny settings; no timing is asserted)."""

from pathlib import Path

from helpers import load_script

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name):
    return load_script(BENCHMARKS / f"{name}.py")


def test_histogram_benchmark_runs():
    medians = load("histogram").main(["--elements", "8192", "--repeats", "1"])
    assert len(medians) == 2


def test_overhead_benchmark_runs(tmp_path, capsys):
    out = tmp_path / "raw.json"
    overhead = load("overhead")
    assert overhead.main(["--quick", "--models", "a", "--json", str(out)]) == 0
    assert "| (a) two-circles MLP |" in capsys.readouterr().out
    assert overhead.main(["--from-json", str(out)]) == 0
    assert "per epoch" in capsys.readouterr().out


def test_autoclip_benchmark_runs(capsys):
    ratios = load("autoclip").main(["--quick"])
    assert set(ratios) == {
        "none",
        "keras_global_clipnorm",
        "autoclip_zscore",
        "autoclip_percentile",
        "autoclip_every_step",
    }
    out = capsys.readouterr().out
    assert "AutoClip (zscore) per-step ratio" in out
    assert "every_n_steps=1 vs AutoClip() per-step ratio" in out


def test_autoclip_early_benchmark_runs(capsys):
    result = load("autoclip_early").main(["--quick"])
    assert {r["mode"] for r in result["corrupted"]} == {"zscore", "percentile"}
    assert len(result["clean"]) == 8
    assert "Corrupted labels" in capsys.readouterr().out
