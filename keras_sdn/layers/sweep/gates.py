"""The gate of a line of a sweep: the one piece of algebra every backend's loops share.

Elementwise over positions, so it serves the scanned loops (`(T, batch, A,
F)` tensors), the unrolled ones (`(batch * A, F)` rows of a line) and the
`keras.ops` loops alike. Written with `keras.ops`; the equations, forward
and backward, are derived in `keras_sdn.layers.sweep`.
"""

from keras import ops


def gated_update(x, reset_preactivation, update_preactivation, x_proposal, recurrent_proposal):
    """The GRU-like correction of a line `x` from its gates' pre-activations.

    `r = sigmoid(reset_preactivation)`, `z = sigmoid(update_preactivation)`,
    `n = tanh(r * x_proposal + recurrent_proposal)`; the line becomes
    `z * x + (1 - z) * n`. All arguments have the shape of `x` (or broadcast to it).

    Returns:
        `(corrected, r, z, n)`.
    """
    reset = ops.sigmoid(reset_preactivation)
    update = ops.sigmoid(update_preactivation)
    proposal = ops.tanh(reset * x_proposal + recurrent_proposal)
    return proposal + update * (x - proposal), reset, update, proposal
