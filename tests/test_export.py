"""keras_sdn.export.export_for_serving: signatures served without keras_sdn, errors, atomicity."""

import json
import math
import os
import subprocess
import sys
import textwrap
import types
from subprocess import PIPE

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sdn import ResidualSpatialDependency
from keras_sdn import SpatialDependency
from keras_sdn import export
from keras_sdn.export import export_for_serving
from keras_sdn.models import BetaVAE
from tiny_models import tiny_sdn_vae

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

# Loads every SavedModel of a plan in a process that never imports keras_sdn
# (nor TensorFlow Probability), calls each signature as TF Serving does and
# records the outputs, or the error of a call that must fail.
SERVING_CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    plan = json.load(open(sys.argv[1]))
    errors = {}
    for spec in plan.values():
        signatures = tf.saved_model.load(spec["dir"]).signatures
        for name, inputs in spec["calls"]:
            arguments = {k: tf.constant(v) for k, v in np.load(inputs).items()}
            outputs = signatures[name](**arguments)
            np.savez(f"{inputs}.out.npz", **{k: v.numpy() for k, v in outputs.items()})
        for name, inputs in spec["bad_calls"]:
            arguments = {k: tf.constant(v) for k, v in np.load(inputs).items()}
            try:
                signatures[name](**arguments)
                errors[inputs] = None
            except Exception as error:  # reported here, judged by the tests
                errors[inputs] = f"{type(error).__name__}: {error}"
    json.dump(errors, open(sys.argv[2], "w"))
    imported = [m for m in sys.modules if m.startswith(("keras_sdn", "tensorflow_probability"))]
    assert not imported, imported
    """
)


def tiny_beta_vae():
    model = BetaVAE(latent_dim=2, decoder="sdn", sdn_features=4, seed=2)
    model.build((None, 64, 64, 3))
    return model


def generic_model():
    inputs = keras.Input((6, 6, 3), name="pixels")
    hidden = SpatialDependency(4, num_features=4, directions=2)(inputs)
    outputs = ResidualSpatialDependency(2, num_features=3, directions=["down"])(hidden)
    return keras.Model(inputs, outputs)


def assert_images_close(actual, expected):
    """Equal but for rare off-by-one pixels: graph and eager float rounding at a pixel boundary."""
    actual, expected = np.asarray(actual).astype(int), np.asarray(expected).astype(int)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1
    assert np.mean(actual != expected) < 0.01


def random_images(shape, num_bits, seed=0):
    return np.random.default_rng(seed).integers(0, 2**num_bits, shape).astype(np.uint8)


def run_concurrently(commands, timeout=300):
    """Runs the commands side by side; returns their `(returncode, stdout, stderr)`."""
    processes = [
        subprocess.Popen(command, env=ENV, text=True, stdout=PIPE, stderr=PIPE)
        for command in commands
    ]
    try:
        outputs = [process.communicate(timeout=timeout) for process in processes]
        return [(p.returncode, *output) for p, output in zip(processes, outputs)]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def instances_to_tensors(body, dtypes):
    """A REST body in the row format as TF Serving reads it: each input stacked over instances."""
    body = json.loads(json.dumps(body))  # what a client sends
    rows = body["instances"]
    return {name: np.array([row[name] for row in rows], dtypes[name]) for name in rows[0]}


README_REQUESTS = {  # the README's REST request bodies, with 4x4 images
    "serving_default": {
        "signature_name": "serving_default",
        "instances": [{"images": random_images((4, 4, 3), 5, seed=s).tolist()} for s in (1, 2)],
    },
    "sample": {"signature_name": "sample", "instances": [{"count": 2, "temperature": 0.8}]},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Exports the three kinds of model, then side by side: runs every signature
    in a fresh process, `saved_model_cli show --all` and the README's
    `saved_model_cli run` checks.

    Returns a namespace: `models`, `directories`, `inputs`, `outputs` and
    `errors` (keyed by `(model, call name)`), `shown` (the output of
    `show`), `cli_outputs` (per README request, the output arrays).
    """
    root = tmp_path_factory.mktemp("serving")
    keras.utils.set_random_seed(0)
    models = {
        "sdn_vae": tiny_sdn_vae(num_bits=5),
        "beta_vae": tiny_beta_vae(),
        "generic": generic_model(),
    }
    directories = {key: str(root / key / "1") for key in models}
    max_counts = {"sdn_vae": 3, "beta_vae": 64, "generic": 2}  # 64: the default
    for key, model in models.items():
        arguments = {} if key == "beta_vae" else {"max_count": max_counts[key]}
        assert export_for_serving(model, directories[key], **arguments) == directories[key]

    sdn_images = instances_to_tensors(README_REQUESTS["serving_default"], {"images": np.uint8})
    beta_images = random_images((2, 64, 64, 3), num_bits=8)
    generic_inputs = np.float32(np.random.default_rng(1).normal(size=(2, 6, 6, 3)))
    sample = {"count": np.array([3], np.int32), "temperature": np.array([0.7], np.float32)}
    calls = {
        "sdn_vae": {
            "serve": ("serving_default", sdn_images),
            "encode": ("encode", sdn_images),
            "sample": ("sample", sample),
            "hottest_sample": (
                "sample",
                {"count": np.array([1], np.int32), "temperature": np.array([10.0], np.float32)},
            ),
        },
        "beta_vae": {
            "serve": ("serving_default", {"images": beta_images}),
            "encode": ("encode", {"images": beta_images}),
            "sample": ("sample", sample),
            "cold_sample": (
                "sample",
                {"count": np.array([2], np.int32), "temperature": np.array([1e-6], np.float32)},
            ),
        },
        "generic": {
            "serve": ("serving_default", {"pixels": generic_inputs}),
        },
    }
    float_images = {"images": sdn_images["images"].astype(np.float32)}
    four_images = {"images": random_images((4, 4, 4, 3), 5)}

    def temperature(value):
        return ("sample", {**sample, "temperature": np.array([value], np.float32)})

    def count(value):
        return ("sample", {**sample, "count": np.array([value], np.int32)})

    bad_calls = {
        "sdn_vae": {
            "float_images": ("serving_default", float_images),
            "float_images_encode": ("encode", float_images),
            "wrong_image_size": ("serving_default", {"images": random_images((1, 8, 8, 3), 5)}),
            "unbatched_image": ("encode", {"images": sdn_images["images"][0]}),
            "too_many_bits": ("serving_default", {"images": np.full((1, 4, 4, 3), 32, np.uint8)}),
            "float_count": ("sample", {**sample, "count": np.array([3.0], np.float32)}),
            "scalar_temperature": ("sample", {**sample, "temperature": np.float32(0.7)}),
            "zero_count": count(0),
            "count_above_max": count(4),
            "huge_count": count(2**31 - 1),
            "too_many_images": ("serving_default", four_images),
            "too_many_images_encode": ("encode", four_images),
            "negative_temperature": temperature(-1.0),
            "zero_temperature": temperature(0.0),
            "hot_temperature": temperature(10.5),
            "infinite_temperature": temperature(np.inf),
            "nan_temperature": temperature(np.nan),
        },
        "beta_vae": {
            "int32_images": ("serving_default", {"images": beta_images.astype(np.int32)}),
            "wrong_channels": ("encode", {"images": random_images((1, 64, 64, 1), 8)}),
            "two_counts": ("sample", {**sample, "count": np.array([1, 2], np.int32)}),
            "count_above_default_max": count(65),
            "too_many_images": ("encode", {"images": random_images((65, 64, 64, 3), 8)}),
            "huge_temperature": temperature(1e30),
        },
        "generic": {
            "wrong_shape": ("serving_default", {"pixels": np.zeros((2, 5, 6, 3), np.float32)}),
            "wrong_dtype": ("serving_default", {"pixels": np.zeros((2, 6, 6, 3), np.uint8)}),
            "too_many_rows": ("serving_default", {"pixels": np.zeros((3, 6, 6, 3), np.float32)}),
        },
    }
    plan = {}
    for key in models:
        plan[key] = {"dir": directories[key], "calls": [], "bad_calls": []}
        for group, entries in (("calls", calls[key]), ("bad_calls", bad_calls[key])):
            for call, (signature, arguments) in entries.items():
                file = str(root / f"{key}.{call}.npz")
                np.savez(file, **arguments)
                plan[key][group].append((signature, file))
    (root / "plan.json").write_text(json.dumps(plan))

    # The README's checks: images go in through a .npy file, scalars as literals.
    np.save(root / "images.npy", sdn_images["images"])
    cli_run = ["saved_model_cli", "run", "--dir", directories["sdn_vae"], "--tag_set", "serve"]
    (client, show, run_serve, run_sample) = run_concurrently([
        [sys.executable, "-c", SERVING_CLIENT, str(root / "plan.json"), str(root / "errors.json")],
        ["saved_model_cli", "show", "--all", "--dir", directories["sdn_vae"]],
        cli_run + ["--signature_def", "serving_default", "--inputs",
                   f"images={root / 'images.npy'}", "--outdir", str(root / "cli_serving_default")],
        cli_run + ["--signature_def", "sample", "--input_exprs", "count=[2];temperature=[0.8]",
                   "--outdir", str(root / "cli_sample")],
    ])  # fmt: skip
    for returncode, _, stderr in (client, show, run_serve, run_sample):
        assert returncode == 0, stderr[-3000:]

    recorded = json.loads((root / "errors.json").read_text())
    return types.SimpleNamespace(
        models=models,
        directories=directories,
        inputs={
            (key, call): arguments for key in models for call, (_, arguments) in calls[key].items()
        },
        outputs={
            (key, call): dict(np.load(str(root / f"{key}.{call}.npz.out.npz")))
            for key in models
            for call in calls[key]
        },
        errors={
            (key, call): recorded[str(root / f"{key}.{call}.npz")]
            for key in models
            for call in bad_calls[key]
        },
        shown=show[1],
        cli_outputs={
            signature: {file.stem: np.load(file) for file in (root / f"cli_{signature}").iterdir()}
            for signature in README_REQUESTS
        },
    )


