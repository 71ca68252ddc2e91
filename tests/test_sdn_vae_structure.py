"""Tests of the SDN-VAE's structure: its SDN plan, the ladder's top-down steps, the
weight average behind every evaluation method, and saved weights."""

import inspect
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sdn.layers import DIRECTIONS
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.models import PRESETS
from keras_sdn.models import SDNVAE
from keras_sdn.models import make_sdn_plan
from keras_sdn.models._ladder_blocks import LadderBlock

SMALL = dict(
    image_shape=(8, 8, 3),
    num_bits=5,
    hidden_channels=8,
    latent_channels=2,
    num_layers=3,
    downsample_at=(0, 1),
    num_mixtures=2,
    sdn_max_scale=2,  # ResSDN in the top block only: keeps tracing short
    sdn_features=8,
    sdn_features_decrement=0,
    sdn_directions=1,
    iaf_hidden_channels=8,
    context_channels=8,
    ema_decay=0.5,
    seed=3,
)
PLAN_ARGUMENTS = (
    "image_shape",
    "num_layers",
    "downsample_at",
    "use_sdn",
    "sdn_min_scale",
    "sdn_max_scale",
    "sdn_features",
    "sdn_features_decrement",
    "sdn_directions",
    "sdn_direction_order",
)
NARROW = dict(hidden_channels=2, latent_channels=1, num_mixtures=1, context_channels=2)


def round_robin_reference(config):
    """`[(layer name, scale, directions, features)]`: the directions cycled in
    `sdn_direction_order` over the ResSDN layers, blocks from the image up
    (`down_in`, `down_out`), then the output layer with four."""
    height, width, _ = config["image_shape"]
    scale = max(height, width)
    slots = []
    for index in range(config["num_layers"]):
        slots += [(f"ladder_block_{index}/{part}", scale) for part in ("down_in", "down_out")]
        if index in config["downsample_at"]:
            scale //= 2
    slots.append(("output_layer", max(height, width)))
    cycle = itertools.cycle(config["sdn_direction_order"])
    reference = []
    for name, scale in slots:
        if config["use_sdn"] and config["sdn_min_scale"] <= scale <= config["sdn_max_scale"]:
            count = len(DIRECTIONS) if name == "output_layer" else config["sdn_directions"]
            halvings = round(np.log2(max(height, width) / scale))
            features = config["sdn_features"] - config["sdn_features_decrement"] * halvings
            reference.append((name, scale, tuple(itertools.islice(cycle, count)), features))
    return reference


def model_layer(model, name):
    """The layer `ladder_block_<i>/<part>` or `output_layer` of `model`."""
    block, _, part = name.partition("/")
    layer = model.get_layer(block)
    return getattr(layer, part) if part else layer


def preset_arguments(name, **overrides):
    """The constructor's arguments for preset `name`: its values over the defaults."""
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(SDNVAE).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **PRESETS[name], **overrides}


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("order", [None, ("up", "down", "left", "right")])
def test_sdn_plan_is_the_round_robin_of_every_preset(name, order):
    overrides = {} if order is None else {"sdn_direction_order": order}
    arguments = preset_arguments(name, **overrides)
    config = {key: arguments[key] for key in PLAN_ARGUMENTS}
    plan = make_sdn_plan(**config)
    assert plan, "every preset has ResSDN layers"
    assert [tuple(entry) for entry in plan] == round_robin_reference(config)


def test_sdn_plan_is_what_the_layers_get():
    model = SDNVAE.from_preset("cifar10", **NARROW, sdn_features=4, sdn_features_decrement=1)
    plan = model.sdn_plan()
    assert plan == make_sdn_plan(**{key: getattr(model, key) for key in PLAN_ARGUMENTS})
    assert {entry.features for entry in plan} == {2, 3, 4}
    planned = {entry.layer for entry in plan}
    for entry in plan:
        layer = model_layer(model, entry.layer)
        assert isinstance(layer, ResidualSpatialDependency)
        assert tuple(layer.get_config()["directions"]) == entry.directions
        assert layer.get_config()["num_features"] == entry.features
    candidates = [f"{b.name}/{part}" for b in model.blocks for part in ("down_in", "down_out")]
    for name in candidates + ["output_layer"]:
        if name not in planned:
            assert not isinstance(model_layer(model, name), ResidualSpatialDependency)
    assert SDNVAE.from_preset("tiny", **NARROW, use_sdn=False).sdn_plan() == ()


def test_summary_prints_the_sdn_plan():
    model = SDNVAE(**SMALL)
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    assert "ladder_block_2" in text  # Keras' table of layers
    plan_text = text[text.index("SDN plan:") :]
    for entry in model.sdn_plan():
        row = next(line for line in plan_text.splitlines() if line.startswith(entry.layer + " "))
        assert row.split()[1:3] == [str(entry.scale), str(entry.features)]
        assert row.endswith(", ".join(entry.directions))


