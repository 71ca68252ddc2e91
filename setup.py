"""Packaging for keras-sdn."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

setuptools.setup(
    name="keras-sdn",
    version="0.1.0",
    description=(
        "Spatial dependency networks (Miladinovic et al., ICLR 2021) as Keras 3 "
        "layers, with an SDN-VAE and a beta-VAE built on TensorFlow Probability."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["keras_sdn", "keras_sdn.*"]),
    python_requires=">=3.10",
    install_requires=[
        # Lower bounds: the releases the test suite runs on; upper bounds: the next
        # major release (docs/compatibility.md). Private code used in between is
        # checked for where it is used and falls back with a warning: keras_sdn/_compat.py.
        "tensorflow>=2.21,<3",
        "keras>=3.15,<4",
        "tensorflow-probability[tf]>=0.25,<1",
        "tensorflow-datasets",
        # TFDS' download code imports it without declaring it.
        "importlib_resources",
        "numpy",
        "pillow",
        "matplotlib",
    ],
    # tensorflow-serving-api: the PredictionLog proto, to read the warm-up requests in the tests.
    # ruff: run by tests/test_style.py; its minor releases change the format style and the rules,
    # so one minor release is pinned.
    # jax: the layers on the JAX backend (CPU wheels; tested with 0.10). PyTorch has no extra:
    # its default wheels pull several GB of CUDA libraries; the layers run on any torch that
    # Keras supports (tested with 2.13), and the tests use it when it is installed.
    extras_require={
        "jax": ["jax>=0.10"],
        "test": ["pytest", "scipy", "tensorflow-serving-api", "ruff>=0.17.6,<0.18", "jax>=0.10"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
