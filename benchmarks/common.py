"""What the benchmark scripts share: their arguments, the timed passes, the timing."""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf


def configuration_parser(description):
    """A parser with `--size`, `--features`, `--directions` and `--batch`.

    Defaults: the speed issue's target configuration, a `(32, 32, 32, 64)`
    batch and 2 directions.
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


def write_json(path, payload):
    """Writes `payload` as JSON to `path` (creating its folder) and says so."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(payload, file, indent=1)
    print(f"wrote {path}")
