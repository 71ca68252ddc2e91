"""Tests of keras_sdn.models.BetaVAE."""

import json
import math
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from keras_sdn.distributions import DiscretizedLogisticMixture
from keras_sdn.layers import SpatialDependency
from keras_sdn.models import BetaVAE

LATENT_DIM = 3


def make_model(decoder="conv", **kwargs):
    kwargs = {"latent_dim": LATENT_DIM, "sdn_features": 8, "seed": 0, **kwargs}
    model = BetaVAE(decoder=decoder, **kwargs)
    model.build((None, 64, 64, 3))
    return model


def make_images(n=2, seed=0, num_bits=8):
    return np.random.default_rng(seed).integers(0, 2**num_bits, (n, 64, 64, 3), dtype=np.uint8)


def numpy_encoder_outputs(model, images):
    """Posterior mean and log-variance from the encoder network, float64."""
    scaled = images.astype(np.float32) / (2**model.num_bits - 1) * 2 - 1
    outputs = np.asarray(model.encoder_network(scaled), dtype=np.float64)
    return outputs[:, :LATENT_DIM], outputs[:, LATENT_DIM:]


@pytest.mark.parametrize("decoder, observation", [("conv", "global_scale"), ("sdn", "pixel_scale")])
def test_shapes_and_dtypes(decoder, observation):
    model = make_model(decoder, observation=observation)
    images = make_images(3)
    terms = model(images)
    assert terms["reconstruction"].shape == (3,)
    assert terms["kl"].shape == (3,)
    codes = model.encode(images, batch_size=2)
    assert codes.shape == (3, LATENT_DIM)
    decoded = model.decode(codes)
    assert decoded.shape == (3, 64, 64, 3)
    assert decoded.dtype == "uint8"
    params = model.decoder_network(codes)
    per_pixel = 3 if observation == "global_scale" else DiscretizedLogisticMixture.params_size(1, 3)
    assert params.shape == (3, 64, 64, per_pixel)


@pytest.mark.parametrize("num_bits", [8, 5])
def test_global_scale_likelihood_and_mode_against_numpy(num_bits):
    from scipy.special import expit

    model = make_model("conv", num_bits=num_bits)
    model.log_scale_weight.assign(-0.23)
    np.testing.assert_allclose(model.log_scale, -2.3, rtol=1e-6)
    images = make_images(2, seed=10, num_bits=num_bits)
    codes = np.random.default_rng(11).normal(size=(2, LATENT_DIM)).astype(np.float32)
    likelihood = model.observation_distribution(model.decoder_network(codes))

    # Means on the [-1, 1] scale; a logistic over the values, discretized to
    # bins of width 1 whose end bins take the tails.
    top = 2**num_bits - 1
    centre = (np.asarray(model.decoder_network(codes), np.float64) + 1.0) * top / 2
    scale = np.exp(-2.3) * top / 2
    x = images.astype(np.float64)
    upper = np.where(x == top, 1.0, expit((x + 0.5 - centre) / scale))
    lower = np.where(x == 0, 0.0, expit((x - 0.5 - centre) / scale))
    expected = np.sum(np.log(upper - lower), axis=(1, 2, 3))
    np.testing.assert_allclose(likelihood.log_prob(images), expected, rtol=1e-5)
    # The mode rounds the centre; float32 may round the other way right at a .5.
    decided = np.abs(centre - np.floor(centre) - 0.5) > 1e-3
    mode = np.asarray(likelihood.mode())
    np.testing.assert_array_equal(mode[decided], np.clip(np.round(centre), 0, top)[decided])


def test_sdn_decoder_replaces_the_32x32_stage():
    conv, sdn = make_model("conv"), make_model("sdn")
    sdn_layers = [
        layer for layer in sdn.decoder_network.layers if isinstance(layer, SpatialDependency)
    ]
    assert len(sdn_layers) == 1
    layer = sdn_layers[0]
    assert layer.directions == ("up",)
    assert layer.upsample == 2 and layer.num_features == 8 and layer.filters == 32
    assert layer.compute_output_shape((None, 16, 16, 32)) == (None, 32, 32, 32)
    assert not any(isinstance(layer, SpatialDependency) for layer in conv.decoder_network.layers)
    # Only that stage differs: the two decoders have the same number of layers.
    assert len(conv.decoder_network.layers) == len(sdn.decoder_network.layers)


