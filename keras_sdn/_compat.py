"""Workarounds that depend on Keras' internals or on its backend, kept in one place.

Everything here that changes or reads a private part of Keras is applied only
to the Keras versions it was tested on (`TESTED_KERAS_VERSIONS`); on any
other version it is not applied, with a warning, and Keras behaves as
released. A new Keras release thus cannot silently change what a workaround
does: add its version here once the tests pass on it.
"""

import re
import warnings

import keras
import tensorflow as tf

# (major, minor) versions of Keras on which `patch_multi_worker_fit` was tested.
TESTED_KERAS_VERSIONS = ((3, 15),)

_PATCHED = "_keras_sdn_multi_worker_fit"


def keras_version():
    """The installed Keras' `(major, minor)` version, from `keras.__version__`."""
    match = re.match(r"(\d+)\.(\d+)", keras.__version__)
    if match is None:
        raise ValueError(
            f"Expected `keras.__version__` to start with 'major.minor'. "
            f"Received: keras.__version__={keras.__version__!r}"
        )
    return int(match.group(1)), int(match.group(2))


def require_tensorflow_backend(name):
    """Raises unless Keras runs on the TensorFlow backend.

    Called by the constructors of the classes that compute with TensorFlow
    ops directly (`tf.scan`, `tf.custom_gradient`, `tf.distribute`): under
    another backend they would fail later with an obscure error, or not at all
    until inputs arrive.

    Args:
        name: The class (or function) that needs TensorFlow, for the message.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"Expected the TensorFlow backend: `{name}` is written with TensorFlow ops and can "
            "only be used with it. Set the environment variable KERAS_BACKEND=tensorflow "
            f"before importing Keras. Received: backend={backend!r}"
        )


def patch_multi_worker_fit():
    """Makes Keras' `fit` and `evaluate` work under `MultiWorkerMirroredStrategy`.

    With the TensorFlow backend, Keras 3 (3.15 included; keras-team/keras
    issue 20585) fails there in two places: (1) before training it averages
    the first batch over the workers to learn the input shapes, which fails
    for `(x, y)` tuples and for integer images (collectives take no uint8);
    (2) after every step it averages each metric over the workers along an
    axis 0 that a scalar metric does not have. This replaces, for the whole
    process, the two private functions of `keras.src.backend.tensorflow.trainer`
    involved: (1) `TensorFlowTrainer._maybe_symbolic_build` takes the shapes
    from this worker's part of the batch, (2) `reduce_per_replica` averages
    scalar metrics over the replicas. Nothing changes outside multi-worker
    training. Idempotent.

    Returns:
        Whether the workaround is in place. On a Keras version outside
        `TESTED_KERAS_VERSIONS` nothing is replaced: a `UserWarning` says so
        and False is returned; there multi-worker `fit` is plain Keras' (which
        raises if the bugs above are still present).
    """
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer, _PATCHED, False):
        return True
    version = keras_version()
    if version not in TESTED_KERAS_VERSIONS:
        tested = ", ".join(f"{major}.{minor}" for major, minor in TESTED_KERAS_VERSIONS)
        warnings.warn(
            f"keras_sdn's multi-worker `fit` workaround replaces private Keras functions and "
            f"was tested only on Keras {tested}; it is not applied to Keras "
            f"{keras.__version__}, whose own multi-worker `fit` is used as it is.",
            stacklevel=2,
        )
        return False
    reduce_per_replica = trainer.reduce_per_replica
    maybe_symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def multi_worker(strategy):
        return (
            isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()
        )

    def reduce_scalars_over_replicas(values, strategy, reduction):
        if not (multi_worker(strategy) and reduction in ("auto", "mean")):
            return reduce_per_replica(values, strategy, reduction)

        def reduce(value):
            if isinstance(value, keras.Variable):
                return value  # synchronised, as Keras returns it outside multi-worker training
            if strategy.experimental_local_results(value)[0].shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return reduce_per_replica(value, strategy, reduction)

        return keras.tree.map_structure(reduce, values)

    def build_from_local_batch(model, iterator=None, data_batch=None):
        strategy = model._distribute_strategy
        if iterator is None or not multi_worker(strategy):
            return maybe_symbolic_build(model, iterator=iterator, data_batch=data_batch)
        for _, _, batches in iterator:
            data_batch = keras.tree.map_structure(
                lambda value: strategy.experimental_local_results(value)[0], next(batches)
            )
            break
        return maybe_symbolic_build(model, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_scalars_over_replicas
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    setattr(trainer, _PATCHED, True)
    return True
