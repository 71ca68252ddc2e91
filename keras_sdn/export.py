"""TensorFlow SavedModels of keras_sdn models for TF Serving."""

import os
import shutil
import tempfile

import keras
import tensorflow as tf


def export_for_serving(model, path, overwrite=False, input_signature=None):
    """Writes `model` as a TensorFlow SavedModel with named serving signatures.

    The SavedModel runs without keras_sdn, Keras or TensorFlow Probability
    installed (TF Serving, `tf.saved_model.load`, `saved_model_cli`).

    For a `keras_sdn.models.SDNVAE` or `keras_sdn.models.BetaVAE`:

    - `serving_default`: `images` (uint8, `(batch,) + image_shape`, values in
      `[0, 2**num_bits - 1]`) -> `bits_per_dim` (float32 `(batch,)`, the
      one-sample negative ELBO of each image in bits per dimension) and
      `reconstruction` (uint8, like `images`: the decoder's most likely image
      for a latent code of the image).
    - `encode`: `images` -> the latent code. BetaVAE: `latent_means`
      (float32 `(batch, latent_dim)`, the posterior means). SDNVAE:
      `latents_0` ... `latents_{L-1}`, `SDNVAE.posterior_means`: every
      stochastic layer's posterior mean through its flow, top layer first
      (float32 `(batch, h, w, c)`).
    - `sample`: `count` (int32 `(1,)`) and `temperature` (float32 `(1,)`,
      the scale of the prior's standard deviation) -> `images` (uint8,
      `(count,) + image_shape`), generated from the prior.

    The inputs are shaped so that TF Serving's row ("instances") request
    format can express them. Inputs of another dtype or shape are rejected;
    pixel values above `2**num_bits - 1`, a `count` below 1 and a
    non-positive `temperature` raise an error when the signature runs. The
    VAEs' signatures are stochastic (latent and, for the ELBO, posterior
    sampling); SDNVAE's use its averaged weights.

    Any other Keras model (e.g. one holding `SpatialDependency` layers)
    gets its forward pass (inference mode) as `serving_default`: the inputs
    are named after the model's `keras.Input`s (or the specs of
    `input_signature`) and checked against their shapes when run; a single
    output is named `output_0`, a dict output keeps its keys.

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
        raise ValueError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    if not model.built:
        raise ValueError("`model` must be built before export; call it on a batch or build it.")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path} exists; pass overwrite=True to replace it.")
    archive = _archive(model, input_signature)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.incomplete-", dir=parent)
    try:
        # mkdtemp makes the directory private; a model server may run as another user.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)
        archive.write_out(temporary, verbose=False)
        _replace(temporary, path)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return path


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


def _archive(model, input_signature):
    """A `keras.export.ExportArchive` with `model`'s serving signatures."""
    from keras_sdn.models import SDNVAE
    from keras_sdn.models import BetaVAE

    vae_archives = {SDNVAE: _sdn_vae_archive, BetaVAE: _beta_vae_archive}
    for model_class, vae_archive in vae_archives.items():
        if isinstance(model, model_class):
            if input_signature is not None:
                raise ValueError(
                    f"`input_signature` is only for generic models; {model_class.__name__} has "
                    f"fixed signatures. Got input_signature={input_signature!r}."
                )
            return vae_archive(model)
    return _generic_archive(model, input_signature)


def _generic_archive(model, input_signature):
    if input_signature is None:
        if not getattr(model, "inputs", None):
            raise ValueError(
                f"`input_signature` must be given for {type(model).__name__}: its inputs are not "
                "known (it is not a functional or Sequential model with an Input)."
            )
        input_signature = [
            tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype, name=x.name)
            for x in model.inputs
        ]
    input_signature = list(input_signature)

    def serve(*inputs):
        inputs = [tf.ensure_shape(x, spec.shape) for x, spec in zip(inputs, input_signature)]
        return model(inputs[0] if len(inputs) == 1 else inputs, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=input_signature)
    return archive


def _image_spec(image_shape):
    return tf.TensorSpec((None,) + tuple(image_shape), tf.uint8, name="images")


SAMPLE_SIGNATURE = [
    tf.TensorSpec((1,), tf.int32, name="count"),
    tf.TensorSpec((1,), tf.float32, name="temperature"),
]


def _checked_images(images, image_shape, num_bits):
    """`images`, checked when the signature runs: `(batch,) + image_shape`, `num_bits`-bit values.

    TF Serving checks the dtype of a request's tensors, not their shape.
    """
    images = tf.ensure_shape(images, (None,) + tuple(image_shape))
    largest = 2**num_bits - 1
    check = tf.debugging.assert_less_equal(
        images,
        tf.constant(largest, tf.uint8),
        message=f"`images` must hold {num_bits}-bit values, at most {largest}",
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _checked_sample_arguments(count, temperature):
    """`(count, temperature)` as scalars, checked when run to be one positive value each."""
    count, temperature = tf.ensure_shape(count, (1,)), tf.ensure_shape(temperature, (1,))
    checks = [
        tf.debugging.assert_positive(count, message="`count` must be at least 1"),
        tf.debugging.assert_positive(temperature, message="`temperature` must be positive"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(count[0]), tf.identity(temperature[0])


def _vae_endpoints(model, serve, encode, sample, image_shape):
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[_image_spec(image_shape)])
    archive.add_endpoint("encode", encode, input_signature=[_image_spec(image_shape)])
    archive.add_endpoint("sample", sample, input_signature=SAMPLE_SIGNATURE)
    return archive


def _sdn_vae_archive(model):
    image_shape = model.image_shape

    def serve(images):
        images = _checked_images(images, image_shape, model.num_bits)
        return {
            "bits_per_dim": model.bits_per_dim(model(images)["elbo"]),
            "reconstruction": model.reconstruct(images),
        }

    def encode(images):
        latents = model.posterior_means(_checked_images(images, image_shape, model.num_bits))
        return {f"latents_{index}": latent for index, latent in enumerate(latents)}

    def sample(count, temperature):
        return {"images": model.sample(*_checked_sample_arguments(count, temperature))}

    return _vae_endpoints(model, serve, encode, sample, image_shape)


def _beta_vae_archive(model):
    from keras_sdn.models.beta_vae import IMAGE_SIZE

    image_shape = (IMAGE_SIZE, IMAGE_SIZE, model.channels)
    dimensions = IMAGE_SIZE * IMAGE_SIZE * model.channels

    def most_likely_images(codes):
        return tf.cast(model.observation_distribution(codes).mode(), tf.uint8)

    def serve(images):
        images = _checked_images(images, image_shape, model.num_bits)
        terms = model(images)
        negative_elbo = terms["reconstruction"] + terms["kl"]
        return {
            "bits_per_dim": negative_elbo / (dimensions * tf.math.log(2.0)),
            "reconstruction": most_likely_images(model.posterior(images).mean()),
        }

    def encode(images):
        images = _checked_images(images, image_shape, model.num_bits)
        return {"latent_means": model.posterior(images).mean()}

    def sample(count, temperature):
        count, temperature = _checked_sample_arguments(count, temperature)
        codes = temperature * keras.random.normal(
            tf.stack([count, model.latent_dim]), seed=model.seed_generator
        )
        return {"images": most_likely_images(codes)}

    return _vae_endpoints(model, serve, encode, sample, image_shape)
