"""Packaging for keras-sdn."""

import pathlib
import re

import setuptools

HERE = pathlib.Path(__file__).parent
# One source of truth for the version: keras_sdn/__init__.py, read without importing the package
# (which needs TensorFlow).
VERSION = re.search(
    r'^__version__ = "([^"]+)"$',
    (HERE / "keras_sdn" / "__init__.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)
URL = "https://github.com/keras-sdn/keras-sdn"
# The documentation site's packages: mkdocs-material and mkdocstrings' Python handler.
DOCS_REQUIREMENTS = [
    "mkdocs>=1.6,<2",
    "mkdocs-material>=9.5,<10",
    "mkdocstrings[python]>=0.26,<2",
]

setuptools.setup(
    name="keras-sdn",
    version=VERSION,
    description=(
        "Spatial dependency networks (Miladinovic et al., ICLR 2021) as Keras 3 "
        "layers, with an SDN-VAE and a beta-VAE built on TensorFlow Probability."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    url=URL,
    project_urls={
        "Documentation": f"{URL}/tree/main/docs",
        "Source": URL,
        "Changelog": f"{URL}/blob/main/CHANGELOG.md",
    },
    license="Apache-2.0",
    packages=setuptools.find_packages(include=["keras_sdn", "keras_sdn.*"]),
    python_requires=">=3.10",
    entry_points={"console_scripts": ["keras-sdn = keras_sdn.cli:main"]},
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
    # so one minor release is pinned. The docs packages: tests/test_docs.py builds the site.
    # jax: the layers on the JAX backend (CPU wheels; tested with 0.10). PyTorch has no extra:
    # its default wheels pull several GB of CUDA libraries; the layers run on any torch that
    # Keras supports (tested with 2.13), and the tests use it when it is installed.
    extras_require={
        "jax": ["jax>=0.10"],
        "test": [
            "pytest",
            "pytest-xdist>=3",
            "scipy",
            "scikit-learn",
            "tensorflow-serving-api",
            "ruff>=0.17.6,<0.18",
            "jax>=0.10",
        ]
        + DOCS_REQUIREMENTS,
        "docs": DOCS_REQUIREMENTS,
        "photos": ["scikit-learn"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
