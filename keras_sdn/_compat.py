"""Everything that reads or changes a private part of Keras, TensorFlow or TFP, kept in one place.

None of it is gated on a version number. Each use of a private name checks
that the name is there, in the form the code expects (a module attribute, a
function signature); when a release has moved or changed it, a `UserWarning`
names it and the documented fallback takes over:

- `patch_multi_worker_fit`: Keras' own multi-worker `fit` is used, unpatched.
- `compiling_with_xla`: every trace counts as compiled by XLA, so the sweeps
  of layers with `implementation="auto"` run as `tf.scan` loops and never in
  batch halves (correct everywhere, slower on a CPU).
- `bijector_cache_with_attributes`: TFP's default bijector cache is kept, so
  `InverseAutoregressiveFlow`'s log-determinant runs the network a second time.
"""

import importlib
import inspect
import warnings

import keras
import tensorflow as tf

_PATCHED = "_keras_sdn_multi_worker_fit"
_TRAINER_MODULE = "keras.src.backend.tensorflow.trainer"


def private_attribute(module, name, fallback):
    """`module.name`, or None with a `UserWarning` if a release moved it.

    Args:
        module: The dotted name of the private module.
        name: The attribute of the module.
        fallback: What keras_sdn does without it, for the warning.
    """
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        warnings.warn(
            f"keras_sdn uses the private `{module}.{name}`, which the installed release no "
            f"longer has; {fallback}",
            stacklevel=2,
        )
        return None


_graph_or_parents_in_xla_context = private_attribute(
    "tensorflow.python.ops.control_flow_util",
    "GraphOrParentsInXlaContext",
    "every trace is treated as compiled by XLA: sweeps with implementation='auto' run as "
    "tf.scan loops, never unrolled, and never in batch halves.",
)


def compiling_with_xla():
    """Whether the function being traced is compiled by XLA (`jit_compile=True`).

    The same test as TensorFlow Probability's `implementation_selection.is_xla`.
    Without TensorFlow's private test (moved by a release) the answer is
    True: the sweeps of layers with `implementation="auto"` then run as
    `tf.scan` loops and never in batch halves.
    """
    if _graph_or_parents_in_xla_context is None:
        return True
    return _graph_or_parents_in_xla_context(tf.compat.v1.get_default_graph())


def bijector_cache_with_attributes(forward_name, inverse_name):
    """TFP's bijector cache that stores the attributes returned with each output.

    Args:
        forward_name, inverse_name: The bijector's methods returning
            `(output, attributes)`.

    Returns:
        A `cache_util.BijectorCacheWithGreedyAttrs`, or None (with a
        `UserWarning`) if a TFP release moved it: the bijector then keeps
        TFP's default cache.
    """
    cache_class = private_attribute(
        "tensorflow_probability.python.internal.cache_util",
        "BijectorCacheWithGreedyAttrs",
        "TFP's default bijector cache is used: a log-determinant after a forward or "
        "inverse pass runs the flow's network again.",
    )
    if cache_class is None:
        return None
    return cache_class(forward_name=forward_name, inverse_name=inverse_name)


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


def _multi_worker_fit_trainer():
    """Keras' trainer module, if it has both functions `patch_multi_worker_fit` replaces.

    Checks `reduce_per_replica(values, strategy, reduction)` and
    `TensorFlowTrainer._maybe_symbolic_build(self, iterator=None,
    data_batch=None)` (unless already replaced); returns None, with a
    `UserWarning`, if the module or either function has moved or changed its
    parameters.
    """
    expected = {
        "reduce_per_replica": ["values", "strategy", "reduction"],
        "_maybe_symbolic_build": ["self", "iterator", "data_batch"],
    }
    try:
        trainer = importlib.import_module(_TRAINER_MODULE)
        if getattr(trainer, _PATCHED, False):
            return trainer
        found = {
            "reduce_per_replica": trainer.reduce_per_replica,
            "_maybe_symbolic_build": trainer.TensorFlowTrainer._maybe_symbolic_build,
        }
    except (ImportError, AttributeError):
        found = None
    if found and all(
        list(inspect.signature(found[name]).parameters) == parameters
        for name, parameters in expected.items()
    ):
        return trainer
    warnings.warn(
        f"keras_sdn's multi-worker `fit` workaround replaces the private Keras functions "
        f"`{_TRAINER_MODULE}.reduce_per_replica` and `TensorFlowTrainer._maybe_symbolic_build`, "
        f"which Keras {keras.__version__} does not have in the expected form; it is not "
        "applied, and Keras' own multi-worker `fit` is used as it is.",
        stacklevel=3,
    )
    return None


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

    The replacement is applied on any Keras version whose trainer module
    still has both functions with the parameters above.

    Returns:
        Whether the workaround is in place. If the functions have moved or
        changed form nothing is replaced: a `UserWarning` says so and False
        is returned; there multi-worker `fit` is plain Keras' (which raises
        if the bugs above are still present).
    """
    trainer = _multi_worker_fit_trainer()
    if trainer is None:
        return False
    if getattr(trainer, _PATCHED, False):
        return True
    reduce_per_replica = trainer.reduce_per_replica
    maybe_symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def multi_worker(strategy):
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return False
        # Private to TensorFlow: without it, every MultiWorkerMirroredStrategy
        # counts as multi-worker (the replacements are correct on one worker too).
        in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
        return in_multi_worker_mode is None or in_multi_worker_mode()

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
