"""Tests of keras_sdn.models.SDNVAE on tiny models (8x8 images, two ladder layers)."""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sdn.data import load_images
from keras_sdn.layers import DIRECTIONS
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers import SpatialDependency
from keras_sdn.layers import WeightNormalization
from keras_sdn.models import PRESETS
from keras_sdn.models import SDNVAE

NUM_BITS = 5
SMALL = dict(
    image_shape=(8, 8, 3),
    num_bits=NUM_BITS,
    hidden_channels=8,
    latent_channels=2,
    num_layers=2,
    downsample_at=(0,),
    num_mixtures=2,
    sdn_max_scale=4,  # ResSDN in the top block only: keeps tracing short
    sdn_features=8,
    sdn_features_decrement=0,
    sdn_directions=1,
    iaf_hidden_channels=8,
    context_channels=8,
    ema_decay=0.9,
)
DIMENSIONS = 8 * 8 * 3
BATCH = 16


@pytest.fixture(scope="module")
def images():
    dataset = load_images(
        image_size=8, num_bits=NUM_BITS, batch_size=64, num_examples=64, shuffle=False
    )
    return next(iter(dataset)).numpy()


class WeightRecorder(keras.callbacks.Callback):
    """Copies of the trainable weights before training and after every step."""

    def on_train_begin(self, logs=None):
        self.steps = [[w.numpy() for w in self.model.trainable_weights]]

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.numpy() for w in self.model.trainable_weights])


def train(model, images, epochs):
    recorder = WeightRecorder()
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(BATCH)
    history = model.fit(dataset, epochs=epochs, verbose=0, callbacks=[recorder])
    return history.history, recorder.steps


@pytest.fixture(scope="module")
def trained(images):
    keras.utils.set_random_seed(1)
    model = SDNVAE(**SMALL, seed=3)
    model.compile(optimizer=keras.optimizers.Adamax(5e-3))
    history, steps = train(model, images, epochs=4)
    return model, history, steps


def seed_states(model):
    return [v for v in model.non_trainable_variables if "seed_generator" in v.path]


def test_fit_lowers_the_loss_and_reports_consistent_metrics(trained):
    model, history, _ = trained
    # The top (4x4) block is on the SDN path, the 8x8 one is convolutional.
    assert isinstance(model.blocks[1].down_in, ResidualSpatialDependency)
    assert not isinstance(model.blocks[0].down_out, ResidualSpatialDependency)
    assert set(history) == {"loss", "elbo", "kl", "bpd", "skipped_updates"}
    assert history["skipped_updates"][-1] == 0
    assert history["loss"][-1] < history["loss"][0] - 0.1
    elbo, bpd = np.array(history["elbo"]), np.array(history["bpd"])
    np.testing.assert_allclose(bpd, -elbo / (DIMENSIONS * math.log(2.0)), rtol=1e-5)
    # The objective is in nats per image; free bits only ever raise it above
    # the negative ELBO.
    assert np.all(np.array(history["loss"]) >= -elbo - 1e-3)
    assert np.all(np.array(history["kl"]) > 0)


def test_averaged_weights_follow_the_moving_average(trained):
    model, _, steps = trained
    decay = SMALL["ema_decay"]
    expected = [w.astype(np.float64) for w in steps[0]]
    for step, weights in enumerate(steps[1:], start=1):
        rate = min(decay, (1.0 + step) / (10.0 + step))
        expected = [rate * a + (1.0 - rate) * w for a, w in zip(expected, weights)]
    assert len(model.averaged_weights) == len(expected)
    for average, reference in zip(model.averaged_weights, expected):
        np.testing.assert_allclose(average.numpy(), reference, rtol=1e-4, atol=1e-6)
    assert not np.allclose(model.averaged_weights[1].numpy(), steps[-1][1])


def test_call_shapes_and_dtypes(trained, images):
    model, _, _ = trained
    outputs = model(images[:5])
    assert set(outputs) == {"elbo", "kl"}
    for value in outputs.values():
        assert value.shape == (5,) and value.dtype == tf.float32
        assert np.all(np.isfinite(value))
    assert np.all(outputs["elbo"].numpy() < 0)


def test_kl_is_nonnegative_on_average(images):
    keras.utils.set_random_seed(2)
    model = SDNVAE(**SMALL)
    repeated = np.repeat(images[:4], 64, axis=0)
    kl = model(repeated)["kl"].numpy().reshape(4, 64)
    per_image = kl.mean(axis=1)
    standard_error = kl.std(axis=1) / 8.0
    assert np.all(per_image > 3.0 * standard_error)


