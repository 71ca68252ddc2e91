"""The floor of a SpatialDependency forward pass: its matrix products alone.

Times, as single large ops on a `(batch, size, size, F)` float32 map, every
product the forward pass of `SpatialDependency(F, num_features=F,
directions=D)` has to do: the 1x1 project-in and project-out, the input
projections of the three gates of each direction, and each direction's
neighbourhood product (a width-3 convolution across every line, here done for
all lines at once, which the sweep cannot do: it needs the previous line
first). Their sum against `Conv2D(F, 3, padding="same")` is a lower bound for
the layer's forward ratio with TensorFlow's CPU kernels, before any
element-wise op, layout change or loop step. All ops are timed alternately in
one process (median of `--repeats` runs inside `tf.function`).

    python benchmarks/product_floor.py

Prints a table and writes it as JSON (`--output`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import tensorflow as tf  # noqa: E402

from common import alternate_medians  # noqa: E402
from common import arithmetic_ratio  # noqa: E402
from common import configuration_parser  # noqa: E402
from common import write_json  # noqa: E402


def parse_args():
    parser = configuration_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--output", default="benchmarks/product_floor.json")
    return parser.parse_args()


def products(args):
    """name -> (tf.function of the map, how many times the forward pass does it)."""
    features = args.features
    square = tf.random.normal((features, features))
    conv3x3 = tf.random.normal((3, 3, features, features))
    neighbourhood = tf.random.normal((1, 3, features, 3 * features))
    return {
        "Conv2D(F, 3)": (tf.function(lambda x: tf.nn.conv2d(x, conv3x3, 1, "SAME")), 0),
        "1x1 product F -> F (project-in, project-out, one gate's input)": (
            tf.function(lambda x: tf.matmul(tf.reshape(x, (-1, features)), square)),
            2 + 3 * args.directions,
        ),
        "neighbourhood product (3 taps x F -> 3F), all lines at once": (
            tf.function(
                lambda x: tf.nn.conv2d(
                    tf.reshape(x, (-1, 1, args.size, features)), neighbourhood, 1, "SAME"
                )
            ),
            args.directions,
        ),
    }


def main():
    args = parse_args()
    ops = products(args)
    x = tf.random.normal((args.batch, args.size, args.size, args.features))
    seconds = alternate_medians([function for function, _ in ops.values()], x, args.repeats)
    milliseconds = {name: 1000 * value for name, value in zip(ops, seconds)}
    conv = milliseconds["Conv2D(F, 3)"]
    floor = sum(milliseconds[name] * count for name, (_, count) in ops.items())
    print(
        f"batch {args.batch}, {args.size}x{args.size}, F = {args.features}, "
        f"{args.directions} directions; median of {args.repeats} alternating runs"
    )
    print(f"{'op':66s} {'ms':>7s} {'times':>5s}")
    for name, (_, count) in ops.items():
        print(f"{name:66s} {milliseconds[name]:7.2f} {count:5d}")
    print(
        f"products of the forward pass: {floor:.1f} ms = {floor / conv:.2f}x the convolution "
        f"(arithmetic ratio {arithmetic_ratio(args.directions):.2f})"
    )
    write_json(
        args.output,
        {"args": vars(args), "ms": milliseconds, "floor_ms": floor, "floor_ratio": floor / conv},
    )


if __name__ == "__main__":
    main()
