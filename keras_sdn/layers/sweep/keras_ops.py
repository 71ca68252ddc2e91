"""The sweeps written with `keras.ops`: the loops of the JAX and PyTorch backends.

The forward equations of `keras_sdn.layers.sweep` (which derives them), in
the form Keras' own recurrent layers take on those backends: the lines of a
sweep are visited by `keras.ops.scan` or by a Python loop (`implementation`
`"scanned"` or `"unrolled"`), and the gradient is the backend's automatic
differentiation through the loop. The TensorFlow backend runs the package's
`scanned_sweeps` and `unrolled_sweeps` instead, whose hand-written gradient
is tuned for it; these loops run there too (the tests compare the two).

For one direction the map is transposed so that the swept axis leads,
`(lines, batch, positions, F)`. The input projections of every line are one
matrix product before the loop; a step of the loop takes the previous
corrected line's three neighbours of every position (zeros outside the line),
one matrix product with the neighbourhood weights, and the gate arithmetic.
"""

import functools

import keras
from keras import ops

from keras_sdn.layers.sweep.directions import sweep_directions
from keras_sdn.layers.sweep.gates import gated_update


def keras_ops_sweeps(inputs, kernels, recurrent_kernels, biases, directions, implementation="auto"):
    """`keras_sdn.layers.sweep.sweeps` in `keras.ops`: one gated sweep per direction.

    Args:
        inputs, kernels, recurrent_kernels, biases, directions: As for
            `keras_sdn.layers.sweep.sweeps`.
        implementation: `"unrolled"`: a Python loop over the lines (one copy
            of the step per line, as Keras' recurrent layers do with
            `unroll=True`); `"scanned"`: `keras.ops.scan`; `"auto"`: scanned
            inside a JAX transformation such as `jax.jit` (one compiled loop,
            compiled several times sooner than the unrolled lines), unrolled
            elsewhere (eager JAX would compile the scan anew at every call;
            the PyTorch backend's scan is a Python loop anyway).

    Returns:
        The corrected map, same shape and dtype as `inputs`.
    """
    if implementation == "auto":
        implementation = "scanned" if _traced_by_jax(inputs) else "unrolled"
    unroll = implementation == "unrolled"
    line_sweeps = {
        backwards: functools.partial(line_sweep, backwards=backwards, unroll=unroll)
        for backwards in (False, True)
    }
    return sweep_directions(line_sweeps, inputs, kernels, recurrent_kernels, biases, directions)


def _traced_by_jax(tensor):
    if keras.backend.backend() != "jax":
        return False
    import jax

    return isinstance(tensor, jax.core.Tracer)


def line_sweep(lines, kernel, recurrent_kernel, bias, backwards=False, unroll=False):
    """One gated sweep over the lines of a `(T, batch, A, F)` tensor.

    Args:
        lines: Tensor `(T, batch, A, F)`: `T` lines of `A` positions.
        kernel: Tensor `(F, 3F)`, the input weights `[W_r, W_z, W_n]`.
        recurrent_kernel: Tensor `(3F, 3F)`, the neighbourhood weights.
        bias: Tensor `(2, 3F)`, the input and neighbourhood biases.
        backwards: Whether the lines are visited from the last to the first.
        unroll: Whether the loop is a Python loop rather than `keras.ops.scan`.

    Returns:
        The corrected lines, `(T, batch, A, F)`.
    """
    input_bias, recurrent_bias = bias[0], bias[1]
    features = lines.shape[-1]
    # The reset and update gates' two biases add up, so both go with the
    # input projection; the proposal's neighbourhood bias is not scaled by r.
    gate_bias = input_bias + ops.concatenate(
        [recurrent_bias[: 2 * features], ops.zeros_like(recurrent_bias[2 * features :])]
    )
    projections = ops.matmul(lines, kernel) + gate_bias
    neighbourhood_bias = ops.concatenate(
        [ops.zeros_like(recurrent_bias[: 2 * features]), recurrent_bias[2 * features :]]
    )

    def step(previous, line):
        x, projection = line
        neighbourhood = ops.pad(previous, [[0, 0], [1, 1], [0, 0]])
        neighbourhood = ops.concatenate(
            [neighbourhood[:, :-2], neighbourhood[:, 1:-1], neighbourhood[:, 2:]], axis=-1
        )
        recurrent_reset, recurrent_update, recurrent_proposal = ops.split(
            ops.matmul(neighbourhood, recurrent_kernel) + neighbourhood_bias, 3, axis=-1
        )
        x_reset, x_update, x_proposal = ops.split(projection, 3, axis=-1)
        corrected = gated_update(
            x,
            x_reset + recurrent_reset,
            x_update + recurrent_update,
            x_proposal,
            recurrent_proposal,
        )[0]
        return corrected, corrected

    if not unroll:
        _, corrected = ops.scan(
            step, ops.zeros_like(lines[0]), (lines, projections), reverse=backwards
        )
        return corrected
    # Unstacked once, not indexed line by line: the gradient of each index
    # would be a zero tensor the size of all the lines.
    steps = list(zip(ops.unstack(lines), ops.unstack(projections)))
    corrected = [None] * len(steps)
    previous = ops.zeros_like(steps[0][0])
    for index in reversed(range(len(steps))) if backwards else range(len(steps)):
        previous, _ = step(previous, steps[index])
        corrected[index] = previous
    return ops.stack(corrected)
