"""The data contract: what keras_gradwatch writes, where, and in which unit.

This module is pure Python (no TensorFlow import) so that readers of the
event files can share it with the writers.

Which data
    GradWatch computes gradients of the model's own compiled loss
    (``model.compute_loss``: compiled losses with their ``loss_weights`` and
    ``sample_weight``, regularization penalties and ``add_loss`` terms) with
    respect to every trainable weight, on one fixed held-out batch, at the end
    of every ``freq``-th epoch (or after every ``every_n_steps``-th optimizer
    step), with the weights as they are at that moment.
    By default the forward pass runs with ``training=False`` (Dropout off,
    BatchNormalization uses its moving statistics). Every summary carries a
    description: what its statistic is (`describe`), then the batch size and
    the ``training`` flag.

Runs
    Summaries go to ``<log_dir>/<run>`` (default run: ``heldout``), next to
    the ``train`` and ``validation`` runs of ``keras.callbacks.TensorBoard``.
    The step of every summary is the 0-based epoch index, as in Keras'
    TensorBoard callback; with ``GradWatch(every_n_steps=N)`` it is the
    optimizer's iteration count after the step (N, 2N, ...: the updates
    the weights have had), and each pass also writes ``epoch``, which is
    how readers tell the two step axes apart.

Tags (``<path>`` is the Keras ``weight.path``, e.g. ``sequential/dense_1/kernel``)
    ============================  =========  ====================================
    tag                           kind       value
    ============================  =========  ====================================
    ``grad/<path>``               histogram  gradient values (finite ones only)
    ``grad_norm/<path>``          scalar     L2 norm ‖g‖₂
    ``grad_mean_abs/<path>``      scalar     mean |g| over all elements
    ``grad_max_abs/<path>``       scalar     max |g|
    ``grad_to_weight/<path>``     scalar     ‖g‖₂ / ‖w‖₂
    ``grad_dead_units/<path>``    scalar     fraction of units (last axis)
                                             whose gradient is exactly zero
    ``grad_nonfinite/<path>``     scalar     count of NaN and ±Inf elements
    ``grad_norm/global``          scalar     L2 norm of all gradients together
    ``weight_nonfinite/<path>``   scalar     count of NaN and ±Inf elements of
                                             the weight itself
    ``heldout_loss``              scalar     the compiled loss on the held-out
                                             batch, which the gradients are of
    ``train_loss``                scalar     per epoch only (not with
                                             ``every_n_steps``): the epoch's
                                             training loss from Keras'
                                             ``logs["loss"]``, NaN if none;
                                             the diagnosis' loss
    ``heldout_chance_loss``       scalar     the loss of the best constant
                                             prediction of the held-out labels
                                             (chance level; once per ``fit``,
                                             where known: see below)
    ``heldout_target_outside/``   scalar     share of the held-out labels the
    ``<layer>``                              output layer's activation cannot
                                             produce (once per ``fit``, where
                                             known: see below)
    ``epoch``                     scalar     ``every_n_steps`` only: the
                                             (0-based) epoch the step fell in
    ============================  =========  ====================================

    The same global norm is put into the epoch ``logs`` under ``grad_norm``.
    ``heldout_chance_loss`` is written at the first logged epoch of a ``fit``
    for a single-output model compiled with binary, categorical or sparse
    categorical cross-entropy (the entropy of the label frequencies, label
    smoothing applied: ln 2 for balanced binary labels) or mean squared
    error (the labels' variance), without sample weights; the diagnosis
    says when a stalled loss sits at it.
    ``heldout_target_outside/<layer>`` is written with it for a functional
    or Sequential model with one output whose layer's activation has a
    bounded range (sigmoid, hard_sigmoid, tanh, softsign: both ends; relu,
    relu6, softplus, exponential: 0 and above, relu6 at most 6), labels of
    the output's shape, no sample weights, and a loss that compares labels
    with outputs as they are (MSE, MAE, Huber, log-cosh, MSLE, binary
    cross-entropy); it is a share of label values. Findings on that output
    (saturated or dead units, the backward signal's drop across it) and a
    stall name it and put bringing the labels into range first.
    ``weight_nonfinite`` exists because a non-finite weight need not show in
    its gradient: with oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS=1``) a fused
    MatMul + BiasAdd + Relu maps NaN to 0 in graph mode, so a layer whose
    weights are NaN gets all-zero gradients.

Backward signal (same run, pass and step; ``<layer>`` is the Keras 3
``layer.path``, e.g. ``sequential/dense_1``; ``_1``, ``_2``... on repeats)
    ==================================  =========  ==============================
    tag                                 kind       value
    ==================================  =========  ==============================
    ``act_grad_norm/<layer>``           scalar     ‖∂L/∂y‖₂ over the whole
                                                   held-out batch, y the layer's
                                                   output (its first element if
                                                   it returns a list or tuple)
    ``act_grad_rms/<layer>``            scalar     the same / sqrt(elements of
                                                   y): the root mean square
                                                   element, comparable across
                                                   layer widths
    ``time_grad_ratio/<layer>``         scalar     recurrent layers: RMS over the
                                                   batch of ‖∂L/∂x_first‖ over
                                                   RMS of ‖∂L/∂x_last‖ (x the
                                                   input sequence); < 1: the
                                                   signal shrinks going back in
                                                   time, > 1: it grows
    ``time_grad_norm/<layer>/<q>``      scalar     recurrent layers, q in 0, 25,
                                                   50, 75, 100: RMS over the
                                                   batch of ‖∂L/∂x_t‖ at the
                                                   step q % of the way through
                                                   each sample's *valid* steps
    ``activation/<layer>``              text       the layer's activation name
                                                   ("relu", "tanh", "linear"...)
    ==================================  =========  ==============================

    L is the compiled loss, as for the weight gradients. The measured layers
    are the outermost layers that own trainable weights and are not models:
    Sequential, Functional and subclassed models are walked into, nested
    ones too; other layers are measured whole (an LSTM, a Bidirectional
    wrapper, a MultiHeadAttention, a custom layer holding Dense layers).
    In a subclassed model, the layers its ``call`` calls through
    ``__call__`` (``self.dense(x)``) are reached; what it computes with raw
    TensorFlow ops or variables of its own is not measured. A layer called
    more than once (shared) is measured at its first call. Where the output
    is a sigmoid or softmax that Keras' crossentropies read through its
    logits (they do so whenever they can, for accuracy), the loss does not
    depend on y and the gradient is taken at the logits, the layer's
    pre-activation output, instead. Layers whose
    output the loss does not depend on, and non-float outputs, are left out,
    as are weights with no gradient. Norms follow NumPy on the float32
    gradient (NaN if any element is NaN). With mixed precision the loss is
    scaled as for the weight gradients and these gradients are unscaled, in
    float32.

    Recurrent layers are the ``keras.layers.RNN`` subclasses (SimpleRNN,
    GRU, LSTM, ``RNN(cell)``) and ``keras.layers.Bidirectional``, whose
    float input of shape ``[batch, time, features]`` is watched even when
    it is the model's input. A sample's valid steps are those the mask the
    layer receives holds (from ``Embedding(mask_zero=True)`` or a
    ``Masking`` layer, pre- or post-padding), every step without a mask;
    first and last are its first and last valid step, and quantile q is its
    valid step of rank ``round(q / 100 * (n - 1))`` (halves up) of its n.
    Samples with no valid step are left out (all values NaN if none has
    one). ``time_grad_ratio`` is 0 when both RMS are 0 and +inf when only
    the last is. ``activation`` is a rank-0 string tensor (TensorBoard's
    text plugin), at most 64 characters, written once per ``fit`` at its
    first logged epoch, for measured layers that have an ``activation``
    (an LSTM's or GRU's own; a Bidirectional's forward layer's); the
    others (Embedding, BatchNormalization, MultiHeadAttention) have none.
    These tags are Keras 3 only: tf_keras models get none of them.

WeightNorms (run ``weights`` by default; same steps)
    ============================  =========  ====================================
    tag                           kind       value
    ============================  =========  ====================================
    ``weight_l1/<path>``          scalar     L1 norm ‖w‖₁
    ``weight_l2/<path>``          scalar     L2 norm ‖w‖₂
    ``weight_change/<path>``      scalar     ‖w − w_prev‖₁ / ‖w‖₁, w_prev being
                                             the weight at the previous logged
                                             epoch (when the fit's first epoch
                                             begins, for the first one)
    ``weight/<path>``             histogram  weight values (``histograms=True``)
    ============================  =========  ====================================

AutoClip (run ``autoclip`` with ``log_dir``; one step per epoch)
    ``autoclip/threshold`` (the bound in force after the epoch's last step,
    NaN before the first finite step), ``autoclip/max_norm`` (largest finite
    global norm of the epoch), ``autoclip/clipped_steps`` and
    ``autoclip/skipped_steps`` (steps of the epoch; a step is clipped when
    its global norm is, or, zscore with SGD, a kernel's step is held to the
    step bound). The same numbers go into
    the epoch logs as ``autoclip_threshold``, ``autoclip_max_norm``,
    ``autoclip_clipped_steps`` and ``autoclip_skipped_steps``.

AutoClip per step (with ``every_n_steps=N``; same run)
    ``autoclip/step_grad_norm`` (the global gradient norm before clipping,
    summed across replicas and unscaled) and ``autoclip/step_threshold``
    (the bound that step's global norm was held to; +inf where there was
    none yet; the step bound acts per kernel and is not in it), every
    N-th optimizer iteration, with the optimizer's iteration count before
    the step (0 for the first update) as the TensorBoard step. Steps with a
    non-finite norm are not written (they are counted in
    ``autoclip/skipped_steps``). `keras_gradwatch.spikes.find_spikes` finds
    the spikes in such a series.

    ``weight_change`` is the measured relative update per logged epoch; with
    plain SGD, ``grad_to_weight`` times the learning rate is the expected
    relative update per step (in L2 rather than L1 terms).

Units and edge cases
    Norms and means follow NumPy on the dense gradient: a NaN element makes
    ``grad_norm``, ``grad_mean_abs`` and ``grad_max_abs`` NaN, an Inf makes
    them Inf. ``grad_to_weight`` is ``+inf`` for an all-zero weight with a
    non-zero gradient and 0 when both are zero; ``weight_change`` likewise for
    an all-zero weight that moved or did not. A unit is the last axis of the
    weight (the output units of a Dense or Conv kernel; the gates times units
    of a recurrent kernel; the features of an embedding table); a rank-0
    weight is one unit. An embedding's sparse gradient (``tf.IndexedSlices``)
    counts as its dense equivalent: duplicate rows summed, untouched rows zero.

Histograms
    TensorBoard's histogram plugin format: a float64 tensor of shape
    ``[buckets, 3]`` whose rows are ``[left_edge, right_edge, count]``,
    spanning the finite minimum to the finite maximum. Non-finite elements are
    left out of the buckets (so they cannot stretch the edges to ±Inf) and
    counted in ``grad_nonfinite/<path>`` instead. A tensor with a single
    distinct value has all edges equal to it and its count in the last bucket;
    one with no finite values has all-zero rows (TensorBoard's conventions).
"""

