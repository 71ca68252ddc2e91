"""The correction stage of a spatial dependency layer: directional gated sweeps.

A sweep visits the lines (rows or columns) of a feature map one after another
and updates every position of a line at once from the already-corrected
previous line. For the top-to-bottom sweep, position `(i, j)` with value `x`
and previous-row neighbourhood `nb = [h[i-1, j-1], h[i-1, j], h[i-1, j+1]]`
(zeros outside the map) becomes

    r = sigmoid(x W_r + b_xr + nb U_r + b_ur)
    z = sigmoid(x W_z + b_xz + nb U_z + b_uz)
    n = tanh(r * (x W_n + b_xn) + nb U_n + b_un)
    h[i, j] = z * x + (1 - z) * n

which is a GRU cell whose input is the neighbourhood and whose hidden state is
the current value (two bias vectors per gate, as in the reference code). The
first line of a sweep is updated from an all-zero previous line (the paper's
zero padding).

Every direction is computed by one `tf.scan` over a `(lines, batch,
positions, features)` tensor, forwards or backwards: the map is transposed so
that the swept axis leads, once for a run of sweeps along the same axis.
Inside the scan step only the recurrent product (a width-3 convolution across
the previous line) and the gate arithmetic remain; the input projection
`x W + b_x` is one matrix product over all lines before the scan. In graph
mode on a CPU the batch is swept as two independent halves, so that the
executor can run the two halves' small per-line ops side by side on
different cores.

The gradient is hand-written (`tf.custom_gradient`): one scan in the opposite
direction carries only the gradient that flows into the previous line; the
gates' local derivatives are computed for all lines before it, and the input,
weight and bias gradients after it, each as one large product over all lines
and gates (as fused RNN kernels do). Nothing is differentiated through the
loop by autodiff.

For each direction the neighbourhood is ordered by increasing coordinate
across the sweep: columns `j-1, j, j+1` for vertical sweeps, rows
`i-1, i, i+1` for horizontal ones.
"""

import contextlib
import threading

import tensorflow as tf

try:  # TF's XLA-context test, as TFP uses it: private, so a TF release may move it
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
except ImportError:
    GraphOrParentsInXlaContext = None

DIRECTIONS = ("up", "left", "right", "down")

# direction -> (swept axis of a (batch, height, width, features) map,
#               whether the sweep runs towards decreasing coordinates)
_SWEEP_AXIS = {
    "up": (1, True),
    "left": (2, True),
    "right": (2, False),
    "down": (1, False),
}
_NATURAL_LAYOUT = (0, 1, 2, 3)
_tracing = threading.local()


@contextlib.contextmanager
def whole_batch():
    """Sweeps traced in this context do not split the batch (see `_sweep_in_halves`).

    For graphs that serve requests of any size, such as exported SavedModels
    (`keras_sdn.export`): half as many loops to trace, load and optimise.
    """
    previous = getattr(_tracing, "whole_batch", False)
    _tracing.whole_batch = True
    try:
        yield
    finally:
        _tracing.whole_batch = previous


