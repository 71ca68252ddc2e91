"""`keras-sdn reconstruct`: images through a trained model's encoder and decoder."""

import keras
import numpy as np

from keras_sdn.cli import arguments
from keras_sdn.cli.images import chunks
from keras_sdn.cli.images import grid
from keras_sdn.cli.images import read_images
from keras_sdn.cli.images import save_png
from keras_sdn.cli.run_folder import Run

# Images reconstructed per model call (bounds the memory of large folders).
BATCH_SIZE = 64

DESCRIPTION = """\
Encodes images and decodes them again, and writes a grid with each row of
input images above the row of their reconstructions. An SDN-VAE reconstructs
from a posterior sample of the latents (so two runs differ slightly unless
--seed is given); a β-VAE from the posterior means. Each reconstruction is the
decoder's most likely image. Images of another size than the model's are
center-cropped and resized to it, as its training images were.

examples:
  keras-sdn reconstruct runs/sdn_vae photo1.png photo2.jpg --output reconstructions.png
  keras-sdn reconstruct runs/sdn_vae ~/photos --columns 8 --output reconstructions.png
"""


def add_parser(subparsers):
    parser = arguments.add_subcommand(
        subparsers,
        "reconstruct",
        "Encode and decode images: inputs above their reconstructions.",
        DESCRIPTION,
        run,
    )
    arguments.add_run_argument(parser)
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="PNG or JPEG images, or folders of them (searched recursively).",
    )
    parser.add_argument(
        "--columns", type=arguments.positive_int, default=8, help="Images per row (default: 8)."
    )
    arguments.add_output_argument(parser, "reconstructions.png", "the grid")
    arguments.add_seed_argument(parser)
    return parser


def run(args):
    run_ = Run(args.run)
    model = run_.model
    images = read_images(args.inputs, model)
    run_.reseed(args.seed)
    progress = keras.utils.Progbar(len(images), unit_name="image")
    reconstructions = []
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start : start + BATCH_SIZE]
        reconstructions.append(np.asarray(model.reconstruct(batch)))
        progress.add(len(batch))
    rows = []
    for inputs, outputs in zip(
        chunks(model.display_images(images), args.columns),
        chunks(model.display_images(np.concatenate(reconstructions)), args.columns),
    ):
        rows += [inputs, outputs]
    save_png(grid(rows), args.output)
    print(f"Wrote {len(images)} images and their reconstructions to {args.output}")
