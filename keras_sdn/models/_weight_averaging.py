"""An exponential moving average of a model's weights, and running the model with it."""

import contextlib
import functools

import keras
import tensorflow as tf
from keras import ops


def add_averaged_weights(model):
    """Non-trainable copies of `model.trainable_weights`, the averages' initial values."""
    return [
        model.add_weight(
            shape=weight.shape,
            dtype=weight.dtype,
            initializer=lambda shape, dtype, weight=weight: ops.copy(weight.value),
            trainable=False,
            # Every replica computes the same average from synchronised weights.
            aggregation="only_first_replica",
            name=f"average_{index}",
        )
        for index, weight in enumerate(model.trainable_weights)
    ]


def update_averaged_weights(model, max_decay, applied):
    """Moves `model.averaged_weights` towards the weights, unless the update was skipped.

    The decay at optimizer step t is `min(max_decay, (1 + t) / (10 + t))`.
    """
    step = ops.cast(model.optimizer.iterations, "float32")
    decay = ops.minimum(max_decay, (1.0 + step) / (10.0 + step))
    decay = ops.where(applied, decay, 1.0)
    for weight, average in zip(model.trainable_weights, model.averaged_weights):
        average.assign(decay * average + (1.0 - decay) * weight)


@contextlib.contextmanager
def averaged_weights_scope(model):
    """Runs `model` with its averaged weights in place of the trained ones."""
    mapping = [(w, a.value) for w, a in zip(model.trainable_weights, model.averaged_weights)]
    with keras.StatelessScope(state_mapping=mapping) as scope:
        yield
    # Keep the state that advanced inside the scope (the random seeds).
    for variable in model.non_trainable_variables:
        value = scope.get_current_value(variable)
        if value is not None:
            variable.assign(value)


def with_averaged_weights(method):
    """Decorates a model method to run with the averaged weights, as a compiled function.

    The method is compiled (`tf.function`) once per model; called inside
    another `tf.function` (e.g. a signature that
    `keras_sdn.export.export_for_serving` traces), it is traced inline, in
    the caller's tracing context. Its arguments are tensors, or Python
    values on which the computation depends (each value is traced once).
    """

    @functools.wraps(method)
    def wrapper(model, *args):
        def averaged(*args):
            with averaged_weights_scope(model):
                return method(model, *args)

        if tf.inside_function():
            return averaged(*args)
        # Kept out of Keras and SavedModel tracking (rebuilt on demand).
        functions = model.__dict__.setdefault("_averaged_functions", {})
        if method.__name__ not in functions:
            functions[method.__name__] = tf.function(averaged, reduce_retracing=True)
        return functions[method.__name__](*args)

    return wrapper
