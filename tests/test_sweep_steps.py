"""The pieces of the sweeps' forward and hand-written backward passes, one by one.

Each against a small float64 NumPy reference written from the equations in
`keras_sdn/layers/sweep.py`'s docstring: one line's GRU-like update given the
previous line, the neighbourhood product across a line (zeros outside it),
and central differences of these for every derivative. The TensorFlow pieces
run eagerly in float64.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_sdn.layers import sweep

FEATURES = 3
BATCH = 2
DELTA = 1e-6
TOLERANCE = {"rtol": 1e-6, "atol": 1e-8}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def neighbourhood_product(previous, taps):
    """`sum_k previous[j + k - 1] @ taps[k]` at every position `j` of each line `(..., A, F)`."""
    length = previous.shape[-2]
    out = np.zeros(previous.shape[:-1] + (taps.shape[-1],))
    for j in range(length):
        for k in range(3):
            if 0 <= j + k - 1 < length:
                out[..., j, :] += previous[..., j + k - 1, :] @ taps[k]
    return out


def transposed_neighbourhood_product(gradient, taps):
    """The transpose of `neighbourhood_product`: what each position of `previous` receives."""
    length = gradient.shape[-2]
    out = np.zeros(gradient.shape[:-1] + (taps.shape[1],))
    for j in range(length):
        for k in range(3):
            if 0 <= j + k - 1 < length:
                out[..., j + k - 1, :] += gradient[..., j, :] @ taps[k].T
    return out


def gathered_neighbourhood(previous):
    """`(batch * A, 3F)`: each position's neighbours `j - 1, j, j + 1` in `previous`."""
    padded = np.pad(previous, [(0, 0), (1, 1), (0, 0)])
    length = previous.shape[1]
    return np.concatenate([padded[:, k : k + length] for k in range(3)], -1).reshape(
        -1, 3 * FEATURES
    )


def gated_update(x, reset_preactivation, update_preactivation, x_proposal, recurrent_proposal):
    """`z * x + (1 - z) * n`, and the gates r, z, n."""
    r = sigmoid(reset_preactivation)
    z = sigmoid(update_preactivation)
    n = np.tanh(r * x_proposal + recurrent_proposal)
    return z * x + (1.0 - z) * n, r, z, n


def preactivations(previous, x, kernel, recurrent_kernel, bias):
    """The arguments of `gated_update` after `x`, for line `x` after line `previous`."""
    w_r, w_z, w_n = np.split(kernel, 3, axis=1)
    taps = recurrent_kernel.reshape(3, FEATURES, 3 * FEATURES)
    u_r, u_z, u_n = np.split(neighbourhood_product(previous, taps), 3, axis=-1)
    bx_r, bx_z, bx_n = np.split(bias[0], 3)
    bu_r, bu_z, bu_n = np.split(bias[1], 3)
    return x @ w_r + bx_r + u_r + bu_r, x @ w_z + bx_z + u_z + bu_z, x @ w_n + bx_n, u_n + bu_n


def line_step(previous, x, kernel, recurrent_kernel, bias):
    """Line `x` `(batch, A, F)` corrected from the corrected `previous` line."""
    return gated_update(x, *preactivations(previous, x, kernel, recurrent_kernel, bias))[0]


def reference_sweep(lines, kernel, recurrent_kernel, bias, backwards):
    """Every line of `lines` `(T, batch, A, F)` corrected in turn, the first from zeros."""
    corrected = np.zeros_like(lines)
    previous = np.zeros_like(lines[0])
    for line in sweep._line_order(len(lines), backwards):
        corrected[line] = previous = line_step(
            previous, lines[line], kernel, recurrent_kernel, bias
        )
    return corrected


def numerical_gradient(function, value):
    """Central differences of the scalar `function` at every entry of `value`."""
    gradient = np.zeros_like(value)
    for index in np.ndindex(value.shape):
        step = np.zeros_like(value)
        step[index] = DELTA
        gradient[index] = (function(value + step) - function(value - step)) / (2 * DELTA)
    return gradient


