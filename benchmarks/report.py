"""Wall time and peak memory of `gradwatch report` on the two-circles logs.

Writes the logs of ``examples/two_circles.py`` (100 epochs, both models)
unless ``--logdir`` already holds them, then runs
``python -m keras_gradwatch report LOGDIR`` in a fresh interpreter
``--repeats`` times and prints the median and the largest wall time and
peak resident memory. The peak is the child's own ``VmHWM`` (read from
``/proc`` as it exits), not ``ru_maxrss``: Linux keeps that across fork and
exec, so it would count the size of whatever process started the report.

    python benchmarks/report.py [--logdir logs/two_circles] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# `python -m keras_gradwatch ARGS`, which writes its own peak RSS on exit.
_RUN = """
import resource, runpy, sys
peak = sys.argv.pop(-1)
try:
    runpy.run_module("keras_gradwatch", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(peak, "w") as out:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        kib = next(l for l in status if l.startswith("VmHWM:")).split()[1]
        out.write(f"{kib} {usage.ru_utime + usage.ru_stime}")
"""


def measure(logdir: str, extra: list[str]) -> tuple[float, float, float, int]:
    """One report run: (wall seconds, CPU seconds, peak RSS in MB, exit
    status). CPU time (user + system) says what the report costs when other
    processes share the cores and stretch the wall time."""
    with tempfile.TemporaryDirectory() as scratch:
        peak = os.path.join(scratch, "vmhwm")
        command = [sys.executable, "-c", _RUN, "report", logdir, *extra, peak]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, check=False)
        wall = time.perf_counter() - start
        with open(peak) as f:
            kib, cpu = f.read().split()
        return wall, float(cpu), int(kib) / 1024, done.returncode


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", help="logs to read (written if missing)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="time --json too")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        logdir = args.logdir or os.path.join(scratch, "two_circles")
        if not os.path.isdir(logdir):
            print(f"writing the two-circles logs to {logdir} ...", flush=True)
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "examples" / "two_circles.py"),
                    "--logdir",
                    logdir,
                    "--epochs",
                    str(args.epochs),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        size = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(logdir)
            for f in files
        )
        runs = [
            measure(logdir, ["--json"] if args.json else [])
            for _ in range(args.repeats)
        ]
    if any(status for *_, status in runs):
        raise SystemExit(f"the report failed: exit status {runs[0][-1]}")
    walls = [run[0] for run in runs]
    cpus = [run[1] for run in runs]
    peaks = [run[2] for run in runs]
    result = {
        "wall_median_s": statistics.median(walls),
        "wall_max_s": max(walls),
        "cpu_median_s": statistics.median(cpus),
        "cpu_max_s": max(cpus),
        "peak_rss_median_mb": statistics.median(peaks),
        "peak_rss_max_mb": max(peaks),
    }
    print(f"logs: {size / 1e6:.1f} MB of event files, {args.repeats} runs")
    print("| | median | max |\n| --- | ---: | ---: |")
    print(
        f"| wall time | {result['wall_median_s']:.2f} s | "
        f"{result['wall_max_s']:.2f} s |"
    )
    print(
        f"| CPU time (user + system) | {result['cpu_median_s']:.2f} s | "
        f"{result['cpu_max_s']:.2f} s |"
    )
    print(
        f"| peak RSS | {result['peak_rss_median_mb']:.0f} MB | "
        f"{result['peak_rss_max_mb']:.0f} MB |"
    )
    return result


if __name__ == "__main__":
    main()
