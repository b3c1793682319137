"""`gradwatch report` on log directories made to break it.

Every case runs the real command in a subprocess, as a user would, and
holds it to the same contract: done within 10 s, peak memory at most
300 MB, no traceback, exit 0 (a report) or 2 (one error line), and a note
on stderr for every piece of data that was skipped or left out. The event
files are crafted with `eventfiles` (no TensorFlow needed).
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from eventfiles import PATHS, event, gradwatch_events, name, record, tensor, version
from eventfiles import write as write_events

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 10.0
MAX_RSS_MB = 300.0


@dataclass
class Result:
    rc: int
    out: str
    err: str
    seconds: float
    rss_mb: float
    timed_out: bool


# `python -m keras_gradwatch report ARGS`, which then notes its own peak RSS.
# ru_maxrss cannot be used: Linux keeps it across fork and exec, so a child of
# this (TensorFlow-laden) test process starts at the parent's size. VmHWM is
# per address space and starts afresh at exec.
_RUN = """
import runpy, sys
peak = sys.argv.pop(-1)
try:
    runpy.run_module("keras_gradwatch", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(peak, "w") as out:
        out.write(next(l for l in status if l.startswith("VmHWM:")).split()[1])
"""
pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads peak memory from /proc"
)


def report(*args: object) -> Result:
    """Runs the report on ARGS in a fresh interpreter; kills it at 10 s."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    with tempfile.TemporaryDirectory() as scratch:
        peak = Path(scratch) / "vmhwm"
        command = [sys.executable, "-c", _RUN, "report", *map(str, args), str(peak)]
        start = time.monotonic()
        try:
            done = subprocess.run(
                command, capture_output=True, env=env, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as expired:
            return Result(-9, "", str(expired), TIMEOUT_S, math.nan, True)
        seconds = time.monotonic() - start
        rss_mb = int(peak.read_text()) / 1024 if peak.exists() else math.inf
    result = Result(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
        seconds,
        rss_mb,
        False,
    )
    print(f"rc={result.rc} seconds={seconds:.2f} peak_rss_mb={rss_mb:.0f}")
    return result


def check(result: Result, *, rc: int, notes: tuple[str, ...] = ()) -> Result:
    """The contract every case is held to, and the notes this one must give."""
    assert not result.timed_out, f"still running after {TIMEOUT_S} s"
    assert "Traceback" not in result.err, result.err
    assert result.rc == rc, (result.rc, result.err)
    assert result.seconds <= TIMEOUT_S
    assert result.rss_mb <= MAX_RSS_MB, result.rss_mb
    errors = [line for line in result.err.splitlines() if "error:" in line]
    if rc == 2:
        assert len(errors) == 1, result.err
        assert errors[0].startswith("gradwatch: error: ")
    else:
        assert not errors, result.err
        assert result.out.startswith("run ")
    for note in notes:
        assert note in result.err, (note, result.err)
    return result


def good_run(directory: Path, epochs: int = 3, **kwargs: object) -> Path:
    return write_events(directory / name(), gradwatch_events(range(epochs), **kwargs))


def test_huge_declared_shapes_are_skipped_not_allocated(tmp_path):
    run = tmp_path / "huge" / "heldout"
    events = gradwatch_events(range(2))
    for step in range(3):  # three steps of 1 TiB tensors, and another plugin's
        big = tensor(content=b"\0" * 4, shape=(2**20, 2**20))
        events.append(event(f"grad_norm/{PATHS[0]}", 10 + step, big))
        events.append(event("other_plugin/x", step, tensor(shape=(16384, 16384))))
    write_events(run / name(), events)
    result = check(report(tmp_path), rc=0, notes=["3 value(s) that are not numeric"])
    assert "2 logged epochs (0-1)" in result.out


@pytest.mark.parametrize(
    ("dtype", "content"),
    [(9999, b"\0" * 4), (7, b"abcd"), (1, b"\0" * 3), (2, b"\0" * 4), (1, b"")],
    ids=["unknown-dtype", "string", "short-content", "double-of-4-bytes", "empty"],
)
def test_wrong_dtypes_and_content_lengths(tmp_path, dtype, content):
    events = gradwatch_events(range(2))
    bad = tensor(None, dtype=dtype, content=content or None)
    events.append(event(f"grad_norm/{PATHS[1]}", 1, bad))
    write_events(tmp_path / "run" / name(), events)
    check(report(tmp_path), rc=0, notes=["1 value(s) that are not numeric scalars"])


def test_record_over_the_size_limit_is_skipped_unread(tmp_path):
    events = gradwatch_events(range(2))
    huge = tensor(content=b"\0" * (1 << 20), shape=(1 << 18,))
    events.append(event(f"grad_norm/{PATHS[0]}", 1, huge))
    events.append(event("images/big", 1, huge))  # not ours: no note
    write_events(tmp_path / "run" / name(), events)
    result = check(report(tmp_path), rc=0, notes=["1 record(s) over 16384 bytes"])
    assert result.err.count("note:") == 1


def test_length_beyond_the_end_of_the_file(tmp_path):
    events = [record(e) for e in gradwatch_events(range(2))]
    events.append(record(b"x" * 10, length=1 << 40))  # its CRC matches the lie
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name()).write_bytes(b"".join(events))
    check(report(tmp_path), rc=0, notes=["cut short"])


def test_fifo_named_like_an_event_file_is_not_opened(tmp_path):
    good_run(tmp_path / "run")
    os.mkfifo(tmp_path / "run" / "events.out.tfevents.fifo")
    check(report(tmp_path), rc=0, notes=["not a regular file"])


def test_symlink_loops_end(tmp_path):
    good_run(tmp_path / "a" / "run")
    (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "a" / "self").symlink_to(tmp_path / "a" / "self")
    (tmp_path / "a" / "run" / "events.out.tfevents.loop").symlink_to(
        tmp_path / "a" / "run" / "events.out.tfevents.loop"
    )
    result = check(report(tmp_path), rc=0, notes=["events.out.tfevents.loop"])
    assert result.out.count("run a/run:") == 1


def test_deep_tree(tmp_path):
    chain = [str(tmp_path)]
    for _ in range(1200):  # os.makedirs, Path.mkdir and rmtree recurse
        chain.append(os.path.join(chain[-1], "d"))
        os.mkdir(chain[-1])
    events = good_run(Path(chain[-1]))
    try:
        result = check(report(tmp_path), rc=0)
        assert "run d/d/d/" in result.out
    finally:
        events.unlink()
        for directory in reversed(chain[1:]):
            os.rmdir(directory)


def test_random_bytes(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name()).write_bytes(rng.bytes(5000))
    check(report(tmp_path), rc=2, notes=["damaged record length at byte 0"])


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_over_part_of_a_file(tmp_path, seed):
    path = good_run(tmp_path / "run", epochs=8)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    at = int(rng.integers(100, len(data) - 64))
    data[at : at + 64] = rng.bytes(64)
    path.write_bytes(bytes(data))
    result = check(report(tmp_path), rc=0, notes=[f"run: {path.name}: "])
    assert "corrupt record" in result.err or "damaged stretch" in result.err
    # Reading goes on after the damage: only the records it hit are lost.
    assert "8 logged epochs (0-7)" in result.out


def test_damage_in_two_places_is_skipped_and_counted(tmp_path):
    path = good_run(tmp_path / "run", epochs=8)
    data = bytearray(path.read_bytes())
    # Lengths of records 2 and 40 garbled: the framing is lost twice.
    starts, position = [], 0
    while position < len(data):
        starts.append(position)
        position += 16 + struct.unpack_from("<Q", data, position)[0]
    for index in (2, 40):
        data[starts[index] : starts[index] + 4] = b"\xff\xff\xff\x7f"
    path.write_bytes(bytes(data))
    lost = starts[3] - starts[2] + starts[41] - starts[40]
    result = check(
        report(tmp_path),
        rc=0,
        notes=[f"2 damaged stretch(es) skipped ({lost} bytes, the first at byte"],
    )
    assert "8 logged epochs (0-7)" in result.out


def test_truncated_file(tmp_path):
    path = good_run(tmp_path / "run", epochs=4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 7])
    result = check(report(tmp_path), rc=0, notes=["cut short"])
    assert "logged epochs (0-1)" in result.out or "logged epochs (0-2)" in result.out


