"""`sweeps`: which loop form runs, and whether the batch is swept in two halves."""

import contextlib
import threading

import tensorflow as tf

from keras_sdn import _compat
from keras_sdn.layers.sweep.directions import swept_sizes
from keras_sdn.layers.sweep.scanned import scanned_sweeps
from keras_sdn.layers.sweep.unrolled import unrolled_sweeps

# implementation -> loop form, each `loop(inputs, kernels, recurrent_kernels, biases, directions)`.
LOOPS = {"unrolled": unrolled_sweeps, "scanned": scanned_sweeps}
# "auto" unrolls sweeps over at most this many lines (the graph grows with the lines).
AUTO_MAX_UNROLLED_LINES = 32
# Values (half the batch x positions x features) of a line below which the
# batch is swept whole (see `_long_lines`).
_MIN_HALF_LINE_SIZE = 16384
_tracing = threading.local()


@contextlib.contextmanager
def _tracing_flag(name, value):
    """Sets the thread's tracing flag `name` to `value` while the context is open."""
    previous = getattr(_tracing, name, None)
    setattr(_tracing, name, value)
    try:
        yield
    finally:
        setattr(_tracing, name, previous)


def whole_batch():
    """Sweeps traced in this context do not split the batch (see `sweeps`).

    For graphs that serve requests of any size, such as exported SavedModels
    (`keras_sdn.export`): half as many loops to trace, load and optimise.
    """
    return _tracing_flag("whole_batch", True)


def auto_implementation(implementation):
    """Sweeps with `implementation="auto"` traced in this context run as `implementation`.

    Layers created with an explicit `"unrolled"` or `"scanned"` keep it.
    `keras_sdn.export`'s `compact_graph=True` uses `"scanned"`: a smaller
    graph, which loads and is optimised on its first call several times
    sooner, for slower steps.

    Args:
        implementation: `"unrolled"` or `"scanned"`.
    """
    if implementation not in LOOPS:
        raise ValueError(
            f"Expected `implementation` to be one of {tuple(LOOPS)}. "
            f"Received: implementation={implementation!r}"
        )
    return _tracing_flag("auto_implementation", implementation)


def resolve_implementation(inputs, directions, implementation="auto"):
    """The loop form, `"unrolled"` or `"scanned"`, that `sweeps` runs.

    An explicit `implementation` is kept. `"auto"` is the one set by an
    enclosing `auto_implementation` context, if any; otherwise `"unrolled"`
    when every swept axis and every line have a static size and no sweep has
    more than `AUTO_MAX_UNROLLED_LINES` lines, outside XLA (which compiles
    `tf.scan`'s loop into one kernel and would compile an unrolled one
    slowly), and `"scanned"` else. If TensorFlow's private XLA-context test
    has moved (`keras_sdn._compat.compiling_with_xla`), every trace counts
    as XLA's: `"auto"` is then always `"scanned"`.
    """
    if implementation != "auto":
        return implementation
    chosen = getattr(_tracing, "auto_implementation", None)
    if chosen is not None:
        return chosen
    sizes = swept_sizes(inputs.shape, directions)
    static = all(None not in size for size in sizes)
    if static and max(lines for lines, _ in sizes) <= AUTO_MAX_UNROLLED_LINES:
        if not _compat.compiling_with_xla():
            return "unrolled"
    return "scanned"


def sweeps(inputs, kernels, recurrent_kernels, biases, directions, implementation="auto"):
    """Runs one gated sweep per direction, in order, over a `(batch, height, width, F)` map.

    In graph mode on a CPU, a batch whose lines are long enough is swept as
    two independent halves, so that the executor can run the two halves'
    per-line ops side by side on different cores.

    Args:
        inputs: Tensor `(batch, height, width, F)`, the map to correct.
        kernels: Tensor `(D, F, 3F)`, each direction's input weights
            `[W_r, W_z, W_n]`.
        recurrent_kernels: Tensor `(D, 3F, 3F)`, each direction's
            neighbourhood weights: rows `[0, F)` act on the lower-coordinate
            neighbour, `[F, 2F)` on the aligned one, `[2F, 3F)` on the
            higher-coordinate one; columns are the `r, z, n` gates.
        biases: Tensor `(D, 2, 3F)`: input biases `b_x` and neighbourhood
            biases `b_u` of each direction.
        directions: Sequence of `D` names from `DIRECTIONS`.
        implementation: `"auto"`, `"unrolled"` or `"scanned"` (see
            `resolve_implementation`).

    Returns:
        The corrected map, same shape and dtype as `inputs`.
    """
    with tf.name_scope("sweeps"):
        loop = LOOPS[resolve_implementation(inputs, directions, implementation)]
        if not (_sweep_in_halves(inputs) and _long_lines(inputs)):
            return loop(inputs, kernels, recurrent_kernels, biases, directions)
        batch = tf.shape(inputs)[0]
        second_size = batch // 2
        # A batch of one is swept in both halves rather than leaving the second
        # empty: TensorFlow's CPU convolution gives an empty batch a wrong shape.
        halves = (
            inputs[: batch - second_size],
            inputs[tf.minimum(batch - second_size, batch - 1) :],
        )
        first, second = (
            loop(half, kernels, recurrent_kernels, biases, directions) for half in halves
        )
        return tf.concat([first, second[tf.shape(second)[0] - second_size :]], 0)


def _sweep_in_halves(inputs):
    """Whether to sweep the batch as two independent halves.

    In graph mode on a CPU, two halves let the executor overlap two chains of
    small per-line ops on different cores. Eager execution and XLA run one op
    or one compiled loop at a time, and a GPU one chain per stream: there
    halving only doubles the number of steps; four parts were slower than two
    (measured: `benchmarks/layer_speed.py`).
    """
    return not (
        inputs.shape[0] == 1
        or getattr(_tracing, "whole_batch", None)
        or tf.executing_eagerly()
        or _compat.compiling_with_xla()
        or tf.config.list_logical_devices("GPU")
    )


def _long_lines(inputs):
    """Whether half the batch's lines hold enough values to be worth two chains.

    With short lines (the 16x16 and smaller maps of small models) every
    per-line op is cheap and the two halves' extra ops cost more than running
    them side by side saves (measured: `benchmarks/model_speed.py`). A map of
    unknown size counts as long.
    """
    batch, height, width, features = inputs.shape
    if None in (batch, height, width, features):
        return True
    return batch // 2 * min(height, width) * features >= _MIN_HALF_LINE_SIZE
