"""`keras-sdn evaluate`: test bits per dimension of a trained model."""

import pathlib

import keras
import numpy as np

from keras_sdn.cli import arguments
from keras_sdn.cli.run_folder import CommandError
from keras_sdn.cli.run_folder import Run
from keras_sdn.cli.run_folder import relative_path
from keras_sdn.cli.run_folder import write_json

# (image, importance sample) pairs per forward pass.
MAX_PAIRS_PER_PASS = 512

DESCRIPTION = """\
Computes a trained model's negative log-likelihood on a dataset's test images,
in bits per dimension (lower is better), two ways: the negative ELBO (one
posterior sample per image) and the tighter importance-weighted bound with
--importance-samples posterior samples (Burda et al., 2015). Prints both and
writes them with the settings to --output (JSON).

The dataset is a name of keras_sdn.data (synthetic_shapes, cifar10,
imagenet32, celebahq256, shapes3d; TFDS datasets are downloaded when needed)
or a folder of PNG and JPEG images (about 10% of them, chosen by a hash of
their path, are its test split, as in training). Images are resized (and a
folder's center-cropped) to the model's size, as in training. By default: the
run's own training dataset, and as many test images as its own evaluation.

examples:
  keras-sdn evaluate runs/sdn_vae --output evaluation.json
  keras-sdn evaluate runs/sdn_vae --dataset ~/photos --examples 1000
"""


def add_parser(subparsers):
    parser = arguments.add_subcommand(
        subparsers, "evaluate", "Test bits/dim of a trained model on a dataset.", DESCRIPTION, run
    )
    arguments.add_run_argument(parser)
    parser.add_argument(
        "--dataset",
        metavar="NAME_OR_DIR",
        default=None,
        help="A dataset name or a folder of images (default: the run's training dataset).",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory.")
    parser.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="The dataset's split (default: test).",
    )
    parser.add_argument(
        "--examples",
        type=arguments.positive_int,
        default=None,
        help="Evaluate the first N images of the split (default: as many as the run's own "
        "evaluation in its results.json, else the whole split).",
    )
    parser.add_argument(
        "-k",
        "--importance-samples",
        type=arguments.positive_int,
        default=16,
        help="Posterior samples per image of the importance-weighted bound (default: 16).",
    )
    parser.add_argument(
        "--batch-size", type=arguments.positive_int, default=32, help="Images per batch."
    )
    arguments.add_output_argument(parser, "evaluation.json", "the results")
    arguments.add_seed_argument(parser)
    return parser


def log_likelihoods(model, images, num_samples):
    """Per-image `(ELBO, importance-weighted bound)` in nats, `num_samples` samples.

    An `SDNVAE` computes both with its `log_likelihood`; for a `BetaVAE` the
    ELBO is its own (KL in closed form) and the bound is computed here from
    its posterior, prior and decoder.
    """
    if hasattr(model, "log_likelihood"):
        return (
            model.log_likelihood(images, num_samples=1),
            model.log_likelihood(
                images, num_samples=num_samples, max_batch_size=MAX_PAIRS_PER_PASS
            ),
        )
    from keras import ops

    posterior = model.posterior(images)
    log_weights = []
    for _ in range(num_samples):
        codes = posterior.sample(seed=ops.cast(model.seed_generator.next(), "int32"))
        distribution = model.observation_distribution(model.decoder_network(codes))
        log_weights.append(
            distribution.log_prob(images)
            + model.prior().log_prob(codes)
            - posterior.log_prob(codes)
        )
    bound = ops.logsumexp(ops.stack(log_weights), axis=0) - np.log(num_samples)
    return model(images)["elbo"], bound


def bits_per_dim(model, dataset, num_samples, progress=None):
    """Mean bits/dim of the ELBO and of the importance-weighted bound over `dataset`.

    Returns:
        `(elbo bits/dim, importance-weighted bits/dim, number of images)`.
    """
    elbo, weighted = [], []
    for images in dataset:
        batch_elbo, batch_weighted = log_likelihoods(model, images, num_samples)
        elbo.append(np.asarray(model.bits_per_dim(batch_elbo)))
        weighted.append(np.asarray(model.bits_per_dim(batch_weighted)))
        if progress is not None:
            progress.add(len(images))
    elbo, weighted = np.concatenate(elbo), np.concatenate(weighted)
    return float(np.mean(elbo)), float(np.mean(weighted)), len(elbo)


def _training_dataset(run_):
    """The dataset the run trained on (a directory's path as an absolute path), or None."""
    recorded = run_.results.get("dataset")
    if recorded is None:
        return None
    from keras_sdn.data import DATASET_NAMES

    return recorded if recorded in DATASET_NAMES else str(run_.directory / recorded)


def run(args):
    from keras_sdn.data import DATASET_NAMES
    from keras_sdn.data import load_images

    run_ = Run(args.run)
    model = run_.model
    dataset = args.dataset or _training_dataset(run_)
    if dataset is None:
        raise CommandError(f"{args.run} records no training dataset: pass --dataset")
    dataset = dataset if dataset in DATASET_NAMES else str(pathlib.Path(dataset).expanduser())
    examples = args.examples or run_.results.get("test_examples")
    images = load_images(
        dataset,
        split=args.split,
        batch_size=args.batch_size,
        num_bits=model.num_bits,
        image_size=model.image_shape[0],
        shuffle=False,
        num_examples=examples,
        data_dir=args.data_dir,
    )
    run_.reseed(args.seed)
    progress = keras.utils.Progbar(examples, unit_name="image")
    elbo, weighted, count = bits_per_dim(model, images, args.importance_samples, progress)
    output_dir = args.output.parent
    results = {
        f"{args.split}_bits_per_dim_elbo": elbo,
        f"{args.split}_bits_per_dim_importance_weighted": weighted,
        "importance_samples": args.importance_samples,
        "examples": count,
        "dataset": dataset if dataset in DATASET_NAMES else relative_path(dataset, output_dir),
        "split": args.split,
        "run": relative_path(args.run, output_dir),
        "model": run_.kind,
        "image_shape": list(model.image_shape),
        "num_bits": model.num_bits,
        "seed": args.seed,
    }
    write_json(args.output, results)
    print(
        f"{args.split} bits/dim on {count} images of {dataset}: "
        f"{elbo:.4f} (negative ELBO), {weighted:.4f} (importance-weighted, "
        f"{args.importance_samples} samples)"
    )
    print(f"Wrote {args.output}")
