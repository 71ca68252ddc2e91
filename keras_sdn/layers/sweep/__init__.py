"""The correction stage of a spatial dependency layer: directional gated sweeps.

Forward
-------
A sweep visits the lines (rows or columns) of a feature map one after another
and updates every position of a line at once from the already-corrected
previous line. For the top-to-bottom sweep, position `(i, j)` with value `x`
and previous-row neighbourhood `nb = [h[i-1, j-1], h[i-1, j], h[i-1, j+1]]`
(zeros outside the map) becomes

    a_r = x W_r + b_xr + nb U_r + b_ur        r = sigmoid(a_r)
    a_z = x W_z + b_xz + nb U_z + b_uz        z = sigmoid(a_z)
    a_n = r * (x W_n + b_xn) + nb U_n + b_un  n = tanh(a_n)
    h[i, j] = z * x + (1 - z) * n

which is a GRU cell whose input is the neighbourhood and whose hidden state is
the current value (two bias vectors per gate, as in the reference code). The
first line of a sweep is updated from an all-zero previous line (the paper's
zero padding). For each direction the neighbourhood is ordered by increasing
coordinate across the sweep: columns `j-1, j, j+1` for vertical sweeps, rows
`i-1, i, i+1` for horizontal ones.

Backward
--------
Let `g = dL/dh[i, j]` be the whole gradient of a corrected position: the
upstream gradient plus what flows back from the next line, which reads
`h[i, j]` through its neighbourhoods. With `p_n = x W_n + b_xn`, the chain
rule through `h = n + z (x - n)` gives the gradients of the pre-activations

    d_n = g * (1 - z) * (1 - n^2)               (dh/dn = 1 - z, dn/da_n = 1 - n^2)
    d_z = g * (x - n) * z * (1 - z)             (dh/dz = x - n)
    d_r = d_n * p_n * r * (1 - r)               (da_n/dr = p_n)

All three are `g` times a coefficient that depends only on the forward pass
(`gates.gate_coefficients`). The neighbourhood term enters every `a`
unscaled, the input projection of `a_n` is scaled by `r`, so

    d_rec  = [d_r, d_z, d_n]        (gradient of nb U and of b_u)
    d_proj = [d_r, d_z, r * d_n]    (gradient of x W and of b_x)

and, with `W = [W_r, W_z, W_n]` (F x 3F) and `U = [U_r, U_z, U_n]` (3F x 3F),

    dL/dx  = g * z + d_proj W^T                 (the sweep's input at (i, j))
    dL/dnb = d_rec U^T                          (into the previous line)
    dL/dW  = sum over positions of x^T d_proj,  dL/db_x = sum of d_proj
    dL/dU  = sum over positions of nb^T d_rec,  dL/db_u = sum of d_rec

`dL/dnb` is split into its three neighbours and added to `g` of the previous
line's positions `j-1, j, j+1`: the transposed neighbourhood product. That
recursion, `g[line - 1] = upstream[line - 1] + transposed(d_rec[line] U^T)`,
is the only sequential part of the backward pass: one elementwise product
and one matrix product per line. The coefficients, `dL/dx` and the weight
and bias gradients of a line follow from its `g` off the chain
(docs/sweeps.md has a figure).

Loop forms
----------
The input projection `x W + b_x` is one matrix product over all lines before
the loop; inside the loop only the recurrent product and the gate arithmetic
remain. The gradient is hand-written (`tf.custom_gradient`): nothing is
differentiated through a loop by autodiff. Two loop forms, each a function
`loop(inputs, kernels, recurrent_kernels, biases, directions)` over the map:

- `unrolled_sweeps`: one copy of the step per line in the graph, for maps
  of static size; fastest for small maps on CPUs.
- `scanned_sweeps`: one `tf.scan` per direction; any size, a graph of
  constant size, the form XLA compiles well.

`sweeps` picks one (`resolve_implementation`: a layer's `implementation`
argument, `"auto"` by default) and sweeps a large batch in two halves in
graph mode on a CPU.

On the JAX and PyTorch backends the layers run `keras_ops_sweeps` instead:
the forward equations in `keras.ops`, as a Python loop or `keras.ops.scan`,
differentiated by the backend (module `keras_ops`).
"""

import importlib

from keras_sdn.layers.sweep.directions import DIRECTIONS
from keras_sdn.layers.sweep.keras_ops import keras_ops_sweeps

# The layers' `implementation` argument: "auto" or one of the loop forms,
# which every backend's loops have.
IMPLEMENTATIONS = ("auto", "unrolled", "scanned")

# The TensorFlow loops, imported on first access: on the JAX and PyTorch
# backends the layers run without importing TensorFlow.
_TENSORFLOW_NAMES = {
    "AUTO_MAX_UNROLLED_LINES": "dispatch",
    "LOOPS": "dispatch",
    "auto_implementation": "dispatch",
    "resolve_implementation": "dispatch",
    "sweeps": "dispatch",
    "whole_batch": "dispatch",
    "scanned_sweeps": "scanned",
    "unrolled_sweeps": "unrolled",
}

__all__ = ["DIRECTIONS", "IMPLEMENTATIONS", "keras_ops_sweeps", *_TENSORFLOW_NAMES]


def __getattr__(name):
    if name in _TENSORFLOW_NAMES:
        module = importlib.import_module(f"{__name__}.{_TENSORFLOW_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_TENSORFLOW_NAMES))
