"""β-VAEs with a convolutional and an SDN decoder: ELBO and disentanglement against β.

A CPU-sized version of the SDN paper's Section 6 experiment. For each decoder
(`conv`, `sdn`) and each β, trains a `keras_sdn.models.BetaVAE` on
SyntheticShapes (or TFDS `shapes3d`), evaluates its ELBO on training images
(the paper, following Locatello et al. 2019, has no train/test split), the
β-VAE, FactorVAE and MIG disentanglement metrics and, on held-out scenes, the
reconstruction error, and writes to `--output-dir`:

- `results.json`: the settings and every number below, per decoder and β,
  with the learning curve (held-out negative ELBO and reconstruction error
  every `--backup-every` steps);
- `elbo.png`, `reconstruction_error.png`, `beta_vae_score.png`,
  `factor_vae_score.png`, `mig_score.png`: each number against β, one line
  per decoder (the ELBO as negative ELBO in bits per dimension, lower is
  better; the reconstruction error as the mean absolute difference, in 8-bit
  pixel values, between held-out scenes and the decoder's most likely image
  for their posterior means);
- `learning_curves.png`: the held-out negative ELBO and reconstruction error
  against the training step, every model;
- `reconstructions_<decoder>_beta<β>.png`: rows of held-out scenes, each
  above the row of their reconstructions;
- `traversals_<decoder>_beta<β>.png`: a held-out scene (left column) and its
  decodings with one latent at a time (rows, labelled with the latent's mean
  KL; collapsed latents are greyed) set to each value of the top row;
- `<decoder>_beta<β>/`: one run folder per model, with the trained model
  `model.keras` (`keras.models.load_model`) and its `results.json`; the
  `keras-sdn` command samples, reconstructs, interpolates and evaluates it
  (e.g. `keras-sdn sample beta_vae_results/sdn_beta4 --output samples.png`).

The defaults are sized for two CPU cores (8.4 CPU-minutes): 1,200 steps of
batch 32 per model, Adam at 2e-3 with a cosine decay to 2e-4, β warmed up
over the first third, an SDN layer of 32 features, β in {1, 4}. They were
chosen from measured learning curves (README). The authors' settings
(`train_3dshapes.sh`; a GPU run) are

    python examples/train_beta_vae.py --dataset shapes3d --betas 1 2 4 8 16 \\
        --steps 300000 --batch-size 128 --optimizer adamax --learning-rate 1e-3 \\
        --lr-decay none --beta-warmup-steps 0 --sdn-features 200 \\
        --mixed-precision --backup-every 10000 --metric-points 10000 \\
        --metric-batch-size 64 --variance-samples 10000 --mig-samples 10000 \\
        --eval-batches 1000 --eval-images 10000

(`shapes3d` must be prepared in TFDS' data directory, `--data-dir`; the
authors set no step limit, 300,000 steps is Locatello et al.'s budget).

`--strategy mirrored` trains on all local GPUs, `--strategy multi_worker` on
several machines (TF_CONFIG, see the README), `--strategy tpu --tpu NAME` on a
TPU; `--batch-size` is the global batch. Every `--backup-every` steps the
training state is backed up in the model's folder, `<decoder>_beta<β>/backup`
(deleted once `model.keras` is written). Running the command again continues:
models with a `model.keras` trained with the same settings are kept (their
numbers are read back, not recomputed), a model whose training was killed
resumes from its last backup (its learning curve then starts where it
resumed), and the rest are trained; `--restart` trains them all again.
"""

import argparse
import json
import os
import pathlib
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from keras_sdn.cli.run_folder import MODEL_FILE  # noqa: E402
from keras_sdn.cli.run_folder import RESULTS_FILE  # noqa: E402
from keras_sdn.cli.run_folder import relative_path  # noqa: E402
from keras_sdn.cli.run_folder import save_model  # noqa: E402
from keras_sdn.cli.run_folder import write_json  # noqa: E402
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
from keras_sdn.models.beta_vae import OBSERVATIONS  # noqa: E402