from __future__ import annotations

DEFAULT_RUN = "heldout"
"""Run (sub-directory of ``log_dir``) that GradWatch writes to by default."""

GRAD_HISTOGRAM = "grad"
GRAD_SCALARS = (
    "grad_norm",
    "grad_mean_abs",
    "grad_max_abs",
    "grad_to_weight",
    "grad_dead_units",
    "grad_nonfinite",
)
"""Per-weight scalar prefixes, in the order GradWatch computes them."""

WEIGHT_NONFINITE = "weight_nonfinite"
STATS_COLUMNS = (*GRAD_SCALARS, WEIGHT_NONFINITE)
"""Columns of GradWatch's per-weight statistics: the gradient's, then the
count of non-finite elements of the weight."""

ACT_GRAD_NORM = "act_grad_norm"
ACT_GRAD_RMS = "act_grad_rms"
TIME_GRAD_RATIO = "time_grad_ratio"
TIME_GRAD_NORM = "time_grad_norm"
TIME_QUANTILES = (0, 25, 50, 75, 100)
"""Positions (% of each sample's valid steps) of ``time_grad_norm``."""
ACTIVATION = "activation"
"""Backward-signal prefixes: per measured layer, ``<prefix>/<layer path>``
(``time_grad_norm/<layer path>/<q>``); ``activation`` is a text summary."""

