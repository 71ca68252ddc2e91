"""Test bits/dim against training seconds: the SDN-VAE and its baseline at equal time.

Each configuration (a model and its recipe: `use_sdn`, `learning_rate`,
`batch_size` and any `SDNVAE` constructor argument) gets one step time,
measured in one process where all configurations train in turns
(`--rounds` rounds of `--round-steps` steps each, the median taken), so that
the load of the machine affects them alike. Its curve is then trained on its
own and evaluated (test negative ELBO in bits/dim, EMA weights) at step
counts; the curves are deterministic per step, so they may be computed on a
busy machine and in parallel. A point's seconds are its step count times the
configuration's step time. The Pareto front is the best test bits/dim any
curve reached within each second (the lower envelope of the curves, each
held at its last value after it ends); each budget is read off every curve
by linear interpolation.

    python benchmarks/time_to_quality.py                       # the search, 2/5/10 minutes
    python benchmarks/time_to_quality.py --step-times-only --output times.json
    python benchmarks/time_to_quality.py --configurations sdn_max8 --seeds 1 \\
        --step-times-from times.json --output sdn_max8_seed1.json
    python benchmarks/time_to_quality.py --step-times-from times.json \\
        --curves-from sdn_max8_seed1.json other.json           # merge, train what is missing
    python benchmarks/time_to_quality.py --configuration wide use_sdn=false hidden_channels=64

Prints a table, writes JSON (`--output`) and plots the curves and the front
(`--plot`).
"""

import argparse
import copy
import json
import math
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import write_json  # noqa: E402
from vae_convergence import Run  # noqa: E402
from vae_convergence import add_recipe_arguments  # noqa: E402
from vae_convergence import build_model  # noqa: E402
from vae_convergence import datasets  # noqa: E402

# `--dataset` value for the photographs scikit-learn ships, cut into patches.
SAMPLE_PHOTOS = "sample_photos"

# Keys of a configuration that set the recipe; all others are SDNVAE arguments.
RECIPE_KEYS = ("use_sdn", "learning_rate", "batch_size")

# The search: as many configurations of the SDN-VAE as of its baseline.
CONFIGURATIONS = {
    "sdn": {"use_sdn": True},
    "sdn_max8": {"use_sdn": True, "sdn_max_scale": 8},
    "sdn_max8_lr4e-3": {"use_sdn": True, "sdn_max_scale": 8, "learning_rate": 4e-3},
    "sdn_max8_f16_b16": {
        "use_sdn": True,
        "sdn_max_scale": 8,
        "sdn_features": 16,
        "batch_size": 16,
        "learning_rate": 3e-3,
    },
    "sdn_max8_d1": {"use_sdn": True, "sdn_max_scale": 8, "sdn_directions": 1},
    "baseline": {"use_sdn": False},
    "baseline_lr4e-3": {"use_sdn": False, "learning_rate": 4e-3},
    "baseline_wide48": {"use_sdn": False, "hidden_channels": 48},
    "baseline_b16": {"use_sdn": False, "batch_size": 16, "learning_rate": 3e-3},
    "baseline_deep8": {"use_sdn": False, "num_layers": 8},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_recipe_arguments(parser)
    parser.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[120.0, 300.0, 600.0],
        help="Training seconds at which the configurations are compared.",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--configurations",
        nargs="+",
        default=None,
        help="Names of the configurations to run (default: all known ones).",
    )
    parser.add_argument(
        "--configuration",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME KEY=VALUE",
        help="A configuration of your own: a name, then KEY=VALUE pairs (VALUE parsed as "
        f"JSON); keys {', '.join(RECIPE_KEYS)} set the recipe, others are SDNVAE "
        "arguments, e.g. --configuration wide use_sdn=false hidden_channels=64.",
    )
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra- and inter-op threads of this process (0: TensorFlow's choice).",
    )
    parser.add_argument(
        "--step-times-only",
        action="store_true",
        help="Measure the step times, train no curve.",
    )
    parser.add_argument(
        "--step-times-from",
        default=None,
        help="A JSON written by this script whose step times are used instead of measuring.",
    )
    parser.add_argument(
        "--curves-from",
        nargs="+",
        default=[],
        help="JSON files written by this script whose curves (of the selected configurations, "
        "any seed) are used instead of training.",
    )
    parser.add_argument(
        "--photo-stride",
        type=int,
        default=None,
        help=f"With --dataset {SAMPLE_PHOTOS}: pixels between patches (default: the image size, "
        "patches side by side).",
    )
    parser.add_argument("--output", default="benchmarks/time_to_quality.json")
    parser.add_argument("--plot", default="benchmarks/time_to_quality.png")
    args = parser.parse_args(argv)
    args.configurations = selected_configurations(args)
    args.settings = {
        key: value
        for key, value in vars(args).items()
        if key not in ("output", "plot", "configuration", "curves_from", "step_times_from")
    }
    for budget in args.budgets:
        if not budget > 0:
            parser.error(f"Expected --budgets of positive seconds. Received: --budgets {budget}")
    return args