DECODERS = ("conv", "sdn")
PLOTTED = {
    "negative_elbo_bits_per_dim": ("elbo.png", "negative ELBO [bits/dim]"),
    "beta_vae_score": ("beta_vae_score.png", "β-VAE metric"),
    "factor_vae_score": ("factor_vae_score.png", "FactorVAE metric"),
    "mig_score": ("mig_score.png", "MIG"),
    "reconstruction_mean_absolute_error": (
        "reconstruction_error.png",
        "held-out reconstruction error [0-255]",
    ),
}
TRAVERSAL_VALUES = np.linspace(-2.0, 2.0, 7)
NUM_RECONSTRUCTIONS = 16  # two pairs of rows: 8 held-out scenes above their reconstructions
RECONSTRUCTIONS_PER_ROW = 8
# A latent whose KL to the prior, averaged over held-out images, is below this
# (nats) says almost nothing about the image: it is marked as collapsed.
COLLAPSED_KL = 0.05
OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamax": keras.optimizers.Adamax}
# Arguments that choose which models to train, and how, but not the models themselves.
NOT_MODEL_SETTINGS = ("output_dir", "decoders", "betas", "verbose", "restart", "strategy", "tpu")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="beta_vae_results")
    parser.add_argument(
        "--dataset", choices=("synthetic_shapes", "shapes3d"), default="synthetic_shapes"
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory (shapes3d)")
    parser.add_argument("--decoders", nargs="+", choices=DECODERS, default=list(DECODERS))
    parser.add_argument("--betas", nargs="+", type=float, default=[1.0, 4.0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps per model")
    parser.add_argument(
        "--backup-every",
        type=int,
        default=200,
        help="training steps between backups of the training state (--steps must be a "
        "multiple); a killed run, started again, resumes from the last backup",
    )
    parser.add_argument("--beta-warmup-steps", type=int, default=None, help="default: steps // 3")
    parser.add_argument("--batch-size", type=int, default=32, help="the authors: 128")
    parser.add_argument(
        "--learning-rate", type=float, default=2e-3, help="the authors: 1e-3 (Adamax)"
    )
    parser.add_argument(
        "--lr-decay",
        choices=("cosine", "none"),
        default="cosine",
        help="cosine: from --learning-rate to a tenth of it over --steps",
    )
    parser.add_argument(
        "--optimizer", choices=tuple(OPTIMIZERS), default="adam", help="the authors: adamax"
    )
    parser.add_argument(
        "--observation",
        choices=OBSERVATIONS,
        default="global_scale",
        help="discretized logistic with one learned scale (the authors') or a scale per sub-pixel",
    )
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument(
        "--sdn-features",
        "--sdn-num-features",  # its former name
        dest="sdn_features",
        type=int,
        default=32,
        help="CPU-sized; the authors (and BetaVAE's default) use 200",
    )
    parser.add_argument("--num-bits", type=int, default=8)
    parser.add_argument(
        "--eval-batches", type=int, default=20, help="training batches for the ELBO"
    )
    parser.add_argument(
        "--eval-images",
        type=int,
        default=256,
        help="held-out images for the learning curves, the reconstruction error and the "
        f"latent KLs; the first {NUM_RECONSTRUCTIONS} are shown reconstructed",
    )
    parser.add_argument(
        "--metric-points",
        type=int,
        default=300,
        help="training points of the β-VAE and FactorVAE classifiers (half as many to evaluate)",
    )
    parser.add_argument("--metric-batch-size", type=int, default=16, help="images per metric point")
    parser.add_argument(
        "--variance-samples", type=int, default=2000, help="FactorVAE's variance estimate"
    )
    parser.add_argument("--mig-samples", type=int, default=3000)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras fit verbosity"
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="Train the chosen models again, deleting their folders in --output-dir (by "
        "default, finished models there are kept and an interrupted one resumes).",
    )
    add_strategy_arguments(parser)
    args = parser.parse_args(argv)
    positive = (
        "steps", "backup_every", "batch_size", "learning_rate", "latent_dim", "sdn_features",
        "eval_batches", "eval_images", "metric_points", "metric_batch_size", "variance_samples", "mig_samples",
    )  # fmt: skip
    for name in positive:
        value = getattr(args, name)
        if not value > 0:
            parser.error(
                f"argument --{name.replace('_', '-')}: expected a positive value, got {value}"
            )
    if not 1 <= args.num_bits <= 8:
        parser.error(f"argument --num-bits: expected an integer in [1, 8], got {args.num_bits}")
    if min(args.betas) <= 0:
        parser.error(f"argument --betas: expected positive values, got {args.betas}")
    if args.beta_warmup_steps is not None and args.beta_warmup_steps < 0:
        parser.error(f"argument --beta-warmup-steps: expected >= 0, got {args.beta_warmup_steps}")
    if args.steps % min(args.backup_every, args.steps):
        parser.error(f"--steps {args.steps} is not a multiple of --backup-every")
    return args


def tile(grid):
    """(rows, columns, H, W, C) images -> one (rows * H, columns * W, C) image."""
    rows, columns, height, width, channels = grid.shape
    return grid.transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, channels)


def save_labelled_image(image, path, title, row_labels, column_labels, row_colors=None):
    """Saves `image` pixel for pixel, with a label per row (left) and per column (top)."""
    height, width = image.shape[:2]
    dpi = 100
    left, right, top, bottom = 130, 10, 75, 8  # margins, pixels
    size = (left + width + right, bottom + height + top)
    figure = plt.figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    figure.figimage(image, xo=left, yo=bottom, origin="upper")
    # Axes over the image, for its labels only.
    axes = figure.add_axes(
        [left / size[0], bottom / size[1], width / size[0], height / size[1]], frameon=False
    )
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    row_height = height / len(row_labels)
    axes.set_yticks((np.arange(len(row_labels)) + 0.5) * row_height, row_labels, fontsize=9)
    for tick, color in zip(axes.get_yticklabels(), row_colors or []):
        tick.set_color(color)
    column_width = width / len(column_labels)
    axes.set_xticks((np.arange(len(column_labels)) + 0.5) * column_width, column_labels, fontsize=9)
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    figure.text(0.01, 1.0 - 6 / size[1], title, ha="left", va="top", fontsize=10)
    figure.canvas.draw()
    Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3]).save(path)  # RGB
    plt.close(figure)


