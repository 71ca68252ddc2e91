"""Float64 NumPy reference of the spatial dependency layers, written from the
paper's Section 2 (project-in, correction stage of Algorithm 1, project-out)
and Figure 3 (the gated residual layer) with plain loops over pixels
(clarity, not speed). It shares no code with `keras_sdn`.

Where the paper leaves a choice open: two bias vectors per gate (as a GRU
cell has, and as the authors' code uses), the first line of a sweep
corrected from an all-zero previous line (the paper's zero padding), the
reset gate scaling only the position's own proposal term (Algorithm 1)."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def conv2d_same(x, kernel, bias):
    """Stride-1 'same' convolution (cross-correlation) of one image (H, W, C)."""
    height, width, _ = x.shape
    size = kernel.shape[0]
    before = (size - 1) // 2
    out = np.zeros((height, width, kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            for di in range(size):
                for dj in range(size):
                    y, x_ = i + di - before, j + dj - before
                    if 0 <= y < height and 0 <= x_ < width:
                        out[i, j] += x[y, x_] @ kernel[di, dj]
    return out + bias


def conv2d_transpose_same(x, kernel, bias, stride):
    """Transposed 'same' convolution, output (H * stride, W * stride).

    `kernel` has Keras' Conv2DTranspose layout (size, size, out, in). Input
    pixel `i` scatters to output `i * stride + d - pad`, with
    `pad = (size - stride) // 2` as for TensorFlow's 'same' padding.
    """
    height, width, _ = x.shape
    size = kernel.shape[0]
    pad = (size - stride) // 2
    out = np.zeros((height * stride, width * stride, kernel.shape[2]))
    for i in range(height):
        for j in range(width):
            for di in range(size):
                for dj in range(size):
                    y, x_ = i * stride + di - pad, j * stride + dj - pad
                    if 0 <= y < height * stride and 0 <= x_ < width * stride:
                        out[y, x_] += kernel[di, dj] @ x[i, j]
    return out + bias


# For each direction: the neighbour offsets (di, dj) of position (i, j), in
# the order the layer's neighbourhood weights expect (increasing coordinate
# across the sweep), and the order in which lines are visited.
def _previous_line_neighbours(direction):
    return {
        "down": [(-1, -1), (-1, 0), (-1, 1)],
        "up": [(1, -1), (1, 0), (1, 1)],
        "right": [(-1, -1), (0, -1), (1, -1)],
        "left": [(-1, 1), (0, 1), (1, 1)],
    }[direction]


def _lines(direction, height, width):
    """The positions of each line, in sweep order."""
    if direction == "down":
        return [[(i, j) for j in range(width)] for i in range(height)]
    if direction == "up":
        return [[(i, j) for j in range(width)] for i in reversed(range(height))]
    if direction == "right":
        return [[(i, j) for i in range(height)] for j in range(width)]
    return [[(i, j) for i in range(height)] for j in reversed(range(width))]


def sweep(image, kernel, recurrent_kernel, bias, direction):
    """One sweep over `image` (H, W, F) with the GRU-like correction."""
    height, width, features = image.shape
    state = image.copy()
    offsets = _previous_line_neighbours(direction)
    w_r, w_z, w_n = np.split(kernel, 3, axis=1)
    u_r, u_z, u_n = np.split(recurrent_kernel, 3, axis=1)
    bx_r, bx_z, bx_n = np.split(bias[0], 3)
    bu_r, bu_z, bu_n = np.split(bias[1], 3)
    for line in _lines(direction, height, width):
        updated = {}
        for i, j in line:
            x = state[i, j]
            neighbourhood = []
            for di, dj in offsets:
                y, x_ = i + di, j + dj
                inside = 0 <= y < height and 0 <= x_ < width
                neighbourhood.append(state[y, x_] if inside else np.zeros(features))
            nb = np.concatenate(neighbourhood)
            r = sigmoid(x @ w_r + bx_r + nb @ u_r + bu_r)
            z = sigmoid(x @ w_z + bx_z + nb @ u_z + bu_z)
            n = np.tanh(r * (x @ w_n + bx_n) + nb @ u_n + bu_n)
            updated[i, j] = z * x + (1.0 - z) * n
        for position, value in updated.items():
            state[position] = value
    return state


def spatial_dependency(images, weights, directions, upsample):
    """The whole layer on a batch (B, H, W, C), with weights as a dict."""
    outputs = []
    for image in images:
        if upsample == 1:
            projected = conv2d_same(image, weights["project_in_kernel"], weights["project_in_bias"])
        else:
            projected = conv2d_transpose_same(
                image, weights["project_in_kernel"], weights["project_in_bias"], upsample
            )
        state = np.tanh(projected)
        for index, direction in enumerate(directions):
            state = sweep(
                state,
                weights["kernel"][index],
                weights["recurrent_kernel"][index],
                weights["bias"][index],
                direction,
            )
        outputs.append(state @ weights["project_out_kernel"] + weights["project_out_bias"])
    return np.stack(outputs)


def residual_spatial_dependency(
    images, weights, residual_kernel, residual_bias, directions, upsample
):
    both = spatial_dependency(images, weights, directions, upsample)
    sweeps, gate_logits = np.split(both, 2, axis=-1)
    gate = sigmoid(gate_logits)
    if upsample == 1:
        residual = np.stack([conv2d_same(x, residual_kernel, residual_bias) for x in images])
    else:
        residual = np.stack(
            [conv2d_transpose_same(x, residual_kernel, residual_bias, upsample) for x in images]
        )
    return gate * residual + (1.0 - gate) * sweeps
