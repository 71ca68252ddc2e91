"""Training runs for the distribution and fault-tolerance tests, each in its own process.

Not a test module: tests/test_distribute.py and tests/test_fault_tolerance.py
run it with `python tests/distributed_training.py <command> ...`, because
logical devices and `TF_CONFIG` must be set before TensorFlow starts, and
because a process has to die.

Commands:
    mirrored OUT KIND...   Trains each model KIND on one device and with
                           MirroredStrategy over 2 logical CPUs, same data and
                           seed; writes {kind: {"one_device": history,
                           "mirrored": history, "weights_max_difference": d}}
                           and what replica_normal and replica_loss give on each
                           replica under "replica_helpers".
    worker OUT BACKUP KIND...
                           One worker of a MultiWorkerMirroredStrategy cluster
                           (TF_CONFIG from the environment) training each KIND
                           with BackupAndRestore in BACKUP.KIND (kept); writes
                           the final weights and histories to OUT (OUT.KIND.npz
                           and OUT.json), with the Keras version, whether the
                           multi-worker `fit` workaround is in place and the
                           warnings raised while the strategy was created.
                           With FAKE_KERAS_VERSION set in the environment,
                           `keras.__version__` pretends to be that release.
    resumable OUT BACKUP [--die-at-step N] [--die-saving-epoch E] [--keep-backup 1]
                           Trains a generic model for 3 epochs of 4 steps with
                           keras_sdn.distribute's BackupAndRestore in BACKUP
                           (kept at the end with --keep-backup 1). Dies
                           (os._exit) after global step N, or while writing
                           its E-th backup (the weights file half-written). Writes the final optimizer step
                           count, the epochs run (OUT.json) and the weights
                           (OUT.npz).
"""

import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if sys.argv[1] == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

if os.environ.get("FAKE_KERAS_VERSION"):  # as if a newer Keras were installed
    keras.__version__ = os.environ["FAKE_KERAS_VERSION"]

from keras_sdn.distribute import BackupAndRestore  # noqa: E402
from keras_sdn.distribute import enable_multi_worker_fit  # noqa: E402
from keras_sdn.distribute import replica_loss  # noqa: E402
from keras_sdn.distribute import replica_normal  # noqa: E402
from keras_sdn.distribute import strategy_from_name  # noqa: E402
from keras_sdn.layers import ResidualSpatialDependency  # noqa: E402
from keras_sdn.layers import SpatialDependency  # noqa: E402
from tiny_models import tiny_sdn_vae  # noqa: E402

GLOBAL_BATCH = 4
EXAMPLES = 8


def generic_model():
    inputs = keras.Input((6, 6, 3))
    hidden = SpatialDependency(4, num_features=4, directions=2, activation="tanh")(inputs)
    hidden = ResidualSpatialDependency(4, num_features=4, directions=["down"])(hidden)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def sdn_vae():
    model = tiny_sdn_vae()
    # Plain SGD: the gradient's scale shows in the losses (Adamax hides it).
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    return model


def beta_vae():
    from keras_sdn.models import BetaVAE

    # A warm-up: its step counter must advance once per global step. Per-pixel
    # scales: plain SGD at 1e-4 throws the global-scale model's one shared
    # log-scale (gradient summed over every sub-pixel) far off in one step.
    model = BetaVAE(
        latent_dim=2,
        decoder="sdn",
        sdn_features=4,
        beta_warmup_steps=4,
        observation="pixel_scale",
        seed=1,
    )
    model.build((None, 64, 64, 3))
    model.compile(optimizer=keras.optimizers.SGD(1e-4))
    return model


MODELS = {"generic": generic_model, "sdn_vae": sdn_vae, "beta_vae": beta_vae}


def dataset(kind, model, batch_size=GLOBAL_BATCH):
    """A fixed dataset of EXAMPLES examples in global batches of `batch_size`."""
    rng = np.random.default_rng(0)
    if kind == "generic":
        x = rng.normal(size=(EXAMPLES, 6, 6, 3)).astype("float32")
        data = (x, x.mean(axis=(1, 2, 3))[:, None] * 4.0)
    else:
        shape = model.image_shape if kind == "sdn_vae" else (64, 64, 3)
        data = rng.integers(0, 256, (EXAMPLES,) + tuple(shape)).astype("uint8")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices(data).batch(batch_size).with_options(options)


