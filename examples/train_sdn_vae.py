"""Train an SDN-VAE (or its convolutional baseline) and evaluate its test bits per dimension.

With no arguments: the "tiny" preset on the built-in synthetic_shapes dataset
at 16x16, a few minutes on 2 CPU cores:

    python examples/train_sdn_vae.py

Writes into --output-dir:
    logs/          TensorBoard logs (tensorboard --logdir runs/sdn_vae/logs): the
                   metrics of every epoch, the sample and reconstruction grids
    checkpoint/    weights, optimizer state and epoch after every epoch;
                   rerun with --resume (and more --epochs) to continue
    results.json   test bits/dim (ELBO and importance-weighted), time per step, settings
    samples.png    samples from the prior at temperatures 1.0, 0.8, 0.6, 0.4: for
                   each latent sample the decoder's most likely image (as the
                   authors display samples)
    reconstructions.png  test images (odd rows) above their reconstructions
    saved_model/   TensorFlow SavedModel (keras_sdn.export.export_for_serving):
                   `serving_default` (images -> bits/dim, reconstruction),
                   `encode` (images -> latents), `sample` (count, temperature -> images)
"""

import argparse
import functools
import json
import os
import pathlib
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import summary_pb2  # noqa: E402

from keras_sdn.data import DATASET_NAMES  # noqa: E402
from keras_sdn.data import DatasetNotAvailableError  # noqa: E402
from keras_sdn.data import load_images  # noqa: E402
from keras_sdn.distribute import BackupAndRestore  # noqa: E402
from keras_sdn.distribute import add_strategy_arguments  # noqa: E402
from keras_sdn.distribute import is_chief  # noqa: E402
from keras_sdn.distribute import strategy_from_name  # noqa: E402
from keras_sdn.export import export_for_serving  # noqa: E402
from keras_sdn.models import PRESETS  # noqa: E402
from keras_sdn.models import SDNVAE  # noqa: E402

TEMPERATURES = (1.0, 0.8, 0.6, 0.4)
# Learning rates of the authors' runs (CelebA-HQ needed a smaller one).
LEARNING_RATES = {"celebahq256": 1e-3}
DEFAULT_LEARNING_RATE = 2e-3
# (image, importance sample) pairs per forward pass in the evaluation.
EVAL_BATCH_SIZE = 512


def dataset_name_or_directory(value):
    """`--dataset`: a dataset name of `keras_sdn.data` or an existing directory."""
    if value in DATASET_NAMES or os.path.isdir(value):
        return value
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(DATASET_NAMES)} or an existing directory of PNG or "
        f"JPEG images, got {value!r}"
    )


def exits_on_user_error(function):
    """Makes the errors of bad settings or missing data end the run with their message.

    Such errors (a `ValueError` or `DatasetNotAvailableError` in `function`)
    print the message to stderr and exit with status 1, without a traceback.
    """

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ValueError, DatasetNotAvailableError) as error:
            raise SystemExit(f"error: {error}") from None

    return wrapped


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dataset",
        default="synthetic_shapes",
        type=dataset_name_or_directory,
        metavar="NAME_OR_DIR",
        help=f"One of {', '.join(DATASET_NAMES)} (TFDS datasets are downloaded when "
        "needed), or a directory of your own PNG and JPEG images (searched recursively; "
        "about 10%% of them, chosen by a hash of their path, are the test split).",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data directory.")
    parser.add_argument(
        "--random-flip",
        choices=("default", "on", "off"),
        default="default",
        help="Random horizontal flips of the training images (default: as the authors, on "
        "for CIFAR-10 and CelebA-HQ only).",
    )
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="Square image side to resize to (default: 16 for tiny, else the preset's).",
    )
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="Adamax learning rate (default: the preset's).",
    )
    parser.add_argument("--no-sdn", action="store_true", help="Train the convolutional baseline.")
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--output-dir", default="runs/sdn_vae")
    parser.add_argument(
        "--resume", action="store_true", help="Continue from the checkpoint in --output-dir."
    )
    parser.add_argument("--test-examples", type=int, default=256)
    parser.add_argument("--importance-samples", type=int, default=16)
    parser.add_argument("--samples-per-temperature", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    add_strategy_arguments(parser)
    args = parser.parse_args(argv)
    positive = (
        "epochs", "steps_per_epoch", "batch_size", "test_examples", "importance_samples",
        "samples_per_temperature", "image_size", "learning_rate",
    )  # fmt: skip
    for name in positive:
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(
                f"argument --{name.replace('_', '-')}: expected a positive value, got {value}"
            )
    return args


@exits_on_user_error
def build_model(args):
    overrides = {"use_sdn": not args.no_sdn, "seed": args.seed}
    image_size = args.image_size or (16 if args.preset == "tiny" else None)
    if image_size is not None:
        overrides["image_shape"] = (image_size, image_size, PRESETS[args.preset]["image_shape"][-1])
    model = SDNVAE.from_preset(args.preset, **overrides)
    learning_rate = args.learning_rate or LEARNING_RATES.get(args.preset, DEFAULT_LEARNING_RATE)
    model.compile(optimizer=keras.optimizers.Adamax(learning_rate, epsilon=1e-8))
    return model


def check_resumed_model(model, checkpoint_dir):
    """Records the model's configuration with the checkpoint; a resumed run must match it."""
    config = json.loads(json.dumps(model.get_config()))
    # Keras numbers the names of models built in one process; seeds may change.
    for key in ("name", "seed"):
        config.pop(key)
    config_path = checkpoint_dir / "model_config.json"
    if config_path.exists() and json.loads(config_path.read_text()) != config:
        raise SystemExit(
            f"The checkpoint in {checkpoint_dir} is of a different model: resume with the "
            "--preset, --image-size, --no-sdn and --mixed-precision of the run "
            "that wrote it."
        )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2))