def test_log_likelihood_with_one_sample_is_the_elbo(trained, images):
    model, _, _ = trained
    states = [v.numpy() for v in seed_states(model)]
    elbo = model(images[:8])["elbo"].numpy()
    for variable, state in zip(seed_states(model), states):
        variable.assign(state)
    log_likelihood = model.log_likelihood(images[:8], num_samples=1).numpy()
    np.testing.assert_allclose(log_likelihood, elbo, rtol=1e-5)
    # The random state advances: the next estimate uses new posterior samples.
    assert not np.allclose(model.log_likelihood(images[:8], num_samples=1).numpy(), elbo)


def test_importance_weighted_bound_is_not_below_the_elbo(trained, images):
    model, _, _ = trained
    batch = images[:16]
    elbo = np.mean([model.log_likelihood(batch, num_samples=1).numpy() for _ in range(16)], axis=0)
    weighted = model.log_likelihood(batch, num_samples=16, max_batch_size=64).numpy()
    assert weighted.shape == (16,)
    assert weighted.mean() >= elbo.mean()
    # Each estimate belongs to its own image: the gaps are small next to the
    # differences between images.
    assert np.abs(weighted - elbo).max() < 0.25 * (elbo.max() - elbo.min())


def test_bits_per_dim_matches_its_definition(trained):
    model, _, _ = trained
    log_likelihood = np.array([-100.0, -2000.5, 0.0], np.float32)
    expected = -log_likelihood.astype(np.float64) / (DIMENSIONS * np.log(2.0))
    np.testing.assert_allclose(model.bits_per_dim(log_likelihood), expected, rtol=1e-6)


def test_generation_shapes_dtypes_and_ranges(trained, images):
    model, _, _ = trained
    max_value = 2**NUM_BITS - 1
    for generated, count in (
        (model.sample(3, temperature=0.7), 3),
        (model.sample(2, sample_pixels=True), 2),
        (model.reconstruct(images[:4]), 4),
        (model.sample_around(images[0], fixed_layers=1, temperature=0.9, num_samples=3), 3),
        (model.interpolate(images[0], images[1], fixed_layers=1, steps=4, temperature=0.8), 4),
    ):
        assert generated.shape == (count, 8, 8, 3) and generated.dtype == tf.uint8
        assert np.max(generated) <= max_value
    codes = model.encode(images[:2], sample=True)
    assert [tuple(z.shape) for z in codes] == [(2, 4, 4, 2), (2, 4, 4, 2)]


def test_posterior_means_are_deterministic_unlike_posterior_samples(trained, images):
    model, _, _ = trained
    means = [z.numpy() for z in model.encode(images[:2])]
    again = [z.numpy() for z in model.encode(images[:2])]
    samples = [z.numpy() for z in model.encode(images[:2], sample=True)]
    assert [m.shape for m in means] == [s.shape for s in samples]
    for mean, repeat, sample in zip(means, again, samples):
        np.testing.assert_array_equal(mean, repeat)
        assert not np.allclose(mean, sample)


def test_sample_around_with_every_layer_fixed_is_deterministic(trained, images):
    model, _, _ = trained
    around = model.sample_around(images[0], fixed_layers=SMALL["num_layers"], num_samples=3).numpy()
    np.testing.assert_array_equal(around[0], around[1])
    np.testing.assert_array_equal(around[0], around[2])


def test_save_and_load_round_trip(trained, images, tmp_path):
    model, _, _ = trained
    path = tmp_path / "sdn_vae.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SDNVAE)
    assert loaded.get_config() == model.get_config()
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    for original, restored in zip(seed_states(model), seed_states(loaded)):
        restored.assign(original.numpy())
    np.testing.assert_allclose(loaded(images[:4])["elbo"], model(images[:4])["elbo"], rtol=1e-5)


def test_baseline_has_no_spatial_dependency_layers_and_trains(images):
    keras.utils.set_random_seed(4)
    model = SDNVAE(**{**SMALL, "use_sdn": False})
    layers = model._flatten_layers()
    assert not any(isinstance(layer, ResidualSpatialDependency) for layer in layers)
    model.compile(optimizer=keras.optimizers.Adamax(5e-3))
    history, _ = train(model, images, epochs=3)
    assert history["loss"][-1] < history["loss"][0] - 0.1


def _sdn_layers(model):
    """The ResSDN layers of the top-down path in the order directions are handed out."""
    layers = []
    for block in model.blocks:
        layers += [block.down_in, block.down_out]
    layers.append(model.output_layer)
    return [layer for layer in layers if isinstance(layer, ResidualSpatialDependency)]


