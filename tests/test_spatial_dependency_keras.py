"""The spatial dependency layers as Keras 3 citizens: models, serialization,
shapes, training, mixed precision, XLA, export, parameter count, bad input."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sdn
from keras_sdn import ResidualSpatialDependency
from keras_sdn import SpatialDependency

LAYERS = [SpatialDependency, ResidualSpatialDependency]


def images(shape=(2, 6, 5, 3), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("layer_class", LAYERS)
def test_sequential_and_functional_models(layer_class):
    x = images()
    sequential = keras.Sequential(
        [keras.Input((None, None, 3)), layer_class(4, num_features=6, directions=2)]
    )
    inputs = keras.Input((None, None, 3))
    outputs = layer_class(4, num_features=6, upsample=2)(inputs)
    functional = keras.Model(inputs, outputs)

    assert sequential(x).shape == (2, 6, 5, 4)
    assert functional(x).shape == (2, 12, 10, 4)
    assert functional.output.shape == (None, None, None, 4)


def test_top_level_and_layers_namespace_agree():
    assert keras_sdn.SpatialDependency is keras_sdn.layers.SpatialDependency
    assert keras_sdn.ResidualSpatialDependency is keras_sdn.layers.ResidualSpatialDependency
    assert keras_sdn.WeightNormalization is keras_sdn.layers.WeightNormalization


@pytest.mark.parametrize("layer_class", LAYERS)
def test_get_config_round_trips_every_argument(layer_class):
    layer = layer_class(
        7,
        num_features=5,
        directions=["right", "up", "right"],
        kernel_size=3,
        upsample=2,
        activation="relu",
        use_bias=False,
        kernel_initializer=keras.initializers.HeNormal(seed=1),
        recurrent_initializer="glorot_normal",
        bias_initializer="ones",
        kernel_regularizer=keras.regularizers.L2(1e-3),
        recurrent_regularizer=keras.regularizers.L1(1e-4),
        bias_regularizer="l2",
        activity_regularizer="l1",
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        recurrent_constraint="non_neg",
        bias_constraint="unit_norm",
        weight_normalization=True,
        implementation="scanned",
        name="custom",
    )
    config = layer.get_config()
    restored = layer_class.from_config(config)

    assert restored.get_config() == config
    assert config["directions"] == ["right", "up", "right"]
    assert (config["filters"], config["num_features"], config["kernel_size"]) == (7, 5, 3)
    assert config["upsample"] == 2 and config["use_bias"] is False
    assert config["weight_normalization"] is True
    assert config["implementation"] == "scanned"
    assert json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))


@pytest.mark.parametrize(
    "directions, expected",
    [
        (1, ("up",)),
        (3, ("up", "left", "right")),
        ("down", ("down",)),
        (("left", "up"), ("left", "up")),
    ],
)
def test_directions_forms(directions, expected):
    assert SpatialDependency(2, directions=directions).directions == expected


@pytest.mark.parametrize("weight_normalization", [False, True])
@pytest.mark.parametrize("layer_class", LAYERS)
def test_saved_keras_model_gives_identical_outputs(layer_class, weight_normalization, tmp_path):
    options = dict(weight_normalization=weight_normalization)
    inputs = keras.Input((None, None, 3))
    hidden = layer_class(4, num_features=5, directions=3, activation="tanh", **options)(inputs)
    outputs = layer_class(2, num_features=3, directions=["down"], upsample=2, **options)(hidden)
    model = keras.Model(inputs, outputs)
    x = images((2, 4, 6, 3))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)

    np.testing.assert_array_equal(restored(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("layer_class", LAYERS)
@pytest.mark.parametrize(
    "input_shape, upsample, expected",
    [
        ((None, None, None, 3), 1, (None, None, None, 8)),
        ((4, 7, None, 3), 2, (4, 14, None, 8)),
        ((None, 5, 9, 3), 3, (None, 15, 27, 8)),
    ],
)
def test_output_shapes(layer_class, input_shape, upsample, expected):
    layer = layer_class(8, num_features=4, upsample=upsample)
    assert layer.compute_output_shape(input_shape) == expected
    symbolic = layer(keras.KerasTensor(input_shape))
    assert tuple(symbolic.shape) == expected
    concrete = tuple(5 if size is None else size for size in input_shape)
    assert layer(images(concrete)).shape == tuple(
        size * upsample if i in (1, 2) else size for i, size in enumerate(concrete)
    )[:3] + (8,)


def test_one_by_one_map():
    out = SpatialDependency(3, directions=4)(images((2, 1, 1, 2)))
    assert out.shape == (2, 1, 1, 3) and np.isfinite(out.numpy()).all()


def toy_task(count=64, size=8, seed=0):
    """Targets every pixel to the mean of its column above and at it: a task a
    1x1 convolution cannot solve but a top-to-bottom sweep can."""
    x = np.random.default_rng(seed).uniform(-1, 1, size=(count, size, size, 1)).astype("float32")
    y = np.cumsum(x, axis=1) / np.arange(1, size + 1)[None, :, None, None]
    return x, y.astype("float32")


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_learns_a_toy_task(jit_compile):
    keras.utils.set_random_seed(0)
    x, y = toy_task()
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), SpatialDependency(1, num_features=8, directions=["down"])]
    )
    model.compile(keras.optimizers.Adam(0.02), "mse", jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=16, epochs=25, verbose=0).history["loss"]
    assert history[-1] < 0.2 * history[0]


def test_jit_compiled_forward_and_gradient_match_graph():
    layer = SpatialDependency(4, num_features=6, directions=4, upsample=2)
    x = tf.constant(images((2, 5, 3, 3)))
    layer(x)

    def forward_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return [loss] + tape.gradient(loss, [x] + layer.trainable_weights)

    graph = tf.function(forward_and_gradient)(x)
    xla = tf.function(forward_and_gradient, jit_compile=True)(x)
    for a, b in zip(graph, xla):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("weight_normalization", [False, True])
@pytest.mark.parametrize("layer_class", LAYERS)
def test_mixed_float16_policy(layer_class, weight_normalization):
    layer = layer_class(
        4,
        num_features=8,
        directions=2,
        dtype="mixed_float16",
        weight_normalization=weight_normalization,
    )
    x = tf.constant(images((2, 6, 6, 3)))
    with tf.GradientTape() as tape:
        out = layer(x)
        loss = tf.reduce_mean(tf.cast(out, "float32") ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)

    assert out.dtype == tf.float16
    assert all(w.dtype == "float32" for w in layer.weights)
    assert np.isfinite(out.numpy()).all()
    assert all(np.isfinite(g.numpy()).all() for g in grads)


def sdn_parameter_count(inputs, filters, features, directions, kernel_size, use_bias=True):
    """Project-in k*k*C*F (+F), 12F^2 (+6F) per direction, F*filters (+filters).

    The paper's Section 2 (Algorithm 1: per direction, W_*1 on the position
    and W_*2..4 on the three neighbours of each of the three gates, F x F
    each) and Appendix A.3 (Table 5, "Project phase"); two bias vectors per
    gate as in the authors' GRU cell.
    """
    biases = (features + 6 * features * directions + filters) if use_bias else 0
    return (
        kernel_size**2 * inputs * features
        + 12 * features**2 * directions
        + features * filters
        + biases
    )


@pytest.mark.parametrize(
    "directions, kernel_size, use_bias", [(1, 1, True), (2, 3, True), (4, 1, False)]
)
def test_parameter_count_formula(directions, kernel_size, use_bias):
    layer = SpatialDependency(
        9, num_features=7, directions=directions, kernel_size=kernel_size, use_bias=use_bias
    )
    layer.build((None, None, None, 5))
    assert layer.count_params() == sdn_parameter_count(5, 9, 7, directions, kernel_size, use_bias)


@pytest.mark.parametrize("upsample", [1, 2])
@pytest.mark.parametrize("layer_class", LAYERS)
def test_weight_normalization_keeps_the_initial_outputs(layer_class, upsample):
    """g starts at ||v||: with the same weights, the outputs equal the plain layer's."""
    normalized = layer_class(
        5,
        num_features=6,
        directions=2,
        upsample=upsample,
        bias_initializer="random_normal",
        weight_normalization=True,
    )
    plain = layer_class(5, num_features=6, directions=2, upsample=upsample)
    x = images((2, 4, 5, 3))
    outputs = normalized(x)
    plain.build(x.shape)
    plain.set_weights([w.numpy() for w in normalized.weights if w.name != "g"])
    norms = sorted(tuple(w.shape) for w in normalized.weights if w.name == "g")

    np.testing.assert_allclose(outputs.numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-5)
    # project-in (6 features) and project-out (5 or 10 outputs); the residual convolution (5).
    expected = [(6,), (5,)] if layer_class is SpatialDependency else [(5,), (6,), (10,)]
    assert norms == sorted(expected)


