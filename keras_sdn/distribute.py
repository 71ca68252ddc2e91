"""Training keras_sdn models on several devices or machines, and surviving interruptions.

`strategy_from_name` turns a command-line choice into a `tf.distribute`
strategy; `add_strategy_arguments` adds that choice to an `argparse` parser.
Models are created and compiled inside `strategy.scope()`; `model.fit` then
splits every global batch over the replicas.

`BackupAndRestore` is `keras.callbacks.BackupAndRestore` with a backup that is
never half-written and that is safe with several workers.
`enable_multi_worker_fit` works around Keras 3 bugs that stop `fit` under
`MultiWorkerMirroredStrategy` (on the Keras versions it was tested on).

Custom `train_step`s (the VAEs) call `replica_loss` on the loss they
differentiate, and draw their noise with `replica_normal`, so that a training
step on `n` replicas computes what one device computes on the global batch.

Example:

```python
strategy = strategy_from_name("mirrored")
with strategy.scope():
    model = keras_sdn.models.SDNVAE.from_preset("tiny")
    model.compile()
model.fit(
    keras_sdn.data.load_images(image_size=16, batch_size=64),  # global batch
    epochs=10,
    callbacks=[BackupAndRestore("runs/backup")],
)
```
"""

import json
import os
import shutil
import tempfile
import uuid

import keras
import tensorflow as tf

from keras_sdn import _compat
from keras_sdn._checks import check_choice

STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "tpu")


