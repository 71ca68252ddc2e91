"""Speed of a SpatialDependency layer against a 3x3 convolution.

For every map size, feature count and number of directions, times the forward
and the forward+backward pass (gradients for the input and all weights) of
`SpatialDependency(F, num_features=F, directions=D)` and of
`keras.layers.Conv2D(F, 3, padding="same")` on a `(batch, size, size, F)`
float32 batch, both inside `tf.function`, in graph mode and with
`jit_compile=True`. The two layers are timed alternately in one process (the
median of `--repeats` runs after warm-up), so that the ratio is fair on a
noisy machine. Also reports the arithmetic ratio (multiply-adds per pixel:
`(2 + 12 D) F^2` against `9 F^2`) and the peak memory that one
forward+backward call allocates above what was live before it (TensorFlow's
CPU allocator statistics, which need `TF_CPU_ALLOCATOR_USE_BFC=true`; the
script sets it).

    python benchmarks/layer_speed.py                      # the full grid
    python benchmarks/layer_speed.py --sizes 32 --features 64 --directions 2 --batch 32

Prints a table and writes it as JSON (`--output`).
"""

import argparse
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import alternate_medians  # noqa: E402
from common import arithmetic_ratio  # noqa: E402
from common import compiled_passes  # noqa: E402
from common import run_once  # noqa: E402
from common import write_json  # noqa: E402
from keras_sdn import SpatialDependency  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--directions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per layer (median)")
    parser.add_argument("--modes", nargs="+", default=["graph", "xla"], choices=["graph", "xla"])
    parser.add_argument("--output", default="benchmarks/layer_speed.json")
    return parser.parse_args()


def peak_memory_mib(function, x):
    """Peak bytes allocated during one call, above those live before it."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    run_once(function, x)
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2**20


def measure(size, features, directions, mode, batch, repeats):
    x = tf.random.normal((batch, size, size, features))
    sdn = SpatialDependency(features, num_features=features, directions=directions)
    conv = keras.layers.Conv2D(features, 3, padding="same")
    sdn(x), conv(x)
    sdn_passes = compiled_passes(sdn, mode == "xla")
    conv_passes = compiled_passes(conv, mode == "xla")
    row = dict(
        size=size,
        features=features,
        directions=directions,
        mode=mode,
        batch=batch,
        arithmetic_ratio=round(arithmetic_ratio(directions), 2),
    )
    for name in ("forward", "forward+backward"):
        sdn_seconds, conv_seconds = alternate_medians(
            [sdn_passes[name], conv_passes[name]], x, repeats
        )
        row[f"{name} sdn ms"] = round(1000 * sdn_seconds, 2)
        row[f"{name} conv ms"] = round(1000 * conv_seconds, 2)
        row[f"{name} ratio"] = round(sdn_seconds / conv_seconds, 2)
    row["forward+backward sdn peak MiB"] = round(
        peak_memory_mib(sdn_passes["forward+backward"], x), 1
    )
    row["forward+backward conv peak MiB"] = round(
        peak_memory_mib(conv_passes["forward+backward"], x), 1
    )
    return row


COLUMNS = [
    ("mode", "{:>5}"),
    ("size", "{:>4}"),
    ("features", "{:>4}"),
    ("directions", "{:>3}"),
    ("forward sdn ms", "{:>9.1f}"),
    ("forward conv ms", "{:>9.1f}"),
    ("forward ratio", "{:>6.2f}"),
    ("forward+backward sdn ms", "{:>9.1f}"),
    ("forward+backward conv ms", "{:>9.1f}"),
    ("forward+backward ratio", "{:>6.2f}"),
    ("arithmetic_ratio", "{:>6.2f}"),
    ("forward+backward sdn peak MiB", "{:>8.1f}"),
    ("forward+backward conv peak MiB", "{:>8.1f}"),
]
HEADERS = [
    "mode",
    "size",
    "F",
    "D",
    "fwd SDN",
    "fwd conv",
    "ratio",
    "f+b SDN",
    "f+b conv",
    "ratio",
    "arith",
    "SDN MiB",
    "conv MiB",
]


def print_row(row):
    print(" | ".join(fmt.format(row[key]) for key, fmt in COLUMNS), flush=True)


def main():
    args = parse_args()
    print(f"batch {args.batch}, median of {args.repeats} alternating runs; times in ms")
    print(" | ".join(HEADERS))
    rows = []
    grid = itertools.product(args.modes, args.sizes, args.features, args.directions)
    for mode, size, features, directions in grid:
        row = measure(size, features, directions, mode, args.batch, args.repeats)
        print_row(row)
        rows.append(row)
    write_json(args.output, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
