"""Where a SpatialDependency layer spends its time: an op-level profile.

Traces `--runs` calls of the layer's forward or forward+backward pass (inside
`tf.function`, graph mode or `jit_compile=True`) with the TensorFlow
profiler, and adds up the time of every op (graph mode) or XLA thunk by kind:
the neighbourhood products inside the sweep loops, the large products outside
them, the loop's element-wise ops, the scan's stacking and unstacking, the
layout changes, and the rest. Times are summed over the executor's threads
(on 2 cores two ops run at once, so the sum is up to twice the wall time);
the shares are what matters.

    python benchmarks/layer_profile.py                       # forward+backward, graph
    python benchmarks/layer_profile.py --pass forward --mode xla
    python benchmarks/layer_profile.py --layer conv          # Conv2D(F, 3), for reference

Prints a table (the kinds, then the `--top` most expensive ops) and writes
it as JSON (`--output`).
"""

import collections
import glob
import os
import re
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from common import compiled_passes  # noqa: E402
from common import configuration_parser  # noqa: E402
from common import run_once  # noqa: E402
from common import write_json  # noqa: E402
from keras_sdn import SpatialDependency  # noqa: E402

# Events that wrap ops, or are the runtime's own (C++ scopes such as
# `ExecutorState::Process` are recognised by their `::`).
_NOT_OPS = ("ParallelFor", "ExecutorDoneCallback", "MemoryAllocation", "MemoryDeallocation", "end:")
_PRODUCTS = (
    "Conv2D",
    "Conv2DBackpropFilter",
    "Conv2DBackpropInput",
    "_FusedConv2D",
    "MatMul",
    "BatchMatMulV2",
    "_FusedMatMul",
)
_SCAN_IO = (
    "TensorListFromTensor",
    "TensorListStack",
    "TensorListSetItem",
    "TensorListGetItem",
    "TensorListReserve",
)
_LAYOUT = ("Transpose", "ConcatV2", "Split", "SplitV", "Pack", "Unpack", "Reverse", "Tile")


def parse_args():
    parser = configuration_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pass", dest="which", default="forward+backward", choices=["forward", "forward+backward"]
    )
    parser.add_argument("--mode", default="graph", choices=["graph", "xla"])
    parser.add_argument(
        "--layer",
        default="sdn",
        choices=["sdn", "conv"],
        help="the SDN layer, or Conv2D(F, 3) for reference",
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--output", default="benchmarks/layer_profile.json")
    return parser.parse_args()


def layer_pass(args):
    if args.layer == "sdn":
        layer = SpatialDependency(
            args.features, num_features=args.features, directions=args.directions
        )
    else:
        layer = keras.layers.Conv2D(args.features, 3, padding="same")
    layer.build((args.batch, args.size, args.size, args.features))
    return compiled_passes(layer, jit_compile=args.mode == "xla")[args.which]


def traced_events(function, x, runs, options=None):
    """(name, milliseconds) of every op event of `runs` traced calls.

    `options`: `tf.profiler.experimental.ProfilerOptions`; by default the
    host tracer records only the ops TensorFlow deems expensive.
    """
    for _ in range(3):
        run_once(function, x)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir, options=options)
        for _ in range(runs):
            run_once(function, x)
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as file:
            space.ParseFromString(file.read())
    for plane in space.planes:
        for line in plane.lines:
            if line.name == "python":  # the caller's thread: only wrappers
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "::" in name or name.startswith(_NOT_OPS):
                    continue
                yield name, event.duration_ps / 1e9


def op_type(name):
    """`(type, inside a loop)` of an event: graph-mode `scope/name:OpType`, or an XLA thunk.

    The sweeps' loops are `tf.scan`'s while loops or, unrolled, the ops of
    the `lines` name scope. oneDNN's rewrites of TensorFlow ops (`_MklMatMul`, `_MklNativeConv2D`, ...)
    count as the ops they replace.
    """
    if ":" in name:
        op = re.sub(r"^_Mkl(Native)?", "", name.rsplit(":", 1)[-1])
        return op, "/while/" in name or "/lines/" in name
    return re.sub(r"(_\d+)?(\.\d+)?$", "", name), None


def op_kind(name):
    """The kind of an event, one of the rows of the first table."""
    kind, in_loop = op_type(name)
    if kind in _PRODUCTS or kind.startswith(("conv", "MatMul", "dot")):
        return (
            "products in the loop" if in_loop or kind == "conv1d" else "products outside the loop"
        )
    if kind in _SCAN_IO or "dynamic-update-slice" in kind:
        return "scan stacking / unstacking"
    if kind in _LAYOUT or "transpose" in kind or "concatenate" in kind:
        return "layout (transpose, split, concat)"
    if in_loop or kind in ("while", "wrapped_add", "compare_and_fusion"):
        return "element-wise and control in the loop"
    return "element-wise outside the loop"


def main():
    args = parse_args()
    x = tf.random.normal((args.batch, args.size, args.size, args.features))
    function = layer_pass(args)
    by_kind, by_op, calls = collections.Counter(), collections.Counter(), collections.Counter()
    # Level 3: every op, the many small ones of the sweeps' loops included.
    options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3)
    for name, milliseconds in traced_events(function, x, args.runs, options):
        by_kind[op_kind(name)] += milliseconds / args.runs
        kind, in_loop = op_type(name)
        op = f"{kind} (in a loop)" if in_loop else kind
        by_op[op] += milliseconds / args.runs
        calls[op] += 1 / args.runs
    total = sum(by_kind.values())
    print(
        f"{args.layer} {args.which}, {args.mode}: batch {args.batch}, {args.size}x{args.size}, "
        f"F = {args.features}, {args.directions} directions; op time per call, summed "
        f"({total:.1f} ms in all)"
    )
    print(f"{'kind':42s} {'ms':>8s} {'share':>6s}")
    for kind, milliseconds in by_kind.most_common():
        print(f"{kind:42s} {milliseconds:8.1f} {milliseconds / total:6.1%}")
    print(f"\n{'op':42s} {'ms':>8s} {'calls':>6s}")
    for op, milliseconds in by_op.most_common(args.top):
        print(f"{op:42s} {milliseconds:8.1f} {calls[op]:6.0f}")
    write_json(
        args.output,
        {
            "args": vars(args),
            "total_ms": total,
            "kinds": dict(by_kind),
            "ops": dict(by_op.most_common(args.top)),
        },
    )


if __name__ == "__main__":
    main()
