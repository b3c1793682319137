"""Regenerates the documentation images and the sample report in ``docs/``.

Produces, from a fresh training of ``examples/two_circles.py`` (tanh with bad
init vs ReLU with He init):

* ``docs/report.txt``: the output of ``gradwatch report LOGDIR``;
* ``docs/live.txt``: what GradWatch said live during that training;
* the README's two blocks between ``<!-- make_images: NAME -->`` and
  ``<!-- /make_images -->`` (the live log and the report), the same text;
* ``docs/gradient_flow.png``: the picture of ``gradwatch report LOGDIR --plot``,
  mean |gradient| per kernel from input to output, one panel per model;
* ``docs/tensorboard_histograms.png``: a screenshot of TensorBoard's Histograms
  tab with the gradient histograms of the kernels (tag filter ``grad/.*kernel``),
  taken from a TensorBoard server started on 127.0.0.1 for the purpose and
  stopped afterwards.

Needs the package with its example dependencies (``pip install -e
".[examples]"``: TensorFlow, scikit-learn, matplotlib, tensorboard) and, for
the screenshot, a Chromium browser on the PATH as ``chromium`` (Debian:
``apt-get install chromium``); ``--no-screenshot`` skips it.

Run it from anywhere; relative paths are taken from the repository root::

    python docs/make_images.py            # logs in logs/docs_two_circles
    python docs/make_images.py --epochs 20 --no-screenshot

The log directory is deleted and rewritten on every run, so it must be empty,
missing, or the output of an earlier run of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
EXAMPLE = REPO / "examples" / "two_circles.py"
RUNS = ("tanh_uniform", "relu_he")
"""The top-level runs ``examples/two_circles.py`` writes."""

REPORT = DOCS / "report.txt"
LIVE = DOCS / "live.txt"
README = REPO / "README.md"
SHOWN = "logs/two_circles"
"""The log directory as the README's readers have it: the example's default."""
PLOT = DOCS / "gradient_flow.png"
SCREENSHOT = DOCS / "tensorboard_histograms.png"

TAG_FILTER = "grad/.*kernel"
RUN_FILTER = "heldout"
"""Only GradWatch's ``heldout`` runs hold histograms; the filter says so."""
WINDOW = (1160, 920)
"""Two columns of histogram cards, three rows, the sidebar buttons on one line."""
TENSORBOARD_TIMEOUT_S = 120.0
CHROMIUM_TIMEOUT_S = 180.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--logdir",
        default="logs/docs_two_circles",
        help="where to train; relative to the repository root (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=int, default=100, help="epochs per model (default: 100)"
    )
    parser.add_argument(
        "--no-screenshot",
        action="store_true",
        help="skip the TensorBoard screenshot (no Chromium needed)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    chromium = None if args.no_screenshot else find_chromium()
    logdir = (REPO / args.logdir).resolve()
    shown = display_path(logdir)

    prepare_logdir(logdir)
    print(f"training {EXAMPLE.name} into {shown} ({args.epochs} epochs per model)")
    told = story(logdir, args.epochs)
    for path, text in ((LIVE, told["live"]), (REPORT, told["report"])):
        path.write_text(text, encoding="utf-8")
        print(f"wrote {display_path(path)}")
    README.write_text(readme_with(told), encoding="utf-8")
    print(f"wrote {display_path(README)}")
    gradwatch(["report", str(logdir), "--plot", str(PLOT)])
    print(f"wrote {display_path(PLOT)}")

    if chromium is not None:
        screenshot(chromium, shown, SCREENSHOT)
        print(f"wrote {display_path(SCREENSHOT)}")
    return 0


def find_chromium() -> str:
    """The ``chromium`` executable, or exits saying how to install it."""
    path = shutil.which("chromium")
    if path is None:
        sys.exit(
            "make_images: `chromium` is not on the PATH; the TensorBoard "
            "screenshot needs it. Install it (Debian: `apt-get install "
            "chromium`) or pass --no-screenshot."
        )
    return path


def display_path(path: Path) -> str:
    """`path` relative to the repository root when inside it, POSIX style."""
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def prepare_logdir(logdir: Path) -> None:
    """Empties `logdir` if an earlier run wrote it; refuses any other content.

    New event files next to old ones would mix two trainings in TensorBoard
    and in the report.
    """
    if not logdir.exists():
        return
    if not logdir.is_dir():
        sys.exit(f"make_images: {logdir} exists and is not a directory")
    unexpected = sorted(p.name for p in logdir.iterdir() if p.name not in RUNS)
    if unexpected:
        sys.exit(
            f"make_images: {logdir} holds {', '.join(unexpected)}, which this "
            "script did not write; pass an empty or new --logdir"
        )
    shutil.rmtree(logdir)


def story(logdir: Path, epochs: int, *options: str) -> dict[str, str]:
    """Trains the example into `logdir` (with its `options`) and returns
    what it tells: ``live``, GradWatch's log lines, and ``report``, the
    output of ``gradwatch report``; `logdir` shown as `SHOWN`."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("keras_gradwatch")
    keep = Keep(logging.WARNING)
    logger.addHandler(keep)
    try:
        train(logdir, epochs, *options)
    finally:
        logger.removeHandler(keep)
    report = gradwatch(["report", str(logdir)])
    return {
        "live": "".join(f"{line}\n" for line in lines).replace(str(logdir), SHOWN),
        "report": report.replace(str(logdir), SHOWN),
    }


def readme_with(told: dict[str, str]) -> str:
    """The README with its generated blocks replaced by `told`'s texts."""
    text = README.read_text(encoding="utf-8")
    for name, body in told.items():
        start, end = f"<!-- make_images: {name} -->\n", "<!-- /make_images -->"
        before, found, rest = text.partition(start)
        if not found or end not in rest:
            sys.exit(f"make_images: README.md has no {start.strip()} block")
        text = before + start + block(body) + end + rest.split(end, 1)[1]
    return text


def block(body: str) -> str:
    """`body` as the README shows it: a text code block."""
    return f"```text\n{body.rstrip()}\n```\n"


def train(logdir: Path, epochs: int, *options: str) -> None:
    """Runs ``examples/two_circles.py``'s ``main`` in this process."""
    spec = importlib.util.spec_from_file_location("two_circles", EXAMPLE)
    if spec is None or spec.loader is None:
        sys.exit(f"make_images: cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXAMPLE.parent))  # its `progress` helper
    try:
        spec.loader.exec_module(module)
        module.main(["--logdir", str(logdir), "--epochs", str(epochs), *options])
    finally:
        sys.path.remove(str(EXAMPLE.parent))


def gradwatch(argv: list[str]) -> str:
    """Runs ``gradwatch ARGV`` in this process; returns what it printed."""
    from keras_gradwatch import _cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = _cli.main(argv)
    if status != 0:
        sys.exit(f"make_images: `gradwatch {' '.join(argv)}` exited with {status}")
    return out.getvalue()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def screenshot(chromium: str, logdir: str, path: Path) -> None:
    """Starts TensorBoard on `logdir` (relative to the repository root, as
    TensorBoard shows it on the page), photographs its Histograms tab into
    `path` with headless Chromium, and always stops the server."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="make_images_") as tmp:
        server_log = Path(tmp) / "tensorboard.log"
        with server_log.open("w") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tensorboard.main",
                    "--logdir",
                    logdir,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
            try:
                wait_for_histograms(server, base, server_log)
                take_screenshot(chromium, histograms_url(base), path, Path(tmp))
            finally:
                stop(server)


def histograms_url(base: str) -> str:
    """The Histograms tab with the kernel tag filter and only the held-out runs.

    TensorBoard keeps the dashboard state in the URL fragment: the tab first,
    then ``key=value`` pairs (``tagFilter`` for the tag regex, ``regexInput``
    for the run regex of the run selector).
    """
    state = urllib.parse.urlencode(
        {"tagFilter": TAG_FILTER, "regexInput": RUN_FILTER},
        quote_via=urllib.parse.quote,
        safe="",
    )
    return f"{base}/?darkMode=false#histograms&{state}"


def wait_for_histograms(
    server: subprocess.Popen[bytes], base: str, server_log: Path
) -> None:
    """Waits until TensorBoard answers on `base` and has loaded the gradient
    histograms of every GradWatch run."""
    expected = {f"{run}/heldout" for run in RUNS}
    deadline = time.monotonic() + TENSORBOARD_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(
                f"make_images: TensorBoard exited with {server.returncode}:\n"
                + server_log.read_text(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(
                f"{base}/data/plugin/histograms/tags", timeout=5
            ) as response:
                tags = json.load(response)
        except (OSError, ValueError):
            tags = {}
        loaded = {
            run
            for run, run_tags in tags.items()
            if any(tag.startswith("grad/") for tag in run_tags)
        }
        if expected <= loaded:
            return
        time.sleep(0.5)
    sys.exit(
        f"make_images: TensorBoard at {base} did not serve the histograms of "
        f"{sorted(expected)} within {TENSORBOARD_TIMEOUT_S:.0f} s:\n"
        + server_log.read_text(errors="replace")[-4000:]
    )


def take_screenshot(chromium: str, url: str, path: Path, tmp: Path) -> None:
    """Headless Chromium, fresh profile, fixed window; fails if no PNG came."""
    path.unlink(missing_ok=True)
    width, height = WINDOW
    command = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        f"--window-size={width},{height}",
        "--virtual-time-budget=15000",
        f"--screenshot={path}",
        url,
    ]
    result = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or not path.is_file():
        sys.exit(
            f"make_images: chromium exited with {result.returncode} and no "
            f"screenshot:\n{result.stderr[-4000:]}"
        )


def stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """Terminates `process`, kills it if it outlives `grace_s`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
