"""Argument types and options shared by the subcommands."""

import argparse
import math
import pathlib

from keras_sdn.export import MAX_TEMPERATURE


def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text):
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def temperature(text):
    """A number in (0, MAX_TEMPERATURE]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TEMPERATURE:
        raise argparse.ArgumentTypeError(
            f"expected a number in (0, {MAX_TEMPERATURE:g}], got {text!r}"
        )
    return value


def run_folder(text):
    """An existing folder (the run)."""
    path = pathlib.Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"no run folder at {text}")
    return path


def add_run_argument(parser):
    parser.add_argument(
        "run",
        metavar="RUN",
        type=run_folder,
        help="A training run's folder: the --output-dir of examples/train_sdn_vae.py, or one "
        "model's folder of examples/train_beta_vae.py (e.g. beta_vae_results/sdn_beta4). "
        "It holds the trained model, model.keras.",
    )


def add_output_argument(parser, default, what):
    parser.add_argument(
        "-o",
        "--output",
        default=default,
        type=pathlib.Path,
        help=f"Where to write {what} (default: {default}; folders are created).",
    )


def add_seed_argument(parser):
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="Seed of the random draws: the same seed gives the same images (default: a new "
        "draw each time).",
    )