def numerical_gate_coeffs(
    x, reset_preactivation, update_preactivation, x_proposal, recurrent_proposal
):
    """The derivatives of `gated_update`'s output by the pre-activations of r, z and n.

    The output is elementwise in the pre-activations, so one central
    difference of all entries at once gives every entry's derivative; n's
    pre-activation changes as `recurrent_proposal` does.
    """
    arguments = [x, reset_preactivation, update_preactivation, x_proposal, recurrent_proposal]
    coeffs = []
    for gate in (1, 2, 4):
        outputs = []
        for step in (DELTA, -DELTA):
            shifted = list(arguments)
            shifted[gate] = arguments[gate] + step
            outputs.append(gated_update(*shifted)[0])
        coeffs.append((outputs[0] - outputs[1]) / (2 * DELTA))
    return coeffs


def random_problem(seed, length=4, lines=1):
    """Lines `(T, batch, A, F)` and one direction's weights."""
    rng = np.random.default_rng(seed)
    return {
        "lines": rng.normal(size=(lines, BATCH, length, FEATURES)),
        "kernel": rng.normal(scale=0.5, size=(FEATURES, 3 * FEATURES)),
        "recurrent_kernel": rng.normal(scale=0.5, size=(3 * FEATURES, 3 * FEATURES)),
        "bias": rng.normal(scale=0.5, size=(2, 3 * FEATURES)),
    }


def constant(value):
    return tf.constant(value, tf.float64)


def as_rows(line):
    return line.reshape(-1, FEATURES)


def test_input_projections():
    problem = random_problem(0, lines=3)
    lines, kernel, bias = problem["lines"], problem["kernel"], problem["bias"]
    projections, proposal_bias = sweep._input_projections(
        constant(lines), constant(kernel), constant(bias)
    )
    w_r, w_z, w_n = np.split(kernel, 3, axis=1)
    bx_r, bx_z, bx_n = np.split(bias[0], 3)
    bu_r, bu_z, bu_n = np.split(bias[1], 3)
    expected = [lines @ w_r + bx_r + bu_r, lines @ w_z + bx_z + bu_z, lines @ w_n + bx_n]
    for actual, wanted in zip(projections, expected):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-12)
    np.testing.assert_allclose(proposal_bias.numpy(), bu_n, rtol=1e-12)


def test_gated_update():
    arguments = np.random.default_rng(1).normal(size=(5, BATCH, 4, FEATURES))
    actual = sweep._gated_update(*(constant(argument) for argument in arguments))
    for value, expected in zip(actual, gated_update(*arguments)):
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


def test_gate_coeffs_match_finite_differences():
    arguments = np.random.default_rng(2).normal(size=(5, BATCH, 4, FEATURES))
    x, _, _, x_proposal, _ = arguments
    _, r, z, n = gated_update(*arguments)
    coeffs = sweep._gate_coeffs(*(constant(value) for value in (x, x_proposal, r, z, n)))
    for actual, expected in zip(coeffs, numerical_gate_coeffs(*arguments)):
        np.testing.assert_allclose(actual.numpy(), expected, **TOLERANCE)