def test_sdn_vae_signatures_match_the_python_model(served):
    outputs = served.outputs
    model = served.models["sdn_vae"]
    images = served.inputs[("sdn_vae", "serve")]["images"]
    # The SavedModel holds the random seeds' state at export: calling the
    # Python model in the same order draws the same latents.
    expected_elbo, expected_reconstruction = model.elbo_and_reconstruction(images)
    expected_bits = model.bits_per_dim(expected_elbo)
    expected_latents = model.encode(images)
    expected_samples = model.sample(3, temperature=0.7)

    served_call = outputs[("sdn_vae", "serve")]
    np.testing.assert_allclose(served_call["bits_per_dim"], expected_bits, rtol=1e-5)
    assert served_call["bits_per_dim"].shape == (2,)
    assert served_call["reconstruction"].dtype == np.uint8
    np.testing.assert_array_equal(served_call["reconstruction"], expected_reconstruction)
    encoded = outputs[("sdn_vae", "encode")]
    assert sorted(encoded) == [f"latents_{i}" for i in range(model.num_layers)]
    for index, latent in enumerate(expected_latents):
        np.testing.assert_allclose(encoded[f"latents_{index}"], latent, rtol=1e-5, atol=1e-6)
    samples = outputs[("sdn_vae", "sample")]["images"]
    assert samples.shape == (3, 4, 4, 3) and samples.dtype == np.uint8
    assert samples.max() <= 31
    np.testing.assert_array_equal(samples, expected_samples)
    hottest = outputs[("sdn_vae", "hottest_sample")]["images"]  # at MAX_TEMPERATURE, accepted
    assert hottest.shape == (1, 4, 4, 3) and hottest.max() <= 31