def configuration_from_pairs(name, pairs):
    """A configuration dict from `KEY=VALUE` strings (values parsed as JSON)."""
    configuration = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise SystemExit(
                f"Expected --configuration {name} KEY=VALUE ... Received: --configuration "
                f"{name} {pair}"
            )
        try:
            configuration[key] = json.loads(value)
        except json.JSONDecodeError:
            raise SystemExit(
                f"Expected a JSON value in --configuration {name} {key}=VALUE (strings in double "
                f"quotes). Received: {pair}"
            ) from None
    if "use_sdn" not in configuration:
        raise SystemExit(
            f"Expected use_sdn=true or use_sdn=false in --configuration {name}. Received: "
            f"{' '.join(pairs)}"
        )
    return configuration


def selected_configurations(args):
    """`{name: configuration}` of the configurations to run, in order."""
    known = dict(CONFIGURATIONS)
    for name, *pairs in args.configuration:
        known[name] = configuration_from_pairs(name, pairs)
    names = args.configurations or list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(
            f"Expected --configurations among {', '.join(known)}. Received: {', '.join(unknown)}"
        )
    return {name: known[name] for name in names}


def recipe(args, configuration, seed):
    """The arguments of vae_convergence's `build_model` and `datasets` for one run."""
    run_args = copy.deepcopy(args)
    run_args.seed = seed
    run_args.learning_rate = configuration.get("learning_rate", args.learning_rate)
    run_args.batch_size = configuration.get("batch_size", args.batch_size)
    run_args.set = args.set + [
        f"{key}={json.dumps(value)}"
        for key, value in configuration.items()
        if key not in RECIPE_KEYS
    ]
    return run_args


def start_run(args, name, configuration, seed):
    run_args = recipe(args, configuration, seed)
    model = build_model(run_args, use_sdn=configuration["use_sdn"])
    train, test = datasets(run_args, model.num_bits)
    return Run(name, model, train, test)


def measure_step_times(args):
    """Seconds per training step of each configuration, measured in turns.

    Returns:
        `{name: {"step_seconds": median, "rounds": [seconds per step of each round],
        "load_average": the machine's 1, 5 and 15 minute load averages at the end}}`.
    """
    runs = [
        start_run(args, name, configuration, args.seeds[0])
        for name, configuration in args.configurations.items()
    ]
    for run in runs:
        run.train(args.warmup_steps)
    rounds = {run.name: [] for run in runs}
    for round_index in range(args.rounds):
        for run in runs:
            seconds = run.seconds
            run.train(args.round_steps)
            rounds[run.name].append((run.seconds - seconds) / args.round_steps)
        print(
            f"round {round_index + 1}: "
            + "  ".join(f"{name} {times[-1] * 1e3:.1f} ms" for name, times in rounds.items()),
            flush=True,
        )
    load = [round(value, 2) for value in os.getloadavg()]
    return {
        name: {"step_seconds": float(np.median(times)), "rounds": times, "load_average": load}
        for name, times in rounds.items()
    }


def evaluation_steps(step_seconds, budgets, eval_every):
    """Every `eval_every` steps up to the last budget, and the step of each budget."""
    budget_steps = [max(1, round(budget / step_seconds)) for budget in budgets]
    last = max(budget_steps)
    regular = range(eval_every, eval_every * math.ceil(last / eval_every) + 1, eval_every)
    return sorted(set(regular) | set(budget_steps))