@exits_on_user_error
def datasets(args, model):
    common = dict(
        name=args.dataset,
        batch_size=args.batch_size,
        num_bits=model.num_bits,
        image_size=model.image_shape[0],
        seed=args.seed,
        data_dir=args.data_dir,
    )
    flip = {"default": None, "on": True, "off": False}[args.random_flip]
    train = load_images(split="train", shuffle=True, repeat=True, random_flip=flip, **common)
    test = load_images(split="test", shuffle=False, num_examples=args.test_examples, **common)
    return train, test


def _plugin(name):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=name)
    )


class SummaryLogger(keras.callbacks.Callback):
    """Writes the epoch metrics as TensorBoard scalars, and images on request.

    Uses TensorFlow's own summary writer in TensorBoard's formats, so that
    logs are written even when the `tensorboard` package (needed by
    `keras.callbacks.TensorBoard` and `tf.summary.image`) is not installed.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            for name, value in (logs or {}).items():
                tf.summary.write(
                    f"epoch_{name}", float(value), step=epoch, metadata=_plugin("scalars")
                )
        self.writer.flush()

    def write_image(self, tag, image, step):
        """One uint8 `(height, width, 3)` image, as TensorBoard's image plugin stores it."""
        height, width = image.shape[:2]
        tensor = [str(width), str(height), tf.io.encode_png(image).numpy()]
        with self.writer.as_default():
            tf.summary.write(tag, tf.constant(tensor), step=step, metadata=_plugin("images"))
        self.writer.flush()


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step after the first epoch (which includes tracing)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch > self._first_epoch:
            self.seconds.append(time.perf_counter() - self._start)

    def on_train_begin(self, logs=None):
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._first_epoch is None:
            self._first_epoch = epoch


def evaluate_bits_per_dim(model, test, num_samples):
    """Mean test bits/dim of the ELBO and of the importance-weighted bound."""
    elbo_bpd, weighted_bpd = [], []
    for images in test:
        elbo_bpd.append(model.bits_per_dim(model.log_likelihood(images, num_samples=1)))
        weighted = model.log_likelihood(
            images, num_samples=num_samples, max_batch_size=EVAL_BATCH_SIZE
        )
        weighted_bpd.append(model.bits_per_dim(weighted))
    return float(np.mean(np.concatenate(elbo_bpd))), float(np.mean(np.concatenate(weighted_bpd)))


def image_row(model, images):
    """Images side by side, rescaled to 8 bits, with a one-pixel white gap after each."""
    gap = [(0, 0), (0, 1), (0, 1), (0, 0)]
    images = np.pad(model.display_images(images), gap, constant_values=255)
    return np.concatenate(list(images), axis=1)


