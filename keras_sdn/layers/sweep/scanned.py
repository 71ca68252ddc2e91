"""Sweeps as `tf.scan` loops: any map size, a graph that does not grow with it."""

import tensorflow as tf

from keras_sdn.layers.sweep.directions import sweep_directions
from keras_sdn.layers.sweep.gates import gated_update
from keras_sdn.layers.sweep.line_algebra import gate_coefficients
from keras_sdn.layers.sweep.line_algebra import input_projections
from keras_sdn.layers.sweep.line_algebra import line_input_gradient
from keras_sdn.layers.sweep.line_algebra import preactivation_gradients


def scanned_sweeps(inputs, kernels, recurrent_kernels, biases, directions):
    """`keras_sdn.layers.sweep.sweeps` with one `tf.scan` loop per direction.

    The loop's step takes the recurrent product as a width-3 convolution
    across the previous line. The gradient is one scan in the opposite
    direction that carries only the gradient flowing into the previous line;
    the gates' local derivatives are computed for all lines before it, the
    input, weight and bias gradients after it, each as one large product over
    all lines and gates (as fused RNN kernels do).

    Args:
        inputs, kernels, recurrent_kernels, biases, directions: As for
            `keras_sdn.layers.sweep.sweeps`; any sizes, static or not.

    Returns:
        The corrected map, same shape and dtype as `inputs`.
    """
    return sweep_directions(_LINE_SWEEPS, inputs, kernels, recurrent_kernels, biases, directions)


def _scan_step(previous, x, x_reset, x_update, x_proposal, filters, proposal_bias):
    """Line `x` `(batch, A, F)` corrected from the `previous` corrected line.

    `x_reset`, `x_update`, `x_proposal` are the line's `input_projections`,
    `filters` `(3, F, 3F)` the neighbourhood weights as the taps of a width-3
    convolution across the line. Returns `gated_update`'s `(corrected, r, z, n)`.
    """
    recurrent_reset, recurrent_update, recurrent_proposal = tf.split(
        tf.nn.conv1d(previous, filters, 1, "SAME"), 3, -1
    )
    return gated_update(
        x,
        x_reset + recurrent_reset,
        x_update + recurrent_update,
        x_proposal,
        recurrent_proposal + proposal_bias,
    )


def _previous_lines(lines, backwards):
    """The line each line is corrected from (zeros before the first)."""
    zeros = tf.zeros_like(lines[:1])
    if backwards:
        return tf.concat([lines[1:], zeros], 0)
    return tf.concat([zeros, lines[:-1]], 0)


def _output_gradients(upstream, recurrent_coefficients, filters, backwards):
    """The gradient of every line's output, as one reverse scan.

    Args:
        upstream: Tensor `(T, batch, A, F)`, the upstream gradient of the outputs.
        recurrent_coefficients: Tensor `(T, batch, A, 3F)`, every line's
            `gate_coefficients` of the neighbourhood terms.
        filters: Tensor `(3, F, 3F)`, the neighbourhood convolution's taps.
        backwards: Whether the sweep visits the lines in decreasing order.

    Returns:
        Tensor `(T, batch, A, F)`: `upstream` plus the gradient flowing back
        into each line from the line corrected after it.
    """
    # The transpose of the width-3 convolution: taps reversed, each tap's
    # matrix transposed.
    transposed_filters = tf.transpose(tf.reverse(filters, [0]), (0, 2, 1))

    def to_previous_line(from_next_line, line):
        d_output, coefficients = line
        d_recurrent = preactivation_gradients(d_output + from_next_line, coefficients)
        return tf.nn.conv1d(d_recurrent, transposed_filters, 1, "SAME")

    # The loop carries only what flows into each previous line; the rest
    # follows for all lines at once (`_input_gradients`).
    to_previous = tf.scan(
        to_previous_line,
        (upstream, recurrent_coefficients),
        initializer=tf.zeros_like(upstream[0]),
        reverse=not backwards,
    )
    return upstream + _previous_lines(to_previous, not backwards)


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


def _sum_of_neighbourhood_products(previous_lines, d_recurrent):
    """`sum_p nb(p)^T d[p]` over every position, `nb` the width-3 neighbourhood."""
    features, outputs = previous_lines.shape[-1], d_recurrent.shape[-1]

    def image_rows(lines):  # `(..., A, C)` as one-row images `(N, 1, A, C)`
        return tf.reshape(lines, tf.concat([[-1, 1], tf.shape(lines)[-2:]], 0))

    filter_gradient = tf.raw_ops.Conv2DBackpropFilter(
        input=image_rows(previous_lines),
        filter_sizes=[1, 3, features, outputs],
        out_backprop=image_rows(d_recurrent),
        strides=[1, 1, 1, 1],
        padding="SAME",
    )
    return tf.reshape(filter_gradient, (3 * features, outputs))


def _make_line_sweep(backwards):
    """The sweep over `lines` (T, batch, A, F), visiting lines in increasing
    order of T, or decreasing if `backwards`."""

    @tf.custom_gradient
    def line_sweep(lines, kernel, recurrent_kernel, bias):
        # The neighbourhood product is a width-3 convolution across the line.
        filters = tf.reshape(recurrent_kernel, (3, lines.shape[-1], -1))
        (x_reset, x_update, x_proposal), proposal_bias = input_projections(lines, kernel, bias)
        zeros = tf.zeros_like(lines[0])
        corrected, reset, update, proposal = tf.scan(
            lambda carry, line: _scan_step(carry[0], *line, filters, proposal_bias),
            (lines, x_reset, x_update, x_proposal),
            initializer=(zeros, zeros, zeros, zeros),
            reverse=backwards,
        )

        def grad(upstream):
            with tf.name_scope("sweeps_gradient"):
                recurrent, projection = gate_coefficients(
                    lines, x_proposal, reset, update, proposal
                )
                d_corrected = _output_gradients(upstream, recurrent, filters, backwards)
                d_recurrent = preactivation_gradients(d_corrected, recurrent)
                d_projected = preactivation_gradients(d_corrected, projection)
                d_lines = line_input_gradient(
                    d_corrected, update, d_projected, tf.transpose(kernel)
                )
                d_kernel = _sum_of_outer_products(lines, d_projected)
                d_recurrent_kernel = _sum_of_neighbourhood_products(
                    _previous_lines(corrected, backwards), d_recurrent
                )
                d_bias = tf.concat(
                    [_sum_over_positions(d_projected), _sum_over_positions(d_recurrent)], 0
                )
                return d_lines, d_kernel, d_recurrent_kernel, d_bias

        return corrected, grad

    return line_sweep


_LINE_SWEEPS = {backwards: _make_line_sweep(backwards) for backwards in (False, True)}
