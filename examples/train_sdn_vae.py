"""Train an SDN-VAE (or its convolutional baseline) and evaluate its test bits per dimension.

With no arguments: the "tiny" preset on the built-in synthetic_shapes dataset
at 16x16, a few minutes on 2 CPU cores:

    python examples/train_sdn_vae.py

Writes the run folder --output-dir (default runs/sdn_vae):
    model.keras    the trained model (keras.models.load_model; it samples and
                   evaluates with its averaged weights), written last: the
                   `keras-sdn` command uses it (keras-sdn sample runs/sdn_vae)
    logs/          TensorBoard logs (tensorboard --logdir runs/sdn_vae/logs): the
                   metrics of every epoch, the sample and reconstruction grids
    checkpoint/    weights, optimizer state, epoch and training time after every
                   epoch
    results.json   test bits/dim (ELBO and importance-weighted), training seconds
                   and steps, time per step, settings
    samples.png    samples from the prior at temperatures 1.0, 0.8, 0.6, 0.4: for
                   each latent sample the decoder's most likely image (as the
                   authors display samples)
    reconstructions.png  test images (odd rows) above their reconstructions
    saved_model/   TensorFlow SavedModel (keras_sdn.export.export_for_serving):
                   `serving_default` (images -> bits/dim, reconstruction),
                   `encode` (images -> latents), `sample` (count, temperature -> images)

Running the command again continues the run in --output-dir, as Keras'
BackupAndRestore does: an interrupted run resumes after its last epoch, a
finished run says so and stops (a larger --epochs or --train-seconds trains it
further); --restart starts over.
"""

import argparse
import functools
import json
import os
import pathlib
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import summary_pb2  # noqa: E402