def test_overlapping_sessions_newest_wins(tmp_path):
    run = tmp_path / "exp" / "heldout"
    old = write_events(
        run / name(1.0e9, "host.1.v2"), gradwatch_events(range(10), wall_time=1.0e9)
    )
    new = write_events(
        run / name(2.0e9, "host.2.v2"), gradwatch_events(range(4), wall_time=2.0e9)
    )
    result = check(report(tmp_path), rc=0, notes=[old.name, new.name, "newest wins"])
    assert "exp/heldout: 2 sessions" in result.err
    assert "4 logged epochs (0-3)" in result.out


def test_disjoint_sessions_are_joined_without_a_note(tmp_path):
    run = tmp_path / "exp" / "heldout"
    write_events(run / name(1.0e9, "a.v2"), gradwatch_events(range(3), wall_time=1e9))
    write_events(
        run / name(2.0e9, "b.v2"), gradwatch_events(range(3, 5), wall_time=2e9)
    )
    result = check(report(tmp_path), rc=0)
    assert "note:" not in result.err
    assert "5 logged epochs (0-4)" in result.out


def test_control_characters_are_escaped(tmp_path):
    paths = ["m/\x1b[2J\x1b]0;pwned\x07/kernel", "m/b\u202e/kernel", "m/c/kernel"]
    good_run(tmp_path / "\x1b[31mred", paths=paths)
    result = check(report(tmp_path), rc=0)
    assert "\x1b" not in result.out
    assert "\x07" not in result.out
    assert "\u202e" not in result.out
    assert "m/\\x1b[2J\\x1b]0;pwned\\x07/kernel" in result.out
    assert "run \\x1b[31mred:" in result.out
    # JSON escapes them its own way and keeps the names exact.
    data = json.loads(report(tmp_path, "--json").out)
    assert data["runs"][0]["weights"][0]["path"] == paths[0]


