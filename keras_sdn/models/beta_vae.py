"""β-VAE with a convolutional or a spatial dependency decoder (paper, Section 6)."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import layers
from keras import ops

from keras_sdn._checks import check_choice
from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn._compat import require_tensorflow_backend
from keras_sdn.distribute import replica_normal
from keras_sdn.distributions import DiscretizedLogisticMixture
from keras_sdn.layers import SpatialDependency
from keras_sdn.models._beta_vae_inference import BetaVAEInference
from keras_sdn.models.base_vae import BaseVAE

tfd = tfp.distributions

DECODERS = ("conv", "sdn")
OBSERVATIONS = ("global_scale", "pixel_scale")
# The shared log-scale is stored divided by this, so that an optimizer that
# moves every weight by about its learning rate per step (Adam, Adamax) moves
# the log-scale this many times faster (see the class docstring).
LOG_SCALE_MULTIPLIER = 10.0
IMAGE_SIZE = 64


@keras.saving.register_keras_serializable(package="keras_sdn")
class BetaVAE(BetaVAEInference, BaseVAE):
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
    the authors' optimiser and settings (PyTorch's). Training, the metrics,
    `bits_per_dim`, `sample` and the scaling of images are those of
    `BaseVAE`, which `SDNVAE` shares.

    Generation: `encode` gives the posterior means (`sample=True`: posterior
    samples), `decode` and `reconstruct` the most likely image of a code,
    `sample` images from the prior, `traverse` latent traversals.

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
        sdn_features: Features `F` of the SDN layer (`decoder="sdn"`).
        observation: `"global_scale"` or `"pixel_scale"`, the observation
            model (see above).
        seed: Seed of the posterior sampling during training and evaluation.
        **kwargs: Base `keras.Model` arguments (`name`, ...).

    Input shape:
        `(batch, 64, 64, channels)` integer-valued images (e.g. uint8).

    Output shape:
        `model(images)` returns a dict of per-image `(batch,)` float32
        tensors: `"reconstruction"` (-log p(x | z), z sampled from the
        posterior), `"kl"` and `"elbo"` (`-(reconstruction + kl)`, nats).

    Example:

    ```python
    model = BetaVAE(latent_dim=10, decoder="sdn", beta=4.0,
                    beta_warmup_steps=1000)
    model.compile()  # Adamax(1e-3, epsilon=1e-8)
    model.fit(keras_sdn.data.load_images("synthetic_shapes", repeat=True),
              steps_per_epoch=100, epochs=5)
    codes = model.encode(images)                    # (batch, 10) means
    recon = model.decode(codes)                     # (batch, 64, 64, 3) uint8
    samples = model.sample(16, temperature=0.8)     # (16, 64, 64, 3) uint8
    grid = model.traverse(images[0], [-2., 0., 2.])  # (10, 3, 64, 64, 3)
    ```
    """

    default_learning_rate = 1e-3
    _renamed_arguments = {"sdn_num_features": "sdn_features"}

    def __init__(
        self,
        latent_dim=10,
        decoder="conv",
        beta=1.0,
        beta_warmup_steps=0,
        channels=3,
        num_bits=8,
        sdn_features=200,
        observation="global_scale",
        seed=None,
        **kwargs,
    ):
        require_tensorflow_backend(type(self).__name__)
        super().__init__(**kwargs)
        self.latent_dim = check_int("latent_dim", latent_dim, 1)
        self.decoder = check_choice("decoder", decoder, DECODERS)
        self.beta = check_number("beta", beta, low=0)
        self.beta_warmup_steps = check_int("beta_warmup_steps", beta_warmup_steps, 0)
        self.channels = check_int("channels", channels, 1)
        self.num_bits = check_int("num_bits", num_bits, 1, 8)
        self.sdn_features = check_int("sdn_features", sdn_features, 1)
        self.observation = check_choice("observation", observation, OBSERVATIONS)
        self.seed = seed

        self.encoder_network = keras.Sequential(
            [
                layers.Conv2D(32, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2D(32, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2D(64, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2D(64, 4, strides=2, padding="same", activation="relu"),
                layers.Flatten(),
                layers.Dense(2 * self.latent_dim),
            ],
            name="encoder",
        )
        self.decoder_network = self._make_decoder_network()
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Counts training steps for the β warm-up; saved with the weights so
        # that training resumed after loading continues the schedule.
        self.steps_trained = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="steps_trained"
        )
        self._add_metrics("loss", "elbo", "reconstruction", "kl", "beta")

    def _make_decoder_network(self):
        if self.decoder == "sdn":
            stage_32 = SpatialDependency(
                32, num_features=self.sdn_features, directions=1, upsample=2, activation="relu"
            )
        else:
            stage_32 = layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu")
        num_params = self.channels
        if self.observation == "pixel_scale":
            num_params = DiscretizedLogisticMixture.params_size(1, self.channels)
        return keras.Sequential(
            [
                layers.Dense(256, activation="relu"),
                layers.Dense(4 * 4 * 64, activation="relu"),
                layers.Reshape((4, 4, 64)),
                layers.Conv2DTranspose(64, 4, strides=2, padding="same", activation="relu"),
                layers.Conv2DTranspose(32, 4, strides=2, padding="same", activation="relu"),
                stage_32,
                layers.Conv2DTranspose(num_params, 4, strides=2, padding="same"),
            ],
            name=f"{self.decoder}_decoder",
        )

    @property
    def image_shape(self):
        """`(64, 64, channels)`."""
        return (IMAGE_SIZE, IMAGE_SIZE, self.channels)

    def build(self, input_shape):
        if len(input_shape) != 4 or tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected `images` of shape (batch,) + {self.image_shape}. "
                f"Received: input_shape={tuple(input_shape)}"
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

    def posterior(self, images):
        """The diagonal Gaussian q(z | images), batch shape `(batch,)`."""
        # The posterior and its KL stay in float32 under a mixed precision policy.
        outputs = ops.cast(self.encoder_network(self._to_unit_range(images)), "float32")
        mean, log_variance = ops.split(outputs, 2, axis=-1)
        return tfd.Independent(
            tfd.Normal(loc=mean, scale=ops.exp(0.5 * log_variance)),
            reinterpreted_batch_ndims=1,
        )

    def _posterior_sample(self, posterior):
        """A reparameterised sample of `posterior`.

        Under a strategy each replica draws the rows of the global batch it
        holds, so n replicas match one device.
        """
        noise = replica_normal(ops.shape(posterior.mean()), seed=self.seed_generator)
        return posterior.mean() + posterior.stddev() * noise

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

    def observation_distribution(self, params, temperature=1.0):
        """p(x | z) for decoder output `params = decoder_network(z)`.

        A `DiscretizedLogisticMixture` over `(64, 64, channels)` images.
        """
        params = ops.cast(params, "float32")
        if self.observation == "global_scale":
            # One component: logit 0, the means, the shared log-scale and no
            # coupling between the channels.
            zeros = ops.zeros_like(params[..., :1])
            couplings = self.channels * (self.channels - 1) // 2
            params = ops.concatenate(
                [zeros, params, ops.zeros_like(params) + self.log_scale] + [zeros] * couplings,
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
        z = self._posterior_sample(posterior)
        reconstruction = -self.observation_distribution(self.decoder_network(z)).log_prob(images)
        kl = tfd.kl_divergence(posterior, self.prior())
        return {"reconstruction": reconstruction, "kl": kl, "elbo": -(reconstruction + kl)}

    def current_beta(self):
        """The KL weight of the next training step (after the warm-up: `beta`)."""
        if self.beta_warmup_steps == 0:
            return ops.convert_to_tensor(self.beta, "float32")
        progress = ops.cast(self.steps_trained, "float32") / self.beta_warmup_steps
        return self.beta * ops.minimum(progress, 1.0)

    def _loss_and_metrics(self, images, training):
        beta = self.current_beta()
        terms = self(images, training=training)
        loss = ops.mean(terms["reconstruction"] + beta * terms["kl"])
        return loss, {"loss": loss, "beta": beta, **terms}

    def _apply_update(self, gradients, weights):
        super()._apply_update(gradients, weights)
        self.steps_trained.assign_add(1)

    def _update_metrics(self, values):
        # `beta` shows the value in use, not an average over the epoch.
        self.beta_tracker.reset_state()
        return super()._update_metrics(values)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "decoder": self.decoder,
            "beta": self.beta,
            "beta_warmup_steps": self.beta_warmup_steps,
            "channels": self.channels,
            "num_bits": self.num_bits,
            "sdn_features": self.sdn_features,
            "observation": self.observation,
            "seed": self.seed,
        }
