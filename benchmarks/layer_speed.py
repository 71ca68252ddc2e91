"""Speed of a SpatialDependency layer against a 3x3 convolution.

For every map size, feature count and number of directions, times the forward
and the forward+backward pass (gradients for the input and all weights) of
`SpatialDependency(F, num_features=F, directions=D)` and of
`keras.layers.Conv2D(F, 3, padding="same")` on a `(batch, size, size, F)`
float32 batch, on the Keras backend `--backend`, each compiled as that
backend compiles (`--modes`):

- tensorflow: inside `tf.function`, in graph mode (`graph`) and with
  `jit_compile=True` (`xla`);
- jax: `jax.jit` of the layer's `stateless_call` and of `jax.grad` of it (`jit`);
- torch: eager (`eager`), or `torch.compile` (`compile`).

The two layers are timed alternately in one process (the median of
`--repeats` runs after warm-up), so that the ratio is fair on a noisy machine;
the device both ran on is printed and recorded. Also reports the arithmetic
ratio (multiply-adds per pixel: `(2 + 12 D) F^2` against `9 F^2`) and, with
TensorFlow on a CPU, the peak memory that one forward+backward call allocates
above what was live before it (TensorFlow's CPU allocator statistics, which
need `TF_CPU_ALLOCATOR_USE_BFC=true`; the script sets it).

    python benchmarks/layer_speed.py                      # the full grid
    python benchmarks/layer_speed.py --sizes 32 --features 64 --directions 2 --batch 32
    python benchmarks/layer_speed.py --backend jax --sizes 32 64 --features 64 --directions 2

Prints a table and writes it as JSON (`--output`, by default
`benchmarks/layer_speed_<backend>.json`).
"""

import argparse
import itertools
import os

# The backend is fixed when Keras is imported: `--backend` is read first.
MODES = {"tensorflow": ["graph", "xla"], "jax": ["jit"], "torch": ["eager", "compile"]}
DEFAULT_MODES = {"tensorflow": ["graph", "xla"], "jax": ["jit"], "torch": ["eager"]}
_backend_parser = argparse.ArgumentParser(add_help=False)
_backend_parser.add_argument("--backend", choices=sorted(MODES), default="tensorflow")
BACKEND = _backend_parser.parse_known_args()[0].backend
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import alternate_medians  # noqa: E402
from common import arithmetic_ratio  # noqa: E402
from common import compiled_passes  # noqa: E402
from common import run_once  # noqa: E402
from common import write_json  # noqa: E402
from keras_sdn import SpatialDependency  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], parents=[_backend_parser]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--directions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per layer (median)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=DEFAULT_MODES[BACKEND],
        choices=MODES[BACKEND],
        help="how the passes are compiled (torch: `compile` is not in the default)",
    )
    parser.add_argument("--output", default=f"benchmarks/layer_speed_{BACKEND}.json")
    return parser.parse_args()


def device_name():
    """The device the layers run on, as the backend names it."""
    if BACKEND == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform}: {device.device_kind}"
    if BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name()}"
        return "cpu"
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "cpu"


def jax_passes(layer):
    """`jax.jit` of the forward pass and of the gradients of `sum(layer(x)^2)`
    by the input and every trainable weight."""
    import jax

    trainable = [variable.value for variable in layer.trainable_variables]
    non_trainable = [variable.value for variable in layer.non_trainable_variables]

    def forward(trainable, x):
        return layer.stateless_call(trainable, non_trainable, x)[0]

    def loss(trainable, x):
        return jax.numpy.sum(jax.numpy.square(forward(trainable, x)))

    jitted_forward = jax.jit(forward)
    jitted_gradients = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return {
        "forward": lambda x: jitted_forward(trainable, x),
        "forward+backward": lambda x: jitted_gradients(trainable, x),
    }


def torch_passes(layer, compile):
    """The forward pass (without autograd) and the gradients of `sum(layer(x)^2)`
    by the input and every trainable weight, eager or `torch.compile`d."""
    import torch

    weights = [variable.value for variable in layer.trainable_variables]

    def forward(x):
        with torch.no_grad():
            return layer(x)

    def forward_backward(x):
        x = x.detach().requires_grad_()
        loss = torch.sum(torch.square(layer(x)))
        return torch.autograd.grad(loss, [x] + weights)

    if compile:
        forward, forward_backward = torch.compile(forward), torch.compile(forward_backward)
    return {"forward": forward, "forward+backward": forward_backward}


def synchronized(function):
    """`function`, returning only once the device has finished its work.

    Returns an empty tuple: `common.run_once` then fetches nothing.
    """
    if BACKEND == "jax":
        import jax

        def wait(x):
            jax.block_until_ready(function(x))
            return ()

        return wait
    import torch

    def wait(x):
        function(x)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return ()

    return wait


def timed_passes(layer, mode):
    """The layer's forward and forward+backward passes, compiled as `mode` says."""
    if BACKEND == "tensorflow":
        return compiled_passes(layer, mode == "xla")
    if BACKEND == "jax":
        passes = jax_passes(layer)
    else:
        passes = torch_passes(layer, mode == "compile")
    return {name: synchronized(function) for name, function in passes.items()}


def peak_memory_mib(function, x):
    """Peak bytes allocated during one call, above those live before it."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    run_once(function, x)
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2**20


def measure(size, features, directions, mode, batch, repeats):
    x = np.random.default_rng(0).normal(size=(batch, size, size, features)).astype("float32")
    x = keras.ops.convert_to_tensor(x)
    sdn = SpatialDependency(features, num_features=features, directions=directions)
    conv = keras.layers.Conv2D(features, 3, padding="same")
    sdn(x), conv(x)
    sdn_passes = timed_passes(sdn, mode)
    conv_passes = timed_passes(conv, mode)
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
    if BACKEND == "tensorflow" and device_name() == "cpu":
        for layer_name, passes in (("sdn", sdn_passes), ("conv", conv_passes)):
            peak = peak_memory_mib(passes["forward+backward"], x)
            row[f"forward+backward {layer_name} peak MiB"] = round(peak, 1)
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
MEMORY_HEADERS = ["SDN MiB", "conv MiB"]
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
    *MEMORY_HEADERS,
]


def print_row(row):
    print(" | ".join(fmt.format(row[key]) for key, fmt in COLUMNS if key in row), flush=True)


def main():
    args = parse_args()
    device = device_name()
    print(
        f"backend {BACKEND} on {device}, batch {args.batch}, "
        f"median of {args.repeats} alternating runs; times in ms"
    )
    memory = BACKEND == "tensorflow" and device == "cpu"
    print(" | ".join(HEADERS if memory else HEADERS[: -len(MEMORY_HEADERS)]))
    rows = []
    grid = itertools.product(args.modes, args.sizes, args.features, args.directions)
    for mode, size, features, directions in grid:
        row = measure(size, features, directions, mode, args.batch, args.repeats)
        print_row(row)
        rows.append(row)
    write_json(args.output, {"args": vars(args), "device": device, "rows": rows})


if __name__ == "__main__":
    main()
