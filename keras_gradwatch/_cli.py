"""``gradwatch report LOGDIR``: diagnose GradWatch logs from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_gradwatch import _report, _rules


def main(argv: list[str] | None = None) -> int:
    """Runs the ``gradwatch`` command; returns its exit status.

    ``gradwatch report LOGDIR`` prints, for every GradWatch run under LOGDIR,
    one row per weight (input to output) and the diagnosis with remedies,
    and for every AutoClip run with per-step norms the steps that spiked;
    ``--json`` prints the same as JSON, ``--plot FILE`` also saves the
    gradient-flow picture (``.png``, ``.pdf`` or ``.svg``). Whatever the
    reader skipped or left out is said on stderr, one ``gradwatch: note:``
    line each. Exit status 0 on success, 2 with one ``gradwatch: error:``
    line on anything the user can fix (a missing directory, one without
    GradWatch logs, a plot file that cannot be written, no matplotlib).
    ``gradwatch report --explain KIND`` prints what a finding kind means:
    when it fires, its thresholds, why, and runs it fires and is silent on.
    """
    parser = argparse.ArgumentParser(
        prog="gradwatch", description="Gradient diagnosis for keras_gradwatch logs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report",
        help="per-weight gradient table and diagnosis of every run under LOGDIR",
        description=(
            "Reads every GradWatch run under LOGDIR (with the training loss of "
            "keras.callbacks.TensorBoard's train run and the weight changes "
            "of WeightNorms next to it) and reports the last gradient "
            "statistics per weight, input to output, and the findings; and "
            "the steps where AutoClip's per-step norm (every_n_steps) spiked."
        ),
    )
    report.add_argument(
        "logdir", metavar="LOGDIR", nargs="?", help="TensorBoard log directory"
    )
    report.add_argument(
        "--explain",
        metavar="KIND",
        choices=list(_rules.DOCS),
        help=f"print what a finding kind means ({', '.join(_rules.DOCS)})",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead")
    report.add_argument(
        "--plot",
        metavar="FILE",
        help="also save the gradient-flow picture (.png, .pdf or .svg)",
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `gradwatch report ... | head`: the reader left. Point stdout at
        # devnull so that the flush at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    if args.explain is not None:
        print(_rules.explain(args.explain))
        return 0
    if args.logdir is None:
        return _fail("give LOGDIR, the log_dir that GradWatch wrote to.")
    if args.plot is not None:
        problem = _plot_target_problem(args.plot)
        if problem:
            return _fail(problem)
    if not os.path.exists(args.logdir):
        return _fail(
            f"no such directory: {_show(args.logdir)}; give the log_dir that "
            "GradWatch wrote to."
        )
    if not os.path.isdir(args.logdir):
        return _fail(
            f"not a directory: {_show(args.logdir)}; give the log_dir that "
            "GradWatch wrote to, not a file in it."
        )
    try:
        loaded = _report.load(args.logdir)
    except OSError as error:
        return _fail(f"cannot read {_show(args.logdir)}: {error.strerror or error}")
    for note in loaded.notes:
        print(f"gradwatch: note: {_report.printable(note)}", file=sys.stderr)
    if not loaded.runs and not loaded.clips:
        return _fail(
            f"no GradWatch logs (grad_norm/... tags) and no AutoClip step norms "
            f"(autoclip/step_grad_norm) under {_show(args.logdir)}; point "
            "LOGDIR at the log_dir given to GradWatch or AutoClip."
        )
    if args.plot is not None and not loaded.runs:
        print(
            "gradwatch: note: no plot: the gradient flow needs GradWatch logs",
            file=sys.stderr,
        )
    elif args.plot is not None:
        try:
            drawn = _report.plot(loaded.runs, args.plot)
        except ImportError as error:
            return _fail(str(error))
        except OSError as error:
            return _fail(
                f"cannot write the plot to {_show(args.plot)}: "
                f"{error.strerror or error}"
            )
        if drawn < len(loaded.runs):
            print(
                f"gradwatch: note: the plot shows the first {drawn} of "
                f"{len(loaded.runs)} runs; give a narrower LOGDIR for the others",
                file=sys.stderr,
            )
        print(f"gradwatch: plot written to {_show(args.plot)}", file=sys.stderr)
    if args.json:
        data = _report.to_json(loaded)
        print(json.dumps(data, allow_nan=False, separators=(",", ":")))
    else:
        print(_report.table(loaded.runs, loaded.clips), end="")
    return 0


def _plot_target_problem(path: str) -> str | None:
    """Why `--plot path` cannot be written, checked before any reading."""
    try:
        _report.plot_format(path)
    except ValueError as error:
        return f"--plot {_show(path)}: {error}"
    if os.path.isdir(path):
        return f"--plot {_show(path)} is a directory; give a file name in it."
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return (
            f"--plot {_show(path)}: no directory {_show(parent)}; create it "
            "or choose another place."
        )
    return None


def _show(text: str) -> str:
    return _report.printable(os.fspath(text))


def _fail(message: str) -> int:
    print(f"gradwatch: error: {message}", file=sys.stderr)
    return 2
