"""Tests of keras_sdn.optimizers.UpdateSkipper.

Run as a script (`python tests/test_update_skipping.py OUT`), this file
checks the skipper under MirroredStrategy over 2 logical CPUs, which must be
configured before TensorFlow starts, and writes the results to OUT (JSON).
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if __name__ == "__main__":
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import pytest  # noqa: E402
from keras import ops  # noqa: E402

from keras_sdn.distribute import replica_loss  # noqa: E402
from keras_sdn.optimizers import UpdateSkipper  # noqa: E402

SHAPES = ((3, 2), (2,))


def reference_decisions(norms, factor, max_norm, warmup, decay, patience):
    """Float64 NumPy statement of the skipping rule: (applied per update, final level)."""
    average, count, streak, applied = 0.0, 0, 0, []
    for norm in np.asarray(norms, "float64"):
        ok = bool(np.isfinite(norm))
        if ok and factor is not None and count >= warmup:
            with np.errstate(divide="ignore"):  # a zero norm: log -inf, applied
                ok = np.log(norm) <= average / (1.0 - decay**count) + np.log(factor)
        if ok and max_norm is not None:
            ok = norm <= max_norm
        if ok:
            streak = 0
            if norm > 0:
                average = decay * average + (1.0 - decay) * np.log(norm)
                count += 1
        else:
            streak += 1
            if patience is not None and streak >= patience:
                average, count, streak = 0.0, 0, 0
        applied.append(bool(ok))
    return applied, np.exp(average / (1.0 - decay**count))


def make_variables():
    rng = np.random.default_rng(0)
    return [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in SHAPES]


def gradient_sequence(count, seed=1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=shape).astype("float32") for shape in SHAPES] for _ in range(count)]


def state(variables, optimizer):
    return [np.array(v) for v in variables] + [np.array(v) for v in optimizer.variables]


def assert_states_equal(actual, expected, rtol=0.0):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=0.0)


def compiled(function, mode):
    return function if mode == "eager" else tf.function(function, jit_compile=mode == "xla")


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_applies_like_the_optimizer_and_skips_without_a_trace(mode):
    grads = gradient_sequence(8)
    grads[2][0][1, 1] = np.nan  # non-finite during warm-up
    grads[5] = [1e3 * g for g in grads[5]]  # far above the running level
    expected_applied = [True, True, False, True, True, False, True, True]

    variables, reference_variables = make_variables(), make_variables()
    optimizer, reference = keras.optimizers.Adam(0.01), keras.optimizers.Adam(0.01)
    skipper = UpdateSkipper(factor=10.0, warmup=2)
    skip_step = compiled(lambda g: skipper.apply(optimizer, g, variables), mode)
    reference_step = compiled(
        lambda g: reference.apply_gradients(zip(g, reference_variables)), mode
    )

    applied = []
    for step_grads, expected in zip(grads, expected_applied):
        before = state(variables, optimizer) if optimizer.built else None
        applied.append(bool(skip_step([tf.constant(g) for g in step_grads])))
        if expected:
            reference_step([tf.constant(g) for g in step_grads])
        else:
            # Weights, iteration counter and moments are all left as they were.
            assert_states_equal(state(variables, optimizer), before)
        # XLA may fuse the update with the surrounding condition differently.
        assert_states_equal(
            state(variables, optimizer),
            state(reference_variables, reference),
            rtol=1e-6 if mode == "xla" else 0.0,
        )
    assert applied == expected_applied
    assert int(skipper.skipped_updates) == 2
    assert int(optimizer.iterations) == 6


def test_decisions_and_level_match_a_float64_reference():
    config = dict(factor=5.0, max_norm=1e3, warmup=5, decay=0.9, patience=4)
    rng = np.random.default_rng(2)
    norms = list(np.exp(rng.normal(0.0, 0.3, size=40)))
    norms[3] = 2e3  # above max_norm during warm-up
    norms[7] = np.nan
    norms[8] = np.inf
    norms[12] = 100.0  # a spike
    norms[15] = 0.0  # applied, not averaged
    norms[20:40] = [50.0 * n for n in norms[20:40]]  # the scale changes for good
    expected_applied, expected_level = reference_decisions(norms, **config)
    # The shift is first skipped, then relearned after `patience` skips.
    assert expected_applied[20:24] == [False] * 4 and all(expected_applied[24:])

    variable = keras.Variable(np.zeros(4, "float32"))
    optimizer = keras.optimizers.SGD(0.1)
    skipper = UpdateSkipper(**config)
    step = tf.function(lambda g: skipper.apply(optimizer, [g], [variable]))
    direction = rng.normal(size=4)
    direction /= np.linalg.norm(direction)
    applied = [bool(step(tf.constant(norm * direction, "float32"))) for norm in norms]

    assert applied == expected_applied
    assert int(skipper.skipped_updates) == expected_applied.count(False)
    assert int(optimizer.iterations) == expected_applied.count(True)
    np.testing.assert_allclose(float(skipper.level), expected_level, rtol=1e-5)
    np.testing.assert_allclose(float(skipper.gradient_norm), norms[-1], rtol=1e-6)


def test_loss_scale_optimizer_keeps_its_dynamics():
    """Non-finite updates reach the loss-scale optimizer (it halves its scale), too
    large ones do not (scale and growth counter unchanged); each skip counts once."""

    def loss_scale_optimizer():
        return keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(0.01), initial_scale=2.0**4, dynamic_growth_steps=2
        )

    grads = gradient_sequence(7)
    grads[3][1][0] = np.inf
    grads[5] = [1e4 * g for g in grads[5]]
    too_large = 5
    variables, reference_variables = make_variables(), make_variables()
    optimizer, reference = loss_scale_optimizer(), loss_scale_optimizer()
    skipper = UpdateSkipper(warmup=2)
    step = tf.function(lambda g: skipper.apply(optimizer, g, variables))
    reference_step = tf.function(lambda g: reference.apply(g, reference_variables))

    scales = []
    for index, step_grads in enumerate(grads):
        # The gradients of the scaled loss, as a train_step computes them.
        scaled = [tf.constant(g) * optimizer.scale_loss(1.0) for g in step_grads]
        step(scaled)
        if index != too_large:
            reference_step([tf.constant(g) * reference.scale_loss(1.0) for g in step_grads])
        scales.append(float(optimizer.dynamic_scale))
        assert_states_equal(state(variables, optimizer), state(reference_variables, reference))
        np.testing.assert_allclose(
            float(skipper.gradient_norm),
            np.sqrt(sum(np.sum(np.square(g.astype("float64"))) for g in step_grads)),
            rtol=1e-5,
        )
    # Grown after 2 finite updates, halved by the infinite one, then unchanged by the
    # skipped one.
    assert scales == [16.0, 32.0, 32.0, 16.0, 16.0, 16.0, 32.0]
    assert int(skipper.skipped_updates) == 2
    assert int(optimizer.iterations) == 5


class Regression(keras.Model):
    """A linear model whose train_step uses `skipper` (or plain `optimizer.apply` without one)."""

    def __init__(self, skipper=None, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2, dtype=kwargs.get("dtype"))
        self.skipper = skipper

    def call(self, inputs):
        return self.dense(inputs)

    def train_step(self, data):
        inputs, targets = data
        with tf.GradientTape() as tape:
            outputs = ops.cast(self(inputs, training=True), "float32")
            loss = ops.mean(ops.square(outputs - targets))
            scaled_loss = self.optimizer.scale_loss(replica_loss(loss))
        grads = tape.gradient(scaled_loss, self.trainable_variables)
        if self.skipper is None:
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}
        self.skipper.apply(self.optimizer, grads, self.trainable_variables)
        return {"loss": loss, "skipped_updates": self.skipper.skipped_updates}


def regression_data(bad_batch=None):
    """5 batches of 4 examples; `bad_batch` has a NaN input in its third example."""
    rng = np.random.default_rng(3)
    inputs = rng.normal(size=(20, 3)).astype("float32")
    targets = (inputs @ rng.normal(size=(3, 2))).astype("float32")
    if bad_batch is not None:
        inputs[4 * bad_batch + 2, 0] = np.nan
    return inputs, targets


def fit(model, data, **compile_kwargs):
    model.compile(optimizer=keras.optimizers.Adam(0.05), **compile_kwargs)
    model(data[0][:1])
    model.dense.set_weights([np.full(w.shape, 0.1, "float32") for w in model.dense.weights])
    return model.fit(*data, batch_size=4, epochs=2, shuffle=False, verbose=0)


@pytest.mark.parametrize(
    "dtype, jit_compile",
    [("float32", False), ("float32", True), ("mixed_float16", False)],
)
def test_fit_skips_the_non_finite_batch_and_logs_the_count(dtype, jit_compile):
    model = Regression(UpdateSkipper(warmup=3), dtype=dtype)
    history = fit(model, regression_data(bad_batch=2), jit_compile=jit_compile)
    weights = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)

    if dtype == "float32":
        # The reference: a model without skipper, trained without the NaN batch.
        keep = np.ones(20, bool)
        keep[8:12] = False
        reference_data = tuple(array[keep] for array in regression_data())
    else:
        # The reference: the loss-scale optimizer alone, which skips the NaN batch
        # (and its own overflows while its scale settles) itself.
        reference_data = regression_data(bad_batch=2)
    reference = Regression(dtype=dtype)
    fit(reference, reference_data, jit_compile=jit_compile)
    for actual, expected in zip(weights, reference.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)

    # Every update not applied is counted once; 2 epochs of 5 batches.
    skipped = history.history["skipped_updates"]
    assert skipped[-1] == 10 - int(model.optimizer.iterations)
    if dtype == "float32":
        assert skipped == [1, 2]
        assert int(model.optimizer.iterations) == 8
    else:
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert skipped[1] - skipped[0] == 1  # the NaN batch; the scale has settled
        assert int(model.optimizer.iterations) == int(reference.optimizer.iterations)
        assert float(model.optimizer.dynamic_scale) == float(reference.optimizer.dynamic_scale)


def test_mirrored_strategy_on_one_device():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = Regression(UpdateSkipper(warmup=3))
        history = fit(model, regression_data(bad_batch=1))
    assert history.history["skipped_updates"] == [1, 2]
    assert int(model.optimizer.iterations.numpy()) == 8
    reference = Regression()
    fit(reference, regression_data(bad_batch=1))  # without skipper: NaN weights
    assert not all(np.all(np.isfinite(w)) for w in reference.get_weights())
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


def test_state_is_saved_with_the_model_weights(tmp_path):
    model = Regression(UpdateSkipper(warmup=3))
    fit(model, regression_data(bad_batch=4))
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    restored = Regression(UpdateSkipper(warmup=3))
    restored(np.zeros((1, 3), "float32"))
    restored.load_weights(path)
    for original, loaded in zip(model.skipper.weights, restored.skipper.weights):
        np.testing.assert_array_equal(np.array(original), np.array(loaded))
    assert int(restored.skipper.skipped_updates) == 2


def test_config_round_trip():
    skipper = UpdateSkipper(factor=None, max_norm=400.0, warmup=10, decay=0.9, patience=None)
    config = keras.saving.serialize_keras_object(skipper)
    copy = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert type(copy) is UpdateSkipper
    assert copy.get_config() == skipper.get_config()
    assert (copy.factor, copy.max_norm, copy.warmup, copy.decay, copy.patience) == (
        None,
        400.0,
        10,
        0.9,
        None,
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("factor", 1.0),
        ("factor", "10"),
        ("max_norm", 0.0),
        ("warmup", 0),
        ("decay", 1.0),
        ("decay", True),
        ("patience", 0),
        ("patience", 2.5),
    ],
)
def test_invalid_arguments_are_named(name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        UpdateSkipper(**{name: value})


def test_two_replicas_decide_on_the_summed_gradients(tmp_path):
    """Under MirroredStrategy over 2 logical CPUs (a subprocess: see `main`)."""
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, __file__, str(out)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())
    # A NaN on replica 1 only, and a huge gradient on replica 0 only, are skipped
    # by both replicas; the other updates match one optimizer fed the sums.
    for name in ("adam", "loss_scale"):
        run = results[name]
        assert run["applied"] == [
            [True, True],
            [False, False],
            [True, True],
            [True, True],
            [False, False],
            [True, True],
        ]
        assert run["skipped_updates"] == 2
        assert run["replicas_max_difference"] == 0.0
        assert run["reference_max_difference"] < 1e-6
    # The loss-scale optimizer halved its scale for the NaN on replica 1 (alone, it
    # checks replica 0's gradients only and would apply the NaN).
    assert results["loss_scale"]["scales"] == [4.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert results["fit"]["skipped_updates"] == [1, 2]
    assert results["fit"]["finite"]


def main(out):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    grads = gradient_sequence(6)
    # (replica 0, replica 1) gradients of each update.
    pairs = [(g, [0.5 * x for x in g]) for g in grads]
    pairs[1][1][0][0, 0] = np.nan
    pairs[4] = ([1e4 * x for x in pairs[4][0]], pairs[4][1])
    for name in ("adam", "loss_scale"):
        with strategy.scope():
            variables = make_variables()
            optimizer = keras.optimizers.Adam(0.01)
            if name == "loss_scale":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=4.0)
            # As `fit` does: under MirroredStrategy no optimizer builds inside a tf.function.
            optimizer.build(variables)
            skipper = UpdateSkipper(warmup=2)
        reference_variables = make_variables()
        reference = keras.optimizers.Adam(0.01)

        # `step` is traced and called only in this iteration of the loop.
        @tf.function
        def step(per_replica_grads):
            return strategy.run(
                lambda g: skipper.apply(optimizer, g, variables),  # noqa: B023
                args=(per_replica_grads,),
            )

        applied, scales = [], []
        for pair in pairs:
            scale = float(optimizer.scale_loss(1.0))
            per_replica = strategy.experimental_distribute_values_from_function(
                lambda context, pair=pair, scale=scale: [
                    tf.constant(g * scale) for g in pair[context.replica_id_in_sync_group]
                ]
            )
            decisions = [bool(d) for d in strategy.experimental_local_results(step(per_replica))]
            applied.append(decisions)
            if all(decisions):
                reference.apply([tf.constant(a + b) for a, b in zip(*pair)], reference_variables)
            scales.append(float(optimizer.scale_loss(1.0)))
        replicas = [[np.array(c) for c in v.value.values] for v in variables]
        results[name] = dict(
            applied=applied,
            scales=scales,
            skipped_updates=int(np.array(skipper.skipped_updates.value.values[0])),
            replicas_max_difference=max(float(np.max(np.abs(a - b))) for a, b in replicas),
            reference_max_difference=max(
                float(np.max(np.abs(a - np.array(r))))
                for (a, _), r in zip(replicas, reference_variables)
            ),
        )
    with strategy.scope():
        model = Regression(UpdateSkipper(warmup=3))
        history = fit(model, regression_data(bad_batch=3))
    results["fit"] = dict(
        skipped_updates=[int(v) for v in history.history["skipped_updates"]],
        finite=all(bool(np.all(np.isfinite(w))) for w in model.get_weights()),
    )
    with open(out, "w") as file:
        json.dump(results, file)


if __name__ == "__main__":
    main(sys.argv[1])
