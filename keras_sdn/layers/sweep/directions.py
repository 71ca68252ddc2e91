"""The four sweep directions, and running one line sweep per direction over a map.

Written with `keras.ops`: the loops of every backend share it.
"""

from keras import ops

DIRECTIONS = ("up", "left", "right", "down")

# direction -> (swept axis of a (batch, height, width, features) map,
#               whether the sweep runs towards decreasing coordinates)
SWEEP_AXIS = {
    "up": (1, True),
    "left": (2, True),
    "right": (2, False),
    "down": (1, False),
}
_NATURAL_LAYOUT = (0, 1, 2, 3)


def swept_sizes(shape, directions):
    """`(lines, positions)` per direction of a `(batch, height, width, F)` shape: the
    number of lines each sweep visits and the positions of a line (None if unknown)."""
    return [
        (shape[SWEEP_AXIS[direction][0]], shape[3 - SWEEP_AXIS[direction][0]])
        for direction in directions
    ]


def sweep_directions(line_sweeps, inputs, kernels, recurrent_kernels, biases, directions):
    """Runs one line sweep per direction, in order, over a `(batch, height, width, F)` map.

    Args:
        line_sweeps: `{backwards: line_sweep}`, `line_sweep(lines, kernel,
            recurrent_kernel, bias)` correcting lines `(T, batch, A, F)` in
            increasing order of T (decreasing if `backwards`) with one
            direction's weights.
        inputs, kernels, recurrent_kernels, biases, directions: As for
            `keras_sdn.layers.sweep.sweeps`.

    The map is transposed so that the swept axis leads, once for a run of
    sweeps along the same axis.
    """
    weights = zip(ops.unstack(kernels), ops.unstack(recurrent_kernels), ops.unstack(biases))
    corrected, layout = inputs, _NATURAL_LAYOUT
    for direction, direction_weights in zip(directions, weights):
        axis, backwards = SWEEP_AXIS[direction]
        corrected, layout = _to_layout(corrected, layout, (axis, 0, 3 - axis, 3))
        corrected = line_sweeps[backwards](corrected, *direction_weights)
    return _to_layout(corrected, layout, _NATURAL_LAYOUT)[0]


def _to_layout(tensor, layout, new_layout):
    """Transposes `tensor`, whose axes are `layout` of the natural axes, to `new_layout`."""
    if layout == new_layout:
        return tensor, layout
    return ops.transpose(tensor, [layout.index(axis) for axis in new_layout]), new_layout