def test_out_of_domain_values_are_invalid_data_not_findings(tmp_path):
    events = gradwatch_events(range(4))
    for step in range(4):
        events.append(event(f"grad_norm/{PATHS[0]}", step, -1.0))
        events.append(event(f"grad_dead_units/{PATHS[0]}", step, 5.0))
        events.append(event(f"grad_nonfinite/{PATHS[1]}", step, math.nan))
        events.append(event(f"grad_nonfinite/{PATHS[2]}", step, -3.0))
    events.append(event("heldout_target_outside/net/dense_0", 0, 5.0))
    events.append(event("heldout_target_outside/net/dense_1", 0, math.nan))
    events.append(event("heldout_target_outside", 0, 0.5))  # no layer
    write_events(tmp_path / "run" / name(), events)
    result = report(tmp_path, "--json")
    assert result.rc == 0
    assert "Traceback" not in result.err
    assert result.rss_mb <= MAX_RSS_MB
    assert not result.timed_out
    data = json.loads(result.out)
    assert data["runs"][0]["findings"] == []
    notes = "\n".join(data["notes"])
    assert "4 grad_norm value(s) left out as invalid data" in notes
    assert "4 grad_dead_units value(s)" in notes
    assert "8 grad_nonfinite value(s)" in notes
    assert "2 heldout_target_outside value(s)" in notes
    assert notes in result.err.replace("gradwatch: note: ", "")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing/flow.png", "no directory"),
        ("a_directory.png", "is a directory"),
        ("flow.jpg", "cannot write a jpg picture"),
        ("flow", "extension-less"),
    ],
)
def test_bad_plot_targets(tmp_path, target, message):
    good_run(tmp_path / "logs" / "run")
    (tmp_path / "a_directory.png").mkdir()
    result = check(report(tmp_path / "logs", "--plot", tmp_path / target), rc=2)
    assert message in result.err


@pytest.mark.parametrize(
    ("extension", "magic"), [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")]
)
def test_plot_format_follows_the_extension(tmp_path, extension, magic):
    good_run(tmp_path / "logs" / "run")
    target = tmp_path / f"flow.{extension}"
    result = check(report(tmp_path / "logs", "--plot", target), rc=0)
    assert target.read_bytes().startswith(magic)
    assert f"plot written to {target}" in result.err


def test_many_runs_plot_stays_bounded(tmp_path):
    for i in range(30):
        good_run(tmp_path / "logs" / f"run{i:02d}")
    target = tmp_path / "flow.png"
    result = check(report(tmp_path / "logs", "--plot", target), rc=0)
    assert "the plot shows the first 8 of 30 runs" in result.err
    width, height = struct.unpack(">II", target.read_bytes()[16:24])
    assert width <= 1600
    assert height <= 1800


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "keras_only"])
def test_bad_log_directories(tmp_path, kind):
    target = tmp_path / "logs"
    if kind == "file":
        target.write_text("not a directory")
    elif kind == "empty":
        target.mkdir()
    elif kind == "keras_only":
        write_events(
            target / "train" / name(), [version(1e9), event("epoch_loss", 0, 0.5)]
        )
    expected = {
        "missing": "no such directory",
        "file": "not a directory",
        "empty": "no GradWatch logs",
        "keras_only": "no GradWatch logs",
    }[kind]
    assert expected in check(report(target), rc=2).err


def test_empty_and_header_only_files(tmp_path):
    good_run(tmp_path / "run")
    (tmp_path / "run" / "events.out.tfevents.0.empty").write_bytes(b"")
    (tmp_path / "run" / "events.out.tfevents.0.short").write_bytes(b"\1\2\3")
    check(
        report(tmp_path), rc=0, notes=["events.out.tfevents.0.short: its last record"]
    )


def test_scattered_steps_do_not_grow_a_huge_grid(tmp_path):
    """20,000 weights each logged at its own step would be a 20,000 x 20,000
    grid per statistic (3.2 GB); the run is left out with a note instead."""
    events = [version(1e9)]
    events += [event(f"grad_norm/w{i}/kernel", i, 0.1) for i in range(20_000)]
    write_events(tmp_path / "scattered" / name(), events)
    good_run(tmp_path / "fine")
    result = check(
        report(tmp_path), rc=0, notes=["scattered: left out: 20000 logged epochs"]
    )
    assert "run fine:" in result.out
    assert "run scattered" not in result.out


def test_a_file_with_too_many_values_is_read_up_to_the_cap(tmp_path, monkeypatch):
    from keras_gradwatch import _events

    monkeypatch.setattr(_events, "MAX_FILE_VALUES", 50)  # in this process
    path = good_run(tmp_path / "run", epochs=8)  # 120 values
    read = _events.read_file(str(path), lambda tag: True)
    assert read.count == 50
    assert read.stopped.startswith("stopped after 50 values")