def test_beta_vae_signatures_match_the_python_model(served):
    outputs = served.outputs
    model = served.models["beta_vae"]
    images = served.inputs[("beta_vae", "serve")]["images"]
    terms = model(images)  # the same posterior sample as the served call (seed state)
    negative_elbo = np.asarray(terms["reconstruction"] + terms["kl"], np.float64)
    expected_bits = negative_elbo / (64 * 64 * 3 * math.log(2.0))
    codes = model.encode(images)

    served_call = outputs[("beta_vae", "serve")]
    np.testing.assert_allclose(served_call["bits_per_dim"], expected_bits, rtol=1e-5)
    assert served_call["reconstruction"].dtype == np.uint8
    assert_images_close(served_call["reconstruction"], model.decode(codes))
    latent_means = outputs[("beta_vae", "encode")]["latent_means"]
    np.testing.assert_allclose(latent_means, codes, rtol=1e-5, atol=1e-6)
    samples = outputs[("beta_vae", "sample")]["images"]
    assert samples.shape == (3, 64, 64, 3) and samples.dtype == np.uint8
    # Near temperature 0 every sample is the decoding of the prior mean.
    cold = outputs[("beta_vae", "cold_sample")]["images"]
    prior_mean_image = model.decode(np.zeros((1, 2), np.float32))
    assert_images_close(cold, np.repeat(prior_mean_image, 2, axis=0))


