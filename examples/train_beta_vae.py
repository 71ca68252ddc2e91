"""β-VAEs with a convolutional and an SDN decoder: ELBO and disentanglement against β.

A CPU-sized version of the SDN paper's Section 6 experiment. For each decoder
(`conv`, `sdn`) and each β, trains a `keras_sdn.models.BetaVAE` on
SyntheticShapes (or TFDS `shapes3d`), evaluates its ELBO on training images
(the paper, following Locatello et al. 2019, has no train/test split) and the
β-VAE, FactorVAE and MIG disentanglement metrics, and writes to `--output-dir`:

- `results.json`: the settings and every number below, per decoder and β;
- `elbo.png`, `beta_vae_score.png`, `factor_vae_score.png`, `mig_score.png`:
  each metric against β, one line per decoder (the ELBO as negative ELBO in
  bits per dimension, lower is better);
- `traversals_<decoder>_beta<β>.png`: one image (left column) and its
  decodings with one latent at a time (rows) set to each traversal value;
- `reconstructions_<decoder>_beta<β>.png`: images (top) and their
  reconstructions (bottom, the decoder's most likely image).

The defaults finish in a few minutes on two CPU cores and give rough numbers
only; the paper-sized run is in the order of

    python examples/train_beta_vae.py --dataset shapes3d --betas 1 2 4 8 16 \\
        --steps 300000 --batch-size 64 --metric-points 10000 --mig-samples 10000 \\
        --variance-samples 10000 --metric-batch-size 64 --eval-batches 1000

(`shapes3d` must be prepared in TFDS' data directory, `--data-dir`).

`--strategy mirrored` trains on all local GPUs, `--strategy multi_worker` on
several machines (TF_CONFIG, see the README), `--strategy tpu --tpu NAME` on a
TPU; `--batch-size` is the global batch. Every `--backup-every` steps the
training state is backed up in `--output-dir`/backup_<model> (deleted once the
model is trained): a run that is killed and started again with the same
arguments continues the model it was training.
"""

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from keras_sdn.data import DatasetNotAvailableError  # noqa: E402
from keras_sdn.data import Shapes3D  # noqa: E402
from keras_sdn.data import SyntheticShapes  # noqa: E402
from keras_sdn.data import load_images  # noqa: E402
from keras_sdn.data import quantize  # noqa: E402
from keras_sdn.distribute import BackupAndRestore  # noqa: E402
from keras_sdn.distribute import add_strategy_arguments  # noqa: E402
from keras_sdn.distribute import is_chief  # noqa: E402
from keras_sdn.distribute import strategy_from_name  # noqa: E402
from keras_sdn.metrics import beta_vae_score  # noqa: E402
from keras_sdn.metrics import factor_vae_score  # noqa: E402
from keras_sdn.metrics import mig_score  # noqa: E402
from keras_sdn.models import BetaVAE  # noqa: E402

