"""Export time and served latency of an SDN-VAE's SavedModel.

One process builds the model (`SDNVAE.from_preset`) and times
`keras_sdn.export.export_for_serving`; then, for each signature, a fresh
process that never imports keras_sdn loads the SavedModel with
`tf.saved_model.load` (timed), times the first request (what a server that
ships no warm-up requests makes its first client wait) and the median of the
following ones. Requests: `serving_default` and `encode` with `--batch`
black images, `sample` with `count=--count`, `temperature=0.8`.

    python benchmarks/serving_speed.py --preset tiny --output benchmarks/serving_speed.json
    python benchmarks/serving_speed.py --preset tiny --unrolled \
        --output benchmarks/serving_speed_unrolled.json      # compact_graph=False

Times are wall-clock seconds (and the export's CPU seconds: the machine is
shared, and tracing runs on one core).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

SIGNATURES = ("serving_default", "encode", "sample")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="SDNVAE preset")
    parser.add_argument(
        "--model",
        choices=("sdn", "conv"),
        default="sdn",
        help="the SDN-VAE, or its convolutional baseline (use_sdn=False)",
    )
    parser.add_argument("--image-size", type=int, help="height and width (default: the preset's)")
    parser.add_argument("--batch", type=int, default=2, help="images per request")
    parser.add_argument("--count", type=int, default=4, help="`count` of the sample requests")
    parser.add_argument("--repeats", type=int, default=10, help="steady-state requests timed")
    parser.add_argument(
        "--unrolled",
        action="store_true",
        help="export with compact_graph=False (unrolled sweeps: faster steady requests)",
    )
    parser.add_argument("--output", help="JSON file to write")
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "SIGNATURE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def export(args, directory):
    """Builds the model and exports it; returns (wall s, CPU s, model config)."""
    import keras

    from keras_sdn.export import export_for_serving
    from keras_sdn.models import SDNVAE

    keras.utils.set_random_seed(0)
    overrides = {"use_sdn": args.model == "sdn"}
    if args.image_size:
        overrides["image_shape"] = (args.image_size, args.image_size, 3)
    model = SDNVAE.from_preset(args.preset, **overrides)
    wall, cpu = time.perf_counter(), time.process_time()
    export_for_serving(model, directory, compact_graph=not args.unrolled)
    return time.perf_counter() - wall, time.process_time() - cpu, model


def request(function, args):
    """The inputs of one request to the signature `function` (black images)."""
    import tensorflow as tf

    specs = function.structured_input_signature[1]
    if "images" not in specs:
        return {
            "count": tf.constant([args.count], tf.int32),
            "temperature": tf.constant([0.8], tf.float32),
        }
    return {"images": tf.zeros((args.batch, *specs["images"].shape[1:]), tf.uint8)}


def measure(directory, signature, args):
    """In a fresh process: load, first and steady-state request latency (seconds)."""
    import tensorflow as tf

    start = time.perf_counter()
    function = tf.saved_model.load(directory).signatures[signature]
    load = time.perf_counter() - start
    inputs = request(function, args)

    def call():
        start = time.perf_counter()
        for output in function(**inputs).values():
            output.numpy()
        return time.perf_counter() - start

    first = call()
    steady = float(np.median([call() for _ in range(args.repeats)]))
    return {"load_s": load, "first_request_s": first, "steady_request_s": steady}


def main(argv=None):
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure, args)))
        return
    with tempfile.TemporaryDirectory() as root:
        directory = os.path.join(root, "1")
        export_wall, export_cpu, model = export(args, directory)
        rows = {}
        for signature in SIGNATURES:
            measured = subprocess.run(
                [sys.executable, __file__, *(argv or sys.argv[1:]), "--measure", directory, signature],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            rows[signature] = json.loads(measured.stdout.strip().splitlines()[-1])
    result = {
        "preset": args.preset,
        "model": args.model,
        "image_shape": list(model.image_shape),
        "batch": args.batch,
        "count": args.count,
        "repeats": args.repeats,
        "compact_graph": not args.unrolled,
        "export_s": export_wall,
        "export_cpu_s": export_cpu,
        "signatures": rows,
    }
    print(f"export_for_serving: {export_wall:.1f} s ({export_cpu:.1f} s CPU)")
    print(f"{'signature':<16}{'load s':>9}{'first request s':>17}{'steady request ms':>19}")
    for signature, row in rows.items():
        print(
            f"{signature:<16}{row['load_s']:>9.2f}{row['first_request_s']:>17.2f}"
            f"{1000 * row['steady_request_s']:>19.1f}"
        )
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    main()
