"""Convergence of the SDN-VAE against its convolutional baseline.

Trains `SDNVAE.from_preset(preset)` and the same model with `use_sdn=False`
from the same seed on the same batches, and every `--eval-every` steps
evaluates the test negative ELBO in bits per dimension with the averaged
(EMA) weights. The two models train in turns of `--eval-every` steps, so that
both see the machine in the same state; the seconds recorded are training
seconds only (evaluation excluded), tracing included.

    python benchmarks/vae_convergence.py                     # tiny preset, 16x16, 2000 steps
    python benchmarks/vae_convergence.py --steps 500 --set num_mixtures=10 --epsilon 1e-7

Prints a table, writes the curves as JSON (`--output`) and plots test bits/dim
against steps and against seconds (`--plot`).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import add_set_argument  # noqa: E402
from common import model_overrides  # noqa: E402
from common import write_json  # noqa: E402
from keras_sdn.data import load_images  # noqa: E402
from keras_sdn.models import SDNVAE  # noqa: E402

MODELS = ("sdn", "baseline")
FIDELITY_SAMPLES = 64
FIDELITY_TEMPERATURES = (1.0, 0.8, 0.6)
FIDELITY_NEAR = 10.0


def add_recipe_arguments(parser):
    """The options that define one training recipe (shared with vae_ablation.py)."""
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--dataset", default="synthetic_shapes")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--epsilon", type=float, default=1e-8, help="Adamax epsilon.")
    parser.add_argument(
        "--random-flip",
        choices=("default", "on", "off"),
        default="default",
        help="Horizontal flips of the training images (default: the dataset's default).",
    )
    add_set_argument(parser)
    parser.add_argument("--test-examples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--fidelity-examples",
        type=int,
        default=10000,
        help="Training images the final samples are compared with (0: no comparison).",
    )
    parser.add_argument("--output", default="benchmarks/vae_convergence.json")
    parser.add_argument("--plot", default="benchmarks/vae_convergence.png")
    return parser.parse_args(argv)


def build_model(args, use_sdn):
    keras.utils.set_random_seed(args.seed)
    channels = 3
    model = SDNVAE.from_preset(
        args.preset,
        image_shape=(args.image_size, args.image_size, channels),
        use_sdn=use_sdn,
        seed=args.seed,
        **model_overrides(args),
    )
    model.compile(
        optimizer=keras.optimizers.Adamax(learning_rate=args.learning_rate, epsilon=args.epsilon)
    )
    return model


def datasets(args, num_bits):
    common = dict(
        name=args.dataset,
        batch_size=args.batch_size,
        num_bits=num_bits,
        image_size=args.image_size,
        seed=args.seed,
    )
    flip = {"default": {}, "on": {"random_flip": True}, "off": {"random_flip": False}}
    train = load_images(
        split="train", shuffle=True, repeat=True, **common, **flip[args.random_flip]
    )
    test = load_images(split="test", shuffle=False, num_examples=args.test_examples, **common)
    return train, test


class Run:
    """One model in training: its batches, its clock and its curve."""

    def __init__(self, name, model, train, test):
        self.name = name
        self.model = model
        self.batches = iter(train)
        self.test = test
        self.seconds = 0.0
        self.steps = 0  # batches trained on, skipped updates included
        self.skipped = 0
        self.curve = []

    def train(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            logs = self.model.train_on_batch(next(self.batches), return_dict=True)
        self.seconds += time.perf_counter() - start
        self.steps += steps
        self.skipped = int(logs.get("skipped_updates", 0))

    def evaluate(self):
        bpd = self.model.evaluate(self.test, verbose=0, return_dict=True)["bpd"]
        point = {"step": self.steps, "seconds": round(self.seconds, 1), "test_bpd": float(bpd)}
        self.curve.append(point)
        return point


def train_curves(args, steps, eval_every, models=MODELS):
    """Trains `models` in turns; returns `{name: {"curve": [...], ...}}` and the models."""
    runs = []
    for name in models:
        model = build_model(args, use_sdn=name == "sdn")
        train, test = datasets(args, model.num_bits)
        runs.append(Run(name, model, train, test))
    while runs[0].steps < steps:
        for run in runs:
            run.train(min(eval_every, steps - run.steps))
            point = run.evaluate()
            print(
                f"{run.name:>8}  step {point['step']:>5}  {point['seconds']:>7.1f} s  "
                f"test {point['test_bpd']:.3f} bits/dim",
                flush=True,
            )
    results = {
        run.name: {
            "curve": run.curve,
            "skipped_updates": run.skipped,
            "parameters": int(sum(w.numpy().size for w in run.model.trainable_weights)),
        }
        for run in runs
    }
    return results, {run.name: run.model for run in runs}


def nearest_distances(images, references):
    """For each image, the mean absolute pixel difference to its nearest reference image."""
    references = references.reshape(len(references), -1).astype(np.float32)
    return np.array(
        [np.abs(references - image).mean(axis=1).min() for image in images.reshape(len(images), -1)]
    )


def sample_fidelity(args, models):
    """How far samples are from the training scenes, against test images (the floor).

    For `FIDELITY_SAMPLES` samples at each of `FIDELITY_TEMPERATURES` (the
    decoder's most likely image given the latents, as `sample` gives it):
    the median distance to the nearest of `--fidelity-examples` training
    images and the share of samples within `FIDELITY_NEAR` of one (pixel
    units: 0-255 for 8 bits). Held-out test images give the floor.

    Returns:
        The floor's summary, and `{model name: {temperature: summary}}`.
    """
    common = dict(name=args.dataset, image_size=args.image_size, shuffle=False, seed=args.seed)
    train = load_images(
        split="train", batch_size=1000, num_examples=args.fidelity_examples, **common
    )
    references = np.concatenate([batch.numpy() for batch in train])

    def summary(images):
        distances = nearest_distances(images, references)
        return {
            "median_distance": round(float(np.median(distances)), 2),
            "share_near": round(float(np.mean(distances < FIDELITY_NEAR)), 3),
        }

    test = load_images(split="test", batch_size=FIDELITY_SAMPLES, **common)
    samples = {
        name: {
            str(temperature): summary(model.sample(FIDELITY_SAMPLES, temperature).numpy())
            for temperature in FIDELITY_TEMPERATURES
        }
        for name, model in models.items()
    }
    return summary(next(iter(test)).numpy()), samples


def plot_curves(results, path, title):
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, result in results.items():
        steps = [point["step"] for point in result["curve"]]
        seconds = [point["seconds"] for point in result["curve"]]
        bpd = [point["test_bpd"] for point in result["curve"]]
        label = "SDN-VAE" if name == "sdn" else "baseline (IAF-VAE, convolutions)"
        by_step.plot(steps, bpd, marker="o", label=label)
        by_time.plot(seconds, bpd, marker="o", label=label)
    by_step.set_xlabel("training steps")
    by_time.set_xlabel("training seconds (2 CPU cores)")
    by_step.set_ylabel("test bits/dim (negative ELBO, EMA weights)")
    for axis in (by_step, by_time):
        axis.grid(alpha=0.3)
    by_step.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    results, models = train_curves(args, args.steps, args.eval_every, args.models)
    settings = {key: value for key, value in vars(args).items() if key not in ("output", "plot")}
    output = {"settings": settings, "models": results}
    if args.fidelity_examples:
        floor, samples = sample_fidelity(args, models)
        output["sample_fidelity_floor"] = {"test images": floor}
        for name, summaries in samples.items():
            results[name]["samples"] = summaries
    write_json(args.output, output)
    title = (
        f"{args.preset} preset, {args.dataset} {args.image_size}x{args.image_size}, "
        f"batch {args.batch_size}"
    )
    plot_curves(results, args.plot, title)
    print(f"\n{'step':>6} " + " ".join(f"{name + ' bpd':>14}" for name in results))
    for points in zip(*(result["curve"] for result in results.values())):
        print(f"{points[0]['step']:>6} " + " ".join(f"{p['test_bpd']:>14.3f}" for p in points))
    if args.fidelity_examples:
        print(
            "\nsamples: median distance to the nearest training image (share within "
            f"{FIDELITY_NEAR:g}); test images: {output['sample_fidelity_floor']['test images']}"
        )
        for name, result in results.items():
            print(
                f"{name:>8} "
                + "  ".join(
                    f"T={t}: {v['median_distance']} ({v['share_near']})"
                    for t, v in result["samples"].items()
                )
            )
    print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