def test_posterior_mean_and_kl_against_numpy():
    model = make_model()
    images = make_images(4, seed=1)
    mean, log_variance = numpy_encoder_outputs(model, images)
    np.testing.assert_allclose(model.encode(images), mean, rtol=1e-5, atol=1e-6)
    expected_kl = 0.5 * np.sum(mean**2 + np.exp(log_variance) - 1.0 - log_variance, axis=1)
    np.testing.assert_allclose(model(images)["kl"], expected_kl, rtol=1e-4, atol=1e-5)


def test_reconstruction_is_the_negative_log_likelihood_of_the_sampled_code():
    model = make_model("sdn")
    # A log-variance of -40 makes the posterior a point mass at its mean.
    dense = model.encoder_network.layers[-1]
    kernel, bias = dense.get_weights()
    bias[LATENT_DIM:] = -40.0
    kernel[:, LATENT_DIM:] = 0.0
    dense.set_weights([kernel, bias])
    images = make_images(2, seed=2)
    likelihood = model.observation_distribution(model.decoder_network(model.encode(images)))
    np.testing.assert_allclose(
        model(images)["reconstruction"], -likelihood.log_prob(images), rtol=1e-5
    )
    assert np.all(np.asarray(model(images)["reconstruction"]) > 0)


def test_beta_warm_up_schedule_and_metric_relations():
    model = make_model(beta=4.0, beta_warmup_steps=4)
    model.compile(optimizer=keras.optimizers.Adamax(1e-4))
    images = make_images(2, seed=3)
    betas = []
    for _ in range(6):
        logs = model.train_on_batch(images, return_dict=True)
        betas.append(float(logs["beta"]))
        assert set(logs) == {"loss", "elbo", "reconstruction", "kl", "beta"}
    np.testing.assert_allclose(betas, [0.0, 1.0, 2.0, 3.0, 4.0, 4.0], rtol=1e-6)
    assert int(model.steps_trained.numpy()) == 6

    logs = model.test_on_batch(images, return_dict=True)
    np.testing.assert_allclose(logs["beta"], 4.0)
    np.testing.assert_allclose(logs["elbo"], -(logs["reconstruction"] + logs["kl"]), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], logs["reconstruction"] + 4.0 * logs["kl"], rtol=1e-5)


def test_without_warm_up_beta_is_constant():
    model = make_model(beta=2.5, beta_warmup_steps=0)
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adamax)
    np.testing.assert_allclose(model.optimizer.learning_rate, 1e-3)
    assert model.optimizer.epsilon == 1e-8
    logs = model.train_on_batch(make_images(2), return_dict=True)
    np.testing.assert_allclose(logs["beta"], 2.5)


@pytest.mark.parametrize("decoder", ["conv", "sdn"])
@pytest.mark.parametrize("observation", ["global_scale", "pixel_scale"])
def test_gradients_reach_every_weight(decoder, observation):
    import tensorflow as tf

    model = make_model(decoder, beta=1.0, observation=observation)
    images = make_images(2, seed=4)
    with tf.GradientTape() as tape:
        terms = model(images)
        loss = tf.reduce_mean(terms["reconstruction"] + terms["kl"])
    gradients = tape.gradient(loss, model.trainable_variables)
    for variable, gradient in zip(model.trainable_variables, gradients):
        assert gradient is not None, variable.path
        assert np.all(np.isfinite(gradient)), variable.path
        assert np.any(np.asarray(gradient) != 0), variable.path


def test_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = make_model(beta=1.0, beta_warmup_steps=0)
    model.compile(optimizer=keras.optimizers.Adamax(3e-3))
    colours = np.random.default_rng(5).integers(0, 256, (8, 1, 1, 3), dtype=np.uint8)
    images = np.broadcast_to(colours, (8, 64, 64, 3))  # flat colours: quick to learn
    before = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)["loss"]
    model.fit(images, batch_size=8, epochs=20, verbose=0)
    after = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert after < 0.95 * before


def test_traverse_sets_one_latent_at_a_time():
    model = make_model()
    image = make_images(1, seed=6)[0]
    values = [-2.0, 0.5, 3.0]
    grid = model.traverse(image, values, dims=[2, 0])
    assert grid.shape == (2, 3, 64, 64, 3) and grid.dtype == "uint8"
    code = np.asarray(model.encode(image[None]))[0]
    for row, dim in enumerate([2, 0]):
        for column, value in enumerate(values):
            expected_code = code.copy()
            expected_code[dim] = value
            np.testing.assert_array_equal(grid[row, column], model.decode(expected_code[None])[0])
    assert model.traverse(image, [1.0]).shape == (LATENT_DIM, 1, 64, 64, 3)