def test_residual_parameter_count():
    layer = ResidualSpatialDependency(6, num_features=5, directions=2)
    layer.build((None, None, None, 4))
    residual_conv = 3 * 3 * 4 * 6 + 6
    assert layer.count_params() == sdn_parameter_count(4, 12, 5, 2, 3) + residual_conv


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "Expected `filters` to be an int >= 1"),
        (dict(filters=4, num_features=-2), "Expected `num_features` to be an int >= 1"),
        (dict(filters=4, directions=["up", "sideways"]), "Expected `directions`"),
        (dict(filters=4, directions=5), r"Expected `directions` to be an int in \[1, 4\]"),
        (dict(filters=4, directions=[]), "Expected `directions`"),
        (dict(filters=4, upsample=0), "Expected `upsample` to be an int >= 1"),
        (dict(filters=4, data_format="channels_first"), "channels_last"),
        (dict(filters=4, weight_normalization="yes"), "Expected `weight_normalization` to be True"),
        (
            dict(filters=4, implementation="fused"),
            r"^Expected `implementation` to be one of \('auto', 'unrolled', 'scanned'\)\. "
            r"Received: implementation='fused'$",
        ),
    ],
)
@pytest.mark.parametrize("layer_class", LAYERS)
def test_bad_arguments_raise_at_construction(layer_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layer_class(**kwargs)


@pytest.mark.parametrize("layer_class", LAYERS)
@pytest.mark.parametrize(
    "shape, message", [((2, 5, 3), "rank 4"), ((None, 4, 4, None), "channel dimension")]
)
def test_bad_input_shapes_raise_at_build(layer_class, shape, message):
    with pytest.raises(ValueError, match=message):
        layer_class(4).build(shape)


EXPORT_CHECK = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    x = np.load(sys.argv[2])
    out = loaded.serve(tf.constant(x)).numpy()
    np.save(sys.argv[3], out)
    print(sorted(name for name in sys.modules if name.startswith("keras_sdn")))
    """
)


@pytest.mark.parametrize("weight_normalization", [False, True])
def test_export_loads_without_keras_sdn(tmp_path, weight_normalization):
    options = dict(weight_normalization=weight_normalization)
    inputs = keras.Input((None, None, 3))
    hidden = ResidualSpatialDependency(4, num_features=5, directions=2, **options)(inputs)
    outputs = SpatialDependency(2, num_features=3, directions=["left"], upsample=2, **options)(
        hidden
    )
    model = keras.Model(inputs, outputs)
    x = images((2, 3, 5, 3))
    export_dir = str(tmp_path / "exported")
    model.export(export_dir, verbose=False)
    np.save(tmp_path / "x.npy", x)

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            EXPORT_CHECK,
            export_dir,
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=True,
    )

    assert result.stdout.strip().splitlines()[-1] == "[]"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("initializer", ["glorot_uniform", keras.initializers.Orthogonal()])
def test_every_kernel_draws_its_own_random_values(initializer):
    # One initializer instance draws its seed once: shared by the kernels, it
    # gave the projections and the sweeps' input weights the same values.
    layer = ResidualSpatialDependency(8, num_features=8, kernel_initializer=initializer)
    layer.build((None, 6, 6, 8))
    kernels = [
        layer.residual.kernel,
        layer.spatial_dependency.project_in.kernel,
        layer.spatial_dependency.project_out.kernel,
        layer.spatial_dependency.kernel,
    ]
    prefixes = [np.abs(np.ravel(k.numpy())[:32]) for k in kernels]
    for index, first in enumerate(prefixes):
        for second in prefixes[index + 1 :]:
            assert abs(np.corrcoef(first, second)[0, 1]) < 0.9