def test_generic_model_serves_its_forward_pass(served):
    pixels = served.inputs[("generic", "serve")]["pixels"]
    (served_output,) = served.outputs[("generic", "serve")].values()
    expected = served.models["generic"](pixels)
    np.testing.assert_allclose(served_output, expected, rtol=1e-5, atol=1e-6)


def test_wrong_dtype_shape_or_values_raise(served):
    errors = served.errors
    not_raised = [call for call, error in errors.items() if error is None]
    assert not not_raised
    dtype = "expected to be a uint8 tensor but is a float tensor"
    assert dtype in errors[("sdn_vae", "float_images")]
    assert dtype in errors[("sdn_vae", "float_images_encode")]
    assert "expected to be a uint8 tensor but is a int32" in errors[("beta_vae", "int32_images")]
    assert "expected to be a int32 tensor but is a float" in errors[("sdn_vae", "float_count")]
    assert "expected to be a float tensor but is a uint8" in errors[("generic", "wrong_dtype")]
    shape = "is not compatible with expected shape"
    for call in ("wrong_image_size", "unbatched_image", "scalar_temperature"):
        assert shape in errors[("sdn_vae", call)], call
    assert shape in errors[("beta_vae", "wrong_channels")]
    assert shape in errors[("beta_vae", "two_counts")]
    assert shape in errors[("generic", "wrong_shape")]
    assert (
        "Expected `images` to hold 5-bit values, at most 31" in errors[("sdn_vae", "too_many_bits")]
    )


def test_requests_beyond_the_serving_bounds_raise(served):
    """Too many images or samples, or a temperature outside (0, 10], get INVALID_ARGUMENT."""
    errors = served.errors
    bounds = {
        ("sdn_vae", call): message
        for calls, message in (
            (("zero_count", "count_above_max", "huge_count"), "Expected `count` in [1, 3]"),
            (("too_many_images", "too_many_images_encode"), "at most max_count=3 rows of `images`"),
            (
                (
                    "negative_temperature",
                    "zero_temperature",
                    "hot_temperature",
                    "infinite_temperature",
                    "nan_temperature",
                ),
                "Expected a `temperature` in (0, 10.0]",
            ),
        )  # fmt: skip
        for call in calls
    }
    bounds[("beta_vae", "count_above_default_max")] = "Expected `count` in [1, 64]"
    bounds[("beta_vae", "too_many_images")] = "at most max_count=64 rows of `images`"
    bounds[("beta_vae", "huge_temperature")] = "Expected a `temperature` in (0, 10.0]"
    bounds[("generic", "too_many_rows")] = "at most max_count=2 rows of `pixels`"
    for call, message in bounds.items():
        assert errors[call].startswith("InvalidArgumentError"), (call, errors[call])
        assert message in errors[call], (call, errors[call])
    assert export.MAX_TEMPERATURE == 10.0


def test_saved_model_cli_lists_the_signatures(served):
    listed = dict(part.split("']", 1) for part in served.shown.split("signature_def['")[1:])
    assert {"serving_default", "encode", "sample"} <= set(listed)
    assert "inputs['images']" in listed["serving_default"]
    assert "DT_UINT8" in listed["serving_default"]
    assert "outputs['bits_per_dim']" in listed["serving_default"]
    assert "outputs['reconstruction']" in listed["serving_default"]
    assert "outputs['latents_0']" in listed["encode"]
    assert "inputs['count']" in listed["sample"] and "inputs['temperature']" in listed["sample"]
    assert "outputs['images']" in listed["sample"]


def test_readme_requests_run_through_saved_model_cli(served):
    image_shape = served.models["sdn_vae"].image_shape
    serve = served.cli_outputs["serving_default"]
    assert sorted(serve) == ["bits_per_dim", "reconstruction"]
    assert serve["bits_per_dim"].shape == (2,) and np.isfinite(serve["bits_per_dim"]).all()
    assert serve["reconstruction"].shape == (2,) + image_shape
    # The README's sample request: one instance {"count": 2, "temperature": 0.8}.
    tensors = instances_to_tensors(
        README_REQUESTS["sample"], {"count": np.int32, "temperature": np.float32}
    )
    assert tensors["count"].tolist() == [2] and tensors["temperature"].tolist() == [np.float32(0.8)]
    images = served.cli_outputs["sample"]["images"]
    assert images.shape == (2,) + image_shape and images.dtype == np.uint8
    assert images.max() <= 31


