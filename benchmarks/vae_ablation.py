"""Ablation of the SDN-VAE training recipe: each change turned off in turn.

Trains the SDN-VAE and its convolutional baseline for `--steps` steps with the
full recipe, then once more for every change with that change undone (the
rest of the recipe kept), and reports the test negative ELBO in bits per
dimension (EMA weights) of each run. One run per cell: differences of a few
hundredths of a bit are within the noise of a single run.

    python benchmarks/vae_ablation.py                        # tiny preset, 16x16, 500 steps
    python benchmarks/vae_ablation.py --variants recipe no_weight_norm

Prints a table and writes it as JSON (`--output`).
"""

import argparse
import copy
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from common import write_json  # noqa: E402
from vae_convergence import add_recipe_arguments  # noqa: E402
from vae_convergence import train_curves  # noqa: E402

# Keras' Adamax epsilon, with which the old bits-per-dimension objective ran.
OLD_EPSILON = 1e-7


def undo_objective_scale(args):
    """The old objective, bits per dimension with epsilon 1e-7, is the nats objective with
    epsilon 1e-7 * (height * width * channels * ln 2): Adamax is scale-invariant but for it."""
    args.epsilon = OLD_EPSILON * args.image_size**2 * 3 * math.log(2.0)


# name: (what is undone, how)
VARIANTS = {
    "recipe": ("nothing: the full recipe", lambda args: None),
    "no_weight_norm": (
        "weight normalisation",
        lambda args: args.set.append("weight_normalization=false"),
    ),
    "quadrant_directions": (
        "direction pairing (quadrants: up+left, right+down)",
        lambda args: args.set.append('sdn_direction_order=["up", "left", "right", "down"]'),
    ),
    "bpd_objective": ("objective in nats per image (bits/dim, epsilon 1e-7)", undo_objective_scale),
    "channel_masks": (
        "IAF-VAE's masks (masks over channels only)",
        lambda args: args.set.append('iaf_ordering="channels"'),
    ),
    "glorot_init": (
        "orthogonal kernels (Glorot-uniform)",
        lambda args: args.set.append('kernel_initializer="glorot_uniform"'),
    ),
    "flips": (
        "the dataset's flip default (flips forced on)",
        lambda args: setattr(args, "random_flip", "on"),
    ),
    "no_update_skipping": (
        "update skipping",
        lambda args: args.set.append("skip_factor=null"),
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output", default="benchmarks/vae_ablation.json")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for name in args.variants:
        undone, undo = VARIANTS[name]
        variant = copy.deepcopy(args)
        undo(variant)
        keras.backend.clear_session()
        results, _ = train_curves(variant, args.steps, args.steps)
        row = {"variant": name, "undone": undone}
        for model, result in results.items():
            row[f"{model} test bpd"] = result["curve"][-1]["test_bpd"]
            row[f"{model} seconds"] = result["curve"][-1]["seconds"]
        rows.append(row)
        write_json(args.output, {"settings": vars(args), "rows": rows})
    print(
        f"\nTest bits/dim after {args.steps} steps ({args.preset}, {args.dataset} "
        f"{args.image_size}x{args.image_size}, batch {args.batch_size}, one run each)"
    )
    print(f"{'undone':<55} {'SDN-VAE':>8} {'baseline':>9}")
    for row in rows:
        print(f"{row['undone']:<55} {row['sdn test bpd']:>8.3f} {row['baseline test bpd']:>9.3f}")


if __name__ == "__main__":
    main()
