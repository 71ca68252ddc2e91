"""Tests of keras_sdn._checks and of the argument checks of the package built on it.

Before the checks were shared, the layers rejected NumPy integers that the
rest of the package accepted, and the messages came in three styles. Every
check now accepts NumPy integers where it accepts ints, rejects bools, and
says "Expected `name` to be ... Received: name=value".
"""

import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_choice
from keras_sdn._checks import check_image_shape
from keras_sdn._checks import check_images
from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn._checks import check_ordered
from keras_sdn._checks import check_permutation
from keras_sdn._checks import check_temperature
from keras_sdn.bijectors import AutoregressiveConvNetwork
from keras_sdn.data import SyntheticShapes
from keras_sdn.data import load_images
from keras_sdn.data import quantize
from keras_sdn.distribute import BackupAndRestore
from keras_sdn.distribute import strategy_from_name
from keras_sdn.distributions import DiscretizedLogisticMixture
from keras_sdn.distributions import diagonal_gaussian
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers import SpatialDependency
from keras_sdn.models import SDNVAE
from keras_sdn.models import BetaVAE
from keras_sdn.optimizers import UpdateSkipper
from tiny_models import tiny_sdn_vae


def message(name, expected, received):
    """The whole message of a check, as a regex."""
    expected, received = re.escape(expected), re.escape(received)
    return rf"^Expected `{name}` to be {expected}\. Received: {name}={received}$"


def rejected_bool(name):
    """The message of an int check that received True, as a regex."""
    return rf"^Expected `{name}` to be an int .*Received: {name}=True$"


# ---------------------------------------------------------------- the checks


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_check_int_accepts_python_and_numpy_integers_as_int(value):
    checked = check_int("count", value, 1, 3)
    assert checked == 3 and type(checked) is int


@pytest.mark.parametrize(
    "value, low, high, expected",
    [
        (True, 0, None, "an int >= 0"),
        (np.bool_(True), 0, None, "an int >= 0"),
        (2.0, 1, None, "an int >= 1"),
        ("2", 1, None, "an int >= 1"),
        (None, 1, None, "an int >= 1"),
        (0, 1, None, "an int >= 1"),
        (np.int64(9), 1, 8, "an int in [1, 8]"),
    ],
)
def test_check_int_rejects(value, low, high, expected):
    with pytest.raises(ValueError, match=message("count", expected, repr(value))):
        check_int("count", value, low, high)


@pytest.mark.parametrize(
    "value, kwargs",
    [
        (0.5, dict(low=0, high=1, low_open=True, high_open=True)),
        (1, dict(low=0, high=1)),
        (np.float32(0.0), dict(low=0)),
        (np.int64(-4), dict(high=-4)),
        (math.inf, dict(low=0, low_open=True)),
        (-7.5, dict()),
    ],
)
def test_check_number_accepts_reals_in_the_interval_as_float(value, kwargs):
    checked = check_number("x", value, **kwargs)
    assert checked == float(value) and type(checked) is float


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (0.0, dict(low=0, high=1, low_open=True), "a number in (0, 1]"),
        (1.0, dict(low=0, high=1, high_open=True), "a number in [0, 1)"),
        (-0.1, dict(low=0), "a number >= 0"),
        (0, dict(low=0, low_open=True), "a number > 0"),
        (2, dict(high=1), "a number <= 1"),
        (1, dict(high=1, high_open=True), "a number < 1"),
        (math.nan, dict(), "a number"),
        (True, dict(low=0), "a number >= 0"),
        ("0.5", dict(low=0), "a number >= 0"),
        (None, dict(), "a number"),
    ],
)
def test_check_number_rejects(value, kwargs, expected):
    with pytest.raises(ValueError, match=message("x", expected, repr(value))):
        check_number("x", value, **kwargs)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_check_bool_accepts_bools_as_bool(value):
    checked = check_bool("flag", value)
    assert checked == bool(value) and type(checked) is bool


@pytest.mark.parametrize("value", [0, 1, "yes", None, np.int64(1)])
def test_check_bool_rejects_other_values(value):
    with pytest.raises(ValueError, match=message("flag", "True or False", repr(value))):
        check_bool("flag", value)


def test_check_bool_allow_none():
    assert check_bool("flag", None, allow_none=True) is None
    with pytest.raises(ValueError, match=message("flag", "None, True or False", "1")):
        check_bool("flag", 1, allow_none=True)


def test_check_choice():
    assert check_choice("split", "test", ("train", "test")) == "test"
    for value in ("validation", ["test"], np.array("test"), None):
        expected = "one of ('train', 'test')"
        with pytest.raises(ValueError, match=message("split", expected, repr(value))):
            check_choice("split", value, ("train", "test"))


