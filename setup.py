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
        "tensorflow>=2.16",
        # >=3.5: checked to provide every public Keras API the package uses (3.0
        # lacks `keras.tree`); tested on 3.15. <4: a major release may change them.
        # Workarounds of private Keras code are gated by version: keras_sdn/_compat.py.
        "keras>=3.5,<4",
        "tensorflow-probability[tf]",
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
