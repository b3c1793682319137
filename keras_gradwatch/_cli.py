"""``gradwatch report LOGDIR``: diagnose GradWatch logs from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from keras_gradwatch import _report


def main(argv: list[str] | None = None) -> int:
    """Runs the ``gradwatch`` command; returns its exit status.

    ``gradwatch report LOGDIR`` prints, for every GradWatch run under LOGDIR,
    one row per weight (input to output) and the diagnosis with remedies;
    ``--json`` prints the same as JSON, ``--plot FILE.png`` also saves the
    gradient-flow picture. Exit status 0 on success, 2 on an error (a missing
    directory, one without GradWatch logs, no matplotlib for ``--plot``).
    """
    parser = argparse.ArgumentParser(
        prog="gradwatch", description="Gradient diagnosis for keras_gradwatch logs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report",
        help="per-weight gradient table and diagnosis of every run under LOGDIR",
        description=(
            "Reads every GradWatch run under LOGDIR (with the loss of "
            "keras.callbacks.TensorBoard's train run and the weight changes "
            "of WeightNorms next to it) and reports the last gradient "
            "statistics per weight, input to output, and the findings."
        ),
    )
    report.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory")
    report.add_argument("--json", action="store_true", help="print JSON instead")
    report.add_argument(
        "--plot", metavar="FILE.png", help="also save the gradient-flow picture"
    )
    args = parser.parse_args(argv)

    try:
        runs = _report.load(args.logdir)
    except FileNotFoundError:
        return _fail(f"no such directory: {args.logdir}")
    if not runs:
        return _fail(
            f"no GradWatch logs (grad_norm/... tags) under {args.logdir}; "
            "point LOGDIR at the log_dir given to GradWatch."
        )
    if args.plot:
        try:
            _report.plot(runs, args.plot)
        except ImportError as error:
            return _fail(str(error))
    if args.json:
        print(json.dumps(_report.to_json(runs), indent=2, allow_nan=False))
    else:
        print(_report.table(runs), end="")
    return 0


def _fail(message: str) -> int:
    print(f"gradwatch: error: {message}", file=sys.stderr)
    return 2