@pytest.fixture(scope="module")
def trained():
    """A model after three updates: its averaged weights differ from its weights."""
    keras.utils.set_random_seed(1)
    model = SDNVAE(**SMALL)
    model.compile(optimizer=keras.optimizers.Adamax(1e-2))
    images = np.random.default_rng(0).integers(0, 32, (24, 8, 8, 3)).astype(np.uint8)
    model.fit(tf.data.Dataset.from_tensor_slices(images).batch(8), epochs=1, verbose=0)
    return model, images[:4]


def seed_states(model):
    return [v for v in model.variables if "seed_generator" in v.path]


def evaluations(model, images, seeds):
    """Every evaluation and generation method, each from the random state `seeds`."""

    def replayed(function):
        for state, value in zip(seed_states(model), seeds):
            state.assign(value)
        return function()

    return {
        "call": replayed(lambda: model(images)["elbo"]),
        "log_likelihood": replayed(lambda: model.log_likelihood(images, num_samples=2)),
        "sample": replayed(lambda: model.sample(2, temperature=0.9, sample_pixels=True)),
        "encode": replayed(lambda: model.encode(images)),
        "encode_sample": replayed(lambda: model.encode(images, sample=True)),
        "reconstruct": replayed(lambda: model.reconstruct(images)),
        "elbo_and_reconstruction": replayed(lambda: model.elbo_and_reconstruction(images)),
        "sample_around": replayed(lambda: model.sample_around(images[0], 1, num_samples=2)),
        "interpolate": replayed(lambda: model.interpolate(images[0], images[1], 2, steps=3)),
    }


def assert_same(first, second):
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), first, second
    )


def test_every_evaluation_method_uses_the_averaged_weights(trained):
    model, images = trained
    weights = [w.numpy() for w in model.trainable_weights]
    averages = [a.numpy() for a in model.averaged_weights]
    assert not np.allclose(weights[0], averages[0])
    seeds = [state.numpy() for state in seed_states(model)]
    # A model whose trained weights are the averages gives the same results.
    copy = SDNVAE.from_config(model.get_config())
    for variables in ("trainable_weights", "averaged_weights"):
        for variable, value in zip(getattr(copy, variables), averages):
            variable.assign(value)
    assert_same(evaluations(model, images, seeds), evaluations(copy, images, seeds))
    # The model's own weights are untouched.
    for weight, value in zip(model.trainable_weights, weights):
        np.testing.assert_array_equal(weight.numpy(), value)


@pytest.mark.parametrize("extension", [".keras", ".weights.h5"])
def test_saved_weights_reload_into_a_new_model(trained, tmp_path, extension):
    model, images = trained
    path = str(tmp_path / f"model{extension}")
    if extension == ".keras":
        model.save(path)
        loaded = keras.models.load_model(path)
    else:
        model.save_weights(path)
        loaded = SDNVAE.from_config(model.get_config())
        loaded.load_weights(path)
    assert [v.path for v in loaded.variables] == [v.path for v in model.variables]
    # Keras saves the weights (the averages included), not the random seeds.
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(original.numpy(), restored.numpy())
    seeds = [state.numpy() for state in seed_states(model)]
    assert_same(evaluations(model, images, seeds), evaluations(loaded, images, seeds))


def test_top_down_steps_agree():
    """A posterior step's latents, given back, give the posterior step's outputs;
    the posterior mean and the prior at temperature 0 are deterministic."""
    block = LadderBlock(8, 2, 8, resample=True, top=True, seed=1)
    block.build((None, 8, 8, 8))
    images = tf.random.stateless_normal((4, 8, 8, 8), seed=(1, 2))
    _, terms = block.up(images)
    inputs = tf.random.stateless_normal((4, 4, 4, 8), seed=(3, 4))
    posterior = block.down_posterior(inputs, terms)
    assert posterior.outputs.shape == (4, 8, 8, 8) and posterior.latents.shape == (4, 4, 4, 2)
    assert posterior.kl.shape == (4,)
    given = block.down_given(inputs, posterior.latents)
    np.testing.assert_allclose(given.outputs, posterior.outputs, rtol=1e-5, atol=1e-6)
    assert given.kl is None
    mean = block.down_posterior(inputs, terms, sample=False).latents
    np.testing.assert_array_equal(mean, block.down_posterior(inputs, terms, sample=False).latents)
    assert not np.allclose(mean, block.down_posterior(inputs, terms).latents)
    prior_mean = block.down_prior(inputs, temperature=0.0).latents
    np.testing.assert_array_equal(prior_mean, block.down_prior(inputs, temperature=0.0).latents)
    assert not np.allclose(prior_mean, block.down_prior(inputs).latents)
    # Shared noise: the same latents for the same inputs across the batch.
    same_inputs = tf.repeat(inputs[:1], 4, axis=0)
    shared = block.down_prior(same_inputs, shared_noise=True).latents.numpy()
    np.testing.assert_allclose(shared, np.repeat(shared[:1], 4, axis=0), rtol=1e-6)
    independent = block.down_prior(same_inputs).latents.numpy()
    assert not np.allclose(independent[0], independent[1])
