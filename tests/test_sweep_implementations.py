"""The sweeps' two loop forms (unrolled, `tf.scan`), through their common interface.

Every loop form is a function `loop(inputs, kernels, recurrent_kernels,
biases, directions)` (`keras_sdn.layers.sweep.LOOPS`); each is checked
against the float64 NumPy reference of sdn_reference.py, values and
gradients (central differences of the reference), and so is `sweeps`, which
picks one of them and may split the batch.
"""

import numpy as np
import pytest
import tensorflow as tf

import sdn_reference
from keras_sdn.layers import SpatialDependency
from keras_sdn.layers import sweep

FEATURES = 3
CASES = [
    (("down", "up"), (2, 4, 3)),
    (("left", "right", "down"), (3, 5, 2)),
    (("up", "left", "right", "down"), (2, 3, 4)),
    (("right",), (2, 1, 3)),  # lines of one position
    (("down",), (2, 1, 3)),  # a single line
    (("left", "left"), (1, 2, 2)),  # a batch of one
]


def random_weights(count, seed, features=FEATURES):
    rng = np.random.default_rng(seed)
    shapes = [
        (count, features, 3 * features),
        (count, 3 * features, 3 * features),
        (count, 2, 3 * features),
    ]
    return [rng.normal(scale=0.5, size=shape) for shape in shapes]


def reference_sweeps(images, weights, directions):
    outputs = []
    for image in images:
        for index, direction in enumerate(directions):
            image = sdn_reference.sweep(image, *(w[index] for w in weights), direction)
        outputs.append(image)
    return np.stack(outputs)


@pytest.mark.parametrize("loop", sorted(sweep.LOOPS))
@pytest.mark.parametrize("directions, shape", CASES)
def test_loops_match_reference_in_float64(loop, directions, shape):
    images = np.random.default_rng(0).normal(size=shape + (FEATURES,))
    weights = random_weights(len(directions), seed=1)

    @tf.function
    def run(images, *weights):
        return sweep.LOOPS[loop](images, *weights, directions)

    actual = run(tf.constant(images), *(tf.constant(w) for w in weights))
    assert actual.dtype == tf.float64
    expected = reference_sweeps(images, weights, directions)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("loop", sorted(sweep.LOOPS))
