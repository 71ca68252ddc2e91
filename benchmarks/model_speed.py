"""Speed of the SDN-VAE against its baseline: training step, generation, memory, profile.

For every preset, builds `SDNVAE.from_preset(preset)` and the same model with
`use_sdn=False` (the IAF-VAE baseline: convolutions instead of the ResSDN
layers) and times, alternately in one process (median of `--repeats` runs
after warm-up):

- one compiled training step (`model.train_function`, as `fit` calls it:
  forward, backward, update skipping, Adamax and the weight averages);
- generation: `model.sample(n)` (images per second).

With `--without-sweeps` it also times the SDN-VAE's training step with the
sweeps skipped (each SDN layer's correction stage traced as the identity):
what the rest of the SDN-VAE costs, and so how much of the step the sweeps
take.

It also reports the time of the first training step (tracing and graph
optimisation included), the peak memory one training step allocates above
what was live before it (TensorFlow's CPU allocator statistics, which need
`TF_CPU_ALLOCATOR_USE_BFC=true`; the script sets it) and an op-level profile
of one training step of each model (`--profile-runs` traced steps, as
`benchmarks/layer_profile.py` takes it), its ops grouped by the name scope
they were created in: the SDN layers' sweeps (the loops, forward and
backward, and the ops around them), the rest of the SDN layers (projections,
the ResSDN convolution and gate), the IAF networks, the other convolutions,
the likelihood, the update (optimizer, update skipping, averages, metrics)
and the rest. Op times are summed over the executor's threads.

    python benchmarks/model_speed.py                      # tiny preset, 16x16, batch 32
    python benchmarks/model_speed.py --presets cifar10 --repeats 3 \\
        --output benchmarks/model_speed_cifar10.json      # 32x32, batch 8
    python benchmarks/model_speed.py --set sdn_max_scale=8   # SDN layers at 8x8 and below

Prints tables and writes them as JSON (`--output`).
"""

import argparse
import collections
import contextlib
import os
import re
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import add_set_argument  # noqa: E402
from common import alternate_medians  # noqa: E402
from common import model_overrides  # noqa: E402
from common import run_once  # noqa: E402
from common import write_json  # noqa: E402
from keras_sdn.layers import ResidualSpatialDependency  # noqa: E402
from keras_sdn.layers import sweep  # noqa: E402
from keras_sdn.models import SDNVAE  # noqa: E402
from layer_profile import op_type  # noqa: E402
from layer_profile import traced_events  # noqa: E402
from layer_speed import peak_memory_mib  # noqa: E402

