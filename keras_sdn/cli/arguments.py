"""Argument types and options shared by the subcommands."""

import argparse
import math
import pathlib

from keras_sdn.export import MAX_TEMPERATURE


def _integer_at_least(low, expected):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _integer_at_least(1, "a positive integer")
non_negative_int = _integer_at_least(0, "an integer >= 0")


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


def add_subcommand(subparsers, name, summary, description, command):
    """A subcommand's parser: `summary` in `keras-sdn --help`, `description` (with examples)
    in its own help, `command(args)` run by `keras_sdn.cli.main`."""
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(command=command)
    return parser


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