class CurveRun:
    """One configuration and seed in training, evaluated at `evaluation_steps`."""

    def __init__(self, args, name, configuration, seed, step_seconds):
        self.run = start_run(args, name, configuration, seed)
        self.step_seconds = step_seconds
        self.pending = evaluation_steps(step_seconds, args.budgets, args.eval_every)
        self.record = {
            "configuration": name,
            "seed": seed,
            "use_sdn": configuration["use_sdn"],
            "settings": configuration,
            "step_seconds": step_seconds,
            "curve": self.run.curve,
        }

    def advance(self):
        """Trains to the next evaluation step and evaluates there."""
        step = self.pending.pop(0)
        self.run.train(step - self.run.steps)
        point = self.run.evaluate()
        print(
            f"{run_label(self.record):>28}  step {step:>6}  {step * self.step_seconds:>8.1f} s  "
            f"test {point['test_bpd']:.4f} bits/dim",
            flush=True,
        )


def curve_at(curve, seconds):
    """The curve's test bits/dim at `seconds`, linearly interpolated; None outside it."""
    times = [point["seconds"] for point in curve]
    if not curve or seconds < times[0] or seconds > times[-1]:
        return None
    return float(np.interp(seconds, times, [point["test_bpd"] for point in curve]))


def run_label(run):
    return f"{run['configuration']} seed {run['seed']}"


def pareto_front(runs):
    """The best test bits/dim reached within each evaluated second of any run.

    The lower envelope of the curves, each held at its last value after it
    ends (a run trained for less time is available at any larger budget),
    then made non-increasing: the points no other point beats in both
    seconds and bits/dim.
    """
    seconds = sorted({point["seconds"] for run in runs for point in run["curve"]})
    front = []
    for second in seconds:
        values = [
            (curve_at(run["curve"], min(second, run["curve"][-1]["seconds"])), run_label(run))
            for run in runs
            if run["curve"]
        ]
        best = min((value, label) for value, label in values if value is not None)
        if front and front[-1]["test_bpd"] <= round(best[0], 4):
            best = (front[-1]["test_bpd"], front[-1]["run"])
        front.append({"seconds": second, "test_bpd": round(best[0], 4), "run": best[1]})
    return front


def budget_table(runs, budgets):
    """Each run's test bits/dim at each budget, and the best of each side."""
    table = []
    for budget in budgets:
        values = {run_label(run): curve_at(run["curve"], budget) for run in runs}
        row = {"seconds": budget, "runs": {k: v and round(v, 4) for k, v in values.items()}}
        for side, use_sdn in (("best_sdn", True), ("best_baseline", False)):
            side_values = [
                (values[run_label(run)], run_label(run))
                for run in runs
                if run["use_sdn"] == use_sdn and values[run_label(run)] is not None
            ]
            row[side] = (
                {"test_bpd": round(min(side_values)[0], 4), "run": min(side_values)[1]}
                if side_values
                else None
            )
        table.append(row)
    return table


