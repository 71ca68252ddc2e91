"""What a trained `SDNVAE` computes: likelihoods, codes, reconstructions and generated images."""

import math

import tensorflow as tf
from keras import ops

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_int
from keras_sdn._checks import check_temperature
from keras_sdn.models._sdn_vae_ladder import total_kl
from keras_sdn.models._weight_averaging import with_averaged_weights


class SDNVAEInference:
    """The evaluation and generation methods of `SDNVAE` (a base class of it).

    Each public method checks its arguments and calls a private method
    decorated with `with_averaged_weights`: the computation runs with the
    averaged weights, compiled once per model.
    """

    def log_likelihood(self, images, num_samples=1, max_batch_size=None):
        """Importance-weighted estimate of log p(images) per image, in nats.

        `log (1/K) sum_k p(x, z_k) / q(z_k | x)` over `K = num_samples`
        posterior samples (Burda et al., 2015): a lower bound on log p(x)
        that equals the ELBO for K = 1 and grows with K on average.

        Args:
            images: `(batch,) + image_shape` integer images.
            num_samples: Number of importance samples K >= 1.
            max_batch_size: Most (image, sample) pairs per forward pass;
                several samples of the batch are evaluated together when it
                allows (faster for small batches). Default: one pass per
                sample.

        Returns:
            float32 tensor `(batch,)`.
        """
        images = self._check_images(images)
        check_int("num_samples", num_samples, 1)
        batch_size = int(images.shape[0])
        samples_per_pass = 1
        if max_batch_size is not None:
            check_int("max_batch_size", max_batch_size, 1)
            samples_per_pass = min(num_samples, max(1, max_batch_size // batch_size))
        log_weights = []
        for first in range(0, num_samples, samples_per_pass):
            count = min(samples_per_pass, num_samples - first)
            tiled = ops.tile(images, (count, 1, 1, 1))  # sample-major
            log_weights.append(ops.reshape(self._log_weight(tiled), (count, batch_size)))
        log_weights = ops.concatenate(log_weights, axis=0)
        return ops.logsumexp(log_weights, axis=0) - math.log(num_samples)

    @with_averaged_weights
    def _log_weight(self, images):
        log_likelihood, kls, _ = self._elbo_terms(images)
        return log_likelihood - total_kl(kls)

    @with_averaged_weights
    def _sample(self, num_images, temperature, sample_pixels):
        params = self._prior_pass(num_images, temperature).params
        return self._images_from(params, temperature, sample_pixels)

    def encode(self, images, sample=False):
        """The latent code of `images`: every stochastic layer's latents, top layer first.

        Args:
            images: `(batch,) + image_shape` integer images.
            sample: If False (default), the deterministic code: each layer's
                posterior Gaussian mean, through its inverse autoregressive
                flow, with the layers above it fixed the same way. If True,
                a sample of the posterior.

        Returns:
            A list of `num_layers` float32 tensors `(batch, h_l, w_l,
            latent_channels)`.
        """
        images = self._check_images(images)
        return self._encode(images, check_bool("sample", sample))

    @with_averaged_weights
    def _encode(self, images, sample):
        return self._posterior_pass(images, sample).latents

    def reconstruct(self, images):
        """The most likely images given latents drawn from the posterior of `images` (uint8)."""
        return self._reconstruct(self._check_images(images))

    @with_averaged_weights
    def _reconstruct(self, images):
        return self._images_from(self._posterior_pass(images).params)

    def elbo_and_reconstruction(self, images):
        """The ELBO (nats per image) and the reconstruction (uint8) of `images`.

        Both from one posterior sample: the reconstruction is the most likely
        image given the latents whose ELBO is returned (half the work of
        `model(images)["elbo"]` and `reconstruct(images)`).
        """
        return self._elbo_and_reconstruction(self._check_images(images))

    @with_averaged_weights
    def _elbo_and_reconstruction(self, images):
        log_likelihood, kls, params = self._elbo_terms(images)
        return log_likelihood - total_kl(kls), self._images_from(params)

    def sample_around(self, image, fixed_layers, temperature=1.0, num_samples=8):
        """Samples sharing the top `fixed_layers` latents of `image` (paper, Figure 6).

        The top `fixed_layers` stochastic layers take a posterior sample of
        the image's codes; the layers below are sampled from the prior at
        `temperature`.

        Args:
            image: One image, `image_shape`.
            fixed_layers: Number of top layers to fix, in 0..num_layers.
            temperature: Prior temperature of the sampled layers.
            num_samples: Number of images.

        Returns:
            uint8 tensor `(num_samples,) + image_shape`.
        """
        image = self._check_images(image, name="image", batched=False)
        check_int("fixed_layers", fixed_layers, 0, self.num_layers)
        check_temperature(temperature)
        check_int("num_samples", num_samples, 1)
        codes = self.encode(image[None], sample=True)
        temperature = tf.constant(temperature, tf.float32)
        return self._sample_around(codes[:fixed_layers], temperature, num_samples)

    @with_averaged_weights
    def _sample_around(self, fixed_codes, temperature, num_samples):
        latents = [ops.repeat(z, num_samples, axis=0) for z in fixed_codes]
        params = self._prior_pass(num_samples, temperature, latents).params
        return self._images_from(params, temperature)

    def interpolate(self, image_a, image_b, fixed_layers, steps=5, temperature=1.0):
        """Decodes a linear interpolation between the latents of two images (paper, Figure 5).

        The codes of the top `fixed_layers` stochastic layers are
        interpolated linearly from a posterior sample of `image_a`'s codes to
        one of `image_b`'s in `steps` steps (both ends included); the layers
        below are sampled from the prior at `temperature`, with the same
        noise for every step.

        Args:
            image_a, image_b: Images, `image_shape`.
            fixed_layers: Number of top layers interpolated, in 1..num_layers.
            steps: Number of images, >= 2.
            temperature: Prior temperature of the remaining layers.

        Returns:
            uint8 tensor `(steps,) + image_shape`.
        """
        image_a = self._check_images(image_a, name="image_a", batched=False)
        image_b = self._check_images(image_b, name="image_b", batched=False)
        check_int("fixed_layers", fixed_layers, 1, self.num_layers)
        check_int("steps", steps, 2)
        check_temperature(temperature)
        codes = self.encode(ops.stack([image_a, image_b]), sample=True)
        temperature = tf.constant(temperature, tf.float32)
        return self._interpolate(codes[:fixed_layers], temperature, steps)

    @with_averaged_weights
    def _interpolate(self, fixed_codes, temperature, steps):
        weights = ops.reshape(ops.linspace(0.0, 1.0, steps), (steps, 1, 1, 1))
        latents = [(1.0 - weights) * z[:1] + weights * z[1:] for z in fixed_codes]
        params = self._prior_pass(steps, temperature, latents, shared_noise=True).params
        return self._images_from(params, temperature)
