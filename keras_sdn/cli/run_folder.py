"""Run folders: the trained model of a training run, saved and loaded as `model.keras`."""

import json
import os
import pathlib
import tempfile

import numpy as np

MODEL_FILE = "model.keras"
RESULTS_FILE = "results.json"


class CommandError(Exception):
    """An error of the user's input that ends a command with its one-line message."""


def write_atomically(path, write):
    """Calls `write(temporary_path)`, then renames the temporary file to `path`.

    The temporary file lies in `path`'s folder (created if needed) and keeps
    its suffix (writers choose the format by it); it is removed if `write`
    fails, so `path` is either complete or untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.incomplete-", suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def save_model(model, run_dir):
    """Writes `model` as `run_dir/model.keras`, never half-written; returns the path.

    An `SDNVAE` keeps its weight average in the file: the loaded model
    samples, reconstructs and evaluates with the averaged weights.
    """
    path = pathlib.Path(run_dir) / MODEL_FILE
    write_atomically(path, model.save)
    return path


def relative_path(path, start):
    """`path` relative to the folder `start` (with "/" separators), for portable records."""
    return pathlib.Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()


def write_json(path, record):
    """Writes `record` as indented JSON to `path`, never half-written."""

    def write(temporary):
        pathlib.Path(temporary).write_text(json.dumps(record, indent=2) + "\n")

    write_atomically(path, write)


class Run:
    """The trained model of a run folder and the run's recorded results.

    A run folder is what `examples/train_sdn_vae.py` writes into
    `--output-dir`, or one model's folder of `examples/train_beta_vae.py`
    (`<output-dir>/<decoder>_beta<β>`): it holds `model.keras` and
    `results.json`.

    Args:
        directory: The run folder.

    Raises:
        CommandError: the folder holds no loadable model of this package.
    """

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        model_path = self.directory / MODEL_FILE
        if not model_path.is_file():
            raise CommandError(_missing_model_message(self.directory))
        import keras

        from keras_sdn.models.base_vae import BaseVAE

        try:
            self.model = keras.models.load_model(model_path, compile=False)
        except Exception as error:  # Keras raises many kinds for a damaged file
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CommandError(
                f"could not load {model_path}: {type(error).__name__}: {first_line}"
            ) from None
        if not isinstance(self.model, BaseVAE):
            raise CommandError(
                f"{model_path} holds a {type(self.model).__name__}, not an SDNVAE or BetaVAE "
                "of keras_sdn"
            )
        results_path = self.directory / RESULTS_FILE
        self.results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    @property
    def kind(self):
        """The model's class name: `"SDNVAE"` or `"BetaVAE"`."""
        return type(self.model).__name__

    def require(self, kind, what):
        """Raises a `CommandError` saying that `what` needs a `kind` model, unless it is one."""
        if self.kind != kind:
            raise CommandError(
                f"{what} needs a run of an {kind}; {self.directory} holds a {self.kind}"
            )

    def check_fixed_layers(self, fixed_layers):
        """Raises a `CommandError` unless the model is an SDNVAE with `fixed_layers` layers."""
        self.require("SDNVAE", "--fixed-layers (a hierarchy of latent layers)")
        if fixed_layers > self.model.num_layers:
            raise CommandError(
                f"--fixed-layers {fixed_layers}: the model has {self.model.num_layers} latent "
                "layers"
            )

    def reseed(self, seed):
        """Sets the state of every random generator of the model from `seed`.

        The same seed gives the same samples; None picks a fresh random seed.
        """
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        seeds = np.random.SeedSequence(seed).generate_state(len(states))
        for state, value in zip(states, seeds):
            state.assign(np.array([value, 0], state.dtype))


def _missing_model_message(directory):
    if not directory.is_dir():
        return f"no run folder at {directory}"
    runs = sorted(path.parent.name for path in directory.glob(f"*/{MODEL_FILE}"))
    if runs:
        return (
            f"{directory} holds one run per model; pass one of them, e.g. "
            f"{directory / runs[0]} (runs: {', '.join(runs)})"
        )
    if (directory / "checkpoint").is_dir() or any(directory.glob("backup*")):
        return (
            f"{directory} holds no {MODEL_FILE} yet: its training has not finished. "
            "Run the same training command again to finish it"
        )
    return (
        f"{directory} holds no {MODEL_FILE}: expected the --output-dir of "
        "examples/train_sdn_vae.py or a model's folder of examples/train_beta_vae.py"
    )
