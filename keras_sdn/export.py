"""TensorFlow SavedModels of keras_sdn models for TF Serving."""

import contextlib
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_int
from keras_sdn.layers.sweep import auto_implementation
from keras_sdn.layers.sweep import whole_batch

# The largest `temperature` the `sample` signatures accept. The prior's
# standard deviations are scaled by it: already at 2 or 3 the latents are
# outliers that the decoder never saw, and far beyond, the scaled
# log-probabilities and scales overflow float32 (1e30 gave all-zero images).
MAX_TEMPERATURE = 10.0

# Where TF Serving looks for the requests it replays when it loads a model.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


def export_for_serving(
    model, path, overwrite=False, input_signature=None, max_count=64, compact_graph=True
):
    """Writes `model` as a TensorFlow SavedModel with named serving signatures.

    The SavedModel runs without keras_sdn, Keras or TensorFlow Probability
    installed (TF Serving, `tf.saved_model.load`, `saved_model_cli`).

    For a `keras_sdn.models.SDNVAE` or `keras_sdn.models.BetaVAE` (any
    `keras_sdn.models.BaseVAE`), the signatures call the model's own
    `elbo_and_reconstruction`, `bits_per_dim`, `encode` and `sample`:

    - `serving_default`: `images` (uint8, `(batch,) + image_shape`, values in
      `[0, 2**num_bits - 1]`) -> `bits_per_dim` (float32 `(batch,)`, the
      one-sample negative ELBO of each image in bits per dimension) and
      `reconstruction` (uint8, like `images`: the decoder's most likely image
      for a latent code of the image; SDNVAE: for the posterior sample whose
      ELBO is given).
    - `encode`: `images` -> the latent code, the model's `encode(images)`.
      BetaVAE: `latent_means` (float32 `(batch, latent_dim)`, the posterior
      means). SDNVAE: `latents_0` ... `latents_{L-1}`: every stochastic
      layer's posterior mean through its flow, top layer first (float32
      `(batch, h, w, c)`).
    - `sample`: `count` (int32 `(1,)`) and `temperature` (float32 `(1,)`,
      the scale of the prior's standard deviation) -> `images` (uint8,
      `(count,) + image_shape`), generated from the prior.

    The inputs are shaped so that TF Serving's row ("instances") request
    format can express them. Inputs of another dtype or shape are rejected.
    So that no request can exhaust the server's memory or time, a request
    is answered with an `INVALID_ARGUMENT` error, before any computation,
    when it sends more than `max_count` images or asks for a `count`
    outside `[1, max_count]`, when a pixel value exceeds `2**num_bits - 1`,
    or when `temperature` is not in `(0, MAX_TEMPERATURE]` (10; infinite and
    NaN temperatures included). The VAEs' signatures are stochastic (latent
    and, for the ELBO, posterior sampling); SDNVAE's use its averaged
    weights.

    Any other Keras model (e.g. one holding `SpatialDependency` layers)
    gets its forward pass (inference mode) as `serving_default`: the inputs
    are named after the model's `keras.Input`s (or the specs of
    `input_signature`) and checked against their shapes, and their batch
    size against `max_count`, when run; a single output is named
    `output_0`, a dict output keeps its keys.

    Each signature is traced once, with the spatial dependency layers
    sweeping the batch whole (not in two halves, as their graphs do on a
    CPU): half the loops to load and optimise, and any batch size, one
    included, is served. The sweeps' gradients are not saved: the SavedModel
    serves, it cannot be differentiated through those layers. With
    `compact_graph` (the default) the sweeps of layers with
    `implementation="auto"` are `tf.scan` loops: the graphs load and are
    optimised on their first call sooner (the tiny SDN-VAE, on 2 CPU cores:
    1.8-2.7 s per signature's first request); without it they are unrolled
    over the lines of maps up to 32 lines, as in training: steady requests
    are 1.5-2x as fast, loading and first requests slower (2.1-3.5 s).
    Behind TF Serving, whose warm-up replays a request per signature at
    load, `compact_graph=False` is the faster server. Layers created with
    `implementation="unrolled"` or `"scanned"` keep their choice.

    The SavedModel holds TF Serving's warm-up file
    (`assets.extra/tf_serving_warmup_requests`): one small request per
    signature (one black image; `count=1`, `temperature=1`), which TF
    Serving runs when it loads the model, so that the first client's
    request does not wait for the graphs to be prepared. A generic model
    whose inputs have unknown dimensions besides the batch (or an
    `input_signature` without names) gets none.

    The SavedModel is written into a temporary directory beside `path` and
    renamed to `path` when complete, so a failed export leaves nothing
    behind and a reader of `path` (e.g. TF Serving watching the model's base
    directory for a new version folder) never sees a half-written model.

    Args:
        model: A built Keras model.
        path: Directory to create (for TF Serving, a version folder such as
            `models/sdn_vae/1`). A local path.
        overwrite: Whether to replace an existing `path`.
        input_signature: Only for models other than the VAEs: a list of
            `tf.TensorSpec`s (with names, batch dimension `None`), one per
            input. Required for models without `keras.Input`s (subclassed
            models); defaults to the model's inputs otherwise.
        max_count: The most images (generic models: batch rows) one request
            may send or ask for. The default, 64, is an 8x8 grid of samples;
            raise it only as far as the server's memory allows (the
            activations grow linearly with it).
        compact_graph: Whether the sweeps of spatial dependency layers with
            `implementation="auto"` are saved as loops (quick first request)
            or as in training (unrolled on small maps: faster requests once
            the graph is prepared); see above.

    Returns:
        The absolute path written.

    Example:

    ```python
    export_for_serving(model, "models/sdn_vae/1")
    serving = tf.saved_model.load("models/sdn_vae/1")
    out = serving.signatures["serving_default"](images=images)  # uint8
    out["bits_per_dim"], out["reconstruction"]
    ```
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected `model` to be a keras.Model. Received: model of type {type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            "Expected `model` to be built (call it on a batch or build it) before export. "
            f"Received: an unbuilt {type(model).__name__}"
        )
    max_count = check_int("max_count", max_count, 1)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ValueError(
            f"Expected `path` not to exist, or overwrite=True. Received: path={path!r} (exists)"
        )
    compact_graph = check_bool("compact_graph", compact_graph)
    endpoints = _endpoints(model, input_signature, max_count)
    sweeps = auto_implementation("scanned") if compact_graph else contextlib.nullcontext()
    with whole_batch(), sweeps:
        signatures = {
            name: tf.function(function, autograph=False).get_concrete_function(*specs)
            for name, (function, specs, _) in endpoints.items()
        }
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.incomplete-", dir=parent)
    try:
        # mkdtemp makes the directory private; a model server may run as another user.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)
        _write_saved_model(temporary, model, signatures)
        _write_warmup_requests(temporary, endpoints)
        _replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


def _write_saved_model(directory, model, signatures):
    """Saves the signatures' concrete functions with what they use of `model`.

    Only the signatures, the variables they capture and the model's
    resources (lookup tables) are saved: functions held by the root object
    would be traced again by `tf.saved_model.save` (its tracing context
    differs), and so would the gradient function of every custom-gradient
    op (the sweeps').
    """
    root = tf.Module()
    captured = {}
    for function in signatures.values():
        for variable in function.variables:
            captured.setdefault(id(variable), variable)
    root.captured_variables = list(captured.values())
    root.resources = [
        trackable
        for trackable in tf.train.TrackableView(model).descendants()
        if isinstance(trackable, tf.saved_model.experimental.TrackableResource)
    ]
    tf.saved_model.save(
        root,
        directory,
        signatures=signatures,
        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
    )


def _write_warmup_requests(directory, endpoints):
    """Writes TF Serving's warm-up file: a `PredictionLog` per signature with examples."""
    requests = [
        _prediction_log(name, examples)
        for name, (_, _, examples) in endpoints.items()
        if examples is not None
    ]
    if not requests:
        return
    os.makedirs(os.path.join(directory, os.path.dirname(WARMUP_FILE)))
    with tf.io.TFRecordWriter(os.path.join(directory, WARMUP_FILE)) as writer:
        for request in requests:
            writer.write(request)


def _prediction_log(signature_name, inputs):
    """A serialized `tensorflow.serving.PredictionLog` holding one `PredictRequest`.

    Written field by field (protobuf wire format) so that exporting needs no
    TF Serving package: `PredictionLog.predict_log` (6) ->
    `PredictLog.request` (1) -> `PredictRequest.model_spec` (1, with
    `ModelSpec.signature_name` 3) and `PredictRequest.inputs` (2, a map:
    entries of key 1 and `TensorProto` value 2).
    """
    model_spec = _field(3, signature_name.encode())
    request = _field(1, model_spec) + b"".join(
        _field(
            2, _field(1, key.encode()) + _field(2, tf.make_tensor_proto(value).SerializeToString())
        )
        for key, value in inputs.items()
    )
    return _field(6, _field(1, request))


def _field(number, payload):
    """A length-delimited protobuf field: tag, varint length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value):
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _replace(source, destination):
    """Renames directory `source` to `destination`, replacing what is there."""
    if not os.path.exists(destination):
        os.rename(source, destination)
        return
    previous = tempfile.mkdtemp(
        prefix=f".{os.path.basename(destination)}.previous-", dir=os.path.dirname(destination)
    )
    replaced = os.path.join(previous, "model")
    os.rename(destination, replaced)
    try:
        os.rename(source, destination)
    except OSError:
        os.rename(replaced, destination)
        raise
    finally:
        shutil.rmtree(previous, ignore_errors=True)


def _endpoints(model, input_signature, max_count):
    """`{signature name: (function, input specs, warm-up inputs or None)}` of `model`."""
    from keras_sdn.models import BaseVAE

    if isinstance(model, BaseVAE):
        if input_signature is not None:
            raise ValueError(
                f"Expected no `input_signature`: {type(model).__name__} has fixed "
                f"signatures. Received: input_signature={input_signature!r}"
            )
        return _vae_endpoints(model, max_count)
    return _generic_endpoints(model, input_signature, max_count)


def _generic_endpoints(model, input_signature, max_count):
    if input_signature is None:
        if not getattr(model, "inputs", None):
            raise ValueError(
                f"Expected an `input_signature` for {type(model).__name__}, whose inputs are not "
                "known (it is not a functional or Sequential model with an Input). "
                "Received: input_signature=None"
            )
        input_signature = [
            tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype, name=x.name) for x in model.inputs
        ]
    input_signature = list(input_signature)

    def serve(*inputs):
        inputs = [
            _checked_batch(tf.ensure_shape(x, spec.shape), max_count, spec.name or "inputs")
            for x, spec in zip(inputs, input_signature)
        ]
        return model(inputs[0] if len(inputs) == 1 else inputs, training=False)

    examples = None  # a warm-up request needs every input's name and shape
    if all(spec.name and spec.shape[1:].is_fully_defined() for spec in input_signature):
        examples = {
            spec.name: np.zeros((1,) + tuple(spec.shape[1:]), spec.dtype.as_numpy_dtype)
            for spec in input_signature
        }
    return {"serving_default": (serve, input_signature, examples)}


def _checked_batch(tensor, max_count, name):
    """`tensor`, checked when run to have at most `max_count` rows."""
    check = tf.debugging.assert_less_equal(
        tf.shape(tensor)[0],
        max_count,
        message=f"Expected at most max_count={max_count} rows of `{name}` in one request "
        "(`max_count` of export_for_serving)",
    )
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _image_spec(image_shape):
    return tf.TensorSpec((None,) + tuple(image_shape), tf.uint8, name="images")


SAMPLE_SIGNATURE = [
    tf.TensorSpec((1,), tf.int32, name="count"),
    tf.TensorSpec((1,), tf.float32, name="temperature"),
]
SAMPLE_EXAMPLE = {"count": np.array([1], np.int32), "temperature": np.array([1.0], np.float32)}


def _checked_images(images, image_shape, num_bits, max_count):
    """`images`, checked when the signature runs: `(batch,) + image_shape`,
    at most `max_count` of them, `num_bits`-bit values.

    TF Serving checks the dtype of a request's tensors, not their shape.
    """
    images = _checked_batch(
        tf.ensure_shape(images, (None,) + tuple(image_shape)), max_count, "images"
    )
    largest = 2**num_bits - 1
    check = tf.debugging.assert_less_equal(
        images,
        tf.constant(largest, tf.uint8),
        message=f"Expected `images` to hold {num_bits}-bit values, at most {largest}",
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _checked_sample_arguments(count, temperature, max_count):
    """`(count, temperature)` as scalars, checked when run: `count` in
    `[1, max_count]`, `temperature` in `(0, MAX_TEMPERATURE]`."""
    count, temperature = tf.ensure_shape(count, (1,)), tf.ensure_shape(temperature, (1,))
    count_range = f"Expected `count` in [1, {max_count}] (`max_count` of export_for_serving)"
    # NaN fails both comparisons, infinity the second.
    temperature_range = f"Expected a `temperature` in (0, {MAX_TEMPERATURE}]"
    checks = [
        tf.debugging.assert_positive(count, message=count_range),
        tf.debugging.assert_less_equal(count, max_count, message=count_range),
        tf.debugging.assert_positive(temperature, message=temperature_range),
        tf.debugging.assert_less_equal(temperature, MAX_TEMPERATURE, message=temperature_range),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(count[0]), tf.identity(temperature[0])


def _vae_endpoints(model, max_count):
    image_shape = model.image_shape

    def checked(images):
        return _checked_images(images, image_shape, model.num_bits, max_count)

    def serve(images):
        elbo, reconstruction = model.elbo_and_reconstruction(checked(images))
        return {"bits_per_dim": model.bits_per_dim(elbo), "reconstruction": reconstruction}

    def encode(images):
        code = model.encode(checked(images))
        if isinstance(code, (list, tuple)):  # SDNVAE: one latent tensor per stochastic layer
            return {f"latents_{index}": latent for index, latent in enumerate(code)}
        return {"latent_means": code}

    def sample(count, temperature):
        return {"images": model.sample(*_checked_sample_arguments(count, temperature, max_count))}

    image_example = {"images": np.zeros((1,) + tuple(image_shape), np.uint8)}
    image_signature = [_image_spec(image_shape)]
    return {
        "serving_default": (serve, image_signature, image_example),
        "encode": (encode, image_signature, image_example),
        "sample": (sample, SAMPLE_SIGNATURE, SAMPLE_EXAMPLE),
    }