def test_sdn_scales_features_and_round_robin_directions():
    small = dict(
        hidden_channels=4,
        latent_channels=1,
        num_mixtures=1,
        iaf_hidden_channels=2,
        context_channels=2,
    )
    model = SDNVAE.from_preset("cifar10", sdn_features=20, sdn_features_decrement=6, **small)
    # Output scale of each block: a block that halves the resolution bottom-up
    # (5 and 10) restores it top-down and counts at the larger scale.
    scales = [32] * 6 + [16] * 5 + [8] * 4
    features = {32: 20, 16: 14, 8: 8}
    for block, scale in zip(model.blocks, scales):
        assert block.down_in.num_features == features[scale]
        assert block.down_out.num_features == features[scale]
    handed_out = [name for layer in _sdn_layers(model) for name in layer.directions]
    assert len(handed_out) == 15 * 2 * 2 + 4
    order = ("right", "left", "down", "up")  # the authors' _get_dirs order
    assert handed_out == list(itertools.islice(itertools.cycle(order), len(handed_out)))
    # Two directions a layer: the rows both ways, then the columns both ways.
    first, second = _sdn_layers(model)[:2]
    assert first.directions == ("right", "left") and second.directions == ("down", "up")
    custom = SDNVAE.from_preset("cifar10", sdn_direction_order=DIRECTIONS, **small)
    handed_out = [name for layer in _sdn_layers(custom) for name in layer.directions]
    assert handed_out == list(itertools.islice(itertools.cycle(DIRECTIONS), len(handed_out)))
    with pytest.raises(ValueError, match="sdn_direction_order"):
        SDNVAE.from_preset("cifar10", sdn_direction_order=("up", "up", "left", "right"), **small)

    celeba = SDNVAE.from_preset("celebahq256", sdn_features=4, **small)
    assert celeba.num_bits == 5
    sdn_blocks = [isinstance(block.down_in, ResidualSpatialDependency) for block in celeba.blocks]
    # Blocks 0..4 output 256x256, 5..7 128x128: convolutions above sdn_max_scale=64.
    assert sdn_blocks == [False] * 8 + [True] * 9
    assert not isinstance(celeba.output_layer, ResidualSpatialDependency)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_give_their_arguments(name):
    small = dict(hidden_channels=2, sdn_features=2, sdn_features_decrement=0, context_channels=2)
    config = SDNVAE.from_preset(name, **small).get_config()
    for key, value in PRESETS[name].items():
        if key not in small:
            assert config[key] == (list(value) if isinstance(value, tuple) else value)


def test_config_round_trip():
    config = SDNVAE(
        **SMALL,
        use_sdn=False,
        free_bits=0.5,
        weight_normalization=False,
        kernel_initializer="he_normal",
        skip_factor=None,
        iaf_ordering="channels",
        seed=7,
        name="vae",
    ).get_config()
    assert SDNVAE.from_config(config).get_config() == config


def test_every_convolution_is_weight_normalised_but_not_the_sweeps():
    model = SDNVAE(**SMALL)
    wrapped = [
        layer.layer for layer in model._flatten_layers() if isinstance(layer, WeightNormalization)
    ]
    plain = [
        layer
        for layer in model._flatten_layers()
        if isinstance(
            layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)
        )
        and not any(layer is inner for inner in wrapped)
    ]
    assert not plain
    # Per block: up_in, up_out (not in the top block), down_in and down_out as
    # convolutions or ResSDN layers (project-in, project-out, residual
    # convolution each); then the input and output layers.
    blocks = SMALL["num_layers"]
    sdn_layers = len(_sdn_layers(model))
    expected = 2 * blocks - 1 + 3 * sdn_layers + (2 * blocks - sdn_layers) + 2
    if isinstance(model.output_layer, ResidualSpatialDependency):
        expected += 2
    assert len(wrapped) == expected
    assert all(block.iaf_network.weight_normalization for block in model.blocks)
    # The gate weights of the sweeps are plain variables of the SDN layers.
    sweeps = [layer for layer in model._flatten_layers() if isinstance(layer, SpatialDependency)]
    assert sweeps and all(not isinstance(layer.kernel, keras.layers.Layer) for layer in sweeps)


def test_kernels_start_orthogonal():
    model = SDNVAE(**SMALL, weight_normalization=False)
    kernel = model.input_layer.kernel.numpy().reshape(-1, SMALL["hidden_channels"])
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(SMALL["hidden_channels"]), atol=1e-5)


def poisoned_sdn_vae(poison, **kwargs):
    """An SDNVAE whose objective is multiplied by `poison` (1, or NaN to inject NaN gradients)."""

    class PoisonedSDNVAE(SDNVAE):
        def _objective(self, log_likelihood, kls):
            return super()._objective(log_likelihood, kls) * poison

    return PoisonedSDNVAE(**kwargs)