def plot_front(runs, front, budgets, path, title):
    """One colour per configuration (SDN-VAE solid, baseline dashed; other seeds thinner)."""
    figure, axis = plt.subplots(figsize=(9, 5.5))
    names = list(dict.fromkeys(run["configuration"] for run in runs))
    colors = plt.get_cmap("tab10")
    for run in runs:
        first_seed = run is next(r for r in runs if r["configuration"] == run["configuration"])
        axis.plot(
            [point["seconds"] for point in run["curve"]],
            [point["test_bpd"] for point in run["curve"]],
            color=colors(names.index(run["configuration"]) % 10),
            linestyle="-" if run["use_sdn"] else "--",
            linewidth=1.4 if first_seed else 0.7,
            label=run["configuration"] if first_seed else None,
        )
    # A wide grey band under the curves: it shows which curve is the front at each second.
    axis.plot(
        [point["seconds"] for point in front],
        [point["test_bpd"] for point in front],
        color="0.6",
        linewidth=6,
        alpha=0.5,
        zorder=0,
        label="Pareto front",
    )
    for budget in budgets:
        axis.axvline(budget, color="grey", linewidth=0.8, linestyle=":")
    values = [point["test_bpd"] for run in runs for point in run["curve"]]
    axis.set_ylim(min(values) - 0.05, np.percentile(values, 90) + 0.1)
    axis.set_xlabel("training seconds (step count x measured step time)")
    axis.set_ylabel("test bits/dim (negative ELBO, EMA weights)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def load_step_times(args):
    if args.step_times_from is None:
        return measure_step_times(args)
    with open(args.step_times_from) as file:
        step_times = json.load(file)["step_times"]
    missing = [name for name in args.configurations if name not in step_times]
    if missing:
        raise SystemExit(
            f"Expected step times for {', '.join(missing)} in --step-times-from. Received: "
            f"--step-times-from {args.step_times_from} with {', '.join(step_times)}"
        )
    return {name: step_times[name] for name in args.configurations}


def reused_runs(args):
    """Runs of the selected configurations in `--curves-from` files, by (configuration, seed)."""
    runs = {}
    for path in args.curves_from:
        with open(path) as file:
            for run in json.load(file)["runs"]:
                if args.configurations.get(run["configuration"]) == run["settings"]:
                    runs[(run["configuration"], run["seed"])] = run
    return runs


def timed(runs, step_times):
    """Gives every point of the runs' curves its seconds: its step times the step time."""
    for run in runs:
        run["step_seconds"] = step_times[run["configuration"]]["step_seconds"]
        for point in run["curve"]:
            point["seconds"] = round(point["step"] * run["step_seconds"], 3)


def summary(args, step_times, runs):
    timed(runs, step_times)
    output = {"settings": args.settings, "step_times": step_times, "runs": runs}
    if runs:
        output["front"] = pareto_front(runs)
        output["budgets"] = budget_table(runs, args.budgets)
    return output


def train_runs(args, step_times):
    """The runs of `--curves-from` (any seed), and every configuration and seed's run they
    do not have, trained.

    The runs train in turns, the one with the fewest training seconds first,
    so that when this process is stopped all runs have reached about the same
    budget; the output is rewritten after every evaluation.
    """
    reused = reused_runs(args)
    records, training = list(reused.values()), []
    for seed in args.seeds:
        for name, configuration in args.configurations.items():
            if (name, seed) in reused:
                continue
            run = CurveRun(args, name, configuration, seed, step_times[name]["step_seconds"])
            records.append(run.record)
            training.append(run)
    while any(run.pending for run in training):
        run = min(
            (run for run in training if run.pending),
            key=lambda run: run.run.steps * run.step_seconds,
        )
        run.advance()
        write_json(args.output, summary(args, step_times, records))
    return records


def print_table(output):
    print(f"\n{'configuration':>20} {'step ms':>8}")
    for name, times in output["step_times"].items():
        print(f"{name:>20} {times['step_seconds'] * 1e3:>8.1f}")
    for row in output.get("budgets", []):
        print(f"\nbudget {row['seconds']:g} s")
        for label, value in row["runs"].items():
            print(f"{label:>28} {'-' if value is None else f'{value:.4f}'}")
        print(f"  best SDN-VAE: {row['best_sdn']}; best baseline: {row['best_baseline']}")


def write_photo_patches(directory, size, stride):
    """Cuts the photographs of scikit-learn's `load_sample_images` into PNG patches.

    The two photographs (china.jpg and flower.jpg, 427x640) are cut into
    `size` x `size` patches every `stride` pixels; `load_images` reads the
    directory and holds out about a tenth of the patch files as "test" (by a
    hash of their names).
    """
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as error:
        raise SystemExit(
            f"Expected scikit-learn to be installed for --dataset {SAMPLE_PHOTOS} (its sample "
            "photographs): pip install scikit-learn. Received: no module named sklearn"
        ) from error
    photos = load_sample_images()
    for filename, image in zip(photos.filenames, photos.images):
        stem = os.path.splitext(os.path.basename(filename))[0]
        for top in range(0, image.shape[0] - size + 1, stride):
            for left in range(0, image.shape[1] - size + 1, stride):
                patch = tf.io.encode_png(image[top : top + size, left : left + size])
                tf.io.write_file(os.path.join(directory, f"{stem}_{top:03d}_{left:03d}.png"), patch)


def run(args):
    step_times = load_step_times(args)
    runs = [] if args.step_times_only else train_runs(args, step_times)
    output = summary(args, step_times, runs)
    write_json(args.output, output)
    if runs:
        title = (
            f"{args.preset} preset, {args.settings['dataset']} {args.image_size}x{args.image_size}: "
            "test bits/dim at equal training time"
        )
        plot_front(runs, output["front"], args.budgets, args.plot, title)
        print(f"wrote {args.plot}")
    print_table(output)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.dataset != SAMPLE_PHOTOS:
        return run(args)
    with tempfile.TemporaryDirectory() as directory:
        write_photo_patches(directory, args.image_size, args.photo_stride or args.image_size)
        args.dataset = directory
        return run(args)


if __name__ == "__main__":
    main()