def test_writes_atomically_and_never_overwrites_unasked(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # any model; a fast one
    path = tmp_path / "models" / "generic" / "1"
    export_for_serving(model, path)
    written = sorted(os.listdir(path))
    stamp = (path / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(ValueError, match="Expected `path` not to exist"):
        export_for_serving(model, path)
    assert (path / "saved_model.pb").stat().st_mtime_ns == stamp
    assert oct(path.stat().st_mode & 0o777) == oct(0o777 & ~current_umask())

    # A write that fails (here after writing everything) leaves no trace and
    # the model that was there in place.
    write_warmup_requests = export._write_warmup_requests

    def write_then_fail(directory, endpoints):
        write_warmup_requests(directory, endpoints)
        raise OSError("No space left on device")

    monkeypatch.setattr(export, "_write_warmup_requests", write_then_fail)
    with pytest.raises(OSError, match="No space"):
        export_for_serving(model, path, overwrite=True)
    with pytest.raises(OSError, match="No space"):
        export_for_serving(model, path.parent / "2")
    assert os.listdir(path.parent) == ["1"]
    assert sorted(os.listdir(path)) == written
    assert (path / "saved_model.pb").stat().st_mtime_ns == stamp

    monkeypatch.setattr(export, "_write_warmup_requests", write_warmup_requests)
    export_for_serving(model, path, overwrite=True)
    assert os.listdir(path.parent) == ["1"]
    assert (path / "saved_model.pb").stat().st_mtime_ns != stamp


def current_umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


class SubclassedModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.sdn = SpatialDependency(2)
        self.built = True

    def call(self, inputs):
        return self.sdn(inputs)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(model="not a model"), "Expected `model` to be a keras.Model"),
        (dict(model=SpatialDependency(2)), "Expected `model` to be a keras.Model"),
        (dict(model=keras.Sequential([SpatialDependency(2)])), "Expected `model` to be built"),
        (dict(model=SubclassedModel()), "Expected an `input_signature`"),
        (
            dict(model=keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), max_count=0),
            "Expected `max_count` to be an int >= 1",
        ),
        (
            dict(model=keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                 compact_graph="yes"),
            "Expected `compact_graph` to be",
        ),
    ],
)  # fmt: skip
def test_bad_arguments_raise(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_for_serving(path=tmp_path / "m", **arguments)
    assert not (tmp_path / "m").exists()


def test_vae_rejects_an_input_signature(tmp_path):
    with pytest.raises(ValueError, match="Expected no `input_signature`"):
        export_for_serving(tiny_beta_vae(), tmp_path / "m", input_signature=[])


def test_subclassed_model_with_an_input_signature(tmp_path):
    model = SubclassedModel()
    pixels = np.float32(np.random.default_rng(2).normal(size=(2, 5, 4, 3)))
    expected = model(pixels)
    spec = tf.TensorSpec((None, 5, 4, 3), tf.float32, name="pixels")
    export_for_serving(model, tmp_path / "m", input_signature=[spec])
    serve = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    (output,) = serve(pixels=tf.constant(pixels)).values()
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-6)