GLOBAL_NORM_TAG = "grad_norm/global"
HELDOUT_LOSS = "heldout_loss"
TRAIN_LOSS = "train_loss"
"""Written per epoch (not with ``every_n_steps``): Keras' ``logs["loss"]``."""
CHANCE_LOSS = "heldout_chance_loss"
"""The loss of the best constant prediction of the held-out labels."""
TARGET_OUTSIDE = "heldout_target_outside"
"""``heldout_target_outside/<layer>``: the share of the held-out labels
that the output layer's activation cannot produce."""
EPOCH_TAG = "epoch"
"""Written with ``every_n_steps`` only: its presence marks the step axis."""
LOGS_GRAD_NORM = "grad_norm"
"""Key of the global gradient norm in the epoch ``logs`` dict."""

WEIGHTS_RUN = "weights"
"""Run that WeightNorms writes to by default."""

WEIGHT_HISTOGRAM = "weight"
WEIGHT_SCALARS = ("weight_l1", "weight_l2", "weight_change")
"""Per-weight scalar prefixes of WeightNorms, in the order it computes them."""

AUTOCLIP_RUN = "autoclip"
"""Run that AutoClip writes to by default."""
AUTOCLIP_STEP_GRAD_NORM = "autoclip/step_grad_norm"
AUTOCLIP_STEP_THRESHOLD = "autoclip/step_threshold"
"""AutoClip's per-step tags (``every_n_steps``)."""


