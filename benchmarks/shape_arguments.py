"""The command-line arguments of one benchmark configuration, shared by the scripts."""

import argparse


def configuration_parser(description):
    """A parser with `--size`, `--features`, `--directions` and `--batch`.

    Defaults: the issue's target configuration, a `(32, 32, 32, 64)` batch and
    2 directions.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=32, help="height and width of the map")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--directions", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    return parser