def latent_kls(model, images, batch_size=128):
    """Mean KL(q(z_i | x) || N(0, 1)) over `images` of each latent i, in nats."""
    total = np.zeros(model.latent_dim)
    for start in range(0, len(images), batch_size):
        posterior = model.posterior(images[start : start + batch_size])
        mean = np.asarray(posterior.mean(), np.float64)
        variance = np.asarray(posterior.variance(), np.float64)
        total += np.sum(0.5 * (mean**2 + variance - 1.0 - np.log(variance)), axis=0)
    return total / len(images)


def save_traversals(model, image, kls, path, title):
    """Rows: the latents by decreasing mean KL; columns: the image, then each value."""
    order = np.argsort(-kls)
    grid = np.asarray(model.traverse(image, TRAVERSAL_VALUES, dims=order.tolist()))
    originals = np.broadcast_to(image, (grid.shape[0], 1) + image.shape)
    collapsed = kls[order] < COLLAPSED_KL
    row_labels = [
        f"z{i}: collapsed" if dead else f"z{i}: KL {kl:.2f}"
        for i, kl, dead in zip(order, kls[order], collapsed)
    ]
    save_labelled_image(
        model.display_images(tile(np.concatenate([originals, grid], axis=1))),
        path,
        title,
        row_labels,
        ["input"] + [f"{value:+.2f}" for value in TRAVERSAL_VALUES],
        row_colors=["0.6" if dead else "black" for dead in collapsed],
    )


def mean_absolute_error(images, reconstructions, num_bits):
    """Mean |x - x'| in 8-bit units (0..255) of images quantized to `num_bits`."""
    difference = np.abs(images.astype(np.float64) - reconstructions.astype(np.float64))
    return float(np.mean(difference) * 255.0 / (2**num_bits - 1))