def test_get_config_round_trip():
    model = make_model(
        "sdn", beta=3.0, beta_warmup_steps=7, num_bits=5, observation="pixel_scale", name="vae"
    )
    config = model.get_config()
    for key, value in {
        "latent_dim": LATENT_DIM,
        "decoder": "sdn",
        "beta": 3.0,
        "beta_warmup_steps": 7,
        "channels": 3,
        "num_bits": 5,
        "sdn_features": 8,
        "observation": "pixel_scale",
        "seed": 0,
        "name": "vae",
    }.items():
        assert config[key] == value, key
    clone = BetaVAE.from_config(config)
    assert clone.get_config() == config


def test_save_and_load_round_trip(tmp_path):
    model = make_model("sdn", beta=2.0, beta_warmup_steps=10)
    model.compile(optimizer=keras.optimizers.Adamax(1e-3))
    images = make_images(2, seed=7)
    model.train_on_batch(images)
    model.train_on_batch(images)
    path = str(tmp_path / "beta_vae.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)

    assert isinstance(loaded, BetaVAE) and loaded.get_config() == model.get_config()
    codes = model.encode(images)
    np.testing.assert_allclose(loaded.encode(images), codes, rtol=1e-6)
    np.testing.assert_allclose(
        loaded.decoder_network(codes), model.decoder_network(codes), rtol=1e-6
    )
    assert int(loaded.steps_trained.numpy()) == 2
    assert float(model.log_scale) != 0.0
    np.testing.assert_allclose(loaded.log_scale, model.log_scale)
    np.testing.assert_allclose(loaded.current_beta(), 0.4)
    assert isinstance(loaded.optimizer, keras.optimizers.Adamax)
    assert int(loaded.optimizer.iterations.numpy()) == 2
    logs = loaded.train_on_batch(images, return_dict=True)
    np.testing.assert_allclose(logs["beta"], 0.4)


def test_elbo_and_bits_per_dim():
    model = make_model("sdn")
    images = make_images(3, seed=12)
    terms = model(images)
    negative_elbo = np.asarray(terms["reconstruction"], np.float64) + np.asarray(terms["kl"])
    np.testing.assert_allclose(terms["elbo"], -negative_elbo, rtol=1e-6)
    expected = negative_elbo / (64 * 64 * 3 * math.log(2.0))
    np.testing.assert_allclose(model.bits_per_dim(terms["elbo"]), expected, rtol=1e-6)
    assert model.num_dimensions == 64 * 64 * 3 and model.image_shape == (64, 64, 3)


@pytest.mark.parametrize("num_bits", [8, 5, 1])
def test_display_images_scale_to_8_bits(num_bits):
    model = make_model(num_bits=num_bits)
    values = np.arange(2**num_bits, dtype=np.uint8)
    shown = model.display_images(values)
    assert shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, np.round(values * 255.0 / (2**num_bits - 1)))
    assert shown[0] == 0 and shown[-1] == 255


def test_encode_samples_follow_the_posterior():
    model = make_model()
    images = np.repeat(make_images(1, seed=13), 400, axis=0)
    posterior = model.posterior(images[:1])
    mean = np.asarray(posterior.mean(), np.float64)[0]
    stddev = np.asarray(posterior.stddev(), np.float64)[0]
    samples = np.asarray(model.encode(images, sample=True, batch_size=128), np.float64)
    assert samples.shape == (400, LATENT_DIM)
    np.testing.assert_array_less(np.abs(samples.mean(axis=0) - mean), 4 * stddev / np.sqrt(400))
    np.testing.assert_allclose(samples.std(axis=0), stddev, rtol=0.15)
    np.testing.assert_allclose(model.encode(images[:2]), np.stack([mean, mean]), rtol=1e-5)


def test_reconstruct_decodes_the_posterior_means():
    model = make_model("sdn")
    images = make_images(3, seed=14)
    reconstructions = model.reconstruct(images, batch_size=2)
    assert reconstructions.shape == (3, 64, 64, 3) and reconstructions.dtype == "uint8"
    np.testing.assert_array_equal(reconstructions, model.decode(model.encode(images)))