from keras_sdn.cli.evaluate import bits_per_dim  # noqa: E402
from keras_sdn.cli.run_folder import MODEL_FILE  # noqa: E402
from keras_sdn.cli.run_folder import relative_path  # noqa: E402
from keras_sdn.cli.run_folder import save_model  # noqa: E402
from keras_sdn.cli.run_folder import write_json  # noqa: E402
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
# What a run writes into --output-dir (--restart deletes these).
RUN_OUTPUTS = (
    "checkpoint", "logs", "saved_model", "results.json", "samples.png", "reconstructions.png",
    MODEL_FILE,
)  # fmt: skip
TRAINING_TIME_FILE = "training_time.json"  # in checkpoint/
# Epochs when --train-seconds bounds the training instead.
UNBOUNDED_EPOCHS = 10**6


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
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="Epochs of --steps-per-epoch steps (default: 25; with --train-seconds, no limit).",
    )
    parser.add_argument(
        "--train-seconds",
        type=float,
        default=None,
        help="Train until this many seconds of training steps (evaluation and the first, "
        "compiling step not counted); the step count is whatever fits.",
    )
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
        "--restart",
        action="store_true",
        help="Delete the run in --output-dir and start over (by default a run there is continued).",
    )
    parser.add_argument("--test-examples", type=int, default=256)
    parser.add_argument("--importance-samples", type=int, default=16)
    parser.add_argument("--samples-per-temperature", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    add_strategy_arguments(parser)
    args = parser.parse_args(argv)
    positive = (
        "epochs", "steps_per_epoch", "batch_size", "test_examples", "importance_samples",
        "samples_per_temperature", "image_size", "learning_rate", "train_seconds",
    )  # fmt: skip
    for name in positive:
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(
                f"argument --{name.replace('_', '-')}: expected a positive value, got {value}"
            )
    if args.epochs is None:
        args.epochs = 25 if args.train_seconds is None else UNBOUNDED_EPOCHS
    return args


def image_size_note(args, image_size):
    """Says at which size the model trains, and how to choose another."""
    chosen = "--image-size" if args.image_size else f"the {args.preset} preset's size"
    prepared = "center-cropped and resized to" if os.path.isdir(args.dataset) else "at"
    presets = ", ".join(
        f"{name} {PRESETS[name]['image_shape'][0]}x{PRESETS[name]['image_shape'][1]}"
        for name in sorted(PRESETS)
        if name != args.preset
    )
    return (
        f"Training on {args.dataset} images {prepared} {image_size}x{image_size} ({chosen}). "
        f"Another size: --image-size N, or another --preset ({presets})."
    )


@exits_on_user_error
def build_model(args):
    overrides = {"use_sdn": not args.no_sdn, "seed": args.seed}
    image_size = args.image_size or (16 if args.preset == "tiny" else None)
    if image_size is not None:
        overrides["image_shape"] = (image_size, image_size, PRESETS[args.preset]["image_shape"][-1])
    model = SDNVAE.from_preset(args.preset, **overrides)
    print(image_size_note(args, model.image_shape[0]))
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
            f"The checkpoint in {checkpoint_dir} is of a different model: continue it with the "
            "--preset, --image-size, --no-sdn and --mixed-precision of the run "
            "that wrote it, or pass --restart to delete it and start over."
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


class TrainingClock(keras.callbacks.Callback):
    """Training time: the wall time of the training steps, evaluation excluded.

    The first step of every `fit` (it traces and compiles the training step)
    is not counted. The totals are kept in `path` (JSON) after every epoch,
    so that a resumed run counts on. With `budget_seconds`, training stops
    after the step that reaches it (that epoch ends early).

    Args:
        path: JSON file of the totals, `{"seconds", "timed_steps"}`.
        budget_seconds: Seconds of training after which to stop, or None.
    """

    def __init__(self, path, budget_seconds=None):
        super().__init__()
        self.path = path
        self.budget_seconds = budget_seconds
        record = json.loads(path.read_text()) if path.exists() else {}
        self.seconds = record.get("seconds", 0.0)
        self.timed_steps = record.get("timed_steps", 0)

    @property
    def out_of_time(self):
        return self.budget_seconds is not None and self.seconds >= self.budget_seconds

    def on_train_begin(self, logs=None):
        self._compiled = False

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._compiled:
            self.seconds += time.perf_counter() - self._start
            self.timed_steps += 1
        self._compiled = True
        if self.out_of_time:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        write_json(self.path, {"seconds": self.seconds, "timed_steps": self.timed_steps})


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


def run_state(output_dir):
    """`(epochs done, training seconds)` of the run in `output_dir`, or None if it has none."""
    pointer = output_dir / "checkpoint" / BackupAndRestore.POINTER
    if not pointer.exists():
        return None
    clock = output_dir / "checkpoint" / TRAINING_TIME_FILE
    seconds = json.loads(clock.read_text())["seconds"] if clock.exists() else 0.0
    return json.loads(pointer.read_text())["epoch"], seconds


def finished_message(output_dir, epochs_done):
    """What a finished run holds, and how to use it, train it further or start over."""
    results = json.loads((output_dir / "results.json").read_text())
    return (
        f"{output_dir} holds a finished run: {results['training_steps']} steps in "
        f"{epochs_done} epoch{'' if epochs_done == 1 else 's'}, test bits/dim {results['test_bits_per_dim_importance_weighted']:.3f} "
        "(results.json). Nothing to do.\n"
        f"  Use its model:   keras-sdn sample {output_dir} --output samples.png "
        "(keras-sdn --help lists the commands)\n"
        "  Train it longer: this command with a larger --epochs (or --train-seconds)\n"
        "  Start over:      this command with --restart (deletes the run), or another --output-dir"
    )


def delete_run(output_dir):
    """Deletes what a run wrote into `output_dir` (nothing else there)."""
    for name in RUN_OUTPUTS:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def main(argv=None):
    start = time.perf_counter()
    args = parse_args(argv)
    output_dir = pathlib.Path(args.output_dir)
    checkpoint_dir = output_dir / "checkpoint"
    if args.restart:
        delete_run(output_dir)
    state = run_state(output_dir)
    if state is not None:
        epochs_done, seconds = state
        out_of_time = args.train_seconds is not None and seconds >= args.train_seconds
        if (output_dir / MODEL_FILE).exists() and (epochs_done >= args.epochs or out_of_time):
            print(finished_message(output_dir, epochs_done))
            return
        print(
            f"Continuing the run in {output_dir} after epoch {epochs_done} ({seconds:.0f} s of "
            "training); pass --restart to start over."
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
    clock = TrainingClock(checkpoint_dir / TRAINING_TIME_FILE, args.train_seconds)
    # The clock records its time after the backup of the same epoch.
    callbacks = [BackupAndRestore(checkpoint_dir, delete_checkpoint=False), clock]
    logger = SummaryLogger(output_dir / "logs" / "train") if is_chief(strategy) else None
    if logger:
        callbacks.append(logger)
    model.fit(train, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, callbacks=callbacks)
    if not is_chief(strategy):
        return  # with several workers, the chief evaluates and writes the outputs

    elbo_bpd, weighted_bpd, _ = bits_per_dim(model, test, args.importance_samples)
    results = {
        "test_bits_per_dim_elbo": elbo_bpd,
        "test_bits_per_dim_importance_weighted": weighted_bpd,
        "importance_samples": args.importance_samples,
        "test_examples": args.test_examples,
        "training_steps": int(model.optimizer.iterations.numpy()),
        "training_seconds": round(clock.seconds, 2),
        "seconds_per_step": clock.seconds / clock.timed_steps if clock.timed_steps else None,
        "train_seconds_budget": args.train_seconds,
        "skipped_updates": int(model.update_skipper.skipped_updates.numpy())
        if model.update_skipper is not None
        else 0,
        "parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "dataset": args.dataset
        if args.dataset in DATASET_NAMES
        else relative_path(args.dataset, output_dir),
        "preset": args.preset,
        "use_sdn": not args.no_sdn,
        "image_shape": list(model.image_shape),
        "num_bits": model.num_bits,
        "batch_size": args.batch_size,
    }
    write_json(output_dir / "results.json", results)
    print(json.dumps(results, indent=2))

    step = int(model.optimizer.iterations.numpy())
    samples = save_samples(model, output_dir / "samples.png", args.samples_per_temperature)
    logger.write_image("samples", samples, step)
    test_images = next(iter(test))[: 2 * args.samples_per_temperature]
    reconstructions = save_reconstructions(model, test_images, output_dir / "reconstructions.png")
    logger.write_image("reconstructions", reconstructions, step)
    export_model(model, output_dir / "saved_model")
    save_model(model, output_dir)  # last: a run with model.keras is finished
    print(
        f"Wrote {output_dir}/: {MODEL_FILE}, logs/, checkpoint/, results.json, samples.png, "
        f"reconstructions.png, saved_model/ in {time.perf_counter() - start:.0f} s\n"
        f"Use the model: keras-sdn sample {output_dir} --output samples.png "
        "(keras-sdn --help lists the commands)"
    )


if __name__ == "__main__":
    main()