@pytest.mark.parametrize("value", [1, 0.5, np.float32(2.0), 1e3])
def test_check_temperature_accepts_finite_positive_numbers(value):
    assert check_temperature(value) == float(value)


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan, True, "1.0", None])
def test_check_temperature_rejects(value):
    with pytest.raises(
        ValueError, match=message("temperature", "a finite number > 0", repr(value))
    ):
        check_temperature(value)


def test_check_temperature_lets_tensors_through():
    tensor = tf.constant(-1.0)  # a tensor's value is not checked, only a number's
    assert check_temperature(tensor) is tensor
    array = np.array([0.5, 1.0])
    assert check_temperature(array) is array


def test_check_image_shape():
    checked = check_image_shape("image_shape", [np.int64(8), 4, 3])
    assert checked == (8, 4, 3) and all(type(size) is int for size in checked)
    for value in ((8, 8), "883", None):
        expected = "(height, width, channels)"
        with pytest.raises(ValueError, match=message("image_shape", expected, repr(value))):
            check_image_shape("image_shape", value)
    with pytest.raises(ValueError, match=message("image_shape width", "an int >= 1", "True")):
        check_image_shape("image_shape", (8, True, 3))


def test_check_permutation():
    assert check_permutation("order", ["b", "a"], ("a", "b")) == ("b", "a")
    for value in (("a", "a"), ("a",), ("a", "b", "c"), "ab", ("a", 1)):
        expected = "an ordering of ('a', 'b')"
        with pytest.raises(ValueError, match=message("order", expected, repr(value))):
            check_permutation("order", value, ("a", "b"))


def test_check_ordered():
    check_ordered("low", 2, "high", 2)
    with pytest.raises(ValueError, match=r"^Expected `low` <= `high`\. Received: low=3, high=2$"):
        check_ordered("low", 3, "high", 2)


def test_check_images():
    images = check_images("images", np.zeros((2, 4, 4, 3), np.uint8), (4, 4, 3))
    assert tf.is_tensor(images) and tuple(images.shape) == (2, 4, 4, 3)
    image = check_images("image", np.zeros((4, 4, 3)), (4, 4, 3), batched=False)
    assert tuple(image.shape) == (4, 4, 3)
    for shape in ((4, 4, 3), (2, 4, 4, 1), (2, 1, 4, 4, 3)):
        expected = re.escape("Expected `images` of shape (None, 4, 4, 3). ")
        received = re.escape(f"Received: shape={shape}")
        with pytest.raises(ValueError, match=rf"^{expected}{received}$"):
            check_images("images", np.zeros(shape), (4, 4, 3))


# ------------------------------------------- integer arguments of the package


def spatial_dependency(**kwargs):
    return SpatialDependency(**(dict(filters=4) | kwargs))


def residual_spatial_dependency(**kwargs):
    return ResidualSpatialDependency(**(dict(filters=4) | kwargs))


def network(**kwargs):
    return AutoregressiveConvNetwork(**(dict(z_channels=2) | kwargs))


def logistic_mixture(**kwargs):
    arguments = dict(params=np.zeros((1, 2, 2, 6)), channels=1) | kwargs
    return DiscretizedLogisticMixture(**arguments)


def synthetic_images(**kwargs):
    arguments = dict(batch_size=2, image_size=16, num_examples=2, shuffle=False) | kwargs
    return next(iter(load_images(**arguments))).numpy()


# (constructor, an int argument, a valid value): the value as a NumPy int is
# accepted and gives what the Python int gives; True is rejected.
INT_ARGUMENTS = [
    (spatial_dependency, "filters", 4),
    (spatial_dependency, "num_features", 3),
    (spatial_dependency, "kernel_size", 3),
    (spatial_dependency, "upsample", 2),
    (residual_spatial_dependency, "filters", 4),
    (residual_spatial_dependency, "num_features", 3),
    (residual_spatial_dependency, "kernel_size", 1),
    (residual_spatial_dependency, "upsample", 2),
    (network, "z_channels", 3),
    (network, "hidden_channels", 5),
    (network, "num_hidden_layers", 1),
    (network, "kernel_size", 5),
    (UpdateSkipper, "warmup", 7),
    (UpdateSkipper, "patience", 3),
    (SyntheticShapes, "image_size", 16),
    (logistic_mixture, "num_bits", 5),
    (synthetic_images, "batch_size", 1),
    (synthetic_images, "num_bits", 3),
    (synthetic_images, "image_size", 8),
    (synthetic_images, "seed", 2),
    (BetaVAE, "latent_dim", 3),
    (BetaVAE, "beta_warmup_steps", 10),
    (BetaVAE, "channels", 1),
    (BetaVAE, "num_bits", 5),
    (BetaVAE, "sdn_features", 16),
    (tiny_sdn_vae, "hidden_channels", 3),
    (tiny_sdn_vae, "num_bits", 5),
    (tiny_sdn_vae, "sdn_features", 4),
]


