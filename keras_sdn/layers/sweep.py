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

Every direction runs over a `(lines, batch, positions, features)` tensor,
forwards or backwards: the map is transposed so that the swept axis leads,
once for a run of sweeps along the same axis. The input projection
`x W + b_x` is one matrix product over all lines before the loop; inside the
loop only the recurrent product and the gate arithmetic remain. The gradient
is hand-written (`tf.custom_gradient`): nothing is differentiated through
the loop by autodiff. Two implementations:

- Maps of at most `_MAX_UNROLLED_LINES` lines of static size (outside XLA):
  the loop is unrolled in the graph, with no loop control and no stacking
  inside a loop, and the neighbourhood product is a gather of the three
  neighbours and one matrix product. The gradient runs line by line too:
  each line's gate gradients and its share of the weight gradients follow as
  soon as the gradient flowing into the line is known, off the sequential
  chain, while the line is in the cache (`_make_unrolled_sweep`).
- Otherwise one `tf.scan` per direction, whose step takes the recurrent
  product as a width-3 convolution across the previous line; the gradient is
  one scan in the opposite direction that carries only the gradient flowing
  into the previous line, the gates' local derivatives computed for all
  lines before it, the input, weight and bias gradients after it, each as
  one large product over all lines and gates (as fused RNN kernels do).

In graph mode on a CPU, a batch whose lines are long enough is swept as two
independent halves, so that the executor can run the two halves' per-line
ops side by side on different cores.

For each direction the neighbourhood is ordered by increasing coordinate
across the sweep: columns `j-1, j, j+1` for vertical sweeps, rows
`i-1, i, i+1` for horizontal ones.
"""

import contextlib
import threading
import typing

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
# Sweeps over at most this many lines run as unrolled loops (see `_unrolled`).
_MAX_UNROLLED_LINES = 32
# Values (half the batch x positions x features) of a line below which the
# batch is swept whole (see `_long_lines`).
_MIN_HALF_LINE_SIZE = 16384
_tracing = threading.local()


@contextlib.contextmanager
def _tracing_flag(name):
    """Sets the thread's tracing flag `name` while the context is open."""
    previous = getattr(_tracing, name, False)
    setattr(_tracing, name, True)
    try:
        yield
    finally:
        setattr(_tracing, name, previous)


def whole_batch():
    """Sweeps traced in this context do not split the batch (see `_sweep_in_halves`).

    For graphs that serve requests of any size, such as exported SavedModels
    (`keras_sdn.export`): half as many loops to trace, load and optimise.
    """
    return _tracing_flag("whole_batch")