def test_samples_near_temperature_zero_decode_the_prior_mean():
    model = make_model(observation="pixel_scale")
    samples = model.sample(2, temperature=1e-6)
    assert samples.shape == (2, 64, 64, 3) and samples.dtype == "uint8"
    prior_mean_image = model.decode(np.zeros((1, LATENT_DIM), np.float32))
    np.testing.assert_array_equal(samples, np.repeat(prior_mean_image, 2, axis=0))
    pixels = model.sample(2, temperature=1e-6, sample_pixels=True)
    assert pixels.shape == (2, 64, 64, 3) and np.any(np.asarray(pixels) != np.asarray(samples))
    for temperature in (0.0, float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            model.sample(2, temperature=temperature)
    with pytest.raises(ValueError, match="num_images"):
        model.sample(0)


def test_configs_saved_with_former_argument_names_load(tmp_path):
    """`sdn_num_features`, the SDN width's name before it was SDNVAE's `sdn_features`."""
    model = make_model("sdn")
    config = model.get_config()
    former = {**config, "sdn_num_features": config["sdn_features"]}
    del former["sdn_features"]
    assert BetaVAE.from_config(former).get_config() == config

    path = tmp_path / "model.keras"
    model.save(path)
    former_path = tmp_path / "former.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(former_path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                saved = json.loads(data)
                saved["config"]["sdn_num_features"] = saved["config"].pop("sdn_features")
                data = json.dumps(saved)
            target.writestr(item, data)
    loaded = keras.saving.load_model(former_path)
    assert loaded.get_config() == config
    images = make_images(2, seed=15)
    np.testing.assert_array_equal(loaded.encode(images), model.encode(images))


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"decoder": "pixelcnn"}, "decoder"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"beta": -1.0}, "beta"),
        ({"beta": "4"}, "beta"),
        ({"beta_warmup_steps": -1}, "beta_warmup_steps"),
        ({"beta_warmup_steps": 2.5}, "beta_warmup_steps"),
        ({"channels": 0}, "channels"),
        ({"num_bits": 9}, "num_bits"),
        ({"sdn_features": 0}, "sdn_features"),
        ({"observation": "gaussian"}, "observation"),
    ],
)
def test_bad_constructor_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        BetaVAE(**kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="images"):
        BetaVAE(latent_dim=2).build((None, 32, 32, 3))
    model = make_model()
    with pytest.raises(ValueError, match="loss"):
        model.compile(loss="mse")
    image = make_images(1)[0]
    with pytest.raises(ValueError, match="image"):
        model.traverse(image[None], [0.0])
    with pytest.raises(ValueError, match="values"):
        model.traverse(image, [])
    with pytest.raises(ValueError, match="dims"):
        model.traverse(image, [0.0], dims=[LATENT_DIM])
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(make_images(2), batch_size=0)


def one_sgd_step(policy, weights, decoder, images, loss_scale=None):
    """Trainable weights after one SGD step from `weights` under a dtype policy."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = make_model(decoder)
        for variable, value in zip(model.trainable_variables, weights):
            variable.assign(value)
        optimizer = keras.optimizers.SGD(1e-6)
        if loss_scale is not None:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=loss_scale)
        model.compile(optimizer=optimizer)
        model.train_on_batch(images)
        return [np.asarray(variable, np.float64) for variable in model.trainable_variables]
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("decoder", ["conv", "sdn"])
def test_mixed_precision_step_matches_float32(decoder):
    images = make_images(4, seed=8)
    weights = [np.asarray(v) for v in make_model(decoder).trainable_variables]
    full = one_sgd_step("float32", weights, decoder, images)
    # A loss scale of 16 does not overflow float16 at initialisation; a step
    # whose gradients were not unscaled, or scaled twice, would be 16x off.
    mixed = one_sgd_step("mixed_float16", weights, decoder, images, loss_scale=16.0)
    full_update = np.concatenate([(a - w).ravel() for a, w in zip(full, weights)])
    mixed_update = np.concatenate([(a - w).ravel() for a, w in zip(mixed, weights)])
    assert np.linalg.norm(full_update) > 0
    relative = np.linalg.norm(mixed_update - full_update) / np.linalg.norm(full_update)
    assert relative < 0.02, relative


def test_mixed_precision_fit_skips_overflowing_steps_then_trains():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model()
        model.compile()
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        images = make_images(2, seed=9)
        before = [np.asarray(v) for v in model.trainable_variables]
        history = model.fit(images, batch_size=2, epochs=14, verbose=0).history
        assert np.all(np.isfinite(history["loss"]))
        # The dynamic scale halves from 2**15 on each overflowing step, then
        # the optimizer applies the remaining steps.
        assert 0 < int(model.optimizer.iterations.numpy()) < 14
        assert model.optimizer.dynamic_scale.numpy() < 2.0**15
        assert any(np.any(np.asarray(v) != b) for v, b in zip(model.trainable_variables, before))
    finally:
        keras.mixed_precision.set_global_policy("float32")
