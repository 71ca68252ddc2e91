"""What `SDNVAE` and `BetaVAE` share: training, compile defaults, metrics, scaling, generation."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_images
from keras_sdn._checks import check_int
from keras_sdn._checks import check_temperature
from keras_sdn._scaling import to_unit_range
from keras_sdn.distribute import replica_loss


class BaseVAE(keras.Model):
    """Base of the VAEs of integer images: `SDNVAE` and `BetaVAE`.

    A subclass holds `image_shape`, `num_bits` and a `seed_generator`, and
    implements:

    - `observation_distribution(params, temperature=1.0)`: p(x | z), a
      distribution over `image_shape` images of `num_bits` bits, from the
      decoder's output `params`;
    - `_loss_and_metrics(images, training)`: the objective that training
      minimises (a scalar, in nats per image) and the values of the metrics,
      `{metric name: per-image values or scalar}`;
    - `_sample(num_images, temperature, sample_pixels)`: `sample` with
      checked arguments (int32 and float32 scalar tensors).

    It gets:

    - `compile()`: without an optimizer, Adamax with the class'
      `default_learning_rate` and epsilon 1e-8 (PyTorch's, the authors');
      passing a `loss` raises: the model trains on its own objective.
    - `train_step` and `test_step`: the gradient of the objective, scaled
      by the optimizer (`optimizer.scale_loss`: the loss scale of mixed
      precision) and divided over the replicas of a `tf.distribute` strategy
      (`keras_sdn.distribute.replica_loss`), applied by `_apply_update`
      (which a subclass extends); the metrics of `_add_metrics`.
    - `bits_per_dim`, `num_dimensions`, `display_images`, `sample`, and the
      scaling of images to the networks' [-1, 1] inputs.
    """

    default_learning_rate = 1e-3
    # Constructor arguments that configs saved by earlier versions name
    # otherwise: {former name: name}. `from_config` accepts both.
    _renamed_arguments = {}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = {cls._renamed_arguments.get(key, key): value for key, value in config.items()}
        return super().from_config(config, custom_objects=custom_objects)

    # ------------------------------------------------------- values and units

    @property
    def num_dimensions(self):
        """Sub-pixels per image, `height * width * channels`."""
        return int(np.prod(self.image_shape))

    def bits_per_dim(self, log_likelihood):
        """Converts log-likelihoods in nats per image to bits per dimension.

        `-log_likelihood / (height * width * channels * ln 2)`, elementwise,
        float32: the negative ELBO in bits per dimension for an ELBO.
        """
        return -ops.cast(log_likelihood, "float32") / (self.num_dimensions * math.log(2.0))

    def elbo_and_reconstruction(self, images):
        """The ELBO of `images` (nats per image) and their reconstructions (uint8).

        What a served model answers for a batch of images (the export's
        `serving_default`): `model(images)["elbo"]` and `reconstruct(images)`;
        a model may compute both from one pass.
        """
        return self(images)["elbo"], self.reconstruct(images)

    def display_images(self, images):
        """Images of `num_bits` bits as uint8 NumPy images of the full range 0..255, for viewing.

        Each value is scaled by `255 / (2**num_bits - 1)` and rounded.
        """
        scale = 255.0 / (2**self.num_bits - 1)
        return np.round(np.asarray(images, np.float32) * scale).astype(np.uint8)

    def _to_unit_range(self, images):
        """Integer images in `[0, 2**num_bits - 1]` as float32 in [-1, 1], the encoder's input."""
        return to_unit_range(ops.cast(images, "float32"), self.num_bits)

    def _check_images(self, images, name="images", batched=True):
        return check_images(name, images, self.image_shape, batched=batched)

    # --------------------------------------------------------------- training

    def compile(self, optimizer=None, **kwargs):
        """Configures training; `optimizer` defaults to Adamax with epsilon 1e-8.

        The default's learning rate is the class' `default_learning_rate`
        (SDNVAE: 2e-3, BetaVAE: 1e-3). The loss is the model's own objective:
        passing `loss` raises.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                f"Expected no `loss`: {type(self).__name__} trains on its own objective. "
                f"Received: loss={kwargs['loss']!r}"
            )
        if optimizer is None:
            optimizer = keras.optimizers.Adamax(
                learning_rate=self.default_learning_rate, epsilon=1e-8
            )
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _add_metrics(self, *names):
        """Creates a `keras.metrics.Mean` per name, as attribute `<name>_tracker`.

        `metrics` lists them in this order; `_update_metrics` updates them.
        """
        for name in names:
            setattr(self, f"{name}_tracker", keras.metrics.Mean(name=name))
        self._metric_names = names

    @property
    def metrics(self):
        return [getattr(self, f"{name}_tracker") for name in getattr(self, "_metric_names", ())]

    def _update_metrics(self, values):
        """Updates each metric with `values[metric name]`; returns the logs."""
        for metric in self.metrics:
            metric.update_state(values[metric.name])
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        images = keras.utils.unpack_x_y_sample_weight(data)[0]
        with tf.GradientTape() as tape:
            loss, values = self._loss_and_metrics(images, training=True)
            # Under mixed precision the optimizer is a LossScaleOptimizer: it
            # scales the loss here and unscales the gradients in `apply`.
            scaled_loss = self.optimizer.scale_loss(replica_loss(loss))
        weights = self.trainable_weights
        self._apply_update(tape.gradient(scaled_loss, weights), weights)
        return self._update_metrics(values)

    def test_step(self, data):
        images = keras.utils.unpack_x_y_sample_weight(data)[0]
        return self._update_metrics(self._loss_and_metrics(images, training=False)[1])

    def _apply_update(self, gradients, weights):
        """Applies one training step's gradients."""
        self.optimizer.apply(gradients, weights)

    # ------------------------------------------------------------- generation

    def sample(self, num_images, temperature=1.0, sample_pixels=False):
        """Images generated from the prior.

        Args:
            num_images: Number of images (a Python int, or an int32 scalar
                tensor, e.g. inside an exported signature).
            temperature: Scale of the prior's standard deviations (and of the
                observation model's scales when `sample_pixels`); float or
                float32 scalar tensor.
            sample_pixels: If False (default), each image is the decoder's
                most likely image given the sampled latents (as the authors
                display samples); if True, pixels are sampled from p(x | z).

        Returns:
            uint8 tensor `(num_images,) + image_shape`, values in
            `[0, 2**num_bits - 1]`.
        """
        if not tf.is_tensor(num_images):
            check_int("num_images", num_images, 1)
        check_temperature(temperature)
        sample_pixels = check_bool("sample_pixels", sample_pixels)
        return self._sample(
            tf.cast(num_images, tf.int32), tf.cast(temperature, tf.float32), sample_pixels
        )

    def _images_from(self, params, temperature=1.0, sample_pixels=False):
        """uint8 images of p(x | z) for decoder output `params`: sampled, or the most likely."""
        distribution = self.observation_distribution(params, temperature)
        if sample_pixels:
            # TFP takes int32 stateless seeds; Keras keeps its seed state in int64.
            values = distribution.sample(seed=ops.cast(self.seed_generator.next(), "int32"))
        else:
            values = distribution.mode()
        return ops.cast(values, "uint8")
