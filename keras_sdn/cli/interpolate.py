"""`keras-sdn interpolate`: decoded images between the latent codes of two images."""

import numpy as np

from keras_sdn.cli import arguments
from keras_sdn.cli.images import grid
from keras_sdn.cli.images import read_images
from keras_sdn.cli.images import save_png
from keras_sdn.cli.run_folder import CommandError
from keras_sdn.cli.run_folder import Run

DESCRIPTION = """\
Encodes two images, moves in a straight line from the latent code of the first
to that of the second, and writes a strip: IMAGE_A, the decoded steps (both
ends included), IMAGE_B. An SDN-VAE interpolates its top --fixed-layers latent
layers (default: all) between posterior samples of the two images and samples
the layers below at --temperature, with the same noise at every step (the
paper's Figure 5); a β-VAE interpolates the posterior means.

examples:
  keras-sdn interpolate runs/sdn_vae a.png b.png --steps 8 --output strip.png
  keras-sdn interpolate runs/sdn_vae a.png b.png --fixed-layers 2 --temperature 0.6
"""


def add_parser(subparsers):
    parser = arguments.add_subcommand(
        subparsers,
        "interpolate",
        "Decode a straight line between the latent codes of two images.",
        DESCRIPTION,
        run,
    )
    arguments.add_run_argument(parser)
    parser.add_argument("image_a", metavar="IMAGE_A", help="The first image (PNG or JPEG).")
    parser.add_argument("image_b", metavar="IMAGE_B", help="The last image (PNG or JPEG).")
    parser.add_argument(
        "-s",
        "--steps",
        type=arguments.positive_int,
        default=8,
        help="Decoded images, both ends included, at least 2 (default: 8).",
    )
    parser.add_argument(
        "--fixed-layers",
        metavar="K",
        type=arguments.positive_int,
        default=None,
        help="SDN-VAE: how many of the top latent layers to interpolate (default: all).",
    )
    parser.add_argument(
        "-t",
        "--temperature",
        type=arguments.temperature,
        default=1.0,
        help="SDN-VAE: prior temperature of the layers below --fixed-layers (default: 1.0).",
    )
    arguments.add_output_argument(parser, "interpolation.png", "the strip")
    arguments.add_seed_argument(parser)
    return parser


def run(args):
    if args.steps < 2:
        raise CommandError(f"--steps {args.steps}: expected at least 2 (both ends)")
    run_ = Run(args.run)
    model = run_.model
    if args.fixed_layers is not None:
        run_.check_fixed_layers(args.fixed_layers)
    image_a, image_b = read_images([args.image_a, args.image_b], model)
    run_.reseed(args.seed)
    if run_.kind == "SDNVAE":
        steps = model.interpolate(
            image_a,
            image_b,
            fixed_layers=args.fixed_layers or model.num_layers,
            steps=args.steps,
            temperature=args.temperature,
        )
    else:
        codes = np.asarray(model.encode(np.stack([image_a, image_b])))
        weights = np.linspace(0.0, 1.0, args.steps)[:, None]
        steps = model.decode((1.0 - weights) * codes[:1] + weights * codes[1:])
    row = model.display_images(np.concatenate([image_a[None], np.asarray(steps), image_b[None]]))
    save_png(grid([list(row)]), args.output)
    print(f"Wrote {args.steps} interpolation steps between the two images to {args.output}")
