"""β-VAE with a convolutional or a spatial dependency decoder (paper, Section 6)."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import layers
from keras import ops

from keras_sdn._checks import check_int
from keras_sdn.distribute import replica_loss
from keras_sdn.distribute import replica_normal
from keras_sdn.distributions import DiscretizedLogisticMixture
from keras_sdn.layers import SpatialDependency

tfd = tfp.distributions

DECODERS = ("conv", "sdn")
OBSERVATIONS = ("global_scale", "pixel_scale")
# The shared log-scale is stored divided by this, so that an optimizer that
# moves every weight by about its learning rate per step (Adam, Adamax) moves
# the log-scale this many times faster (see the class docstring).
LOG_SCALE_MULTIPLIER = 10.0
IMAGE_SIZE = 64


@keras.saving.register_keras_serializable(package="keras_sdn")
class BetaVAE(keras.Model):
    """β-VAE on 64x64 images with a convolutional or an SDN decoder.

    The architecture of Higgins et al. (2017) and Locatello et al. (2019) as
    the SDN paper uses it. Encoder: four convolutions (kernel 4, stride 2;
    32, 32, 64, 64 filters, ReLU) and a dense layer to the mean and
    log-variance of a diagonal Gaussian posterior over `latent_dim` latents.
    Decoder: dense 256, dense 4x4x64 (ReLU), then four 2x up-sampling stages
    (transposed convolutions, kernel 4, stride 2) to the parameters of a
    discretized logistic distribution over the 64x64 image. With
    `decoder="sdn"` the stage producing the 32x32 map is one non-residual,
    one-direction `SpatialDependency` layer whose project-in is the
    up-sampling transposed convolution.

    Observation model (`observation`), a `DiscretizedLogisticMixture` of one
    component in both cases, on the [-1, 1] scale of the images:

    - `"global_scale"` (default; the authors' `DL` model): the decoder
      outputs one mean per sub-pixel, and one learned log-scale, initially 0,
      is shared by every sub-pixel of every image; no coupling between the
      channels. The log-scale is stored as a weight times
      `LOG_SCALE_MULTIPLIER` (10): Adam and Adamax move each weight by about
      the learning rate per step, so a single scalar would otherwise need
      thousands of steps to fall to the level of the reconstruction errors
      (about -2.4 after 1,000 steps here), and the ELBO would lag behind the
      reconstructions. The authors clamp the means to the value range and
      give the lowest and highest values no tail mass; here the means are
      free and the end values take the tails, as in PixelCNN++.
    - `"pixel_scale"`: the decoder outputs a mean and a log-scale per
      sub-pixel and three RGB coupling coefficients per pixel (PixelCNN++'s
      model with one component). On the built-in scenes its reconstructions
      learned much more slowly than the global scale's (mean absolute error
      31 against 12 after 1,000 steps of batch 32; see the README).

    Training minimises `reconstruction + beta_t * kl` per image in nats,
    where `reconstruction = -log p(x | z)` for one posterior sample z,
    `kl = KL(q(z | x) || N(0, I))` in closed form, and `beta_t` grows
    linearly from 0 to `beta` over the first `beta_warmup_steps` training
    steps (warm-up against early posterior collapse). `fit` reports the
    metrics `loss`, `elbo` (= -(reconstruction + kl), a lower bound on
    log p(x) in nats), `reconstruction`, `kl` and `beta` (its current value).
    `compile()` defaults to Adamax with learning rate 1e-3 and epsilon 1e-8,
    the authors' optimiser and settings (PyTorch's).

    The defaults follow the authors' 3D Shapes run (`train_3dshapes.sh` and
    `lib/DisentanglementVAE.py` of `djordjemila/sdn`): 10 latents, an SDN
    layer of 200 features, β = 1 without warm-up, Adamax at 1e-3; they
    train with batch 128 under automatic mixed precision.

    Mixed precision: under a `mixed_float16` policy the networks compute in
    float16 while the posterior, the KL and the log-likelihood are computed in
    float32; `compile` wraps the optimizer in a `LossScaleOptimizer` and
    `train_step` scales the loss. At initialisation the gradients of this
    loss (nats per image) overflow float16 at loss scales above about 2**4,
    so the dynamic scale (2**15 at first) skips the first 11 steps while it
    halves, as PyTorch's AMP does.

    Args:
        latent_dim: Number of latent dimensions.
        decoder: `"conv"` or `"sdn"`.
        beta: Final weight of the KL term, >= 0.
        beta_warmup_steps: Training steps over which the KL weight rises
            linearly from 0 to `beta`; 0 uses `beta` from the first step.
        channels: Image channels.
        num_bits: Bits per sub-pixel; images hold integers in
            `[0, 2**num_bits - 1]`.
        sdn_num_features: Features `F` of the SDN layer (`decoder="sdn"`).
        observation: `"global_scale"` or `"pixel_scale"`, the observation
            model (see above).
        seed: Seed of the posterior sampling during training and evaluation.
        **kwargs: Base `keras.Model` arguments (`name`, ...).

    Input shape:
        `(batch, 64, 64, channels)` integer-valued images (e.g. uint8).

    Output shape:
        `model(images)` returns a dict of per-image `(batch,)` tensors:
        `"reconstruction"` (-log p(x | z), z sampled from the posterior)
        and `"kl"`.

    Example:

    ```python
    model = BetaVAE(latent_dim=10, decoder="sdn", beta=4.0,
                    beta_warmup_steps=1000)
    model.compile()  # Adamax(1e-3, epsilon=1e-8)
    model.fit(keras_sdn.data.load_images("synthetic_shapes", repeat=True),
              steps_per_epoch=100, epochs=5)
    codes = model.encode(images)                    # (batch, 10) means
    recon = model.decode(codes)                     # (batch, 64, 64, 3) uint8
    grid = model.traverse(images[0], [-2., 0., 2.])  # (10, 3, 64, 64, 3)
    ```
    """

    def __init__(
        self,
        latent_dim=10,
        decoder="conv",
        beta=1.0,
        beta_warmup_steps=0,
        channels=3,
        num_bits=8,
        sdn_num_features=200,
        observation="global_scale",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_int("latent_dim", latent_dim, 1)
        if decoder not in DECODERS:
            raise ValueError(f"`decoder` must be one of {DECODERS}, got {decoder!r}.")
        if observation not in OBSERVATIONS:
            raise ValueError(
                f"`observation` must be one of {OBSERVATIONS}, got {observation!r}."
            )
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0:
            raise ValueError(f"`beta` must be a number >= 0, got {beta!r}.")
        check_int("beta_warmup_steps", beta_warmup_steps, 0)
        check_int("channels", channels, 1)
        check_int("num_bits", num_bits, 1, 8)
        check_int("sdn_num_features", sdn_num_features, 1)

        self.latent_dim = latent_dim
        self.decoder_type = decoder
        self.beta = float(beta)
        self.beta_warmup_steps = beta_warmup_steps
        self.channels = channels
        self.num_bits = num_bits
        self.sdn_num_features = sdn_num_features
        self.observation = observation
        self.seed = seed

        self.encoder_network = keras.Sequential(
            [
                layers.Conv2D(32, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2D(32, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2D(64, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2D(64, 4, strides=2, padding="same", activation="relu"),
                layers.Flatten(),
                layers.Dense(2 * latent_dim),
            ],
            name="encoder",
        )
        if decoder == "sdn":
            stage_32 = SpatialDependency(
                32, num_features=sdn_num_features, directions=1, upsample=2, activation="relu"
            )
        else:
            stage_32 = layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu")
        num_params = channels
        if observation == "pixel_scale":
            num_params = DiscretizedLogisticMixture.params_size(1, channels)
        self.decoder_network = keras.Sequential(
            [
                layers.Dense(256, activation="relu"),
                layers.Dense(4 * 4 * 64, activation="relu"),
                layers.Reshape((4, 4, 64)),
                layers.Conv2DTranspose(64, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu"),
                stage_32,
                layers.Conv2DTranspose(num_params, 4, strides=2, padding="same"),
            ],
            name=f"{decoder}_decoder",
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Counts training steps for the β warm-up; saved with the weights so
        # that training resumed after loading continues the schedule.
        self.steps_trained = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="steps_trained"
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.beta_tracker = keras.metrics.Mean(name="beta")

    def build(self, input_shape):
        expected = (IMAGE_SIZE, IMAGE_SIZE, self.channels)
        if len(input_shape) != 4 or tuple(input_shape[1:]) != expected:
            raise ValueError(
                f"`images` must have shape (batch, {IMAGE_SIZE}, {IMAGE_SIZE}, "
                f"{self.channels}), got {tuple(input_shape)}."
            )
        self.encoder_network.build(input_shape)
        self.decoder_network.build((input_shape[0], self.latent_dim))
        if self.observation == "global_scale":
            self.log_scale_weight = self.add_weight(
                shape=(),
                initializer="zeros",
                dtype="float32",
                autocast=False,  # float32 under mixed precision, as the likelihood
                name="log_scale_weight",
            )

    @property
    def metrics(self):
        return [
            self.loss_tracker,
            self.elbo_tracker,
            self.reconstruction_tracker,
            self.kl_tracker,
            self.beta_tracker,
        ]

    def compile(self, optimizer=None, **kwargs):
        """Configures training; `optimizer` defaults to Adamax(1e-3, epsilon=1e-8).

        The loss is the model's own negative β-ELBO: passing `loss` raises.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "`loss` must not be given: BetaVAE trains on its own negative "
                f"beta-ELBO, got loss={kwargs['loss']!r}."
            )
        if optimizer is None:
            optimizer = keras.optimizers.Adamax(learning_rate=1e-3, epsilon=1e-8)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def posterior(self, images):
        """The diagonal Gaussian q(z | images), batch shape `(batch,)`."""
        scaled = ops.cast(images, "float32") / (2**self.num_bits - 1) * 2.0 - 1.0
        # The posterior and its KL stay in float32 under a mixed precision policy.
        outputs = ops.cast(self.encoder_network(scaled), "float32")
        mean, log_variance = ops.split(outputs, 2, axis=-1)
        return tfd.Independent(
            tfd.Normal(loc=mean, scale=ops.exp(0.5 * log_variance)),
            reinterpreted_batch_ndims=1,
        )

    @property
    def log_scale(self):
        """The shared log-scale of the `"global_scale"` observation model."""
        return LOG_SCALE_MULTIPLIER * self.log_scale_weight

    def prior(self):
        """The standard normal prior p(z) over `latent_dim` latents."""
        return tfd.Independent(
            tfd.Normal(loc=tf.zeros([self.latent_dim]), scale=1.0),
            reinterpreted_batch_ndims=1,
        )

    def observation_distribution(self, z, temperature=1.0):
        """p(x | z): a `DiscretizedLogisticMixture` over `(64, 64, channels)` images."""
        params = ops.cast(self.decoder_network(z), "float32")
        if self.observation == "global_scale":
            # One component: logit 0, the means, the shared log-scale and no
            # coupling between the channels.
            zeros = ops.zeros_like(params[..., :1])
            couplings = self.channels * (self.channels - 1) // 2
            params = ops.concatenate(
                [zeros, params, ops.zeros_like(params) + self.log_scale]
                + [zeros] * couplings,
                axis=-1,
            )
        return DiscretizedLogisticMixture(
            params,
            channels=self.channels,
            num_bits=self.num_bits,
            temperature=temperature,
        )

    def call(self, images):
        posterior = self.posterior(images)
        # Reparameterised sample; under a strategy each replica draws the rows
        # of the global batch it holds, so n replicas match one device.
        noise = replica_normal(ops.shape(posterior.mean()), seed=self.seed_generator)
        z = posterior.mean() + posterior.stddev() * noise
        return {
            "reconstruction": -self.observation_distribution(z).log_prob(images),
            "kl": tfd.kl_divergence(posterior, self.prior()),
        }

    def current_beta(self):
        """The KL weight of the next training step (after the warm-up: `beta`)."""
        if self.beta_warmup_steps == 0:
            return ops.convert_to_tensor(self.beta, "float32")
        progress = ops.cast(self.steps_trained, "float32") / self.beta_warmup_steps
        return self.beta * ops.minimum(progress, 1.0)

    def train_step(self, data):
        images = keras.utils.unpack_x_y_sample_weight(data)[0]
        beta = self.current_beta()
        with tf.GradientTape() as tape:
            terms = self(images, training=True)
            loss = self._beta_loss(terms, beta)
            # Under mixed precision the optimizer is a LossScaleOptimizer: it
            # scales the loss here and unscales the gradients in `apply`.
            scaled_loss = self.optimizer.scale_loss(replica_loss(loss))
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.steps_trained.assign_add(1)
        return self._update_metrics(loss, terms, beta)

    def test_step(self, data):
        images = keras.utils.unpack_x_y_sample_weight(data)[0]
        beta = self.current_beta()
        terms = self(images, training=False)
        loss = self._beta_loss(terms, beta)
        return self._update_metrics(loss, terms, beta)

    @staticmethod
    def _beta_loss(terms, beta):
        return ops.mean(terms["reconstruction"] + beta * terms["kl"])

    def _update_metrics(self, loss, terms, beta):
        self.loss_tracker.update_state(loss)
        self.elbo_tracker.update_state(-(terms["reconstruction"] + terms["kl"]))
        self.reconstruction_tracker.update_state(terms["reconstruction"])
        self.kl_tracker.update_state(terms["kl"])
        # `beta` shows the value in use, not an average over the epoch.
        self.beta_tracker.reset_state()
        self.beta_tracker.update_state(beta)
        return {metric.name: metric.result() for metric in self.metrics}

    def encode(self, images, batch_size=128):
        """Posterior means `(n, latent_dim)` of `images` `(n, 64, 64, channels)`.

        Works in batches of `batch_size` images to bound memory.
        """
        return self._batched(lambda batch: self.posterior(batch).mean(), images, batch_size)

    def decode(self, z, batch_size=128):
        """The most likely image (uint8, `(n, 64, 64, channels)`) of each code in `z`."""
        return self._batched(
            lambda batch: ops.cast(self.observation_distribution(batch).mode(), "uint8"),
            z,
            batch_size,
        )

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
        if len(ops.shape(image)) != 3:
            raise ValueError(
                f"`image` must be one image of rank 3, got shape {tuple(ops.shape(image))}."
            )
        values = ops.convert_to_tensor(values, "float32")
        if len(values.shape) != 1 or values.shape[0] == 0:
            raise ValueError(
                f"`values` must be a non-empty 1-D sequence, got shape {tuple(values.shape)}."
            )
        dims = list(range(self.latent_dim)) if dims is None else list(dims)
        if not dims or any(d not in range(self.latent_dim) for d in dims):
            raise ValueError(
                f"`dims` must be a non-empty list of integers in [0, {self.latent_dim}), "
                f"got {dims!r}."
            )
        code = self.encode(image[None])[0]
        mask = ops.one_hot(dims, self.latent_dim)[:, None, :]
        codes = code * (1.0 - mask) + values[None, :, None] * mask
        images = self.decode(ops.reshape(codes, (-1, self.latent_dim)))
        return ops.reshape(images, (len(dims), values.shape[0]) + tuple(images.shape[1:]))

    @staticmethod
    def _batched(function, inputs, batch_size):
        check_int("batch_size", batch_size, 1)
        outputs = [
            function(inputs[start : start + batch_size])
            for start in range(0, len(inputs), batch_size)
        ]
        return ops.concatenate(outputs, axis=0)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "decoder": self.decoder_type,
            "beta": self.beta,
            "beta_warmup_steps": self.beta_warmup_steps,
            "channels": self.channels,
            "num_bits": self.num_bits,
            "sdn_num_features": self.sdn_num_features,
            "observation": self.observation,
            "seed": self.seed,
        }