def save_reconstructions(model, images, reconstructions, path, title):
    """Rows of held-out images, each above the row of their reconstructions."""
    per_row = min(RECONSTRUCTIONS_PER_ROW, len(images))
    rows = []
    for start in range(0, len(images) - per_row + 1, per_row):
        rows += [images[start : start + per_row], reconstructions[start : start + per_row]]
    save_labelled_image(
        model.display_images(tile(np.stack(rows))),
        path,
        title,
        ["input", "reconstruction"] * (len(rows) // 2),
        [""] * per_row,
    )


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


def plot_curves(results, path):
    """Held-out negative ELBO and reconstruction error against training steps."""
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    keys = [
        ("negative_elbo_bits_per_dim", "held-out negative ELBO [bits/dim]"),
        ("reconstruction_mean_absolute_error", "held-out reconstruction error [0-255]"),
    ]
    styles = ["-", "--", ":", "-."]
    betas = sorted({result["beta"] for result in results})
    for result in results:
        color = "C1" if result["decoder"] == "sdn" else "C0"
        style = styles[betas.index(result["beta"]) % len(styles)]
        for ax, (key, _) in zip(axes, keys):
            steps = [point["step"] for point in result["curve"]]
            values = [point[key] for point in result["curve"]]
            label = f"{result['decoder']}, β={result['beta']:g}"
            ax.plot(steps, values, style, color=color, marker=".", label=label)
    for ax, (_, label) in zip(axes, keys):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    # Early errors are several times the final ones.
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class HeldOutCurve(keras.callbacks.Callback):
    """Records the held-out negative ELBO and reconstruction error after every epoch.

    The ELBO comes from `fit`'s validation pass over the held-out images.
    """

    def __init__(self, images, num_bits, steps_per_epoch):
        super().__init__()
        self.images = images
        self.num_bits = num_bits
        self.steps_per_epoch = steps_per_epoch
        self.points = []

    def on_epoch_end(self, epoch, logs=None):
        reconstructions = np.asarray(self.model.reconstruct(self.images))
        error = mean_absolute_error(self.images, reconstructions, self.num_bits)
        self.points.append(
            {
                "step": (epoch + 1) * self.steps_per_epoch,
                "negative_elbo_bits_per_dim": float(self.model.bits_per_dim(logs["val_elbo"])),
                "reconstruction_mean_absolute_error": error,
            }
        )


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


def build_model(decoder, beta, args, image_shape, strategy):
    """The compiled β-VAE of one run, built for `image_shape` images."""
    warmup = args.steps // 3 if args.beta_warmup_steps is None else args.beta_warmup_steps
    with strategy.scope():
        model = BetaVAE(
            latent_dim=args.latent_dim,
            decoder=decoder,
            beta=beta,
            beta_warmup_steps=warmup,
            num_bits=args.num_bits,
            sdn_features=args.sdn_features,
            observation=args.observation,
            seed=args.seed,
        )
        model.build((None,) + image_shape)  # to restore a backup before training
        learning_rate = args.learning_rate
        if args.lr_decay == "cosine":
            learning_rate = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=args.steps, alpha=0.1
            )
        model.compile(optimizer=OPTIMIZERS[args.optimizer](learning_rate))
    return model


def train(model, held_out, args, run_dir):
    """Trains `model` with backups every `--backup-every` steps; returns its held-out curve."""
    # --batch-size is the global batch, split over the strategy's replicas.
    train_images = load_images(
        batch_size=args.batch_size, repeat=True, seed=args.seed, **dataset_arguments(args)
    )
    steps_per_epoch = min(args.backup_every, args.steps)
    curve = HeldOutCurve(held_out, args.num_bits, steps_per_epoch)
    model.fit(
        train_images,
        epochs=args.steps // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=held_out_dataset(held_out),
        shuffle=False,
        verbose=args.verbose,
        callbacks=[BackupAndRestore(run_dir / "backup", delete_checkpoint=False), curve],
    )
    return curve


def dataset_arguments(args):
    return dict(name=args.dataset, num_bits=args.num_bits, data_dir=args.data_dir)


def save_pictures(model, name, title, held_out, reconstructions, error, kls, output_dir):
    """The reconstructions and the latent traversals of one run."""
    shown = slice(0, NUM_RECONSTRUCTIONS)
    save_reconstructions(
        model,
        held_out[shown],
        reconstructions[shown],
        output_dir / f"reconstructions_{name}.png",
        f"{title}: held-out scenes and their most likely reconstructions\n"
        f"mean absolute error {error:.1f} / 255",
    )
    save_traversals(
        model,
        held_out[0],
        kls,
        output_dir / f"traversals_{name}.png",
        f"{title}: one latent at a time set to each value\n"
        f"rows by the latent's mean KL [nats]; collapsed: KL < {COLLAPSED_KL}",
    )


def model_settings(args):
    """The settings that make a model and its numbers, with paths relative to --output-dir."""
    settings = {key: value for key, value in vars(args).items() if key not in NOT_MODEL_SETTINGS}
    if args.data_dir is not None:
        settings["data_dir"] = relative_path(args.data_dir, args.output_dir)
    return settings


def model_name(decoder, beta):
    return f"{decoder}_beta{beta:g}"


def finished_result(run_dir, settings):
    """The result of the model in `run_dir` if it is trained with `settings`, else None."""
    if not (run_dir / MODEL_FILE).exists():
        return None
    record = json.loads((run_dir / RESULTS_FILE).read_text())
    if record["settings"] != settings:
        differing = sorted(
            key
            for key in set(settings) | set(record["settings"])
            if settings.get(key) != record["settings"].get(key)
        )
        raise SystemExit(
            f"{run_dir} holds a model trained with other settings (differing: "
            f"{', '.join(differing)}): pass --restart to train it again, or choose another "
            "--output-dir."
        )
    return record["result"]


