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

Every direction is computed by one canonical top-to-bottom sweep over a
`(lines, batch, positions, features)` tensor: the map is transposed (and, for
bottom-to-top and right-to-left, reversed) so that the swept axis leads. Inside
the `tf.scan` step only the recurrent product and the gate arithmetic remain;
the input projection `x W + b_x` is one matrix product over all lines before
the scan. The gradient is hand-written (`tf.custom_gradient`): a reverse
`tf.scan` carries the gradient of the previous line, and the weight gradients
are computed after the loop with one large product over all lines, as fused
RNN kernels do.

For each direction the neighbourhood is ordered by increasing coordinate
across the sweep: columns `j-1, j, j+1` for vertical sweeps, rows
`i-1, i, i+1` for horizontal ones.
"""

import tensorflow as tf

DIRECTIONS = ("up", "left", "right", "down")

# direction -> (swept spatial axis of a (batch, height, width, features) map,
#               whether the sweep runs against that axis)
_SWEEP_AXIS = {
    "up": (1, True),
    "left": (2, True),
    "right": (2, False),
    "down": (1, False),
}


def sweep(inputs, kernel, recurrent_kernel, bias, direction):
    """Runs one directional sweep over a `(batch, height, width, F)` map.

    Args:
        inputs: Tensor `(batch, height, width, F)`, the map to correct.
        kernel: Tensor `(F, 3F)`, input weights `[W_r, W_z, W_n]`.
        recurrent_kernel: Tensor `(3F, 3F)`, neighbourhood weights: rows
            `[0, F)` act on the lower-coordinate neighbour, `[F, 2F)` on the
            aligned one, `[2F, 3F)` on the higher-coordinate neighbour;
            columns are the `r, z, n` gates.
        bias: Tensor `(2, 3F)`: input biases `b_x` and neighbourhood biases
            `b_u`.
        direction: One of `DIRECTIONS`.

    Returns:
        The corrected map, same shape and dtype as `inputs`.
    """
    axis, backwards = _SWEEP_AXIS[direction]
    perm = [axis, 0, 3 - axis, 3]  # (swept, batch, across, features)
    lines = tf.transpose(inputs, perm)
    if backwards:
        lines = tf.reverse(lines, [0])
    corrected = _top_to_bottom_sweep(lines, kernel, recurrent_kernel, bias)
    if backwards:
        corrected = tf.reverse(corrected, [0])
    return tf.transpose(corrected, [perm.index(dim) for dim in range(4)])


def _recurrent_filters(recurrent_kernel):
    """`(3F, 3F)` neighbourhood weights as the filters of a width-3 convolution."""
    features = recurrent_kernel.shape[-1] // 3
    return tf.reshape(recurrent_kernel, (3, features, 3 * features))


def _neighbourhood(lines):
    """`[h[j-1], h[j], h[j+1]]` for every position `j` of every line, zeros outside."""
    padding = [[0, 0]] * (lines.shape.rank - 2) + [[1, 1], [0, 0]]
    padded = tf.pad(lines, padding)
    return tf.concat([padded[..., :-2, :], padded[..., 1:-1, :], padded[..., 2:, :]], -1)


def _sum_of_outer_products(a, b):
    """`sum_p a[p]^T b[p]` over every position `p`: a weight gradient."""
    a = tf.reshape(a, (-1, a.shape[-1]))
    b = tf.reshape(b, (-1, b.shape[-1]))
    return tf.matmul(a, b, transpose_a=True)


@tf.custom_gradient
def _top_to_bottom_sweep(lines, kernel, recurrent_kernel, bias):
    """The canonical sweep over `lines` of shape `(T, batch, A, F)`."""
    features = lines.shape[-1]
    filters = _recurrent_filters(recurrent_kernel)
    projected = tf.einsum("tbaf,fg->tbag", lines, kernel) + bias[0]
    projected_gates, projected_proposal = projected[..., : 2 * features], projected[..., 2 * features :]

    def step(carry, elems):
        previous = carry[0]
        x, x_gates, x_proposal = elems
        # Every position of the line at once: the neighbourhood product is a
        # width-3 convolution across the previous line.
        recurrent = tf.nn.conv1d(previous, filters, stride=1, padding="SAME") + bias[1]
        gates = tf.sigmoid(x_gates + recurrent[..., : 2 * features])
        reset, update = gates[..., :features], gates[..., features:]
        proposal = tf.tanh(reset * x_proposal + recurrent[..., 2 * features :])
        corrected = proposal + update * (x - proposal)
        return corrected, gates, proposal

    zeros = tf.zeros_like(lines[0])
    corrected, gates, proposal = tf.scan(
        step,
        (lines, projected_gates, projected_proposal),
        initializer=(zeros, tf.concat([zeros, zeros], -1), zeros),
    )

    def grad(upstream):
        reset, update = gates[..., :features], gates[..., features:]
        # Local derivatives of each line's output, all lines at once.
        update_coeff = (lines - proposal) * update * (1.0 - update)
        proposal_coeff = (1.0 - update) * (1.0 - tf.square(proposal))
        reset_coeff = projected_proposal * reset * (1.0 - reset)
        # The transpose of the width-3 convolution is the width-3 convolution
        # with the taps reversed and each tap's matrix transposed.
        transposed_filters = tf.transpose(tf.reverse(filters, [0]), (0, 2, 1))

        def back_step(carry, elems):
            from_next_line = carry[0]
            d_output, d_update, d_proposal, d_reset = elems
            d_corrected = d_output + from_next_line
            d_proposal_pre = d_corrected * d_proposal
            d_recurrent = tf.concat(
                [d_proposal_pre * d_reset, d_corrected * d_update, d_proposal_pre], -1
            )
            to_previous_line = tf.nn.conv1d(d_recurrent, transposed_filters, 1, "SAME")
            return to_previous_line, d_recurrent, d_corrected

        _, d_recurrent, d_corrected = tf.scan(
            back_step,
            (upstream, update_coeff, proposal_coeff, reset_coeff),
            initializer=(zeros, tf.zeros_like(projected[0]), zeros),
            reverse=True,
        )
        d_projected = tf.concat(
            [d_recurrent[..., : 2 * features], d_recurrent[..., 2 * features :] * reset], -1
        )
        d_lines = d_corrected * update + tf.einsum("tbag,fg->tbaf", d_projected, kernel)
        previous_lines = tf.concat([zeros[tf.newaxis], corrected[:-1]], 0)
        d_kernel = _sum_of_outer_products(lines, d_projected)
        d_recurrent_kernel = _sum_of_outer_products(_neighbourhood(previous_lines), d_recurrent)
        d_bias = tf.stack(
            [
                tf.reduce_sum(d_projected, axis=(0, 1, 2)),
                tf.reduce_sum(d_recurrent, axis=(0, 1, 2)),
            ]
        )
        return d_lines, d_kernel, d_recurrent_kernel, d_bias

    return corrected, grad
