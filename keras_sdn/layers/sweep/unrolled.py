"""Sweeps as unrolled loops: one copy of the step per line, for maps of static size."""

import typing

import tensorflow as tf

from keras_sdn.layers.sweep.directions import sweep_directions
from keras_sdn.layers.sweep.directions import swept_sizes
from keras_sdn.layers.sweep.gates import gated_update
from keras_sdn.layers.sweep.line_algebra import gate_coefficients
from keras_sdn.layers.sweep.line_algebra import input_projections
from keras_sdn.layers.sweep.line_algebra import line_input_gradient
from keras_sdn.layers.sweep.line_algebra import preactivation_gradients
from keras_sdn.layers.sweep.neighbourhood import NeighbourhoodProducts
from keras_sdn.layers.sweep.neighbourhood import lines_of_rows
from keras_sdn.layers.sweep.neighbourhood import rows_of_lines


def unrolled_sweeps(inputs, kernels, recurrent_kernels, biases, directions):
    """`keras_sdn.layers.sweep.sweeps` with its loops unrolled in the graph.

    Without loop control and stacking inside a loop, a line's step is about
    15 small ops, and each line's tensors stay available to the gradient;
    the neighbourhood product is a gather of the three neighbours and one
    matrix product (`NeighbourhoodProducts`). The gradient runs line by line
    as well, in the opposite order: on the sequential chain only the gradient
    flowing into the previous line; each line's gate coefficients, input
    gradient and share of the weight and bias gradients hang off the chain,
    computed while the line is in the cache and, on two cores, beside it.
    The graph grows with the number of lines.

    Args:
        inputs, kernels, recurrent_kernels, biases, directions: As for
            `keras_sdn.layers.sweep.sweeps`; the swept axes and the lines
            must have a static size.

    Returns:
        The corrected map, same shape and dtype as `inputs`.
    """
    sizes = swept_sizes(inputs.shape, directions)
    if any(None in size for size in sizes):
        raise ValueError(
            "Expected inputs whose height and width are known when the graph is built: "
            "implementation='unrolled' writes one step per line into the graph. Use "
            f"implementation='scanned' or 'auto'. Received: input_shape={tuple(inputs.shape)}"
        )
    return sweep_directions(_LINE_SWEEPS, inputs, kernels, recurrent_kernels, biases, directions)


class _Line(typing.NamedTuple):
    """What the gradient keeps of one line, each `(batch * A, C)` rows."""

    x: tf.Tensor
    x_proposal: tf.Tensor
    reset: tf.Tensor
    update: tf.Tensor
    proposal: tf.Tensor
    # The previous line's gathered neighbourhood, None for the first line.
    neighbourhood: tf.Tensor | None


def _forward(lines, kernel, bias, products, order):
    """The loop: each line in `order` corrected from the line before.

    Args:
        lines: Tensor `(T, batch, A, F)` of static `T`.
        kernel: Tensor `(F, 3F)`, the input weights.
        bias: Tensor `(2, 3F)`, the input and neighbourhood biases.
        products: The `NeighbourhoodProducts` of `lines` and the neighbourhood weights.
        order: The line indices in the order of the sweep.

    Returns:
        The corrected lines `(T, batch, A, F)` and each line's `_Line`, by index.
    """
    projections, proposal_bias = input_projections(lines, kernel, bias)
    x_reset, x_update, x_proposal = (rows_of_lines(projection) for projection in projections)
    features = lines.shape[-1]
    # The neighbourhood biases not added to the input projections: zeros for r and z.
    product_bias = tf.concat([tf.zeros((2 * features,), bias.dtype), proposal_bias], 0)
    inputs = rows_of_lines(lines)
    corrected, kept = [None] * len(inputs), [None] * len(inputs)
    with tf.name_scope("lines"):
        previous = None
        for line in order:
            x = inputs[line]
            if previous is None:  # the first line, corrected from an all-zero line
                neighbourhood = None
                gates = gated_update(
                    x, x_reset[line], x_update[line], x_proposal[line], proposal_bias
                )
            else:
                neighbourhood = products.neighbourhood(previous)
                recurrent_reset, recurrent_update, recurrent_proposal = tf.split(
                    tf.nn.bias_add(products.forward(neighbourhood), product_bias), 3, -1
                )
                gates = gated_update(
                    x,
                    x_reset[line] + recurrent_reset,
                    x_update[line] + recurrent_update,
                    x_proposal[line],
                    recurrent_proposal,
                )
            corrected[line], reset, update, proposal = gates
            kept[line] = _Line(x, x_proposal[line], reset, update, proposal, neighbourhood)
            previous = corrected[line]
    return lines_of_rows(corrected, lines), kept