def scanned_sweeps():
    """Sweeps traced in this context are `tf.scan` loops, never unrolled (see `_unrolled`).

    A smaller graph, which loads and is optimised on its first call several
    times sooner, for slower steps (`keras_sdn.export`'s `compact_graph`).
    """
    return _tracing_flag("scanned")


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
    with tf.name_scope("sweeps"):
        if not (_sweep_in_halves(inputs) and _long_lines(inputs)):
            return _sweep_map(inputs, kernels, recurrent_kernels, biases, directions)
        batch = tf.shape(inputs)[0]
        second_size = batch // 2
        # A batch of one is swept in both halves rather than leaving the second
        # empty: TensorFlow's CPU convolution gives an empty batch a wrong shape.
        halves = (
            inputs[: batch - second_size],
            inputs[tf.minimum(batch - second_size, batch - 1) :],
        )
        first, second = (
            _sweep_map(half, kernels, recurrent_kernels, biases, directions) for half in halves
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


def _sweep_map(inputs, kernels, recurrent_kernels, biases, directions):
    """`sweeps` on the whole of `inputs`."""
    line_sweeps = _UNROLLED_SWEEPS if _unrolled(inputs, directions) else _SCANNED_SWEEPS
    weights = zip(tf.unstack(kernels), tf.unstack(recurrent_kernels), tf.unstack(biases))
    corrected, layout = inputs, _NATURAL_LAYOUT
    for direction, direction_weights in zip(directions, weights):
        axis, backwards = _SWEEP_AXIS[direction]
        corrected, layout = _to_layout(corrected, layout, (axis, 0, 3 - axis, 3))
        corrected = line_sweeps[backwards](corrected, *direction_weights)
    return _to_layout(corrected, layout, _NATURAL_LAYOUT)[0]


def _unrolled(inputs, directions):
    """Whether the sweeps over `inputs` run as unrolled loops (`_make_unrolled_sweep`).

    They do when every swept axis and every line have a static size and no
    sweep has more than `_MAX_UNROLLED_LINES` lines (the graph grows with
    the lines), except under XLA, which compiles `tf.scan`'s loop into one
    kernel and would compile an unrolled one slowly.
    """
    sizes = [inputs.shape[_SWEEP_AXIS[direction][0]] for direction in directions]
    lengths = [inputs.shape[3 - _SWEEP_AXIS[direction][0]] for direction in directions]
    return (
        None not in sizes + lengths
        and max(sizes) <= _MAX_UNROLLED_LINES
        and not getattr(_tracing, "scanned", False)
        and not _compiling_with_xla()
    )


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
    a = tf.reshape(a, (-1, a.shape[-1]))
    b = tf.reshape(b, (-1, b.shape[-1]))
    return tf.matmul(a, b, transpose_a=True)


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


def _line_order(steps, backwards):
    """The indices of `steps` lines in the order a sweep visits them."""
    return range(steps - 1, -1, -1) if backwards else range(steps)


def _input_projections(lines, kernel, bias):
    """The gates' input projections, for all lines at once.

    Args:
        lines: Tensor `(..., F)`.
        kernel: Tensor `(F, 3F)`, the input weights `[W_r, W_z, W_n]`.
        bias: Tensor `(2, 3F)`, the input and neighbourhood biases.

    Returns:
        `([x_reset, x_update, x_proposal], proposal_bias)`: each projection
        `(..., F)` with its biases, and the proposal's neighbourhood bias `(F,)`.
    """
    features = lines.shape[-1]
    input_bias, recurrent_bias = tf.unstack(tf.reshape(bias, (2, 3, features)))
    # The reset and update gates' two biases add up, so both go with the
    # input projection; the proposal's neighbourhood bias is not scaled by r.
    gate_biases = [
        input_bias[0] + recurrent_bias[0],
        input_bias[1] + recurrent_bias[1],
        input_bias[2],
    ]
    projections = [
        _matmul(lines, gate_kernel) + gate_bias
        for gate_kernel, gate_bias in zip(tf.split(kernel, 3, -1), gate_biases)
    ]
    return projections, recurrent_bias[2]


def _gated_update(x, reset_preactivation, update_preactivation, x_proposal, recurrent_proposal):
    """The GRU-like correction of a line `x` from its gates' pre-activations.

    `r = sigmoid(reset_preactivation)`, `z = sigmoid(update_preactivation)`,
    `n = tanh(r * x_proposal + recurrent_proposal)`; the line becomes
    `z * x + (1 - z) * n`. All arguments have the shape of `x` (or broadcast to it).

    Returns:
        `(corrected, r, z, n)`.
    """
    reset = tf.sigmoid(reset_preactivation)
    update = tf.sigmoid(update_preactivation)
    proposal = tf.tanh(reset * x_proposal + recurrent_proposal)
    return proposal + update * (x - proposal), reset, update, proposal


def _gate_coeffs(x, x_proposal, reset, update, proposal):
    """The derivatives of a corrected line by the pre-activations of its gates.

    Elementwise, from `_gated_update`'s input `x`, proposal projection
    `x_proposal` and gates `reset`, `update`, `proposal` (all of one shape).

    Returns:
        `(reset_coeff, update_coeff, proposal_coeff)`, each of that shape.
    """
    proposal_coeff = (1.0 - update) * (1.0 - tf.square(proposal))
    reset_coeff = proposal_coeff * x_proposal * reset * (1.0 - reset)
    update_coeff = (x - proposal) * update * (1.0 - update)
    return reset_coeff, update_coeff, proposal_coeff


def _scan_step(previous, x, x_reset, x_update, x_proposal, filters, proposal_bias):
    """One step of the scanned sweep: line `x` corrected from the `previous` corrected line.

    Args:
        previous: Tensor `(batch, A, F)`, the previous line, corrected.
        x: Tensor `(batch, A, F)`, the line.
        x_reset, x_update, x_proposal: Tensors `(batch, A, F)`, the line's
            `_input_projections`.
        filters: Tensor `(3, F, 3F)`: the neighbourhood weights as the taps of
            a width-3 convolution across the line.
        proposal_bias: Tensor `(F,)`, the proposal's neighbourhood bias.

    Returns:
        `_gated_update`'s `(corrected, r, z, n)`.
    """
    recurrent_reset, recurrent_update, recurrent_proposal = tf.split(
        tf.nn.conv1d(previous, filters, 1, "SAME"), 3, -1
    )
    return _gated_update(
        x,
        x_reset + recurrent_reset,
        x_update + recurrent_update,
        x_proposal,
        recurrent_proposal + proposal_bias,
    )


def _gate_gradients(d_corrected, coeffs, shape):
    """`[d_r, d_z, d_n]`, the gradients of the gates' pre-activations, concatenated.

    `coeffs` are the `_gate_coeffs` stacked on the second-to-last axis,
    `(..., 3, F)`; `shape` is the result's, `(..., 3F)`.
    """
    return tf.reshape(tf.expand_dims(d_corrected, -2) * coeffs, shape)


def _scan_back_step(from_next_line, d_output, coeffs, transposed_filters, gates_shape):
    """One step of the scanned sweep's gradient, which visits the lines in reverse.

    Args:
        from_next_line: Tensor `(batch, A, F)`, the gradient flowing into the
            line's output through the next line's neighbourhood.
        d_output: Tensor `(batch, A, F)`, the upstream gradient of the line's output.
        coeffs: Tensor `(batch, A, 3, F)`, the line's stacked `_gate_coeffs`.
        transposed_filters: Tensor `(3, 3F, F)`, the transposed taps of the
            neighbourhood convolution.
        gates_shape: Tensor `[batch, A, 3F]`.

    Returns:
        Tensor `(batch, A, F)`, the gradient flowing into the previous line.
    """
    d_gates = _gate_gradients(d_output + from_next_line, coeffs, gates_shape)
    return tf.nn.conv1d(d_gates, transposed_filters, 1, "SAME")


def _scanned_output_gradients(upstream, gate_coeffs, filters, backwards):
    """The gradient of every line's output of a scanned sweep, as one reverse scan.

    Args:
        upstream: Tensor `(T, batch, A, F)`, the upstream gradient of the outputs.
        gate_coeffs: Tensor `(T, batch, A, 3, F)`, every line's stacked `_gate_coeffs`.
        filters: Tensor `(3, F, 3F)`, the neighbourhood convolution's taps.
        backwards: Whether the sweep visits the lines in decreasing order.

    Returns:
        Tensor `(T, batch, A, F)`: `upstream` plus the gradient flowing back
        into each line from the line corrected after it.
    """
    # The transpose of the width-3 convolution: taps reversed, each tap's
    # matrix transposed.
    transposed_filters = tf.transpose(tf.reverse(filters, [0]), (0, 2, 1))
    gates_shape = tf.concat([tf.shape(upstream)[1:-1], [3 * upstream.shape[-1]]], 0)
    # The loop carries only what flows into each previous line; the rest
    # follows for all lines at once (`_scanned_input_gradients`).
    to_previous = tf.scan(
        lambda from_next_line, line: _scan_back_step(
            from_next_line, *line, transposed_filters, gates_shape
        ),
        (upstream, gate_coeffs),
        initializer=tf.zeros_like(upstream[0]),
        reverse=not backwards,
    )
    return upstream + _previous_lines(to_previous, not backwards)


def _scanned_input_gradients(
    lines, previous_lines, d_corrected, gate_coeffs, reset, update, kernel
):
    """A scanned sweep's gradients, each as one product over all lines and gates.

    Args:
        lines: Tensor `(T, batch, A, F)`, the sweep's input.
        previous_lines: Tensor `(T, batch, A, F)`, the corrected line each
            line is corrected from (`_previous_lines`).
        d_corrected: Tensor `(T, batch, A, F)`, the gradient of every line's
            output (`_scanned_output_gradients`).
        gate_coeffs: Tensor `(T, batch, A, 3, F)`, the stacked `_gate_coeffs`.
        reset, update: Tensors `(T, batch, A, F)`, the gates r and z.
        kernel: Tensor `(F, 3F)`, the input weights.

    Returns:
        The gradients of `lines`, of the kernel `(F, 3F)`, of the
        neighbourhood kernel `(3F, 3F)` and of the biases `(2, 3F)`.
    """
    features = lines.shape[-1]
    gates_shape = tf.concat([tf.shape(lines)[:-1], [3 * features]], 0)
    d_recurrent = _gate_gradients(d_corrected, gate_coeffs, gates_shape)
    # r scales the proposal's input projection, not its neighbourhood term.
    d_gates, d_proposal = tf.split(d_recurrent, [2 * features, features], -1)
    d_projected = tf.concat([d_gates, d_proposal * reset], -1)

    d_lines = d_corrected * update + _matmul(d_projected, tf.transpose(kernel))
    d_kernel = _sum_of_outer_products(lines, d_projected)
    d_recurrent_kernel = _sum_of_neighbourhood_products(previous_lines, d_recurrent)
    d_bias = tf.concat([_sum_over_positions(d_projected), _sum_over_positions(d_recurrent)], 0)
    return d_lines, d_kernel, d_recurrent_kernel, d_bias


def _make_line_sweep(backwards):
    """The sweep over `lines` (T, batch, A, F), visiting lines in increasing
    order of T, or decreasing if `backwards`."""

    @tf.custom_gradient
    def line_sweep(lines, kernel, recurrent_kernel, bias):
        # The neighbourhood product is a width-3 convolution across the line.
        filters = tf.reshape(recurrent_kernel, (3, lines.shape[-1], -1))
        (x_reset, x_update, x_proposal), proposal_bias = _input_projections(lines, kernel, bias)
        zeros = tf.zeros_like(lines[0])
        corrected, reset, update, proposal = tf.scan(
            lambda carry, line: _scan_step(carry[0], *line, filters, proposal_bias),
            (lines, x_reset, x_update, x_proposal),
            initializer=(zeros, zeros, zeros, zeros),
            reverse=backwards,
        )

        def grad(upstream):
            with tf.name_scope("sweeps_gradient"):
                previous_lines = _previous_lines(corrected, backwards)
                gate_coeffs = tf.stack(
                    _gate_coeffs(lines, x_proposal, reset, update, proposal), axis=-2
                )
                d_corrected = _scanned_output_gradients(upstream, gate_coeffs, filters, backwards)
                return _scanned_input_gradients(
                    lines, previous_lines, d_corrected, gate_coeffs, reset, update, kernel
                )

        return corrected, grad

    return line_sweep


_SCANNED_SWEEPS = {backwards: _make_line_sweep(backwards) for backwards in (False, True)}


class _Line(typing.NamedTuple):
    """What the unrolled sweep's gradient keeps of one line, each `(batch * A, C)` rows."""

    x: tf.Tensor
    x_proposal: tf.Tensor
    reset: tf.Tensor
    update: tf.Tensor
    proposal: tf.Tensor
    # The previous line's gathered neighbourhood (`_NeighbourhoodProducts`),
    # None for the first line.
    neighbourhood: tf.Tensor | None


def _unrolled_line(
    x, x_reset, x_update, x_proposal, previous, products, product_bias, proposal_bias
):
    """One line of the unrolled sweep, corrected from the previous corrected line.

    Args:
        x: Tensor `(batch * A, F)`, the line's rows.
        x_reset, x_update, x_proposal: Tensors `(batch * A, F)`, the line's
            `_input_projections`.
        previous: Tensor `(batch * A, F)`, the previous line corrected, or
            None for the first line (whose previous line is all zeros).
        products: The sweep's `_NeighbourhoodProducts`.
        product_bias: Tensor `(3F,)`, the neighbourhood biases not added to
            the input projections: zeros for r and z, then `proposal_bias`.
        proposal_bias: Tensor `(F,)`, the proposal's neighbourhood bias.

    Returns:
        `_gated_update`'s `(corrected, r, z, n)`, then the gathered
        neighbourhood `(batch * A, 3F)` (None for the first line).
    """
    if previous is None:
        return (*_gated_update(x, x_reset, x_update, x_proposal, proposal_bias), None)
    neighbourhood = products.neighbourhood(previous)
    recurrent_reset, recurrent_update, recurrent_proposal = tf.split(
        tf.nn.bias_add(products.forward(neighbourhood), product_bias), 3, -1
    )
    corrected = _gated_update(
        x, x_reset + recurrent_reset, x_update + recurrent_update, x_proposal, recurrent_proposal
    )
    return (*corrected, neighbourhood)


def _unrolled_forward(lines, kernel, bias, products, order):
    """The unrolled sweep's loop: `_unrolled_line` for each line in `order`.

    Args:
        lines: Tensor `(T, batch, A, F)` of static `T`.
        kernel: Tensor `(F, 3F)`, the input weights.
        bias: Tensor `(2, 3F)`, the input and neighbourhood biases.
        products: The `_NeighbourhoodProducts` of `lines` and the neighbourhood weights.
        order: The line indices in the order of the sweep (`_line_order`).

    Returns:
        The corrected lines `(T, batch, A, F)` and each line's `_Line`, by index.
    """
    projections, proposal_bias = _input_projections(lines, kernel, bias)
    x_reset, x_update, x_proposal = (_rows_of_lines(projection) for projection in projections)
    features = lines.shape[-1]
    product_bias = tf.concat([tf.zeros((2 * features,), bias.dtype), proposal_bias], 0)
    inputs = _rows_of_lines(lines)
    corrected, kept = [None] * len(inputs), [None] * len(inputs)
    with tf.name_scope("lines"):
        previous = None
        for line in order:
            corrected[line], reset, update, proposal, neighbourhood = _unrolled_line(
                inputs[line],
                x_reset[line],
                x_update[line],
                x_proposal[line],
                previous,
                products,
                product_bias,
                proposal_bias,
            )
            kept[line] = _Line(
                inputs[line], x_proposal[line], reset, update, proposal, neighbourhood
            )
            previous = corrected[line]
    return _lines_of_rows(corrected, lines), kept


def _unrolled_line_gradient(d_output, coeffs, line, transposed_product, transposed_kernel):
    """One line's share of the unrolled sweep's gradient.

    Args:
        d_output: Tensor `(batch * A, F)`, the gradient of the line's output
            (upstream and from the next line).
        coeffs: The line's `_gate_coeffs`, each `(batch * A, F)`.
        line: The line's `_Line`.
        transposed_product: `_NeighbourhoodProducts.transposed()`.
        transposed_kernel: Tensor `(3F, F)`, the input weights transposed.

    Returns:
        `(d_line, to_previous, shares)`: the gradient of the line `(batch * A, F)`,
        the gradient flowing into the previous line (None for the first
        line), and the line's shares of the gradients of the kernel
        `(F, 3F)`, the neighbourhood kernel `(3F, 3F)` (None for the first
        line), the input biases and the neighbourhood biases (each `(3F,)`).
    """
    reset_coeff, update_coeff, proposal_coeff = coeffs
    d_gates = tf.concat([d_output] * 3, -1)
    d_recurrent = d_gates * tf.concat([reset_coeff, update_coeff, proposal_coeff], -1)
    # r scales the proposal's input projection, not its neighbourhood term.
    d_projected = d_gates * tf.concat([reset_coeff, update_coeff, proposal_coeff * line.reset], -1)
    to_previous = d_recurrent_kernel = None
    if line.neighbourhood is not None:
        to_previous = transposed_product(d_recurrent)
        d_recurrent_kernel = tf.matmul(line.neighbourhood, d_recurrent, transpose_a=True)
    d_line = d_output * line.update + tf.matmul(d_projected, transposed_kernel)
    shares = (
        tf.matmul(line.x, d_projected, transpose_a=True),
        d_recurrent_kernel,
        tf.reduce_sum(d_projected, 0),
        tf.reduce_sum(d_recurrent, 0),
    )
    return d_line, to_previous, shares


def _unrolled_sweep_gradient(upstream, kept, order, kernel, recurrent_kernel, products):
    """The unrolled sweep's gradient, line by line in the reverse of `order`.

    Args:
        upstream: Tensor `(T, batch, A, F)`, the upstream gradient of the outputs.
        kept: Each line's `_Line`, by index (`_unrolled_forward`).
        order: The line indices in the order of the sweep.
        kernel: Tensor `(F, 3F)`, the input weights.
        recurrent_kernel: Tensor `(3F, 3F)`, the neighbourhood weights.
        products: The sweep's `_NeighbourhoodProducts`.

    Returns:
        The gradients of the lines, the kernel, the neighbourhood kernel and the biases.
    """
    with tf.name_scope("sweeps_gradient"):
        d_outputs = _rows_of_lines(upstream)
        transposed_product = products.transposed()
        transposed_kernel = tf.transpose(kernel)
        d_lines, shares = [None] * len(kept), []
        with tf.name_scope("lines"):
            d_output = from_next_line = None
            for line in reversed(order):
                # The gate coefficients depend only on the forward pass: held
                # back until the chain reaches the line before (in this order),
                # the executor would compute every line's of every layer as
                # soon as the forward pass ends, and keep them all.
                with tf.control_dependencies([] if d_output is None else [d_output]):
                    coeffs = _gate_coeffs(
                        kept[line].x,
                        kept[line].x_proposal,
                        kept[line].reset,
                        kept[line].update,
                        kept[line].proposal,
                    )
                d_output = d_outputs[line]
                if from_next_line is not None:
                    d_output += from_next_line
                d_lines[line], from_next_line, line_shares = _unrolled_line_gradient(
                    d_output, coeffs, kept[line], transposed_product, transposed_kernel
                )
                shares.append(line_shares)
        d_kernel, d_recurrent_kernel, d_bias = _sum_of_shares(shares, recurrent_kernel)
        return _lines_of_rows(d_lines, upstream), d_kernel, d_recurrent_kernel, d_bias


def _sum_of_shares(shares, recurrent_kernel):
    """The weight and bias gradients from the lines' shares (`_unrolled_line_gradient`).

    Returns:
        The gradients of the kernel `(F, 3F)`, of `recurrent_kernel` (zeros
        for a single line, which has no previous line) and of the biases `(2, 3F)`.
    """
    d_kernels, d_recurrent_kernels, d_input_biases, d_recurrent_biases = zip(*shares)
    d_recurrent_kernels = [share for share in d_recurrent_kernels if share is not None]
    if d_recurrent_kernels:
        d_recurrent_kernel = tf.add_n(d_recurrent_kernels)
    else:
        d_recurrent_kernel = tf.zeros_like(recurrent_kernel)
    d_bias = tf.stack([tf.add_n(d_input_biases), tf.add_n(d_recurrent_biases)])
    return tf.add_n(d_kernels), d_recurrent_kernel, d_bias


def _make_unrolled_sweep(backwards):
    """`_make_line_sweep`'s sweep, its loops unrolled: one copy of the step per line.

    Without loop control and stacking inside a loop, a step is about 15 small
    ops, and each line's tensors stay available to the gradient. The
    neighbourhood product gathers each position's three neighbours and takes
    one matrix product: at these sizes several times faster than TensorFlow's
    CPU convolution across a line, which costs about 0.1 ms however small.
    The gradient runs line by line as well, in the opposite order: on the
    sequential chain only the gradient flowing into the previous line; each
    line's local gate derivatives, input gradient and share of the weight and
    bias gradients hang off the chain, computed while the line is in the cache
    and, on two cores, beside it.
    """

    @tf.custom_gradient
    def line_sweep(lines, kernel, recurrent_kernel, bias):
        order = _line_order(lines.shape[0], backwards)
        products = _NeighbourhoodProducts(
            lines, tf.reshape(recurrent_kernel, (3, lines.shape[-1], -1))
        )
        corrected, kept = _unrolled_forward(lines, kernel, bias, products, order)

        def grad(upstream):
            return _unrolled_sweep_gradient(
                upstream, kept, order, kernel, recurrent_kernel, products
            )

        return corrected, grad

    return line_sweep


def _rows_of_lines(lines):
    """The lines of a `(T, batch, A, C)` tensor, each as `(batch * A, C)` rows."""
    return [tf.reshape(line, (-1, lines.shape[-1])) for line in tf.unstack(lines)]


def _lines_of_rows(rows, like):
    """The `(T, batch, A, C)` tensor, shaped as `like`, of `_rows_of_lines`' lines."""
    shape = tf.concat([tf.shape(like)[:-1], [rows[0].shape[-1]]], 0)
    return tf.reshape(tf.stack(rows), shape)


class _NeighbourhoodProducts:
    """The neighbourhood product across lines held as `(batch * A, C)` rows, and its transpose.

    `forward(neighbourhood(line))` is `sum_k line[j + k - 1] @ weights[k]` at
    every position `j` of each of the `batch` lines of `A` positions (zeros
    outside a line), `weights` being the `(3, F, 3F)` taps.
    """

    def __init__(self, lines, weights):
        self.positions = lines.shape[2]
        self.size = (lines.shape[1] or tf.shape(lines)[1]) * self.positions
        self.weights = weights
        # The taps stacked as one `(3F, 3F)` matrix, for `forward`'s one product.
        self.stacked_weights = tf.reshape(weights, (-1, weights.shape[-1]))
        self.neighbours = self._rows([-1, 0, 1])

    def _rows(self, offsets, taps=1):
        """Rows to gather from `taps`-times-taller lines (row `taps * j + k` is
        tap k's at position j): for each position `j` and `k` in 0..2, row
        `taps * (j + offsets[k]) + (k if taps > 1 else 0)`, or the zero row
        appended to the rows (`_gather`) where `j + offsets[k]` is outside the
        line."""
        neighbours = tf.range(self.positions)[:, None] + tf.constant(offsets)
        inside = (neighbours >= 0) & (neighbours < self.positions)
        rows = (tf.range(0, self.size, self.positions)[:, None, None] + neighbours) * taps
        if taps > 1:
            rows += tf.range(taps)
        return tf.reshape(tf.where(inside, rows, self.size * taps), (-1,))

    @staticmethod
    def _gather(rows, indices):
        return tf.gather(tf.pad(rows, [[0, 1], [0, 0]]), indices)

    def neighbourhood(self, line):
        """`(batch * A, 3F)`: the three neighbours of every position, in the taps' order."""
        return tf.reshape(self._gather(line, self.neighbours), (-1, 3 * line.shape[-1]))

    def forward(self, neighbourhood):
        """`(batch * A, 3F)`: the product of `neighbourhood`'s rows with the taps."""
        return tf.matmul(neighbourhood, self.stacked_weights)

    def transposed(self):
        """The transposed product, a function of `(batch * A, 3F)` rows."""
        features = self.weights.shape[1]
        # Each tap's product first, `(batch * A, 3 taps x F)`; position j then
        # sums tap k's product at position j - k + 1 (a gather of F-wide rows
        # is several times cheaper than of the 3F-wide gradient).
        taps = tf.reshape(tf.transpose(self.weights, (2, 0, 1)), (-1, 3 * features))
        tap_rows = self._rows([1, 0, -1], taps=3)

        def transposed(gradient):
            tap_products = tf.reshape(tf.matmul(gradient, taps), (-1, features))
            gathered = self._gather(tap_products, tap_rows)
            return tf.reduce_sum(tf.reshape(gathered, (-1, 3, features)), 1)

        return transposed


_UNROLLED_SWEEPS = {backwards: _make_unrolled_sweep(backwards) for backwards in (False, True)}
