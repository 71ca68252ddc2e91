"""`keras-sdn export`: a trained model as a TensorFlow SavedModel for TF Serving."""

import argparse
import pathlib

from keras_sdn.cli import arguments
from keras_sdn.cli.run_folder import CommandError
from keras_sdn.cli.run_folder import Run

DESCRIPTION = """\
Writes a trained model as a TensorFlow SavedModel that TF Serving (or
tf.saved_model.load) serves without keras_sdn installed, with the signatures
serving_default (images -> bits_per_dim, reconstruction), encode (images ->
latent codes) and sample (count, temperature -> images); see
keras_sdn.export.export_for_serving. For TF Serving, write into a numbered
version folder, e.g. models/sdn_vae/1.

examples:
  keras-sdn export runs/sdn_vae --output models/sdn_vae/1
  keras-sdn export runs/sdn_vae --output models/sdn_vae/2 --no-compact-graph
"""


def add_parser(subparsers):
    parser = arguments.add_subcommand(
        subparsers, "export", "Write a TensorFlow SavedModel for TF Serving.", DESCRIPTION, run
    )
    arguments.add_run_argument(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=pathlib.Path,
        help="The SavedModel folder to create (e.g. models/sdn_vae/1).",
    )
    parser.add_argument(
        "--compact-graph",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Save the spatial dependency sweeps as loops: the model loads and answers its "
        "first request sooner (default). --no-compact-graph unrolls them as in training: "
        "steady requests are 1.5-2x as fast, loading is slower.",
    )
    parser.add_argument(
        "--max-count",
        type=arguments.positive_int,
        default=64,
        help="The most images one request may send or ask for (default: 64).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace --output if it exists.")
    return parser


def run(args):
    from keras_sdn.export import export_for_serving

    if args.output.exists() and not args.overwrite:
        raise CommandError(f"{args.output} exists: pass --overwrite to replace it")
    model = Run(args.run).model
    export_for_serving(
        model,
        args.output,
        overwrite=args.overwrite,
        max_count=args.max_count,
        compact_graph=args.compact_graph,
    )
    print(f"Wrote the SavedModel to {args.output}")
