"""What the benchmark scripts share: their arguments, the timed passes, the timing."""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf


def configuration_parser(description):
    """A parser with `--size`, `--features`, `--directions` and `--batch`.

    Defaults: a `(32, 32, 32, 64)` batch (32 images of 32x32 with 64
    features) and 2 directions, the configuration the layer's speed is
    reported for (docs/results.md).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=32, help="height and width of the map")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--directions", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    return parser


def add_set_argument(parser):
    """`--set NAME=VALUE`, repeatable: model constructor arguments (`model_overrides`)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Model constructor argument (VALUE parsed as JSON), e.g. --set num_mixtures=10.",
    )


def model_overrides(args):
    """The `--set` arguments as a dict."""
    overrides = {}
    for item in args.set:
        name, separator, value = item.partition("=")
        if not separator:
            raise SystemExit(f"Expected --set NAME=VALUE. Received: --set {item}")
        overrides[name] = json.loads(value)
    return overrides


def arithmetic_ratio(directions):
    """Multiply-adds per pixel of the SDN layer (1x1 projections) over a 3x3 conv."""
    return (2 + 12 * directions) / 9


def compiled_passes(layer, jit_compile):
    """The forward and the forward+backward pass of `layer` as tf.functions."""

    @tf.function(jit_compile=jit_compile)
    def forward(x):
        return layer(x)

    @tf.function(jit_compile=jit_compile)
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    return {"forward": forward, "forward+backward": forward_backward}


def run_once(function, x):
    """Seconds of one call of `function(x)`, its outputs fetched."""
    start = time.perf_counter()
    tf.nest.map_structure(lambda tensor: tensor.numpy(), function(x))
    return time.perf_counter() - start


def alternate_medians(functions, x, repeats):
    """Median seconds of each `function(x)`, timed in turn after two warm-up calls."""
    for function in functions:
        run_once(function, x)
        run_once(function, x)
    times = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            times[index].append(run_once(function, x))
    return [float(np.median(t)) for t in times]


# The benchmarks' arguments that name files or folders. A `--dataset` is a path only when it has a
# separator or a `~` (a dataset name never does).
PATH_ARGUMENTS = ("output", "plot", "output_dir", "data_dir")
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repository_path(path):
    """`path` relative to the repository, or only its name when it lies outside.

    The records are committed: they must not name the machine they were measured on.
    """
    absolute = os.path.abspath(os.path.expanduser(path))
    relative = os.path.relpath(absolute, REPOSITORY)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return os.path.basename(absolute)
    return relative.replace(os.sep, "/")


def portable_paths(record):
    """`record` (nested dicts and lists) with every path argument made `repository_path`."""
    if isinstance(record, list):
        return [portable_paths(item) for item in record]
    if not isinstance(record, dict):
        return record
    portable = {}
    for key, value in record.items():
        is_path = isinstance(value, str) and (
            key in PATH_ARGUMENTS or (key == "dataset" and ("/" in value or "~" in value))
        )
        portable[key] = repository_path(value) if is_path else portable_paths(value)
    return portable


def write_json(path, payload):
    """Writes `payload` as JSON to `path` (creating its folder) and says so.

    Paths in the payload are recorded relative to the repository (`portable_paths`).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(portable_paths(payload), file, indent=1)
    print(f"wrote {path}")