def test_an_update_with_a_nan_gradient_is_skipped_and_counted(images):
    poison = tf.Variable(1.0, trainable=False)
    model = poisoned_sdn_vae(poison, **{**SMALL, "use_sdn": False}, seed=2)
    model.compile(optimizer=keras.optimizers.Adamax(5e-3))
    batch = images[:BATCH]
    first = model.train_on_batch(batch, return_dict=True)
    assert first["skipped_updates"] == 0 and int(model.optimizer.iterations) == 1
    weights = [w.numpy() for w in model.trainable_weights]
    averages = [a.numpy() for a in model.averaged_weights]

    poison.assign(float("nan"))
    poisoned = model.train_on_batch(batch, return_dict=True)
    assert poisoned["skipped_updates"] == 1
    assert int(model.optimizer.iterations) == 1
    for before, weight in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(before, weight.numpy())
    for before, average in zip(averages, model.averaged_weights):
        assert np.all(np.isfinite(average.numpy()))
        np.testing.assert_array_equal(before, average.numpy())

    poison.assign(1.0)
    healthy = model.train_on_batch(batch, return_dict=True)
    assert healthy["skipped_updates"] == 1 and int(model.optimizer.iterations) == 2
    assert all(np.all(np.isfinite(w.numpy())) for w in model.trainable_weights)
    assert not np.array_equal(weights[0], model.trainable_weights[0].numpy())


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="Expected `name` to be one of"):
        SDNVAE.from_preset("mnist")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_shape": (8, 8)}, "image_shape"),
        ({"image_shape": (7, 7, 3)}, "divisible"),
        ({"num_bits": 9}, "num_bits"),
        ({"downsample_at": (2,)}, "downsample_at"),
        ({"sdn_directions": 5}, "sdn_directions"),
        ({"sdn_min_scale": 16}, "sdn_min_scale"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"free_bits": -1.0}, "free_bits"),
        ({"sdn_features_decrement": 8, "downsample_at": (0, 1)}, "sdn_features_decrement"),
        ({"weight_normalization": "yes"}, "weight_normalization"),
        ({"skip_factor": 1.0}, "skip_factor"),
        ({"iaf_ordering": "columns"}, "iaf_ordering"),
        ({"use_sdn": 1}, "use_sdn"),
    ],
)
def test_invalid_constructor_arguments_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        SDNVAE(**{**SMALL, **overrides})


def test_invalid_method_arguments_raise(trained, images):
    model, _, _ = trained
    with pytest.raises(ValueError, match="images"):
        model.log_likelihood(images[:2, :4, :4])
    with pytest.raises(ValueError, match="num_samples"):
        model.log_likelihood(images[:2], num_samples=0)
    for temperature in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            model.sample(2, temperature=temperature)
    with pytest.raises(ValueError, match="fixed_layers"):
        model.sample_around(images[0], fixed_layers=3)
    with pytest.raises(ValueError, match="fixed_layers"):
        model.interpolate(images[0], images[1], fixed_layers=0)
    with pytest.raises(ValueError, match="input_shape"):
        model.build((None, 16, 16, 3))


def test_mixed_precision_training(images):
    # The convolutional path keeps this fast; the spatial dependency layers'
    # own half-precision computation is tested with the layers.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(5)
        model = SDNVAE(**SMALL, use_sdn=False)
        model.compile()
        history, _ = train(model, images[:32], epochs=1)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        # Every float variable is float32; the update skipper also counts in int64.
        assert all(w.dtype in ("float32", "int64") for w in model.weights)
        assert all(w.dtype == "float32" for w in model.trainable_weights)
        assert np.isfinite(history["loss"][0])
        elbo = model(images[:4])["elbo"]
        assert elbo.dtype == tf.float32 and np.all(np.isfinite(elbo))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_elbo_and_reconstruction_is_one_pass_of_call_and_reconstruct():
    """Both come from one posterior sample: with the latent noise replayed,
    they equal `model(images)["elbo"]` and `reconstruct(images)`."""
    model = SDNVAE(
        image_shape=(8, 8, 3),
        hidden_channels=8,
        latent_channels=2,
        num_layers=2,
        downsample_at=(1,),
        num_mixtures=2,
        sdn_features=4,
        iaf_hidden_channels=8,
        context_channels=8,
        seed=3,
    )
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    model(images)
    states = [
        layer.seed_generator.state
        for layer in model._flatten_layers()
        if hasattr(layer, "seed_generator")
    ]
    initial = [state.numpy() for state in states]

    def replayed(function):
        for state, value in zip(states, initial):
            state.assign(value)
        return function(images)

    elbo, reconstruction = replayed(model.elbo_and_reconstruction)
    np.testing.assert_allclose(elbo, replayed(model)["elbo"], rtol=1e-5)
    np.testing.assert_array_equal(reconstruction, replayed(model.reconstruct))
    assert reconstruction.dtype == tf.uint8 and reconstruction.shape == images.shape
    # Another sample of the latents gives another ELBO.
    assert not np.allclose(model.elbo_and_reconstruction(images)[0], elbo)
