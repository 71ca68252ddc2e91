"""Skipping optimizer updates whose gradient norm is non-finite or far above its running level."""

import math

import keras
import tensorflow as tf
from keras import ops

from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn._compat import require_tensorflow_backend


@keras.saving.register_keras_serializable(package="keras_sdn")
class UpdateSkipper(keras.layers.Layer):
    """Applies an optimizer update only if its gradient norm looks sane, counting skipped ones.

    Long runs of hierarchical VAEs occasionally meet a batch whose gradient
    is non-finite or orders of magnitude larger than usual, and one such
    update can ruin the weights; VDVAE therefore skips updates whose loss is
    NaN or whose gradient norm exceeds a fixed `skip_threshold` (NVAE skips
    non-finite ones through PyTorch's loss scaler). Here a custom
    `train_step` hands its gradients to `apply(optimizer, grads, variables)`
    in place of `optimizer.apply(grads, variables)`: the update is applied,
    exactly as the optimizer would apply it, unless the global L2 norm of
    the gradients is

    - not finite (any NaN or infinite gradient), or
    - above `factor` times the running level of the norm, once the level is
      averaged over `warmup` applied updates, or
    - above `max_norm` (VDVAE's `skip_threshold`).

    A skipped update changes neither the weights nor the optimizer's state
    (its iteration counter, moments, learning-rate schedule position). The
    running level is the geometric mean of the (non-zero) norms of the
    applied updates, an exponential moving average of their logarithms with
    weight `decay` (bias-corrected as in Adam), so skipped updates never
    raise it. After `patience` consecutive skipped updates the skipper
    concludes that the gradient scale has changed rather than spiked (a
    learning-rate or loss-weight schedule can do that) and learns the level
    anew: the next `warmup` updates are judged by the other two rules only.

    The norm is that of the unscaled gradients: under a
    `keras.optimizers.LossScaleOptimizer` (or an optimizer's
    `loss_scale_factor`) the gradients of the scaled loss are divided by the
    current scale first. The loss-scale optimizer keeps working as without
    the skipper: an update with non-finite gradients is handed to it, so
    that it halves its scale and skips the update itself, and an update
    skipped for its size is not shown to it at all (its scale and growth
    counter stay as they are). `skipped_updates` counts every update that
    was not applied, once, whichever rule skipped it: under mixed precision
    this includes the loss-scale optimizer's own overflows (a few at the
    start of training, then typically one after each growth of the scale).

    Under a `tf.distribute` strategy the decision is taken on the gradients
    summed over the replicas, as the optimizer will apply them, so that every
    replica takes the same one; this costs one all-reduce of the gradients
    in addition to the optimizer's own. (It also covers a gap of the
    loss-scale optimizer, which checks the gradients of the first replica
    only: alone, it applies a NaN that only another replica's gradients
    hold.)

    The state (the counters and the level) is held in non-trainable weights,
    saved and restored with the model's when the skipper is an attribute of
    the model. Create it where the model is created (inside the strategy's
    scope).

    The defaults skipped nothing in 600-800 healthy steps of the `"tiny"`
    SDN-VAE and of its convolutional baseline, whose gradient norms grew 60-
    to 100-fold over those steps yet stayed below 4.7 times their level.

    The skipper needs the TensorFlow backend (it uses `tf.distribute`); under
    another one the constructor raises a `ValueError`.

    Args:
        factor: Skip an update whose norm exceeds `factor` times the running
            level, a number > 1; `None` turns this rule off.
        max_norm: Skip an update whose norm exceeds this positive number;
            `None` (the default) turns this rule off.
        warmup: Applied updates averaged into the running level before the
            `factor` rule is used, an int >= 1.
        decay: Weight of the past in the running level's moving average, in
            (0, 1); the level averages over about `1 / (1 - decay)` updates.
        patience: Consecutive skipped updates after which the running level
            is learned anew, an int >= 1; `None`: never.
        **kwargs: Base layer arguments (`name`, ...).

    Attributes:
        skipped_updates: int64 weight, the number of updates skipped so far.
        gradient_norm: float32 weight, the gradient norm of the latest update
            (applied or not).

    Example:

    ```python
    class MyModel(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(1)
            self.skipper = keras_sdn.optimizers.UpdateSkipper()

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = ops.mean(ops.square(self(x, training=True) - y))
                scaled_loss = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled_loss, self.trainable_variables)
            self.skipper.apply(self.optimizer, grads, self.trainable_variables)
            return {"loss": loss, "skipped_updates": self.skipper.skipped_updates}
    ```
    """

    def __init__(self, factor=10.0, max_norm=None, warmup=100, decay=0.99, patience=50, **kwargs):
        require_tensorflow_backend(type(self).__name__)
        super().__init__(**kwargs)
        if factor is not None:
            factor = check_number("factor", factor, low=1.0, low_open=True)
        if max_norm is not None:
            max_norm = check_number("max_norm", max_norm, low=0.0, low_open=True)
        if patience is not None:
            patience = check_int("patience", patience, 1)
        self.factor = factor
        self.max_norm = max_norm
        self.warmup = check_int("warmup", warmup, 1)
        self.decay = check_number("decay", decay, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = patience
        self.build()

    def build(self, input_shape=None):
        def state(name, dtype):
            return self.add_weight(
                shape=(),
                initializer="zeros",
                dtype=dtype,
                trainable=False,
                # Every replica computes the same value from all-reduced gradients.
                aggregation="only_first_replica",
                name=name,
            )

        self.skipped_updates = state("skipped_updates", "int64")
        self.gradient_norm = state("gradient_norm", "float32")
        # Moving average of the applied updates' log-norms before bias
        # correction, and the number of updates averaged into it.
        self.log_norm_average = state("log_norm_average", "float32")
        self.averaged_updates = state("averaged_updates", "int64")
        self.consecutive_skips = state("consecutive_skips", "int64")
        self.built = True

    @property
    def level(self):
        """The running level of the gradient norm (NaN before any update is averaged)."""
        return ops.exp(self._log_level())

    def _log_level(self):
        count = ops.cast(self.averaged_updates, "float32")
        return self.log_norm_average / (1.0 - ops.power(self.decay, count))

    def apply(self, optimizer, grads, trainable_variables=None):
        """Applies `optimizer.apply(grads, trainable_variables)` unless the update is skipped.

        Call it in the replica context of a `train_step`, where
        `optimizer.apply` would be called.

        Args:
            optimizer: A Keras optimizer, possibly a
                `keras.optimizers.LossScaleOptimizer`.
            grads: List of gradients (some may be `None`), of the loss scaled
                with `optimizer.scale_loss`.
            trainable_variables: The variables of `grads`, as for
                `optimizer.apply`; may be omitted if the optimizer is built.

        Returns:
            Scalar bool tensor: whether the update was applied.
        """
        grads = list(grads)
        context = tf.distribute.get_replica_context()
        if context is None:
            raise ValueError(
                "Expected `UpdateSkipper.apply` to be called in a replica context. Received: "
                "a call in a cross-replica context (e.g. directly in `strategy.scope()`)"
            )
        present = [grad for grad in grads if grad is not None]
        if not present:
            raise ValueError(
                f"Expected at least one gradient that is not None. Received: grads={grads}"
            )
        if context.num_replicas_in_sync > 1:
            present = context.all_reduce(tf.distribute.ReduceOp.SUM, present)
            summed = iter(present)
            summed_grads = [None if grad is None else next(summed) for grad in grads]
        else:
            summed_grads = grads

        values = [grad.values if isinstance(grad, tf.IndexedSlices) else grad for grad in present]
        finite = ops.all(ops.stack([ops.all(ops.isfinite(value)) for value in values]))
        scale = ops.cast(optimizer.scale_loss(1.0), "float32")
        squares = [ops.sum(ops.square(ops.cast(value, "float32") / scale)) for value in values]
        norm = ops.sqrt(ops.sum(ops.stack(squares)))
        log_norm = ops.log(norm)
        applied = finite
        if self.factor is not None:
            warming_up = self.averaged_updates < self.warmup
            within_level = log_norm <= self._log_level() + math.log(self.factor)
            applied = ops.logical_and(applied, ops.logical_or(warming_up, within_level))
        if self.max_norm is not None:
            applied = ops.logical_and(applied, norm <= self.max_norm)

        self._apply_or_skip(
            context,
            optimizer,
            applied,
            ops.logical_not(finite),
            grads,
            summed_grads,
            trainable_variables,
        )
        self._record(applied, norm, log_norm)
        return applied

    def _apply_or_skip(
        self, context, optimizer, applied, non_finite, grads, summed_grads, trainable_variables
    ):
        """Runs the optimizer on `grads` if `applied`.

        Else, if `non_finite`, a `LossScaleOptimizer` is run on the summed
        gradients, whose non-finite values make it halve its scale and skip
        (it checks the gradients of the first replica only).
        """
        reports_non_finite = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def update(grads, variables):
            optimizer.apply(grads, variables)

        def branch(run, applied, non_finite, grads, summed_grads):
            def skip():
                if reports_non_finite:
                    ops.cond(non_finite, lambda: run(update, summed_grads), lambda: None)

            ops.cond(applied, lambda: run(update, grads), skip)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            branch(
                lambda fn, grads: fn(grads, trainable_variables),
                applied,
                non_finite,
                grads,
                summed_grads,
            )
            return

        # Strategies that use `merge_call` (MirroredStrategy, unless under XLA on
        # GPUs only) allow no `cond` around an optimizer update in a replica
        # context; like `LossScaleOptimizer`, decide in the cross-replica context.
        def cross_replica(distribution, applied, non_finite, grads, summed_grads):
            def run(fn, grads):
                distribution.extended.call_for_each_replica(fn, args=(grads, trainable_variables))

            first = distribution.experimental_local_results
            branch(run, first(applied)[0], first(non_finite)[0], grads, summed_grads)

        context.merge_call(cross_replica, args=(applied, non_finite, grads, summed_grads))

    def _record(self, applied, norm, log_norm):
        decay = self.decay
        skips = ops.where(applied, 0, self.consecutive_skips + 1)
        # A zero norm (log -inf) would drag the level to 0: it is not averaged.
        averaged = ops.logical_and(applied, norm > 0.0)
        moved = decay * self.log_norm_average + (1.0 - decay) * log_norm
        average = ops.where(averaged, moved, self.log_norm_average)
        count = ops.where(averaged, self.averaged_updates + 1, self.averaged_updates)
        if self.patience is not None:
            restart = skips >= self.patience
            average = ops.where(restart, 0.0, average)
            count = ops.where(restart, 0, count)
            skips = ops.where(restart, 0, skips)
        self.skipped_updates.assign_add(ops.cast(ops.logical_not(applied), "int64"))
        self.gradient_norm.assign(norm)
        self.log_norm_average.assign(average)
        self.averaged_updates.assign(count)
        self.consecutive_skips.assign(skips)

    def get_config(self):
        return {
            **super().get_config(),
            "factor": self.factor,
            "max_norm": self.max_norm,
            "warmup": self.warmup,
            "decay": self.decay,
            "patience": self.patience,
        }