def strategy_from_name(name, tpu=None):
    """The `tf.distribute` strategy called `name`.

    Args:
        name: One of `STRATEGY_NAMES`:
            `"default"`: the current strategy (one device, unless the caller
            is inside another strategy's scope);
            `"mirrored"`: `tf.distribute.MirroredStrategy` over all local GPUs
            (or the CPU when there are none);
            `"multi_worker"`: `tf.distribute.MultiWorkerMirroredStrategy`, the
            cluster and this process' task read from the `TF_CONFIG`
            environment variable (calls `enable_multi_worker_fit()`);
            `"tpu"`: `tf.distribute.TPUStrategy`.
        tpu: Only with `name="tpu"`, and then required: a
            `tf.distribute.cluster_resolver.TPUClusterResolver`, or the TPU's
            name or address for one (`"local"` on a TPU VM). The TPU system
            is connected to and initialised here.

    Returns:
        A `tf.distribute.Strategy`.
    """
    check_choice("name", name, STRATEGY_NAMES)
    if name != "tpu" and tpu is not None:
        raise ValueError(
            f"Expected `tpu` to be None unless name='tpu'. Received: tpu={tpu!r}, name={name!r}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        enable_multi_worker_fit()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tpu is None:
        raise ValueError(
            "Expected `tpu` to be a TPUClusterResolver or a TPU name or address when "
            "name='tpu'. Received: tpu=None"
        )
    resolver = tpu
    if not isinstance(resolver, tf.distribute.cluster_resolver.TPUClusterResolver):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def enable_multi_worker_fit():
    """Makes Keras' `fit` and `evaluate` work under `MultiWorkerMirroredStrategy`.

    Keras 3's `fit` fails there for `(x, y)` data, integer images and scalar
    metrics (keras-team/keras issue 20585). This applies the workaround of
    `keras_sdn._compat.patch_multi_worker_fit`, which replaces two private
    Keras functions, if Keras still has them in the form the workaround
    expects; otherwise it warns and changes nothing. Nothing changes outside
    multi-worker training.
    Idempotent; `strategy_from_name("multi_worker")` calls it.

    Returns:
        Whether the workaround is in place.
    """
    return _compat.patch_multi_worker_fit()


def add_strategy_arguments(parser):
    """Adds `--strategy {default,mirrored,multi_worker,tpu}` and `--tpu` to an argparse parser.

    Pass the parsed values on: `strategy_from_name(args.strategy, args.tpu)`.
    """
    parser.add_argument(
        "--strategy",
        default="default",
        choices=STRATEGY_NAMES,
        help="Distribution strategy; --batch-size is the global batch, split over the replicas. "
        "multi_worker reads the cluster from TF_CONFIG.",
    )
    parser.add_argument(
        "--tpu", default=None, help="TPU name or address for --strategy tpu ('local' on a TPU VM)."
    )
    return parser


def replica_loss(loss):
    """`loss` divided by the number of replicas in sync, for differentiation.

    The optimizer sums the gradients of the replicas; a `train_step` that
    differentiates `replica_loss(mean loss of the replica's batch)` therefore
    applies the gradient of the mean loss over the global batch, as on one
    device. Report the unscaled loss in the metrics.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas == 1:
        return loss
    return loss * keras.ops.cast(1.0 / replicas, keras.backend.standardize_dtype(loss.dtype))


def replica_normal(shape, seed, dtype="float32"):
    """Standard normal noise of `shape` for this replica's part of the global batch.

    Under a strategy with `n` replicas in sync, every replica draws the noise
    of the whole global batch (`n * shape[0]` rows, with the same seed) and
    keeps its own rows, the rows its examples have in the global batch. The
    replicas thus get different noise, and a step on `n` replicas uses the
    noise one device uses for the same global batch. (This assumes the
    replicas' batches are equally large, as they are unless the global batch
    does not divide evenly; in a last, uneven batch a few rows of noise may
    repeat across replicas.) Outside a strategy this is
    `keras.random.normal(shape, seed=seed, dtype=dtype)`.

    Args:
        shape: Shape of the noise; `shape[0]` is the replica's batch size.
        seed: A `keras.random.SeedGenerator` (advanced once) or an int.
        dtype: Floating dtype of the noise.
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    if replicas == 1:
        return keras.random.normal(shape, seed=seed, dtype=dtype)
    batch = shape[0]
    rest = tuple(shape[1:])
    noise = keras.random.normal((replicas * batch,) + rest, seed=seed, dtype=dtype)
    start = context.replica_id_in_sync_group * batch
    return noise[start : start + batch]


def is_chief(strategy=None):
    """Whether this process is the chief of its cluster (always, outside multi-worker training).

    The chief is the `"chief"` task, or worker 0 when the cluster has no
    chief.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster_has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not cluster_has_chief and resolver.task_type == "worker" and resolver.task_id == 0


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with atomic backups, for one or several workers.

    After every epoch the training state (the model's weights and the
    optimizer state, its step counter included) is backed up in
    `backup_dir`; a `fit` that starts with a backup present restores it
    and continues with the epoch after it. A process killed during epoch `e`
    therefore repeats epoch `e` from its start when restarted, and ends with
    as many optimizer steps as a run that was never interrupted. (Keep
    epochs short with `steps_per_epoch` to lose little work.) The states of
    random seed generators are not part of Keras' weights files: a resumed
    model draws other random numbers than an uninterrupted one would.

    A backup is never half-written: the weights are written under a
    temporary name and renamed once complete, and the small
    `checkpoint.json` naming them is then replaced atomically; it is the only
    file `fit` reads to restore. Files of older or interrupted backups are
    deleted. In multi-worker training every worker saves (saving may need
    collective operations), but only the chief writes into `backup_dir`,
    which must be reachable by all workers (shared file system or a cloud
    bucket); the others write to a temporary directory and delete it.

    Args:
        backup_dir: Directory of the backup, used by nothing else.
        delete_checkpoint: Whether to delete the backup when `fit` completes.
            Keep it (False) to continue training later with more epochs.

    Example:

    ```python
    model.fit(data, epochs=10, steps_per_epoch=500,
              callbacks=[BackupAndRestore("runs/backup")])
    ```
    """

    POINTER = "checkpoint.json"
    _TEMPORARY_PREFIX = ".incomplete-"

    def __init__(self, backup_dir, delete_checkpoint=True):
        if not backup_dir:
            raise ValueError(
                f"Expected `backup_dir` to be a non-empty path. Received: backup_dir={backup_dir!r}"
            )
        super().__init__(
            os.fspath(backup_dir), save_freq="epoch", delete_checkpoint=delete_checkpoint
        )
        self._pointer_path = os.path.join(self.backup_dir, self.POINTER)

    def _read_backup(self):
        """The committed backup's metadata `{"epoch", "weights"}`, or None if there is none."""
        if not tf.io.gfile.exists(self._pointer_path):
            return None
        with tf.io.gfile.GFile(self._pointer_path, "r") as file:
            return json.loads(file.read())

    def on_train_begin(self, logs=None):
        backup = self._read_backup()
        if is_chief(self.model.distribute_strategy):
            self._remove_files_except(None if backup is None else backup["weights"])
        if backup is None:
            return
        if not self.model.built:
            raise ValueError(
                f"Expected a built model: `fit` restores the backup in {self.backup_dir} into its "
                "weights; build it first, e.g. `model.build(input_shape)`. "
                f"Received: an unbuilt {type(self.model).__name__}"
            )
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, backup["weights"]))
        self.model._initial_epoch = backup["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        if is_chief(self.model.distribute_strategy):
            self._save(epoch + 1, self.backup_dir)
        else:
            directory = tempfile.mkdtemp()
            try:
                self._save(epoch + 1, directory)
            finally:
                shutil.rmtree(directory, ignore_errors=True)

    def _save(self, epoch, directory):
        """Writes the backup after `epoch` epochs: weights, then the pointer naming them."""
        tf.io.gfile.makedirs(directory)
        weights = f"epoch-{epoch}-{uuid.uuid4().hex[:8]}.weights.h5"
        self._write_then_rename(
            directory, weights, lambda path: self.model.save_weights(path, overwrite=True)
        )
        self._write_then_rename(
            directory,
            self.POINTER,
            lambda path: _write_text(path, json.dumps({"epoch": epoch, "weights": weights})),
        )
        if directory == self.backup_dir:
            self._remove_files_except(weights)

    def _write_then_rename(self, directory, name, write):
        temporary = os.path.join(directory, self._TEMPORARY_PREFIX + name)
        write(temporary)
        tf.io.gfile.rename(temporary, os.path.join(directory, name), overwrite=True)

    def _remove_files_except(self, weights):
        """Deletes the backup files in `backup_dir` other than `weights` and the pointer."""
        if not tf.io.gfile.isdir(self.backup_dir):
            return
        for name in tf.io.gfile.listdir(self.backup_dir):
            ours = name.startswith(self._TEMPORARY_PREFIX) or name.endswith(".weights.h5")
            if ours and name != weights:
                tf.io.gfile.remove(os.path.join(self.backup_dir, name))

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and is_chief(self.model.distribute_strategy):
            if tf.io.gfile.exists(self.backup_dir):
                tf.io.gfile.rmtree(self.backup_dir)


def _write_text(path, text):
    with tf.io.gfile.GFile(path, "w") as file:
        file.write(text)