_DESCRIPTIONS = {
    GRAD_HISTOGRAM: "Histogram of the gradient's finite values.",
    "grad_norm": "L2 norm of the weight's gradient.",
    "grad_mean_abs": "Mean absolute value of the weight's gradient.",
    "grad_max_abs": "Largest absolute value of the weight's gradient.",
    "grad_to_weight": "L2 norm of the gradient over the weight's L2 norm.",
    "grad_dead_units": (
        "Fraction of the weight's units (last axis) whose gradient is exactly 0."
    ),
    "grad_nonfinite": "Count of NaN and Inf elements of the weight's gradient.",
    GLOBAL_NORM_TAG: "L2 norm of all gradients together.",
    WEIGHT_NONFINITE: "Count of NaN and Inf elements of the weight itself.",
    HELDOUT_LOSS: "The compiled loss, which the gradients are of.",
    TRAIN_LOSS: (
        "The training loss Keras reported for the epoch (logs['loss']), NaN "
        "where it reported none."
    ),
    CHANCE_LOSS: (
        "The loss of the best constant prediction of the held-out labels "
        "(the label entropy for cross-entropy, their variance for MSE): the "
        "chance level."
    ),
    TARGET_OUTSIDE: (
        "Share of the held-out label values outside what this output layer's "
        "activation can produce (a sigmoid's 0 to 1, a ReLU's 0 and above...)."
    ),
    EPOCH_TAG: "The 0-based epoch this optimizer step fell in.",
    ACT_GRAD_NORM: "L2 norm of the loss' gradient with respect to the layer's output.",
    ACT_GRAD_RMS: (
        "Root mean square element of the loss' gradient with respect to the "
        "layer's output."
    ),
    TIME_GRAD_RATIO: (
        "Gradient norm at the first time step of the input over that at the "
        "last (< 1: shrinks going back in time)."
    ),
    TIME_GRAD_NORM: (
        "Gradient norm at the time step this % of the way through the sequence."
    ),
    ACTIVATION: "The layer's activation, as configured.",
    WEIGHT_HISTOGRAM: "Histogram of the weight's values.",
    "weight_l1": "L1 norm of the weight.",
    "weight_l2": "L2 norm of the weight.",
    "weight_change": (
        "L1 norm of the weight's change since the previous logged epoch, over "
        "its L1 norm."
    ),
    AUTOCLIP_STEP_GRAD_NORM: "Global gradient norm of the step, before clipping.",
    AUTOCLIP_STEP_THRESHOLD: "The bound the step's global norm was held to.",
    "autoclip/threshold": "The bound in force after the epoch's last step.",
    "autoclip/max_norm": "Largest finite global gradient norm of the epoch.",
    "autoclip/clipped_steps": "Steps of the epoch that were clipped.",
    "autoclip/skipped_steps": "Steps of the epoch skipped as non-finite.",
}


def describe(name: str) -> str:
    """What the statistic under tag `name` is, in one sentence (the tag's
    TensorBoard description, before the callback says when and on what)."""
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    return _DESCRIPTIONS.get(name.split("/", 1)[0], "")


def tag(prefix: str, path: str) -> str:
    """Returns the tag ``<prefix>/<path>``, e.g. ``grad_norm/dense/kernel``."""
    return f"{prefix}/{path}"
