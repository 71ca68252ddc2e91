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
`x W + b_x` is one matrix product over all lines before the scan. The gradient
is hand-written (`tf.custom_gradient`): one scan in the opposite direction
carries only the gradient that flows into the previous line; the gates' local
derivatives are computed for all lines before it, and the input and weight
gradients after it, each as one large product over all lines (as fused RNN
kernels do). Nothing is differentiated through the loop by autodiff.

For each direction the neighbourhood is ordered by increasing coordinate
across the sweep: columns `j-1, j, j+1` for vertical sweeps, rows
`i-1, i, i+1` for horizontal ones.
"""

import tensorflow as tf

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


def _neighbourhood(lines):
    """`[h[j-1], h[j], h[j+1]]` for every position `j` of `lines` (..., A, F), zeros outside."""
    padding = [[0, 0]] * (lines.shape.rank - 2) + [[1, 1], [0, 0]]
    padded = tf.pad(lines, padding)
    return tf.concat([padded[..., :-2, :], padded[..., 1:-1, :], padded[..., 2:, :]], -1)


def _matmul(tensor, matrix):
    """`tensor @ matrix` over the last axis, as one 2-D matrix product."""
    flat = tf.matmul(tf.reshape(tensor, (-1, tensor.shape[-1])), matrix)
    return tf.reshape(flat, tf.concat([tf.shape(tensor)[:-1], [matrix.shape[-1]]], 0))


def _flat(tensor):
    return tf.reshape(tensor, (-1, tensor.shape[-1]))


def _sum_of_outer_products(a, b):
    """`sum_p a[p]^T b[p]` over every position `p`: a weight gradient."""
    return tf.matmul(_flat(a), _flat(b), transpose_a=True)


def _make_line_sweep(backwards):
    """The sweep over `lines` (T, batch, A, F), visiting lines in increasing
    order of T, or decreasing if `backwards`."""

    @tf.custom_gradient
    def line_sweep(lines, kernel, recurrent_kernel, bias):
        features = lines.shape[-1]
        # The neighbourhood product is a width-3 convolution across the line.
        filters = tf.reshape(recurrent_kernel, (3, features, 3 * features))
        gate_filters, proposal_filters = tf.split(filters, [2 * features, features], -1)
        gate_bias, proposal_bias = tf.split(bias[1], [2 * features, features])
        projected = _matmul(lines, kernel) + bias[0]
        projected_gates, projected_proposal = tf.split(projected, [2 * features, features], -1)
        # The neighbourhood bias of the gates is folded into the projection.
        biased_gates = projected_gates + gate_bias

        def step(carry, elems):
            previous = carry[0]
            x, x_gates, x_proposal = elems
            gates = tf.sigmoid(x_gates + tf.nn.conv1d(previous, gate_filters, 1, "SAME"))
            reset, update = tf.split(gates, 2, -1)
            recurrent_proposal = tf.nn.conv1d(previous, proposal_filters, 1, "SAME")
            proposal = tf.tanh(reset * x_proposal + recurrent_proposal + proposal_bias)
            corrected = proposal + update * (x - proposal)
            return corrected, gates, proposal

        zeros = tf.zeros_like(lines[0])
        corrected, gates, proposal = tf.scan(
            step,
            (lines, biased_gates, projected_proposal),
            initializer=(zeros, tf.concat([zeros, zeros], -1), zeros),
            reverse=backwards,
        )

        def grad(upstream):
            reset, update = tf.split(gates, 2, -1)
            # Each line's local derivatives, for all lines at once.
            proposal_coeff = (1.0 - update) * (1.0 - tf.square(proposal))
            reset_coeff = projected_proposal * reset * (1.0 - reset)
            update_coeff = (lines - proposal) * update * (1.0 - update)
            # The transpose of the width-3 convolution: taps reversed, each
            # tap's matrix transposed.
            transposed_filters = tf.transpose(tf.reverse(filters, [0]), (0, 2, 1))
            if backwards:
                previous_lines = tf.concat([corrected[1:], zeros[tf.newaxis]], 0)
            else:
                previous_lines = tf.concat([zeros[tf.newaxis], corrected[:-1]], 0)

            def back_step(carry, elems):
                from_next_line = carry[0]
                d_output, c_proposal, c_reset, c_update = elems
                d_corrected = d_output + from_next_line
                d_proposal = d_corrected * c_proposal
                d_recurrent = tf.concat(
                    [d_proposal * c_reset, d_corrected * c_update, d_proposal], -1
                )
                to_previous_line = tf.nn.conv1d(d_recurrent, transposed_filters, 1, "SAME")
                return to_previous_line, d_corrected, d_recurrent

            _, d_corrected, d_recurrent = tf.scan(
                back_step,
                (upstream, proposal_coeff, reset_coeff, update_coeff),
                initializer=(zeros, zeros, tf.zeros_like(projected[0])),
                reverse=not backwards,
            )
            d_recurrent_kernel = _sum_of_outer_products(_neighbourhood(previous_lines), d_recurrent)
            d_reset, d_update, d_proposal = tf.split(d_recurrent, 3, -1)
            d_projected = tf.concat([d_reset, d_update, d_proposal * reset], -1)
            d_lines = d_corrected * update + _matmul(d_projected, tf.transpose(kernel))
            d_kernel = _sum_of_outer_products(lines, d_projected)
            d_bias = tf.stack(
                [tf.reduce_sum(_flat(d_projected), 0), tf.reduce_sum(_flat(d_recurrent), 0)]
            )
            return d_lines, d_kernel, d_recurrent_kernel, d_bias

        return corrected, grad

    return line_sweep


_forward_line_sweep = _make_line_sweep(backwards=False)
_backward_line_sweep = _make_line_sweep(backwards=True)
