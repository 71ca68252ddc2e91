"""The TensorFlow loops' line algebra: the input projections and the derivatives of the gate.

What the scanned and unrolled loops (`scanned`, `unrolled`) add to
`gates.gated_update` for their hand-written gradient. Every function is
elementwise over positions, or one matrix product over the last axis, so it
serves `(T, batch, A, F)` tensors and `(batch * A, F)` rows of a line alike.
The equations are derived in `keras_sdn.layers.sweep`.
"""

import tensorflow as tf


def matmul(tensor, matrix):
    """`tensor @ matrix` over the last axis, as one 2-D matrix product."""
    if tensor.shape.rank == 2:
        return tf.matmul(tensor, matrix)
    flat = tf.matmul(tf.reshape(tensor, (-1, tensor.shape[-1])), matrix)
    return tf.reshape(flat, tf.concat([tf.shape(tensor)[:-1], [matrix.shape[-1]]], 0))


def input_projections(lines, kernel, bias):
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
        matmul(lines, gate_kernel) + gate_bias
        for gate_kernel, gate_bias in zip(tf.split(kernel, 3, -1), gate_biases)
    ]
    return projections, recurrent_bias[2]


def gate_coefficients(x, x_proposal, reset, update, proposal):
    """The derivatives of a corrected line by the terms of its gates' pre-activations.

    Elementwise, from `gated_update`'s input `x`, proposal projection
    `x_proposal` and gates `reset`, `update`, `proposal` (all `(..., F)`).

    Returns:
        `(recurrent, projection)`, each `(..., 3F)`: the derivatives by the
        neighbourhood terms of `[a_r, a_z, a_n]`,
        `[c_r, c_z, c_n] = [c_n * x_proposal * r (1 - r), (x - n) z (1 - z),
        (1 - z)(1 - n^2)]`, and by the input projections, `[c_r, c_z, r * c_n]`
        (r scales the proposal's input projection, not its neighbourhood term).
    """
    proposal_coeff = (1.0 - update) * (1.0 - tf.square(proposal))
    reset_coeff = proposal_coeff * x_proposal * reset * (1.0 - reset)
    update_coeff = (x - proposal) * update * (1.0 - update)
    return (
        tf.concat([reset_coeff, update_coeff, proposal_coeff], -1),
        tf.concat([reset_coeff, update_coeff, proposal_coeff * reset], -1),
    )


def preactivation_gradients(d_output, coefficients):
    """`[d_r, d_z, d_n]` `(..., 3F)`: the gradient `d_output` `(..., F)` of a line's
    output times one of `gate_coefficients`."""
    return tf.concat([d_output] * 3, -1) * coefficients


def line_input_gradient(d_output, update, d_projected, transposed_kernel):
    """The gradient of a line's input: directly (`z * d_output`) and through its projections.

    Args:
        d_output: Tensor `(..., F)`, the gradient of the line's output.
        update: Tensor `(..., F)`, the gate z.
        d_projected: Tensor `(..., 3F)`, the gradients of the input projections.
        transposed_kernel: Tensor `(3F, F)`, the input weights transposed.
    """
    return d_output * update + matmul(d_projected, transposed_kernel)
