"""What GradWatch costs around its pass: tracing, memory, repeated and tiny fits.

Cases (each runs in a fresh process, so that its peak memory is its own):

- ``transformer12``, ``transformer36``: a Transformer encoder (token
  embedding, blocks of MultiHeadAttention + LayerNorm + FFN, d=128).
  Keras' own retrace of the train function (a forced new
  ``make_train_function`` and its first ``train_on_batch``) against
  GradWatch's ``on_train_begin`` + first ``on_epoch_end`` with a fresh
  callback, interleaved. Extra memory: the growth of the process's peak
  resident set across GradWatch's setup and first pass, after Keras' own
  train step has set its peak.
- ``many:N``: a subclassed model of N tiny ``Dense(4, tanh)`` layers (2N + 2
  weights); as above, against Keras' first trace of the train function.
- ``stats:K``: the statistics alone, for K weights of shape (4, 4): graph
  ops (placeholders left out) and trace time of `batch_stats`.
- ``refit``: 20 one-epoch ``fit`` calls of the two-circles MLP with one
  GradWatch instance reused, interleaved with 20 without it; GradWatch's
  setup per fit is its ``on_train_begin`` + ``on_train_end`` + what its first
  epoch end costs beyond a later one.
- ``circles``: the two-circles tutorial as its users run it (5 tanh layers of
  width 5, ``RandomUniform(0, 1)``, SGD(0.01, momentum 0.9), batch 32,
  ``validation_data``, 500 training points): whole ``fit`` with GradWatch
  against without, interleaved, each timed to the end of the last
  ``on_train_end`` (``fit`` sometimes returns seconds later on our machine,
  with or without callbacks: counted as stalls); and GradWatch's own hooks'
  share of the fit with it.

Usage::

    python benchmarks/setup_cost.py [--cases transformer12,many:500,...]
                                    [--rounds N] [--epochs E] [--json PATH]

Times on a shared machine are noisy: compare the ratios, measured in one run.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from timing import paired_ratios, time_hooks, timed, timed_fit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")
"""GradWatch's hooks timed inside a `fit`."""
DEFAULT_CASES = "transformer12,transformer36,many:250,many:500,many:1000,refit,circles"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument(
        "--epochs", type=int, default=500, help="epochs of the circles fits"
    )
    parser.add_argument("--fits", type=int, default=20, help="fits of refit")
    parser.add_argument("--json", metavar="PATH", help="also save the results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args)))
        return {}
    results = {}
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--child", case]
        command += ["--rounds", str(args.rounds), "--epochs", str(args.epochs)]
        command += ["--fits", str(args.fits)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode or not lines:
            print(f"{case}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        results[case] = json.loads(lines[-1])
        print(f"{case}: {summarize(case, results[case])}", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


def summarize(case: str, r: dict[str, Any]) -> str:
    if "gw_setup_s" in r:
        ratios = paired_ratios(r["gw_setup_s"], r["keras_s"])
        return (
            f"{r['weights']} weights; Keras trace {fmt(r['keras_s'])} s, GradWatch "
            f"setup + first pass {fmt(r['gw_setup_s'])} s (ratio {fmt(ratios)}); "
            f"extra peak memory {r['extra_peak_mb']:.0f} MB; later pass "
            f"{r['gw_pass_ms']:.1f} ms, train step {r['train_step_ms']:.1f} ms"
        )
    if case.startswith("stats:"):
        return f"{r['ops']} ops, traced in {r['trace_s']:.2f} s"
    if case == "refit":
        later = r["setup_s"][1:]
        return (
            f"GradWatch setup per fit: first {r['setup_s'][0]:.2f} s, later median "
            f"{statistics.median(later):.3f} s (max {max(later):.3f}); fit with / "
            f"without, median of pairs {r['ratio']:.2f}"
        )
    return (
        f"{r['epochs']} epochs: without {fmt(r['without_s'])} s, with GradWatch "
        f"{fmt(r['with_s'])} s, ratio {fmt(r['ratios'])}; GradWatch's own "
        f"hooks {fmt(r['own_share'])} of the fit with it; stalls {r['stalls']}"
    )


def fmt(values: list[float] | float) -> str:
    if isinstance(values, float):
        return f"{values:.2f}"
    return "/".join(f"{v:.2f}" for v in values)


# --------------------------------------------------------------------------
# One case, in its own process
# --------------------------------------------------------------------------


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    import keras

    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory(prefix="gradwatch_setup_") as tmp:
        if case.startswith("transformer"):
            blocks = int(case.removeprefix("transformer"))
            return trace_cost(transformer(blocks), tokens, tmp, args.rounds, True)
        if case.startswith("many:"):
            layers = int(case.removeprefix("many:"))
            return trace_cost(many_dense(layers), points, tmp, args.rounds, False)
        if case.startswith("stats:"):
            return stats_graph(int(case.removeprefix("stats:")))
        if case == "refit":
            return refit(tmp, args.fits)
        if case == "circles":
            return circles(tmp, args.rounds, args.epochs)
    raise SystemExit(f"unknown case {case!r}")


def peak_mb() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trace_cost(
    model: Any, data: Callable[[int], tuple], tmp: str, rounds: int, retrace: bool
) -> dict[str, Any]:
    """Keras' (re)trace of its train function vs GradWatch's setup, interleaved.

    The first train step (Keras' first trace) comes first, so that the peak
    memory measured across GradWatch's first setup is GradWatch's own extra.
    Rounds alternate which of the two goes first.
    """
    from keras_gradwatch import GradWatch

    x, y = data(32)
    held_out = data(32)
    keras_first = timed(lambda: model.train_on_batch(x, y))
    steps = [timed(lambda: model.train_on_batch(x, y)) for _ in range(5)]
    keras_s, gw_setup_s, passes, extra_mb = [], [], [], 0.0

    def keras_trace(i: int) -> None:
        if retrace or i:
            model.make_train_function(force=True)
            keras_s.append(timed(lambda: model.train_on_batch(x, y)))
        else:
            keras_s.append(keras_first)

    def gradwatch_setup(i: int) -> None:
        nonlocal extra_mb, passes
        watch = GradWatch(os.path.join(tmp, f"gw{i}"), held_out=held_out)
        watch.set_model(model)
        before = peak_mb()

        def setup() -> None:
            watch.on_train_begin()
            watch.on_epoch_end(0, {})

        gw_setup_s.append(timed(setup))
        if i == 0:
            extra_mb = peak_mb() - before
            passes = [timed(lambda: watch.on_epoch_end(1, {})) for _ in range(5)]
        watch.on_train_end()

    for i in range(rounds):
        first, second = (gradwatch_setup, keras_trace)[:: 1 if i % 2 == 0 else -1]
        first(i)
        second(i)
    return {
        "weights": len(model.trainable_weights),
        "params": model.count_params(),
        "keras_first_s": keras_first,
        "keras_s": keras_s,
        "gw_setup_s": gw_setup_s,
        "extra_peak_mb": extra_mb,
        "gw_pass_ms": 1e3 * statistics.median(passes),
        "train_step_ms": 1e3 * statistics.median(steps),
    }


def stats_graph(k: int) -> dict[str, Any]:
    """Size and trace time of the statistics' graph for `k` small weights."""
    import numpy as np
    import tensorflow as tf

    from keras_gradwatch import _stats

    grads = [tf.constant(np.full((4, 4), i + 1.0, np.float32)) for i in range(k)]
    function = tf.function(lambda g, w: _stats.batch_stats(g, w, 30), autograph=False)
    start = time.perf_counter()
    graph = function.get_concrete_function(grads, grads).graph.as_graph_def()
    trace_s = time.perf_counter() - start
    # The ops of both branches of a tf.cond live in the function library.
    nodes = [n for n in graph.node if n.op != "Placeholder"]
    ops = len(nodes) + sum(len(f.node_def) for f in graph.library.function)
    return {"ops": ops, "trace_s": trace_s}


def refit(tmp: str, fits: int) -> dict[str, Any]:
    """Many short fits, with one GradWatch reused, against none, interleaved."""
    from keras_gradwatch import GradWatch

    x, y, xv, yv = circles_data()
    model = circles_model()
    model.fit(x, y, epochs=1, verbose=0)  # Keras traces its own functions first
    watch = GradWatch(tmp, held_out=(xv, yv))
    hooks = time_hooks(watch, HOOKS)
    with_s, without_s = [], []
    for _ in range(fits):
        without_s.append(timed(lambda: model.fit(x, y, epochs=2, verbose=0)))
        with_s.append(
            timed(lambda: model.fit(x, y, epochs=2, verbose=0, callbacks=[watch]))
        )
    ends = hooks["on_epoch_end"]
    setup = [
        begin + end + (ends[2 * i] - ends[2 * i + 1])
        for i, (begin, end) in enumerate(
            zip(hooks["on_train_begin"], hooks["on_train_end"], strict=True)
        )
    ]
    return {
        "setup_s": setup,
        "with_s": with_s,
        "without_s": without_s,
        "ratio": statistics.median(paired_ratios(with_s, without_s)),
        "traces": watch._probe.tracing_count if watch._probe else None,
    }


def circles(tmp: str, rounds: int, epochs: int) -> dict[str, Any]:
    """The tutorial's whole fit, with GradWatch and without, interleaved.

    A fit is timed to the end of the last `on_train_end` (`timed_fit`);
    GradWatch's own hooks are timed inside it too.
    """
    import keras

    from keras_gradwatch import GradWatch

    x, y, xv, yv = circles_data()
    seconds: dict[str, list[float]] = {"with": [], "without": []}
    stalls = dict.fromkeys(seconds, 0)
    own = []
    for i in range(rounds):
        for name in ("without", "with"):
            keras.utils.set_random_seed(i)
            model = circles_model()
            callbacks = []
            if name == "with":
                watch = GradWatch(os.path.join(tmp, f"run{i}"), (xv[:256], yv[:256]))
                hooks = time_hooks(watch, HOOKS)
                callbacks = [watch]
            fit_s, stalled = timed_fit(
                lambda c, m=model: m.fit(
                    x,
                    y,
                    epochs=epochs,
                    batch_size=32,
                    validation_data=(xv, yv),
                    verbose=0,
                    callbacks=c,
                ),
                callbacks,
            )
            seconds[name].append(fit_s)
            stalls[name] += stalled
        own.append(sum(sum(calls) for calls in hooks.values()))
    return {
        "epochs": epochs,
        "with_s": seconds["with"],
        "without_s": seconds["without"],
        "ratios": paired_ratios(seconds["with"], seconds["without"]),
        "own_share": paired_ratios(own, seconds["with"]),
        "stalls": stalls,
    }


# --------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------

VOCAB, SEQ_LEN, WIDTH = 1000, 64, 128


def transformer(blocks: int) -> Any:
    """Token embedding, `blocks` encoder blocks (post-norm), mean pooling."""
    import keras
    from keras import layers

    inputs = keras.Input((SEQ_LEN,), dtype="int32")
    h = layers.Embedding(VOCAB, WIDTH)(inputs)
    for _ in range(blocks):
        attended = layers.MultiHeadAttention(num_heads=4, key_dim=WIDTH // 4)(h, h)
        h = layers.LayerNormalization()(h + attended)
        ffn = layers.Dense(4 * WIDTH, activation="relu")(h)
        h = layers.LayerNormalization()(h + layers.Dense(WIDTH)(ffn))
    outputs = layers.Dense(1, activation="sigmoid")(layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs, name=f"encoder_{blocks}")
    model.compile("adam", "binary_crossentropy")
    return model


def tokens(n: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(n)
    return rng.integers(0, VOCAB, (n, SEQ_LEN)), rng.integers(0, 2, (n, 1))


def many_dense(n: int) -> Any:
    """A subclassed model of `n` tiny Dense layers: 2n + 2 weights."""
    import keras

    class ManyDense(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = [keras.layers.Dense(4, activation="tanh") for _ in range(n)]
            self.out = keras.layers.Dense(1)

        def call(self, x: Any) -> Any:
            for layer in self.hidden:
                x = layer(x)
            return self.out(x)

    model = ManyDense()
    model.compile("sgd", "mse")
    model(points(1)[0])
    return model


def points(n: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(n)
    return rng.normal(size=(n, 4)).astype("float32"), rng.normal(size=(n, 1))


def circles_data() -> tuple[Any, ...]:
    """scikit-learn's two circles, 1000 points, noise 0.1, in [-1, 1], 500/500."""
    from sklearn.datasets import make_circles
    from sklearn.preprocessing import MinMaxScaler

    x, y = make_circles(n_samples=1000, noise=0.1, random_state=0)
    x = MinMaxScaler(feature_range=(-1, 1)).fit_transform(x).astype("float32")
    y = y.astype("float32")
    return x[:500], y[:500], x[500:], y[500:]


def circles_model() -> Any:
    """5 tanh layers of width 5, RandomUniform(0, 1), SGD(0.01, momentum 0.9)."""
    import keras

    model = keras.Sequential(
        [keras.Input((2,))]
        + [
            keras.layers.Dense(
                5,
                activation="tanh",
                kernel_initializer=keras.initializers.RandomUniform(0.0, 1.0),
            )
            for _ in range(5)
        ]
        + [keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        "binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


if __name__ == "__main__":
    main()