def sweeps(inputs, kernels, recurrent_kernels, biases, directions):
    """Runs one gated sweep per direction, in order, over a `(batch, height, width, F)` map.

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

    Returns:
        The corrected map, same shape and dtype as `inputs`.
    """
    if not _sweep_in_halves(inputs):
        return _sweep_map(inputs, kernels, recurrent_kernels, biases, directions)
    batch = tf.shape(inputs)[0]
    halves = tf.split(inputs, tf.stack([batch // 2, batch - batch // 2]), axis=0, num=2)
    return tf.concat(
        [_sweep_map(half, kernels, recurrent_kernels, biases, directions) for half in halves], 0
    )


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
        or getattr(_tracing, "whole_batch", False)
        or tf.executing_eagerly()
        or _compiling_with_xla()
        or tf.config.list_logical_devices("GPU")
    )


def _compiling_with_xla():
    """Whether the function being traced is compiled by XLA (`jit_compile=True`).

    The same test as TensorFlow Probability's `implementation_selection.is_xla`.
    Without it (moved by a TF release) the answer is True: the batch is then
    never halved, which is correct everywhere and only slower on a CPU.
    """
    if GraphOrParentsInXlaContext is None:
        return True
    return GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _sweep_map(inputs, kernels, recurrent_kernels, biases, directions):
    """`sweeps` on the whole of `inputs`."""
    corrected, layout = inputs, _NATURAL_LAYOUT
    for index, direction in enumerate(directions):
        axis, backwards = _SWEEP_AXIS[direction]
        corrected, layout = _to_layout(corrected, layout, (axis, 0, 3 - axis, 3))
        sweep_lines = _backward_line_sweep if backwards else _forward_line_sweep
        corrected = sweep_lines(
            corrected, kernels[index], recurrent_kernels[index], biases[index]
        )
    return _to_layout(corrected, layout, _NATURAL_LAYOUT)[0]


def _to_layout(tensor, layout, new_layout):
    """Transposes `tensor`, whose axes are `layout` of the natural axes, to `new_layout`."""
    if layout == new_layout:
        return tensor, layout
    return tf.transpose(tensor, [layout.index(axis) for axis in new_layout]), new_layout


def _matmul(tensor, matrix):
    """`tensor @ matrix` over the last axis, as one 2-D matrix product."""
    flat = tf.matmul(tf.reshape(tensor, (-1, tensor.shape[-1])), matrix)
    return tf.reshape(flat, tf.concat([tf.shape(tensor)[:-1], [matrix.shape[-1]]], 0))


def _sum_of_outer_products(a, b):
    """`sum_p a[p]^T b[p]` over every position `p`: a weight gradient."""
    flat = lambda tensor: tf.reshape(tensor, (-1, tensor.shape[-1]))
    return tf.matmul(flat(a), flat(b), transpose_a=True)


def _sum_over_positions(tensor):
    """`sum_p tensor[p]`, as a product with a vector of ones.

    (A bias gradient. Under XLA a `reduce_sum` here is fused with the
    gradients' other consumers into a loop that repeats the reduction for
    every output element, 10x slower than the whole backward pass.)
    """
    flat = tf.reshape(tensor, (-1, tensor.shape[-1]))
    return tf.matmul(tf.ones((1, tf.shape(flat)[0]), tensor.dtype), flat)


def _as_image_rows(lines):
    """`(..., A, C)` as a batch of one-row images `(N, 1, A, C)` for 2-D convolution ops."""
    return tf.reshape(lines, tf.concat([[-1, 1], tf.shape(lines)[-2:]], 0))


def _sum_of_neighbourhood_products(previous_lines, d_recurrent):
    """`sum_p nb(p)^T d[p]` over every position, `nb` the width-3 neighbourhood."""
    features, outputs = previous_lines.shape[-1], d_recurrent.shape[-1]
    filter_gradient = tf.raw_ops.Conv2DBackpropFilter(
        input=_as_image_rows(previous_lines),
        filter_sizes=[1, 3, features, outputs],
        out_backprop=_as_image_rows(d_recurrent),
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    return tf.reshape(filter_gradient, (3 * features, outputs))


def _previous_lines(lines, backwards):
    """The line each line is corrected from (zeros before the first)."""
    zeros = tf.zeros_like(lines[:1])
    if backwards:
        return tf.concat([lines[1:], zeros], 0)
    return tf.concat([zeros, lines[:-1]], 0)


def _make_line_sweep(backwards):
    """The sweep over `lines` (T, batch, A, F), visiting lines in increasing
    order of T, or decreasing if `backwards`."""

    @tf.custom_gradient
    def line_sweep(lines, kernel, recurrent_kernel, bias):
        features = lines.shape[-1]
        # The neighbourhood product is a width-3 convolution across the line.
        filters = tf.reshape(recurrent_kernel, (3, features, 3 * features))
        input_bias = tf.unstack(tf.reshape(bias[0], (3, features)))
        recurrent_bias = tf.unstack(tf.reshape(bias[1], (3, features)))
        # The reset and update gates' two biases add up, so both go with the
        # input projection; the proposal's recurrent bias is not scaled by r.
        x_reset, x_update, x_proposal = [
            _matmul(lines, gate_kernel) + gate_bias
            for gate_kernel, gate_bias in zip(
                tf.split(kernel, 3, -1),
                [input_bias[0] + recurrent_bias[0], input_bias[1] + recurrent_bias[1], input_bias[2]],
            )
        ]

        def correct(previous, x, x_reset, x_update, x_proposal):
            """Corrects line `x` from the previous line; returns the gates too."""
            recurrent_reset, recurrent_update, recurrent_proposal = tf.split(
                tf.nn.conv1d(previous, filters, 1, "SAME"), 3, -1
            )
            reset = tf.sigmoid(x_reset + recurrent_reset)
            update = tf.sigmoid(x_update + recurrent_update)
            proposal = tf.tanh(reset * x_proposal + recurrent_proposal + recurrent_bias[2])
            return proposal + update * (x - proposal), reset, update, proposal

        zeros = tf.zeros_like(lines[0])
        corrected, reset, update, proposal = tf.scan(
            lambda carry, line: correct(carry[0], *line),
            (lines, x_reset, x_update, x_proposal),
            initializer=(zeros, zeros, zeros, zeros),
            reverse=backwards,
        )

        def grad(upstream):
            previous_lines = _previous_lines(corrected, backwards)
            # The local derivatives of each line's output by the pre-activations
            # of its gates r, z, n, for all lines at once.
            proposal_coeff = (1.0 - update) * (1.0 - tf.square(proposal))
            gate_coeffs = tf.stack(
                [
                    proposal_coeff * x_proposal * reset * (1.0 - reset),
                    (lines - proposal) * update * (1.0 - update),
                    proposal_coeff,
                ],
                axis=-2,
            )
            # The transpose of the width-3 convolution: taps reversed, each
            # tap's matrix transposed.
            transposed_filters = tf.transpose(tf.reverse(filters, [0]), (0, 2, 1))

            gates_shape = tf.concat([tf.shape(lines)[:-1], [3 * features]], 0)
            line_gates_shape = gates_shape[1:]

            def gate_gradients(d_corrected, coeffs, shape):
                """`[d_r, d_z, d_n]` concatenated, from the output gradient."""
                return tf.reshape(tf.expand_dims(d_corrected, -2) * coeffs, shape)

            def back_step(from_next_line, line):
                d_output, coeffs = line
                d_gates = gate_gradients(d_output + from_next_line, coeffs, line_gates_shape)
                return tf.nn.conv1d(d_gates, transposed_filters, 1, "SAME")

            # The loop carries only what flows into each previous line; the
            # rest follows for all lines at once.
            to_previous = tf.scan(
                back_step,
                (upstream, gate_coeffs),
                initializer=tf.zeros_like(lines[0]),
                reverse=not backwards,
            )
            d_corrected = upstream + _previous_lines(to_previous, not backwards)
            d_recurrent = gate_gradients(d_corrected, gate_coeffs, gates_shape)
            # r scales the proposal's input projection, not its neighbourhood term.
            d_gates, d_proposal = tf.split(d_recurrent, [2 * features, features], -1)
            d_projected = tf.concat([d_gates, d_proposal * reset], -1)

            d_lines = d_corrected * update + _matmul(d_projected, tf.transpose(kernel))
            d_kernel = _sum_of_outer_products(lines, d_projected)
            d_recurrent_kernel = _sum_of_neighbourhood_products(previous_lines, d_recurrent)
            d_bias = tf.concat(
                [_sum_over_positions(d_projected), _sum_over_positions(d_recurrent)], 0
            )
            return d_lines, d_kernel, d_recurrent_kernel, d_bias

        return corrected, grad

    return line_sweep


_forward_line_sweep = _make_line_sweep(backwards=False)
_backward_line_sweep = _make_line_sweep(backwards=True)
