"""What a trained `BetaVAE` computes: codes, decoded and generated images, traversals."""

import keras
import tensorflow as tf
from keras import ops

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_int


class BetaVAEInference:
    """The encoding and generation methods of `BetaVAE` (a base class of it)."""

    def encode(self, images, sample=False, batch_size=128):
        """The latent codes `(n, latent_dim)` of `images` `(n, 64, 64, channels)`.

        Args:
            images: Integer images.
            sample: If False (default), the posterior means; if True,
                samples from the posterior.
            batch_size: Images per pass, to bound memory (a batch of unknown
                size, inside a `tf.function`, is encoded in one pass).
        """
        sample = check_bool("sample", sample)

        def encode(batch):
            posterior = self.posterior(batch)
            return self._posterior_sample(posterior) if sample else posterior.mean()

        return self._batched(encode, images, batch_size)

    def decode(self, z, batch_size=128):
        """The most likely image (uint8, `(n, 64, 64, channels)`) of each code in `z`."""
        return self._batched(
            lambda batch: self._images_from(self.decoder_network(batch)), z, batch_size
        )

    def reconstruct(self, images, batch_size=128):
        """The most likely images (uint8) for the posterior means of `images`.

        `decode(encode(images))`.
        """
        return self.decode(self.encode(images, batch_size=batch_size), batch_size=batch_size)

    def _sample(self, num_images, temperature, sample_pixels):
        codes = temperature * keras.random.normal(
            tf.stack([num_images, self.latent_dim]), seed=self.seed_generator
        )
        return self._images_from(self.decoder_network(codes), temperature, sample_pixels)

    def traverse(self, image, values, dims=None):
        """Decodes the code of `image` with one latent at a time set to each value.

        Args:
            image: One image, `(64, 64, channels)`.
            values: 1-D sequence of latent values.
            dims: Latent dimensions to traverse; default all.

        Returns:
            uint8 tensor `(len(dims), len(values), 64, 64, channels)`: row `i`
            sets latent `dims[i]` of the image's posterior mean to each value.
        """
        image = self._check_images(image, name="image", batched=False)
        values = ops.convert_to_tensor(values, "float32")
        if len(values.shape) != 1 or values.shape[0] == 0:
            raise ValueError(
                "Expected `values` to be a non-empty 1-D sequence. "
                f"Received: values of shape {tuple(values.shape)}"
            )
        dims = list(range(self.latent_dim)) if dims is None else list(dims)
        if not dims:
            raise ValueError(f"Expected `dims` to be non-empty. Received: dims={dims!r}")
        for dim in dims:
            check_int("dims entry", dim, 0, self.latent_dim - 1)
        code = self.encode(image[None])[0]
        mask = ops.one_hot(dims, self.latent_dim)[:, None, :]
        codes = code * (1.0 - mask) + values[None, :, None] * mask
        images = self.decode(ops.reshape(codes, (-1, self.latent_dim)))
        return ops.reshape(images, (len(dims), values.shape[0]) + tuple(images.shape[1:]))

    @staticmethod
    def _batched(function, inputs, batch_size):
        check_int("batch_size", batch_size, 1)
        inputs = ops.convert_to_tensor(inputs)
        if inputs.shape[0] is None:
            return function(inputs)
        outputs = [
            function(inputs[start : start + batch_size])
            for start in range(0, inputs.shape[0], batch_size)
        ]
        return ops.concatenate(outputs, axis=0)