def save_grid(rows, labels, title, path):
    """Rows of images (from `image_row`) as a labelled PNG; returns the grid as one image."""
    height, width = rows[0].shape[:2]
    scale = max(1, 64 // height)  # small images are shown enlarged, pixels kept sharp
    size = (width * scale / 100 + 1.4, len(rows) * height * scale / 100 + 0.7)
    figure, axes = plt.subplots(len(rows), 1, figsize=size, squeeze=False)
    for axis, row, label in zip(axes[:, 0], rows, labels):
        axis.imshow(
            row.squeeze(), cmap="gray" if row.shape[-1] == 1 else None, interpolation="nearest"
        )
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(title, fontsize=9, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return np.concatenate(rows, axis=0)


def save_samples(model, path, samples_per_temperature):
    """One row of prior samples per temperature."""
    rows = [
        image_row(model, model.sample(samples_per_temperature, temperature))
        for temperature in TEMPERATURES
    ]
    labels = [f"T={temperature}" for temperature in TEMPERATURES]
    title = "Prior samples at temperature T\n(the most likely image given the latents)"
    return save_grid(rows, labels, title, path)


def save_reconstructions(model, images, path):
    """Test images above their reconstructions, two pairs of rows."""
    images = np.asarray(images)
    reconstructions = np.asarray(model.reconstruct(images))
    half = len(images) // 2
    rows, labels = [], []
    for part in (slice(0, half), slice(half, 2 * half)):
        rows += [image_row(model, images[part]), image_row(model, reconstructions[part])]
        labels += ["test image", "reconstruction"]
    title = "Test images and reconstructions\n(the most likely image given a posterior sample)"
    return save_grid(rows, labels, title, path)


def export_model(model, directory):
    """Writes a SavedModel for TF Serving (`serving_default`, `encode`, `sample`)."""
    export_for_serving(model, directory, overwrite=True)


def main(argv=None):
    start = time.perf_counter()
    args = parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    checkpoint_dir = output_dir / "checkpoint"
    if checkpoint_dir.exists() and not args.resume:
        raise SystemExit(
            f"{checkpoint_dir} holds a checkpoint: pass --resume to continue it, or choose "
            "another --output-dir."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    strategy = strategy_from_name(args.strategy, args.tpu)
    with strategy.scope():
        model = build_model(args)
    train, test = datasets(args, model)  # a bad dataset stops here, before a checkpoint
    check_resumed_model(model, checkpoint_dir)
    timer = StepTimer()
    callbacks = [BackupAndRestore(checkpoint_dir, delete_checkpoint=False), timer]
    logger = SummaryLogger(output_dir / "logs" / "train") if is_chief(strategy) else None
    if logger:
        callbacks.append(logger)
    model.fit(train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks)
    if not is_chief(strategy):
        return  # with several workers, the chief evaluates and writes the outputs

    elbo_bpd, weighted_bpd = evaluate_bits_per_dim(model, test, args.importance_samples)
    results = {
        "test_bits_per_dim_elbo": elbo_bpd,
        "test_bits_per_dim_importance_weighted": weighted_bpd,
        "importance_samples": args.importance_samples,
        "test_examples": args.test_examples,
        "training_steps": int(model.optimizer.iterations.numpy()),
        "seconds_per_step": statistics.median(timer.seconds) if timer.seconds else None,
        "skipped_updates": int(model.update_skipper.skipped_updates.numpy())
        if model.update_skipper is not None
        else 0,
        "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "dataset": args.dataset,
        "preset": args.preset,
        "use_sdn": not args.no_sdn,
        "image_shape": list(model.image_shape),
        "num_bits": model.num_bits,
        "batch_size": args.batch_size,
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))

    step = int(model.optimizer.iterations.numpy())
    samples = save_samples(model, output_dir / "samples.png", args.samples_per_temperature)
    logger.write_image("samples", samples, step)
    test_images = next(iter(test))[: 2 * args.samples_per_temperature]
    reconstructions = save_reconstructions(model, test_images, output_dir / "reconstructions.png")
    logger.write_image("reconstructions", reconstructions, step)
    export_model(model, output_dir / "saved_model")
    print(
        f"Wrote {output_dir}/: logs/, checkpoint/, results.json, samples.png, "
        f"reconstructions.png, saved_model/ in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