def train_and_evaluate(decoder, beta, ground_truth, held_out, args, output_dir, strategy):
    keras.utils.set_random_seed(args.seed)
    name = model_name(decoder, beta)
    run_dir = output_dir / name
    model = build_model(decoder, beta, args, held_out.shape[1:], strategy)
    start = time.time()
    curve = train(model, held_out, args, run_dir)
    train_seconds = time.time() - start

    start = time.time()
    # Training images, in another order than in training.
    evaluation = load_images(
        batch_size=args.batch_size, repeat=True, seed=args.seed + 1, **dataset_arguments(args)
    )
    elbo = model.evaluate(evaluation.take(args.eval_batches), verbose=0, return_dict=True)
    scores = disentanglement(
        lambda images: np.asarray(model.encode(quantize(images, args.num_bits))),
        ground_truth,
        args,
    )
    reconstructions = np.asarray(model.reconstruct(held_out))
    error = mean_absolute_error(held_out, reconstructions, args.num_bits)
    kls = latent_kls(model, held_out)
    result = {
        "decoder": decoder,
        "beta": beta,
        "elbo": float(elbo["elbo"]),
        "reconstruction": float(elbo["reconstruction"]),
        "kl": float(elbo["kl"]),
        "negative_elbo_bits_per_dim": float(model.bits_per_dim(elbo["elbo"])),
        "reconstruction_mean_absolute_error": error,
        "latent_kls": [round(float(kl), 4) for kl in kls],
        "num_collapsed_latents": int(np.sum(kls < COLLAPSED_KL)),
        **scores,
        "parameters": int(model.count_params()),
        "train_seconds": round(train_seconds, 1),
        "evaluation_seconds": round(time.time() - start, 1),
        "curve": curve.points,
    }
    if is_chief(strategy):
        title = f"{decoder} decoder, β = {beta:g}"
        save_pictures(model, name, title, held_out, reconstructions, error, kls, output_dir)
        record = {"dataset": args.dataset, "settings": model_settings(args), "result": result}
        write_json(run_dir / RESULTS_FILE, record)
        save_model(model, run_dir)  # a folder with model.keras holds a finished model
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return result


def held_out_dataset(images, batch_size=128):
    return tf.data.Dataset.from_tensor_slices(images).batch(batch_size)


def main(argv=None):
    args = parse_args(argv)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    output_dir = pathlib.Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.dataset == "shapes3d":
        try:
            ground_truth = Shapes3D(data_dir=args.data_dir)
        except DatasetNotAvailableError as error:
            raise SystemExit(f"error: {error}") from None
    else:
        ground_truth = SyntheticShapes()
    # Held-out scenes (shapes3d has one split: its "test" images are training images).
    held_out = load_images(
        args.dataset,
        split="test",
        batch_size=args.eval_images,
        num_bits=args.num_bits,
        shuffle=False,
        data_dir=args.data_dir,
        num_examples=args.eval_images,
    )
    held_out = next(held_out.as_numpy_iterator())

    strategy = strategy_from_name(args.strategy, args.tpu)
    settings = model_settings(args)
    results = []
    for decoder in args.decoders:
        for beta in args.betas:
            run_dir = output_dir / model_name(decoder, beta)
            if args.restart:
                shutil.rmtree(run_dir, ignore_errors=True)
            result = finished_result(run_dir, settings)
            if result is None:
                result = train_and_evaluate(
                    decoder, beta, ground_truth, held_out, args, output_dir, strategy
                )
            else:
                print(f"Keeping the trained model in {run_dir} (--restart trains it again)")
            results.append(result)
            print(json.dumps(result), flush=True)
            if not is_chief(strategy):
                continue  # with several workers, the chief writes the outputs
            # Written after every model so that an interrupted run keeps its numbers.
            write_json(
                output_dir / RESULTS_FILE,
                {
                    "settings": {"decoders": args.decoders, "betas": args.betas, **settings},
                    "results": results,
                },
            )

    if not is_chief(strategy):
        return results
    for key, (filename, label) in PLOTTED.items():
        plot_against_beta(results, key, output_dir / filename, label)
    plot_curves(results, output_dir / "learning_curves.png")
    print(f"Wrote results.json and plots to {output_dir}")
    return results


if __name__ == "__main__":
    main()