def _line_gradient(d_output, coefficients, line, transposed_product, transposed_kernel):
    """One line's share of the gradient.

    Args:
        d_output: Tensor `(batch * A, F)`, the gradient of the line's output
            (upstream and from the next line).
        coefficients: The line's `gate_coefficients`.
        line: The line's `_Line`.
        transposed_product: `NeighbourhoodProducts.transposed()`.
        transposed_kernel: Tensor `(3F, F)`, the input weights transposed.

    Returns:
        `(d_line, to_previous, shares)`: the gradient of the line `(batch * A, F)`,
        the gradient flowing into the previous line (None for the first
        line), and the line's shares of the gradients of the kernel
        `(F, 3F)`, the neighbourhood kernel `(3F, 3F)` (None for the first
        line), the input biases and the neighbourhood biases (each `(3F,)`).
    """
    recurrent, projection = coefficients
    d_recurrent = preactivation_gradients(d_output, recurrent)
    d_projected = preactivation_gradients(d_output, projection)
    to_previous = d_recurrent_kernel = None
    if line.neighbourhood is not None:
        to_previous = transposed_product(d_recurrent)
        d_recurrent_kernel = tf.matmul(line.neighbourhood, d_recurrent, transpose_a=True)
    d_line = line_input_gradient(d_output, line.update, d_projected, transposed_kernel)
    shares = (
        tf.matmul(line.x, d_projected, transpose_a=True),
        d_recurrent_kernel,
        tf.reduce_sum(d_projected, 0),
        tf.reduce_sum(d_recurrent, 0),
    )
    return d_line, to_previous, shares


def _gradient(upstream, kept, order, kernel, recurrent_kernel, products):
    """The sweep's gradient, line by line in the reverse of `order`.

    Returns:
        The gradients of the lines, the kernel, the neighbourhood kernel and the biases.
    """
    with tf.name_scope("sweeps_gradient"):
        d_outputs = rows_of_lines(upstream)
        transposed_product = products.transposed()
        transposed_kernel = tf.transpose(kernel)
        d_lines, shares = [None] * len(kept), []
        with tf.name_scope("lines"):
            d_output = from_next_line = None
            for line in reversed(order):
                # The coefficients depend only on the forward pass: held back
                # until the chain reaches the line before (in this order), the
                # executor would compute every line's of every layer as soon
                # as the forward pass ends, and keep them all.
                with tf.control_dependencies([] if d_output is None else [d_output]):
                    coefficients = gate_coefficients(
                        kept[line].x,
                        kept[line].x_proposal,
                        kept[line].reset,
                        kept[line].update,
                        kept[line].proposal,
                    )
                d_output = d_outputs[line]
                if from_next_line is not None:
                    d_output += from_next_line
                d_lines[line], from_next_line, line_shares = _line_gradient(
                    d_output, coefficients, kept[line], transposed_product, transposed_kernel
                )
                shares.append(line_shares)
        d_kernel, d_recurrent_kernel, d_bias = _sum_of_shares(shares, recurrent_kernel)
        return lines_of_rows(d_lines, upstream), d_kernel, d_recurrent_kernel, d_bias


def _sum_of_shares(shares, recurrent_kernel):
    """The weight and bias gradients from the lines' shares (`_line_gradient`).

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


def _make_line_sweep(backwards):
    """The sweep over `lines` (T, batch, A, F), visiting lines in increasing
    order of T, or decreasing if `backwards`."""

    @tf.custom_gradient
    def line_sweep(lines, kernel, recurrent_kernel, bias):
        steps = lines.shape[0]
        order = range(steps - 1, -1, -1) if backwards else range(steps)
        products = NeighbourhoodProducts(
            lines, tf.reshape(recurrent_kernel, (3, lines.shape[-1], -1))
        )
        corrected, kept = _forward(lines, kernel, bias, products, order)

        def grad(upstream):
            return _gradient(upstream, kept, order, kernel, recurrent_kernel, products)

        return corrected, grad

    return line_sweep


_LINE_SWEEPS = {backwards: _make_line_sweep(backwards) for backwards in (False, True)}
