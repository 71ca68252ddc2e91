"""The two implementations of the sweeps (unrolled loops, `tf.scan`) and when each runs.

Both against the float64 NumPy reference of sdn_reference.py, and their
hand-written gradients against numerical differentiation.
"""

import numpy as np
import pytest
import tensorflow as tf

import sdn_reference
from keras_sdn.layers import sweep

FEATURES = 3
IMPLEMENTATIONS = {"unrolled": sweep._MAX_UNROLLED_LINES, "scanned": 0}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def implementation(request, monkeypatch):
    """Sweeps over at most `_MAX_UNROLLED_LINES` lines are unrolled: 0 forces `tf.scan`."""
    monkeypatch.setattr(sweep, "_MAX_UNROLLED_LINES", IMPLEMENTATIONS[request.param])
    return request.param


def random_weights(count, seed):
    rng = np.random.default_rng(seed)
    shapes = [
        (count, FEATURES, 3 * FEATURES),
        (count, 3 * FEATURES, 3 * FEATURES),
        (count, 2, 3 * FEATURES),
    ]
    return [rng.normal(scale=0.5, size=shape) for shape in shapes]


def reference_sweeps(images, weights, directions):
    outputs = []
    for image in images:
        for index, direction in enumerate(directions):
            image = sdn_reference.sweep(image, *(w[index] for w in weights), direction)
        outputs.append(image)
    return np.stack(outputs)


@pytest.mark.parametrize(
    "directions, shape",
    [
        (("down", "up"), (2, 4, 3)),
        (("left", "right", "down"), (3, 5, 2)),
        (("up", "left", "right", "down"), (2, 3, 4)),
        (("right",), (2, 1, 3)),  # lines of one position
        (("down",), (2, 1, 3)),  # a single line
    ],
)
def test_sweeps_match_reference(implementation, directions, shape):
    images = np.random.default_rng(0).normal(size=shape + (FEATURES,))
    weights = random_weights(len(directions), seed=1)
    expected = reference_sweeps(images, weights, directions)

    @tf.function
    def run(images, *weights):
        return sweep.sweeps(images, *weights, directions)

    actual = run(tf.constant(images, tf.float32), *(tf.constant(w, tf.float32) for w in weights))
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "directions, shape",
    [(("down", "left"), (2, 3, 4)), (("right", "up"), (3, 4, 2))],
)
def test_sweep_gradients_match_finite_differences(implementation, directions, shape):
    images = tf.constant(np.random.default_rng(2).normal(size=shape + (FEATURES,)))
    weights = [tf.constant(w) for w in random_weights(len(directions), seed=3)]

    @tf.function
    def run(images, *weights):
        return sweep.sweeps(images, *weights, directions)

    theoretical, numerical = tf.test.compute_gradient(run, [images] + weights, delta=1e-6)
    for analytic, numeric in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_unknown_batch_size_matches_reference(implementation, batch):
    """A batch of unknown size is swept in halves, a batch of one included.

    In float32, where TensorFlow's CPU convolution mis-shapes an empty batch.
    """
    directions = ("up", "right")
    weights = random_weights(2, seed=4)
    images = np.random.default_rng(5).normal(size=(batch, 4, 5, FEATURES))
    signature = tf.TensorSpec((None, 4, 5, FEATURES), tf.float32)

    @tf.function(input_signature=[signature])
    def run(images):
        return sweep.sweeps(images, *(tf.constant(w, tf.float32) for w in weights), directions)

    @tf.function(input_signature=[signature])
    def input_gradient(images):
        return tf.gradients(tf.reduce_sum(run(images) ** 2), images)[0]

    np.testing.assert_allclose(
        run(images.astype(np.float32)).numpy(),
        reference_sweeps(images, weights, directions),
        rtol=1e-4,
        atol=1e-5,
    )
    # d/dx of sum(y^2) by central differences of the reference, at a few entries.
    gradient = input_gradient(images.astype(np.float32)).numpy()
    for index in [(0, 0, 0, 0), (batch - 1, 3, 4, 2), (batch - 1, 1, 2, 1)]:
        step = np.zeros_like(images)
        step[index] = 1e-6
        loss = [
            np.sum(reference_sweeps(images + sign * step, weights, directions) ** 2)
            for sign in (1, -1)
        ]
        assert gradient[index] == pytest.approx((loss[0] - loss[1]) / 2e-6, rel=1e-3, abs=1e-4)


def test_which_implementation_runs():
    traced = {}

    def record(name, jit_compile, signature):
        @tf.function(jit_compile=jit_compile, input_signature=[signature])
        def function(x):
            traced[name] = sweep._unrolled(x, ("down", "left"))
            return x

        function.get_concrete_function()

    limit = sweep._MAX_UNROLLED_LINES
    record("small", False, tf.TensorSpec((None, limit, 5, 2)))
    record("too many lines", False, tf.TensorSpec((4, limit + 1, 5, 2)))
    record("unknown size", False, tf.TensorSpec((4, None, 5, 2)))
    record("xla", True, tf.TensorSpec((4, 5, 5, 2)))
    with sweep.scanned_sweeps():
        record("scanned", False, tf.TensorSpec((None, limit, 5, 2)))
    record("after the context", False, tf.TensorSpec((None, 4, 5, 2)))
    assert traced == {
        "small": True,
        "too many lines": False,
        "unknown size": False,
        "xla": False,
        "scanned": False,
        "after the context": True,
    }


def test_batch_halves_need_long_lines():
    size = sweep._MIN_HALF_LINE_SIZE
    assert sweep._long_lines(tf.zeros((2, 1, 8, size)))  # 1 image x 1 position x size
    assert not sweep._long_lines(tf.zeros((2, 1, 8, size - 1)))
    assert not sweep._long_lines(tf.zeros((3, 4, 2, size // 2 - 1)))  # the shorter lines count
    assert sweep._long_lines(tf.TensorSpec((2, None, 8, 4)))  # an unknown size counts as long