@pytest.mark.parametrize(
    "directions, shape",
    [(("down", "left"), (2, 3, 4)), (("right", "up"), (3, 4, 2)), (("up",), (1, 1, 3))],
)
def test_loop_gradients_match_the_reference(loop, directions, shape):
    """`<gradient, v>` against the central difference of the reference along `v`.

    For the inputs and every weight, along random directions `v`, of the loss
    `sum(upstream * sweeps(...))`.
    """
    rng = np.random.default_rng(2)
    images = rng.normal(size=shape + (FEATURES,))
    weights = random_weights(len(directions), seed=3)
    upstream = rng.normal(size=images.shape)
    arguments = [images, *weights]

    @tf.function
    def gradients(*arguments):
        with tf.GradientTape() as tape:
            tape.watch(arguments)
            loss = tf.reduce_sum(upstream * sweep.LOOPS[loop](*arguments, directions))
        return tape.gradient(loss, arguments)

    actual = [g.numpy() for g in gradients(*(tf.constant(a) for a in arguments))]

    def reference_loss(values):
        return np.sum(upstream * reference_sweeps(values[0], values[1:], directions))

    step = 1e-6
    for position, gradient in enumerate(actual):
        for _ in range(3):
            direction = rng.normal(size=gradient.shape)
            shifted = [
                [
                    a + sign * step * direction if i == position else a
                    for i, a in enumerate(arguments)
                ]
                for sign in (1, -1)
            ]
            numeric = (reference_loss(shifted[0]) - reference_loss(shifted[1])) / (2 * step)
            assert np.sum(gradient * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("implementation", sorted(sweep.LOOPS))
@pytest.mark.parametrize("batch", [1, 3])
def test_unknown_batch_size_matches_reference(implementation, batch):
    """A batch of unknown size is swept in halves, a batch of one included.

    In float32, where TensorFlow's CPU convolution mis-shapes an empty batch.
    """
    directions = ("up", "right")
    weights = random_weights(2, seed=4)
    images = np.random.default_rng(5).normal(size=(batch, 4, 5, FEATURES))
    signature = tf.TensorSpec((None, 4, 5, FEATURES), tf.float32)

    def run(images):
        weights32 = (tf.constant(w, tf.float32) for w in weights)
        return sweep.sweeps(images, *weights32, directions, implementation)

    @tf.function(input_signature=[signature])
    def input_gradient(images):
        return tf.gradients(tf.reduce_sum(run(images) ** 2), images)[0]

    np.testing.assert_allclose(
        tf.function(run, input_signature=[signature])(images.astype(np.float32)).numpy(),
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


def test_unrolled_loop_needs_a_static_map_size():
    weights = [tf.constant(w, tf.float32) for w in random_weights(1, seed=6)]

    @tf.function(input_signature=[tf.TensorSpec((2, None, 5, FEATURES))])
    def run(images):
        return sweep.unrolled_sweeps(images, *weights, ("down",))

    with pytest.raises(ValueError, match=r"Received: input_shape=\(2, None, 5, 3\)"):
        run.get_concrete_function()


def loop_ops(layer, signature, jit_compile=False):
    """The number of `tf.scan` loops in `layer`'s traced forward graph."""
    function = tf.function(layer, jit_compile=jit_compile, input_signature=[signature])
    graph = function.get_concrete_function().graph
    return sum(op.type in ("While", "StatelessWhile") for op in graph.get_operations())


def traced_implementation(layer, signature, jit_compile=False):
    """The sweeps of a graph without loops are unrolled."""
    return "scanned" if loop_ops(layer, signature, jit_compile) else "unrolled"


LIMIT = sweep.AUTO_MAX_UNROLLED_LINES


@pytest.mark.parametrize(
    "implementation, shape, jit_compile, expected",
    [
        ("auto", (None, LIMIT, 5, 2), False, "unrolled"),
        ("auto", (4, LIMIT + 1, 5, 2), False, "scanned"),  # too many lines
        ("auto", (4, 5, LIMIT + 1, 2), False, "scanned"),  # too many columns
        ("auto", (4, None, 5, 2), False, "scanned"),  # unknown size
        ("auto", (4, 5, 5, 2), True, "scanned"),  # XLA
        ("unrolled", (4, LIMIT + 1, 5, 2), False, "unrolled"),
        ("unrolled", (4, 5, 5, 2), True, "unrolled"),
        ("scanned", (None, 4, 5, 2), False, "scanned"),
    ],
)
def test_which_implementation_runs(implementation, shape, jit_compile, expected):
    layer = SpatialDependency(3, num_features=2, directions=("down", "left"))
    layer.implementation = implementation
    signature = tf.TensorSpec(shape)
    layer.build(signature.shape)
    assert traced_implementation(layer, signature, jit_compile) == expected


@pytest.mark.parametrize("implementation", sweep.IMPLEMENTATIONS)
def test_auto_implementation_context_sets_only_auto_layers(implementation):
    layer = SpatialDependency(3, num_features=2, directions=2, implementation=implementation)
    signature = tf.TensorSpec((None, 4, 5, 3))
    layer.build(signature.shape)
    with sweep.auto_implementation("scanned"):
        inside = traced_implementation(layer, signature)
    outside = traced_implementation(layer, signature)
    assert inside == ("scanned" if implementation == "auto" else implementation)
    assert outside == ("unrolled" if implementation == "auto" else implementation)


def test_the_layers_choices_are_auto_and_the_tensorflow_loops():
    # IMPLEMENTATIONS is written out so that the layers need not import TensorFlow.
    assert sweep.IMPLEMENTATIONS == ("auto", *sweep.LOOPS)


def test_auto_implementation_rejects_auto():
    with pytest.raises(ValueError, match=r"Received: implementation='auto'$"):
        sweep.auto_implementation("auto")


def test_implementations_give_the_same_layer_outputs_and_gradients():
    images = np.random.default_rng(7).normal(size=(3, 6, 5, 4))
    results = []
    for implementation in ("unrolled", "scanned"):
        layer = SpatialDependency(
            3, num_features=4, directions=4, implementation=implementation, dtype="float64"
        )
        layer.build(images.shape)
        rng = np.random.default_rng(8)
        layer.set_weights([rng.normal(scale=0.5, size=w.shape) for w in layer.weights])

        @tf.function
        def run(images, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(images)
                loss = tf.reduce_sum(layer(images) ** 2)
            return [loss, *tape.gradient(loss, [images, *layer.trainable_weights])]

        results.append(run(tf.constant(images)))
    for unrolled, scanned in zip(*results, strict=True):
        np.testing.assert_allclose(unrolled, scanned, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "batch, halves",
    [
        (256, True),  # 128 images x 8 positions x 16 features per half line
        (254, False),  # one image fewer: the batch is swept whole
        (1, False),  # one image
        (None, True),  # unknown batch: counted as long
    ],
)
def test_large_batches_are_swept_in_halves_in_cpu_graphs(batch, halves):
    layer = SpatialDependency(3, num_features=16, directions=1, implementation="scanned")
    signature = tf.TensorSpec((batch, 8, 8, 2))
    layer.build(signature.shape)
    # One forward loop per half and direction.
    assert loop_ops(layer, signature) == (2 if halves else 1)
    with sweep.whole_batch():
        assert loop_ops(layer, signature) == 1
    assert loop_ops(layer, signature, jit_compile=True) == 1  # XLA: never halved