@pytest.mark.parametrize("length", [4, 1])
def test_scan_step_matches_one_line_reference(length):
    problem = random_problem(3, length=length, lines=2)
    previous, x = problem["lines"]
    weights = [problem[name] for name in ("kernel", "recurrent_kernel", "bias")]
    x_reset, x_update, x_proposal, _ = preactivations(np.zeros_like(previous), x, *weights)
    filters = weights[1].reshape(3, FEATURES, 3 * FEATURES)
    proposal_bias = weights[2][1, 2 * FEATURES :]
    corrected, r, z, n = sweep._scan_step(
        *(
            constant(value)
            for value in (previous, x, x_reset, x_update, x_proposal, filters, proposal_bias)
        )
    )
    expected = gated_update(x, *preactivations(previous, x, *weights))
    for actual, wanted in zip((corrected, r, z, n), expected):
        np.testing.assert_allclose(actual.numpy(), wanted, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(corrected.numpy(), line_step(previous, x, *weights), rtol=1e-10)


@pytest.mark.parametrize("length, first", [(4, False), (1, False), (4, True)])
def test_unrolled_line_matches_one_line_reference(length, first):
    problem = random_problem(4, length=length, lines=2)
    previous, x = problem["lines"]
    if first:
        previous = np.zeros_like(previous)
    kernel, recurrent_kernel, bias = (problem[n] for n in ("kernel", "recurrent_kernel", "bias"))
    x_reset, x_update, x_proposal, _ = preactivations(
        np.zeros_like(previous), x, kernel, recurrent_kernel, bias
    )
    proposal_bias = bias[1, 2 * FEATURES :]
    products = sweep._NeighbourhoodProducts(
        constant(problem["lines"]), constant(recurrent_kernel.reshape(3, FEATURES, -1))
    )
    corrected, r, z, n, neighbourhood = sweep._unrolled_line(
        *(constant(as_rows(value)) for value in (x, x_reset, x_update, x_proposal)),
        None if first else constant(as_rows(previous)),
        products,
        constant(np.concatenate([np.zeros(2 * FEATURES), proposal_bias])),
        constant(proposal_bias),
    )
    expected = gated_update(x, *preactivations(previous, x, kernel, recurrent_kernel, bias))
    for actual, wanted in zip((corrected, r, z, n), expected):
        np.testing.assert_allclose(actual.numpy(), as_rows(wanted), rtol=1e-10, atol=1e-12)
    if first:
        assert neighbourhood is None
    else:
        np.testing.assert_array_equal(neighbourhood.numpy(), gathered_neighbourhood(previous))


@pytest.mark.parametrize("length", [4, 1])
def test_scan_back_step_matches_finite_differences(length):
    problem = random_problem(5, length=length, lines=2)
    previous, x = problem["lines"]
    weights = [problem[name] for name in ("kernel", "recurrent_kernel", "bias")]
    d_output, from_next_line = np.random.default_rng(6).normal(size=(2,) + x.shape)
    coeffs = numerical_gate_coeffs(x, *preactivations(previous, x, *weights))
    taps = weights[1].reshape(3, FEATURES, 3 * FEATURES)
    to_previous = sweep._scan_back_step(
        constant(from_next_line),
        constant(d_output),
        constant(np.stack(coeffs, -2)),
        constant(np.transpose(taps[::-1], (0, 2, 1))),  # the transposed taps
        tf.constant([BATCH, length, 3 * FEATURES]),
    )
    expected = numerical_gradient(
        lambda value: np.sum((d_output + from_next_line) * line_step(value, x, *weights)), previous
    )
    np.testing.assert_allclose(to_previous.numpy(), expected, **TOLERANCE)


def forward_state(problem, backwards):
    """The reference sweep's outputs, each line's previous line and gate values."""
    lines = problem["lines"]
    weights = [problem[name] for name in ("kernel", "recurrent_kernel", "bias")]
    corrected = reference_sweep(lines, *weights, backwards)
    zeros = np.zeros_like(lines[:1])
    if backwards:
        previous_lines = np.concatenate([corrected[1:], zeros])
    else:
        previous_lines = np.concatenate([zeros, corrected[:-1]])
    arguments = [
        (x, *preactivations(previous, x, *weights)) for previous, x in zip(previous_lines, lines)
    ]
    gates = np.stack([gated_update(*values)[1:] for values in arguments])  # (T, 3, ...)
    coeffs = np.stack([np.stack(numerical_gate_coeffs(*values), -2) for values in arguments])
    return corrected, previous_lines, gates, coeffs


@pytest.mark.parametrize("backwards", [False, True])
def test_scanned_output_gradients_match_finite_differences(backwards):
    """The gradient of each line's output: upstream plus all it changes in later lines."""
    problem = random_problem(7, length=3, lines=3)
    lines = problem["lines"]
    weights = [problem[name] for name in ("kernel", "recurrent_kernel", "bias")]
    upstream = np.random.default_rng(8).normal(size=lines.shape)
    corrected, _, _, coeffs = forward_state(problem, backwards)
    order = list(sweep._line_order(len(lines), backwards))

    def loss_with_line(line, value):
        """The loss with the output of `line` replaced by `value`, later lines swept from it."""
        outputs = corrected.copy()
        outputs[line] = value
        for later in order[order.index(line) + 1 :]:
            outputs[later] = line_step(value, lines[later], *weights)
            value = outputs[later]
        return np.sum(upstream * outputs)

    d_corrected = sweep._scanned_output_gradients(
        constant(upstream),
        constant(coeffs),
        constant(weights[1].reshape(3, FEATURES, 3 * FEATURES)),
        backwards,
    )
    for line in order:
        expected = numerical_gradient(
            lambda value, line=line: loss_with_line(line, value), corrected[line]
        )
        np.testing.assert_allclose(d_corrected[line].numpy(), expected, **TOLERANCE)


def local_gradients(previous, x, d_output, kernel, recurrent_kernel, bias):
    """The gradients of `sum(d_output * line_step(...))` by x, previous and the weights."""
    arguments = [previous, x, kernel, recurrent_kernel, bias]

    def gradient(position):
        def loss(value):
            values = list(arguments)
            values[position] = value
            return np.sum(d_output * line_step(*values))

        return numerical_gradient(loss, arguments[position])

    return {
        "line": gradient(1),
        "previous": gradient(0),
        "kernel": gradient(2),
        "recurrent_kernel": gradient(3),
        "bias": gradient(4),
    }


def test_scanned_input_gradients_match_finite_differences():
    """The gradients of the lines and weights, given the gradient of every line's output."""
    problem = random_problem(9, length=3, lines=3)
    lines = problem["lines"]
    weights = [problem[name] for name in ("kernel", "recurrent_kernel", "bias")]
    _, previous_lines, gates, coeffs = forward_state(problem, backwards=False)
    d_corrected = np.random.default_rng(10).normal(size=lines.shape)
    d_lines, d_kernel, d_recurrent_kernel, d_bias = sweep._scanned_input_gradients(
        constant(lines),
        constant(previous_lines),
        constant(d_corrected),
        constant(coeffs),
        constant(gates[:, 0]),
        constant(gates[:, 1]),
        constant(weights[0]),
    )
    expected = [
        local_gradients(previous, x, d_output, *weights)
        for previous, x, d_output in zip(previous_lines, lines, d_corrected)
    ]
    np.testing.assert_allclose(
        d_lines.numpy(), np.stack([line["line"] for line in expected]), **TOLERANCE
    )
    for actual, name in [
        (d_kernel, "kernel"),
        (d_recurrent_kernel, "recurrent_kernel"),
        (d_bias, "bias"),
    ]:
        total = sum(line[name] for line in expected)
        np.testing.assert_allclose(actual.numpy(), total, **TOLERANCE)


@pytest.mark.parametrize("first", [False, True])
def test_unrolled_line_gradient_matches_finite_differences(first):
    problem = random_problem(11, length=4, lines=2)
    previous, x = problem["lines"]
    if first:
        previous = np.zeros_like(previous)
    kernel, recurrent_kernel, bias = (problem[n] for n in ("kernel", "recurrent_kernel", "bias"))
    d_output = np.random.default_rng(12).normal(size=x.shape)
    arguments = (x, *preactivations(previous, x, kernel, recurrent_kernel, bias))
    _, r, z, n = gated_update(*arguments)
    line = sweep._Line(
        *(constant(as_rows(value)) for value in (x, arguments[3], r, z, n)),
        None if first else constant(gathered_neighbourhood(previous)),
    )
    products = sweep._NeighbourhoodProducts(
        constant(problem["lines"]), constant(recurrent_kernel.reshape(3, FEATURES, -1))
    )
    d_line, to_previous, shares = sweep._unrolled_line_gradient(
        constant(as_rows(d_output)),
        [constant(as_rows(coeff)) for coeff in numerical_gate_coeffs(*arguments)],
        line,
        products.transposed(),
        constant(kernel.T),
    )
    expected = local_gradients(previous, x, d_output, kernel, recurrent_kernel, bias)
    np.testing.assert_allclose(d_line.numpy(), as_rows(expected["line"]), **TOLERANCE)
    d_kernel, d_recurrent_kernel, d_input_bias, d_recurrent_bias = shares
    np.testing.assert_allclose(d_kernel.numpy(), expected["kernel"], **TOLERANCE)
    np.testing.assert_allclose(d_input_bias.numpy(), expected["bias"][0], **TOLERANCE)
    np.testing.assert_allclose(d_recurrent_bias.numpy(), expected["bias"][1], **TOLERANCE)
    if first:  # no previous line: nothing flows back, the neighbourhood weights get nothing
        assert to_previous is None and d_recurrent_kernel is None
    else:
        np.testing.assert_allclose(to_previous.numpy(), as_rows(expected["previous"]), **TOLERANCE)
        np.testing.assert_allclose(
            d_recurrent_kernel.numpy(), expected["recurrent_kernel"], **TOLERANCE
        )


def test_sum_of_shares():
    rng = np.random.default_rng(13)
    shapes = [
        (FEATURES, 3 * FEATURES),
        (3 * FEATURES, 3 * FEATURES),
        (3 * FEATURES,),
        (3 * FEATURES,),
    ]
    shares = [[rng.normal(size=shape) for shape in shapes] for _ in range(3)]
    shares[0][1] = None  # the first line's
    recurrent_kernel = constant(np.ones(shapes[1]))
    d_kernel, d_recurrent_kernel, d_bias = sweep._sum_of_shares(
        [[None if value is None else constant(value) for value in share] for share in shares],
        recurrent_kernel,
    )
    np.testing.assert_allclose(d_kernel.numpy(), sum(share[0] for share in shares))
    np.testing.assert_allclose(d_recurrent_kernel.numpy(), shares[1][1] + shares[2][1])
    np.testing.assert_allclose(
        d_bias.numpy(), [sum(share[2] for share in shares), sum(share[3] for share in shares)]
    )
    # A single line has no previous line: a zero neighbourhood gradient.
    single = sweep._sum_of_shares(
        [[constant(shares[0][0]), None, constant(shares[0][2]), constant(shares[0][3])]],
        recurrent_kernel,
    )[1]
    np.testing.assert_array_equal(single.numpy(), np.zeros(shapes[1]))


@pytest.mark.parametrize("backwards", [False, True])
def test_unrolled_sweep_matches_line_by_line_reference(backwards):
    """`_unrolled_forward` and `_unrolled_sweep_gradient`, composed line by line."""
    problem = random_problem(14, length=3, lines=3)
    lines = problem["lines"]
    kernel, recurrent_kernel, bias = (problem[n] for n in ("kernel", "recurrent_kernel", "bias"))
    upstream = np.random.default_rng(15).normal(size=lines.shape)
    products = sweep._NeighbourhoodProducts(
        constant(lines), constant(recurrent_kernel.reshape(3, FEATURES, -1))
    )
    order = sweep._line_order(len(lines), backwards)
    corrected, kept = sweep._unrolled_forward(
        constant(lines), constant(kernel), constant(bias), products, order
    )
    weights = [kernel, recurrent_kernel, bias]
    np.testing.assert_allclose(
        corrected.numpy(), reference_sweep(lines, *weights, backwards), rtol=1e-10
    )
    gradients = sweep._unrolled_sweep_gradient(
        constant(upstream), kept, order, constant(kernel), constant(recurrent_kernel), products
    )
    values = [lines] + weights
    for position, actual in enumerate(gradients):

        def loss(value, position=position):
            arguments = list(values)
            arguments[position] = value
            return np.sum(upstream * reference_sweep(*arguments, backwards))

        expected = numerical_gradient(loss, values[position])
        np.testing.assert_allclose(actual.numpy(), expected, **TOLERANCE)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_neighbourhood_products_and_transpose(length):
    """The product across lines of `length` positions (zeros outside a line), and its transpose."""
    rng = np.random.default_rng(16 + length)
    taps = rng.normal(size=(3, FEATURES, 3 * FEATURES))
    line = rng.normal(size=(BATCH, length, FEATURES))
    gradient = rng.normal(size=(BATCH, length, 3 * FEATURES))
    products = sweep._NeighbourhoodProducts(constant(line[None]), constant(taps))

    neighbourhood = products.neighbourhood(constant(as_rows(line)))
    np.testing.assert_array_equal(neighbourhood.numpy(), gathered_neighbourhood(line))
    product = products.forward(neighbourhood).numpy()
    np.testing.assert_allclose(
        product, neighbourhood_product(line, taps).reshape(-1, 3 * FEATURES), rtol=1e-12
    )
    transposed = products.transposed()(constant(gradient.reshape(-1, 3 * FEATURES))).numpy()
    np.testing.assert_allclose(
        transposed, as_rows(transposed_neighbourhood_product(gradient, taps)), rtol=1e-12
    )
    # Adjointness: <A x, y> == <x, A^T y>.
    assert np.sum(product * gradient.reshape(product.shape)) == pytest.approx(
        np.sum(as_rows(line) * transposed), rel=1e-12
    )