DECODERS = ("conv", "sdn")
PLOTTED = {
    "negative_elbo_bits_per_dim": ("elbo.png", "negative ELBO [bits/dim]"),
    "beta_vae_score": ("beta_vae_score.png", "β-VAE metric"),
    "factor_vae_score": ("factor_vae_score.png", "FactorVAE metric"),
    "mig_score": ("mig_score.png", "MIG"),
}
TRAVERSAL_VALUES = np.linspace(-2.0, 2.0, 7)
NUM_RECONSTRUCTIONS = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="beta_vae_results")
    parser.add_argument("--dataset", choices=("synthetic_shapes", "shapes3d"), default="synthetic_shapes")
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (shapes3d)")
    parser.add_argument("--decoders", nargs="+", choices=DECODERS, default=list(DECODERS))
    parser.add_argument("--betas", nargs="+", type=float, default=[1.0, 4.0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per model")
    parser.add_argument(
        "--backup-every",
        type=int,
        default=100,
        help="training steps between backups of the training state (--steps must be a "
        "multiple); a killed run, started again, resumes from the last backup",
    )
    parser.add_argument("--beta-warmup-steps", type=int, default=None, help="default: steps // 3")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adamax learning rate")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--sdn-num-features", type=int, default=32)
    parser.add_argument("--num-bits", type=int, default=8)
    parser.add_argument("--eval-batches", type=int, default=20, help="training batches for the ELBO")
    parser.add_argument(
        "--metric-points",
        type=int,
        default=300,
        help="training points of the β-VAE and FactorVAE classifiers (half as many to evaluate)",
    )
    parser.add_argument("--metric-batch-size", type=int, default=16, help="images per metric point")
    parser.add_argument("--variance-samples", type=int, default=2000, help="FactorVAE's variance estimate")
    parser.add_argument("--mig-samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity")
    add_strategy_arguments(parser)
    args = parser.parse_args(argv)
    positive = (
        "steps", "backup_every", "batch_size", "learning_rate", "latent_dim", "sdn_num_features",
        "eval_batches", "metric_points", "metric_batch_size", "variance_samples", "mig_samples",
    )  # fmt: skip
    for name in positive:
        value = getattr(args, name)
        if not value > 0:
            parser.error(f"argument --{name.replace('_', '-')}: expected a positive value, got {value}")
    if not 1 <= args.num_bits <= 8:
        parser.error(f"argument --num-bits: expected an integer in [1, 8], got {args.num_bits}")
    if min(args.betas) <= 0:
        parser.error(f"argument --betas: expected positive values, got {args.betas}")
    if args.beta_warmup_steps is not None and args.beta_warmup_steps < 0:
        parser.error(f"argument --beta-warmup-steps: expected >= 0, got {args.beta_warmup_steps}")
    if args.steps % min(args.backup_every, args.steps):
        parser.error(f"--steps {args.steps} is not a multiple of --backup-every")
    return args


def to_display(images, num_bits):
    """Quantized images to full-range uint8 for viewing."""
    return (np.asarray(images, np.float32) * (255.0 / (2**num_bits - 1))).round().astype(np.uint8)


def tile(grid):
    """(rows, columns, H, W, C) images -> one (rows * H, columns * W, C) image."""
    rows, columns, height, width, channels = grid.shape
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, channels)


def save_traversals(model, image, path, num_bits):
    grid = np.asarray(model.traverse(image, TRAVERSAL_VALUES))
    originals = np.broadcast_to(image, (grid.shape[0], 1) + image.shape)
    Image.fromarray(to_display(tile(np.concatenate([originals, grid], axis=1)), num_bits)).save(path)


def save_reconstructions(model, images, path, num_bits):
    reconstructions = np.asarray(model.decode(model.encode(images)))
    grid = np.stack([images, reconstructions])
    Image.fromarray(to_display(tile(grid), num_bits)).save(path)