def configuration(result):
    """What a constructor gave, as a comparable, JSON-serialisable value."""
    if isinstance(result, np.ndarray):
        return result.tolist()
    if hasattr(result, "get_config"):
        config = result.get_config()
        json.dumps(config)  # NumPy integers would not serialise
        del config["name"]  # unique per instance
        return config
    if isinstance(result, SyntheticShapes):
        return result.image_size
    return {name: value for name, value in result.parameters.items() if name != "params"}


@pytest.mark.parametrize("construct, name, value", INT_ARGUMENTS)
def test_numpy_integers_are_accepted_like_ints(construct, name, value):
    expected = configuration(construct(**{name: value}))
    assert configuration(construct(**{name: np.int64(value)})) == expected


@pytest.mark.parametrize("construct, name, value", INT_ARGUMENTS)
def test_bools_are_rejected_as_ints(construct, name, value):
    with pytest.raises(ValueError, match=rejected_bool(name)):
        construct(**{name: True})


def test_layers_store_numpy_integers_as_ints():
    layer = SpatialDependency(np.int64(4), num_features=np.int64(3), directions=np.int64(2))
    assert (layer.filters, layer.num_features, layer.directions) == (4, 3, ("up", "left"))
    assert type(layer.filters) is int and type(layer.num_features) is int
    assert layer(np.zeros((1, 5, 5, 2), np.float32)).shape == (1, 5, 5, 4)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: SpatialDependency(4, directions=True), "directions"),
        (lambda: SyntheticShapes().split_factors("test", num_examples=True), "num_examples"),
        (lambda: SyntheticShapes().sample_factors(True), "n"),
        (lambda: quantize(np.zeros(3, np.uint8), True), "num_bits"),
        (lambda: DiscretizedLogisticMixture.params_size(True, 3), "num_mixtures"),
    ],
)
def test_more_int_arguments_reject_bools(call, name):
    with pytest.raises(ValueError, match=rejected_bool(name)):
        call()


@pytest.mark.parametrize(
    "call, name, value",
    [
        (lambda: spatial_dependency(weight_normalization=1), "weight_normalization", 1),
        (lambda: network(weight_normalization=1), "weight_normalization", 1),
        (lambda: network(ordering="columns"), "ordering", "'columns'"),
        (lambda: network(output_scale="0.1"), "output_scale", "'0.1'"),
        (lambda: UpdateSkipper(decay=True), "decay", True),
        (lambda: UpdateSkipper(factor=1.0), "factor", 1.0),
        (lambda: logistic_mixture(temperature=math.inf), "temperature", math.inf),
        (
            lambda: diagonal_gaussian(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1)), True),
            "temperature",
            True,
        ),
        (lambda: load_images(download=1), "download", 1),
        (lambda: load_images(random_flip="yes"), "random_flip", "'yes'"),
        (lambda: load_images(split="validation"), "split", "'validation'"),
        (lambda: BetaVAE(decoder="pixelcnn"), "decoder", "'pixelcnn'"),
        (lambda: BetaVAE(observation="gaussian"), "observation", "'gaussian'"),
        (lambda: BetaVAE(beta=-1.0), "beta", -1.0),
        (lambda: BetaVAE(beta=True), "beta", True),
        (lambda: tiny_sdn_vae(use_sdn=1), "use_sdn", 1),
        (lambda: tiny_sdn_vae(sdn_direction_order="up"), "sdn_direction_order", "'up'"),
        (lambda: SDNVAE.from_preset("mnist"), "name", "'mnist'"),
        (lambda: tiny_sdn_vae().sample(2, temperature=0.0), "temperature", 0.0),
        (lambda: tiny_sdn_vae().encode(np.zeros((1, 4, 4, 3)), sample=1), "sample", 1),
        (lambda: strategy_from_name("gpu"), "name", "'gpu'"),
        (lambda: BackupAndRestore(""), "backup_dir", "''"),
    ],
)
def test_other_arguments_are_checked_in_keras_style(call, name, value):
    with pytest.raises(ValueError, match=rf"^Expected `{name}` to be .*Received: {name}={value}$"):
        call()