DEFAULT_BATCH = {"tiny": 32, "cifar10": 8, "imagenet32": 8, "celebahq256": 1}
MODELS = ("sdn", "baseline")
# Rows of the profile, in the order they are printed.
PARTS = (
    "SDN sweeps: forward loops",
    "SDN sweeps: backward loops",
    "SDN sweeps: around the loops",
    "SDN projections, ResSDN conv and gate",
    "IAF networks",
    "other convolutions",
    "likelihood",
    "update: optimizer, skipping, EMA, metrics",
    "the rest (ELU, residual gates, KL, ...)",
)
_CONVOLUTIONS = (
    "Conv2D",
    "Conv2DBackpropFilter",
    "Conv2DBackpropInput",
    "FusedConv2D",
    "_FusedConv2D",
)
_UPDATE_OPS = ("Assign", "ReadVariableOp", "ResourceApply", "IsFinite", "All")
# Unscoped ops of the ladder blocks' own code (ELU, the gated residuals, the
# splits and the nearest-neighbour resampling), not of the update.
_MODEL_GLUE = ("Elu", "Sigmoid", "Split", "SplitV", "StridedSlice", "ConcatV2", "Tile")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny"], choices=sorted(DEFAULT_BATCH))
    parser.add_argument(
        "--batch",
        type=int,
        help="training batch (default: per preset, "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_BATCH.items())
        + ")",
    )
    parser.add_argument(
        "--image-size", type=int, help="height and width of the images (default: the preset's)"
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per model (median)")
    parser.add_argument(
        "--sample-images", type=int, default=32, help="images per timed `sample` call"
    )
    parser.add_argument(
        "--profile-runs",
        type=int,
        default=3,
        help="traced training steps per model (0: no profile)",
    )
    add_set_argument(parser)
    parser.add_argument(
        "--without-sweeps",
        action="store_true",
        help="also time the SDN-VAE's step with its sweeps skipped",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/model_speed.json")
    return parser.parse_args()


def build_model(preset, args, use_sdn=True):
    """The SDN-VAE of `preset` (or its baseline), compiled with the default optimizer."""
    overrides = model_overrides(args)
    if args.image_size is not None:
        overrides["image_shape"] = (args.image_size, args.image_size, 3)
    model = SDNVAE.from_preset(preset, use_sdn=use_sdn, seed=args.seed, **overrides)
    model.compile()
    model.make_train_function()
    return model


@contextlib.contextmanager
def sweeps_skipped():
    """SDN layers traced in this context skip their sweeps (the correction stage is the identity).

    (The sweeps' weights then get no gradient: Keras' warning about it is silenced.)
    """
    sweeps = sweep.sweeps
    sweep.sweeps = lambda inputs, *weights: inputs
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Gradients do not exist")
            yield
    finally:
        sweep.sweeps = sweeps


def training_step(model):
    """One compiled training step on a batch, as `fit` runs it; returns the logs."""
    return lambda images: model.train_function([(images,)])


def generation(model, num_images):
    return lambda _: model.sample(num_images)


def scope_names(model, layer_class):
    """Names of the model's layers of `layer_class`, as their name scopes start."""
    return {layer.name for layer in model._flatten_layers() if isinstance(layer, layer_class)}


def part_of(event_name, sdn_layers):
    """The profile row of a graph-mode op event `scope/.../name:OpType`."""
    kind, in_loop = op_type(event_name)
    scopes = event_name.rsplit(":", 1)[0].split("/")
    gradient = scopes[0] == "gradient_tape"
    # Name scopes of repeated layer calls get a numeric suffix.
    scopes = [re.sub(r"_\d+$", "", scope) for scope in scopes[gradient:]]
    if "sweeps" in scopes or "sweeps_gradient" in scopes:
        if not in_loop:
            return "SDN sweeps: around the loops"
        return (
            "SDN sweeps: backward loops"
            if "sweeps_gradient" in scopes
            else "SDN sweeps: forward loops"
        )
    if "inverse_autoregressive_flow" in scopes or "iaf_network" in scopes:
        return "IAF networks"
    if scopes[0] in sdn_layers:
        return "SDN projections, ResSDN conv and gate"
    if "DiscretizedLogisticMixture" in scopes:
        return "likelihood"
    if kind.startswith(_CONVOLUTIONS):
        return "other convolutions"
    if (
        scopes[0] == "cond"
        or kind.startswith(_UPDATE_OPS)
        or (len(scopes) == 1 and not gradient and kind not in _MODEL_GLUE)
    ):
        # The update skipper's branch, the variables' updates and the other
        # unscoped ops of `train_step` (gradient norm, averages, metrics).
        return "update: optimizer, skipping, EMA, metrics"
    return "the rest (ELU, residual gates, KL, ...)"


def profile(model, images, runs):
    """`{part: (ms per step, ops per step)}` of the training step."""
    sdn_layers = scope_names(model, ResidualSpatialDependency)
    milliseconds, ops = collections.Counter(), collections.Counter()
    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3)
    for name, duration in traced_events(training_step(model), images, runs, options):
        if op_type(name)[1] is None:  # not a graph-mode op
            continue
        part = part_of(name, sdn_layers)
        milliseconds[part] += duration / runs
        ops[part] += 1 / runs
    return {part: (milliseconds[part], ops[part]) for part in PARTS}


def measure(preset, args):
    batch = args.batch or DEFAULT_BATCH[preset]
    models = {
        name: build_model(preset, args, use_sdn) for name, use_sdn in zip(MODELS, (True, False))
    }
    shape = models["sdn"].image_shape
    images = tf.constant(
        np.random.default_rng(args.seed).integers(0, 256, (batch,) + shape), tf.uint8
    )
    result = {"preset": preset, "image_shape": list(shape), "batch": batch}
    steps = {name: training_step(model) for name, model in models.items()}
    for name, step in steps.items():
        start = time.perf_counter()
        run_once(step, images)
        result[f"{name} first step s"] = round(time.perf_counter() - start, 2)
    timed = list(steps.values())
    if args.without_sweeps:
        model = build_model(preset, args)
        with sweeps_skipped():
            timed.append(training_step(model))
            run_once(timed[-1], images)
    seconds = alternate_medians(timed, images, args.repeats)
    for name, value in zip(MODELS, seconds):
        result[f"{name} step ms"] = round(1000 * value, 2)
    result["step ratio"] = round(seconds[0] / seconds[1], 3)
    if args.without_sweeps:
        result["sdn without sweeps step ms"] = round(1000 * seconds[2], 2)
        result["without sweeps step ratio"] = round(seconds[2] / seconds[1], 3)

    samplers = [generation(model, args.sample_images) for model in models.values()]
    seconds = alternate_medians(samplers, None, args.repeats)
    for name, value in zip(MODELS, seconds):
        result[f"{name} sample images/s"] = round(args.sample_images / value, 1)
    result["sample ratio"] = round(seconds[0] / seconds[1], 3)

    for name, step in steps.items():
        result[f"{name} step peak MiB"] = round(peak_memory_mib(step, images), 1)
    if args.profile_runs:
        result["profile"] = {
            name: {
                part: {"ms": round(ms, 3), "ops": round(count, 1)}
                for part, (ms, count) in profile(model, images, args.profile_runs).items()
            }
            for name, model in models.items()
        }
    return result


def print_result(result):
    shape = "x".join(map(str, result["image_shape"]))
    print(f"\n{result['preset']} preset, {shape} images, batch {result['batch']}")
    print(f"{'':26s} {'SDN-VAE':>10s} {'baseline':>10s} {'ratio':>7s}")
    print(
        f"{'training step ms':26s} {result['sdn step ms']:10.1f} "
        f"{result['baseline step ms']:10.1f} {result['step ratio']:7.2f}"
    )
    if "sdn without sweeps step ms" in result:
        print(
            f"{'  without sweeps':26s} {result['sdn without sweeps step ms']:10.1f} "
            f"{'':10s} {result['without sweeps step ratio']:7.2f}"
        )
    print(
        f"{'sample images/s':26s} {result['sdn sample images/s']:10.1f} "
        f"{result['baseline sample images/s']:10.1f} "
        f"{1 / result['sample ratio']:7.2f}"
    )
    print(
        f"{'step peak MiB':26s} {result['sdn step peak MiB']:10.1f} "
        f"{result['baseline step peak MiB']:10.1f}"
    )
    print(
        f"{'first step s (tracing)':26s} {result['sdn first step s']:10.1f} "
        f"{result['baseline first step s']:10.1f}"
    )
    if "profile" not in result:
        return
    sdn, baseline = result["profile"]["sdn"], result["profile"]["baseline"]
    totals = {name: sum(row["ms"] for row in result["profile"][name].values()) for name in MODELS}
    print("\nop time per training step, summed over threads (ms, share, ops executed)")
    print(f"{'part':42s} {'SDN-VAE':>8s} {'share':>6s} {'ops':>6s}  {'baseline':>8s} {'ops':>6s}")
    for part in PARTS:
        print(
            f"{part:42s} {sdn[part]['ms']:8.1f} {sdn[part]['ms'] / totals['sdn']:6.1%} "
            f"{sdn[part]['ops']:6.0f}  {baseline[part]['ms']:8.1f} {baseline[part]['ops']:6.0f}"
        )
    print(
        f"{'all':42s} {totals['sdn']:8.1f} {'':6s} "
        f"{sum(row['ops'] for row in sdn.values()):6.0f}  {totals['baseline']:8.1f} "
        f"{sum(row['ops'] for row in baseline.values()):6.0f}"
    )


def main():
    args = parse_args()
    print(f"median of {args.repeats} alternating runs; `sample` of {args.sample_images} images")
    results = []
    for preset in args.presets:
        results.append(measure(preset, args))
        print_result(results[-1])
    write_json(args.output, {"args": vars(args), "results": results})


if __name__ == "__main__":
    main()