def train(kind, strategy, epochs=2, callbacks=()):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = MODELS[kind]()
    history = model.fit(dataset(kind, model), epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model, {name: [float(v) for v in values] for name, values in history.history.items()}


def mirrored(out, kinds):
    enable_multi_worker_fit()  # must change nothing here
    results = {}
    # One strategy for all: strategies in one process would share collective keys.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for kind in kinds:
        one_model, one_history = train(kind, strategy_from_name("default"))
        mirrored_model, mirrored_history = train(kind, strategy)
        difference = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(one_model.get_weights(), mirrored_model.get_weights())
        )
        results[kind] = {
            "one_device": one_history,
            "mirrored": mirrored_history,
            "replicas": strategy.num_replicas_in_sync,
            "weights_max_difference": difference,
        }
    results["replica_helpers"] = replica_helpers(strategy)
    with open(out, "w") as file:
        json.dump(results, file)


def replica_helpers(strategy):
    """replica_normal's rows and replica_loss' scale on each replica, against one device."""
    one_device = keras.random.normal((6, 3), seed=keras.random.SeedGenerator(9))
    with strategy.scope():
        generator = keras.random.SeedGenerator(9)

    @tf.function
    def step():
        return replica_normal((3, 3), seed=generator), replica_loss(tf.constant(1.0))

    noise, loss = strategy.run(step)
    return {
        "noise_max_difference": float(
            np.max(np.abs(np.concatenate(strategy.experimental_local_results(noise)) - one_device))
        ),
        "scaled_losses": [float(v) for v in strategy.experimental_local_results(loss)],
    }


def worker(out, backup, kinds):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy = strategy_from_name("multi_worker")
    results = {
        "keras_version": keras.__version__,
        "multi_worker_fit_patched": enable_multi_worker_fit(),
        "warnings": [str(warning.message) for warning in caught],
    }
    for kind in kinds:
        callbacks = [BackupAndRestore(f"{backup}.{kind}", delete_checkpoint=False)]
        model, history = train(kind, strategy, callbacks=callbacks)
        np.savez(f"{out}.{kind}.npz", *model.get_weights())
        results[kind] = {
            "history": history,
            "replicas": strategy.num_replicas_in_sync,
            "steps": int(model.optimizer.iterations.numpy()),
        }
    with open(out + ".json", "w") as file:
        json.dump(results, file)


class DieAtStep(keras.callbacks.Callback):
    """Ends the process abruptly, as a preemption does, after global step `step`."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os._exit(3)


def die_while_saving(model, count):
    """Makes the process die half-way through writing the weights of its `count`-th backup."""
    save_weights = model.save_weights
    saves = []

    def save_weights_and_die(filepath, **kwargs):
        saves.append(filepath)
        save_weights(filepath, **kwargs)
        if len(saves) == count:
            with open(filepath, "r+b") as file:
                file.truncate(os.path.getsize(filepath) // 2)
            os._exit(4)

    model.save_weights = save_weights_and_die


def resumable(out, backup, die_at_step=None, die_saving_epoch=None, keep_backup=False, epochs=3):
    keras.utils.set_random_seed(0)
    model = generic_model()
    if die_saving_epoch is not None:
        die_while_saving(model, die_saving_epoch)
    # The same 4 batches every epoch: a resumed run can match an uninterrupted one exactly.
    data = dataset("generic", model, batch_size=2)
    epochs_run = []
    callbacks = [
        BackupAndRestore(backup, delete_checkpoint=not keep_backup),
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch)),
    ]
    if die_at_step is not None:
        callbacks.append(DieAtStep(die_at_step))
    model.fit(data, epochs=epochs, callbacks=callbacks, verbose=0)
    np.savez(out + ".npz", *model.get_weights())
    with open(out + ".json", "w") as file:
        steps = int(model.optimizer.iterations.numpy())
        json.dump({"steps": steps, "epochs_run": epochs_run}, file)


def main(argv):
    command, out, *rest = argv
    if command == "mirrored":
        mirrored(out, rest)
    elif command == "worker":
        worker(out, rest[0], rest[1:])
    elif command == "resumable":
        backup, *options = rest
        flags = dict(zip(options[::2], map(int, options[1::2])))
        resumable(
            out,
            backup,
            die_at_step=flags.get("--die-at-step"),
            die_saving_epoch=flags.get("--die-saving-epoch"),
            keep_backup=bool(flags.get("--keep-backup", 0)),
        )
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