def plot_against_beta(results, key, path, label):
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for decoder in sorted({result["decoder"] for result in results}):
        points = sorted((r["beta"], r[key]) for r in results if r["decoder"] == decoder)
        axes.plot(*zip(*points), marker="o", label=f"{decoder} decoder")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("β")
    axes.set_ylabel(label)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def disentanglement(encode_fn, ground_truth, args):
    num_eval = max(1, args.metric_points // 2)
    classifier = dict(
        seed=args.seed,
        batch_size=args.metric_batch_size,
        num_train=args.metric_points,
        num_eval=num_eval,
    )
    beta_vae = beta_vae_score(encode_fn, ground_truth, **classifier)
    factor_vae = factor_vae_score(
        encode_fn, ground_truth, num_variance_estimate=args.variance_samples, **classifier
    )
    mig = mig_score(encode_fn, ground_truth, seed=args.seed, num_train=args.mig_samples)
    return {
        "beta_vae_score": float(beta_vae["beta_vae_score"]),
        "factor_vae_score": float(factor_vae["factor_vae_score"]),
        "num_active_dims": int(factor_vae["num_active_dims"]),
        "mig_score": float(mig["mig_score"]),
    }


def train_and_evaluate(decoder, beta, ground_truth, shown_images, args, output_dir, strategy):
    keras.utils.set_random_seed(args.seed)
    warmup = args.steps // 3 if args.beta_warmup_steps is None else args.beta_warmup_steps
    name = f"{decoder}_beta{beta:g}"
    with strategy.scope():
        model = BetaVAE(
            latent_dim=args.latent_dim,
            decoder=decoder,
            beta=beta,
            beta_warmup_steps=warmup,
            num_bits=args.num_bits,
            sdn_num_features=args.sdn_num_features,
            seed=args.seed,
        )
        model.build((None,) + shown_images.shape[1:])  # to restore a backup before training
        model.compile(optimizer=keras.optimizers.Adamax(args.learning_rate))
    data = dict(name=args.dataset, num_bits=args.num_bits, data_dir=args.data_dir)
    # --batch-size is the global batch, split over the strategy's replicas.
    train = load_images(batch_size=args.batch_size, repeat=True, seed=args.seed, **data)
    steps_per_epoch = min(args.backup_every, args.steps)
    start = time.time()
    model.fit(
        train,
        epochs=args.steps // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,
        verbose=args.verbose,
        callbacks=[BackupAndRestore(output_dir / f"backup_{name}")],
    )
    train_seconds = time.time() - start

    start = time.time()
    # Training images, in another order than in training.
    evaluation = load_images(batch_size=args.batch_size, repeat=True, seed=args.seed + 1, **data)
    elbo = model.evaluate(evaluation.take(args.eval_batches), verbose=0, return_dict=True)
    dims = np.prod(shown_images.shape[1:])
    scores = disentanglement(
        lambda images: np.asarray(model.encode(quantize(images, args.num_bits))),
        ground_truth,
        args,
    )
    if is_chief(strategy):
        save_traversals(model, shown_images[0], output_dir / f"traversals_{name}.png", args.num_bits)
        save_reconstructions(
            model, shown_images, output_dir / f"reconstructions_{name}.png", args.num_bits
        )
    return {
        "decoder": decoder,
        "beta": beta,
        "elbo": float(elbo["elbo"]),
        "reconstruction": float(elbo["reconstruction"]),
        "kl": float(elbo["kl"]),
        "negative_elbo_bits_per_dim": float(-elbo["elbo"] / (dims * np.log(2.0))),
        **scores,
        "parameters": int(model.count_params()),
        "train_seconds": round(train_seconds, 1),
        "evaluation_seconds": round(time.time() - start, 1),
    }


def main(argv=None):
    args = parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.dataset == "shapes3d":
        try:
            ground_truth = Shapes3D(data_dir=args.data_dir)
        except DatasetNotAvailableError as error:
            raise SystemExit(f"error: {error}") from None
    else:
        ground_truth = SyntheticShapes()
    _, shown = ground_truth.sample(NUM_RECONSTRUCTIONS, seed=args.seed)
    shown_images = np.asarray(quantize(shown, args.num_bits))

    strategy = strategy_from_name(args.strategy, args.tpu)
    results = []
    for decoder in args.decoders:
        for beta in args.betas:
            result = train_and_evaluate(
                decoder, beta, ground_truth, shown_images, args, output_dir, strategy
            )
            results.append(result)
            print(json.dumps(result), flush=True)
            if not is_chief(strategy):
                continue  # with several workers, the chief writes the outputs
            # Written after every model so that an interrupted run keeps its numbers.
            with open(output_dir / "results.json", "w") as file:
                json.dump({"settings": vars(args), "results": results}, file, indent=2)

    if not is_chief(strategy):
        return results
    for key, (filename, label) in PLOTTED.items():
        plot_against_beta(results, key, output_dir / filename, label)
    print(f"Wrote results.json and plots to {output_dir}")
    return results


if __name__ == "__main__":
    main()