def warmup_requests(directory):
    """The warm-up file parsed as TF Serving reads it: `{signature: inputs}`."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = {}
    for record in tf.data.TFRecordDataset(os.path.join(directory, export.WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
        requests[request.model_spec.signature_name] = inputs
    return requests


@pytest.fixture(scope="module")
def swept_sdn_vae(tmp_path_factory):
    """An SDN-VAE with SDN layers, exported after its own compiled functions
    were traced for any batch size; returns `(model, SavedModel directory)`."""
    keras.utils.set_random_seed(3)
    model = tiny_sdn_vae(use_sdn=True, sdn_features=4, sdn_directions=1)
    for batch in (2, 3):  # a trace for every batch size, which the export must not reuse
        model.encode(random_images((batch, 4, 4, 3), 8))
    directory = str(tmp_path_factory.mktemp("swept") / "1")
    export_for_serving(model, directory)
    return model, directory


def test_warmup_requests_run_on_every_signature(served, swept_sdn_vae):
    """One request of one image (one sample) per signature, which the loaded model answers.

    TF Serving replays them at load. The SDN layers of the SDN-VAE and the
    beta-VAE answer a batch of one, which their sweeps in two halves (the
    layers' graph mode on a CPU) could not: TF's convolution gives an empty
    half the wrong shape.
    """
    directories = {**served.directories, "swept": swept_sdn_vae[1]}
    for key, directory in directories.items():
        requests = warmup_requests(directory)
        signatures = tf.saved_model.load(directory).signatures
        assert sorted(requests) == sorted(signatures), key
        for name, inputs in requests.items():
            assert sorted(inputs) == sorted(signatures[name].structured_input_signature[1])
            outputs = signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
            for output in outputs.values():
                assert output.shape[0] == 1, (key, name)
    images = warmup_requests(served.directories["sdn_vae"])["serving_default"]["images"]
    assert images.shape == (1, 4, 4, 3) and images.dtype == np.uint8
    sample = warmup_requests(served.directories["beta_vae"])["sample"]
    assert sample["count"].tolist() == [1] and sample["temperature"].tolist() == [1.0]


def test_sdn_vae_with_sweeps_serves_any_batch_size(swept_sdn_vae):
    """The deterministic `encode` of one image, of two and of five, as the Python model's."""
    model, directory = swept_sdn_vae
    encode = tf.saved_model.load(directory).signatures["encode"]
    images = random_images((5, 4, 4, 3), 8, seed=4)
    expected = model.encode(images)
    for batch in (1, 2, 5):
        served_latents = encode(images=tf.constant(images[:batch]))
        for index, latent in enumerate(expected):
            np.testing.assert_allclose(
                served_latents[f"latents_{index}"], latent[:batch], atol=1e-5
            )


def test_no_warmup_file_for_inputs_of_unknown_size(tmp_path):
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Dense(1)])
    export_for_serving(model, tmp_path / "m")
    assert not (tmp_path / "m" / "assets.extra").exists()
    serve = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    (name,) = serve.structured_input_signature[1]
    assert serve(**{name: tf.zeros((2, 5, 2))})["output_0"].shape == (2, 5, 1)


def graph_op_types(concrete_function):
    """The op types of a concrete function's graph and of the functions it calls."""
    graph = concrete_function.graph.as_graph_def()
    nodes = list(graph.node)
    for function in graph.library.function:
        nodes.extend(function.node_def)
    return {node.op for node in nodes}


def test_compact_graph_saves_loops_and_unrolled_the_same_function(tmp_path):
    model = generic_model()
    pixels = np.float32(np.random.default_rng(2).normal(size=(2, 6, 6, 3)))
    outputs, op_types = {}, {}
    for compact_graph in (True, False):
        directory = export_for_serving(
            model, tmp_path / str(compact_graph), compact_graph=compact_graph
        )
        serve = tf.saved_model.load(directory).signatures["serving_default"]
        outputs[compact_graph] = serve(pixels=tf.constant(pixels))["output_0"].numpy()
        op_types[compact_graph] = graph_op_types(serve)
    # 6x6 maps: unrolled unless the export keeps the sweeps as tf.scan loops.
    assert {"While", "StatelessWhile"} & op_types[True]
    assert not {"While", "StatelessWhile"} & op_types[False]
    np.testing.assert_allclose(outputs[True], outputs[False], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs[True], model(pixels), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["unrolled", "scanned"])
@pytest.mark.parametrize("compact_graph", [True, False])
def test_export_keeps_a_layers_explicit_implementation(tmp_path, implementation, compact_graph):
    inputs = keras.Input((6, 6, 3), name="pixels")
    layer = SpatialDependency(4, num_features=4, directions=2, implementation=implementation)
    model = keras.Model(inputs, layer(inputs))
    directory = export_for_serving(model, tmp_path / "m", compact_graph=compact_graph)
    serve = tf.saved_model.load(directory).signatures["serving_default"]
    loops = {"While", "StatelessWhile"} & graph_op_types(serve)
    assert bool(loops) == (implementation == "scanned")
    pixels = np.float32(np.random.default_rng(3).normal(size=(2, 6, 6, 3)))
    np.testing.assert_allclose(
        serve(pixels=tf.constant(pixels))["output_0"], model(pixels), rtol=1e-5, atol=1e-6
    )
