"""SDN-VAE: the IAF-VAE ladder with residual spatial dependency layers on its top-down path."""

import contextlib

import keras
from keras import ops

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_choice
from keras_sdn._checks import check_image_shape
from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn._checks import check_ordered
from keras_sdn._checks import check_permutation
from keras_sdn._compat import require_tensorflow_backend
from keras_sdn.bijectors.autoregressive_conv_network import ORDERINGS
from keras_sdn.layers import DIRECTIONS
from keras_sdn.models._sdn_vae_inference import SDNVAEInference
from keras_sdn.models._sdn_vae_ladder import SDNVAELadder
from keras_sdn.models._sdn_vae_ladder import total_kl
from keras_sdn.models._weight_averaging import add_averaged_weights
from keras_sdn.models._weight_averaging import averaged_weights_scope
from keras_sdn.models._weight_averaging import update_averaged_weights
from keras_sdn.models.base_vae import BaseVAE
from keras_sdn.models.presets import PRESETS
from keras_sdn.optimizers import UpdateSkipper

# The authors' `_get_dirs` order: left-to-right, right-to-left, top-to-bottom,
# bottom-to-top. Handed out two at a time, one layer sweeps the rows both ways
# and the next the columns both ways.
AUTHORS_DIRECTION_ORDER = ("right", "left", "down", "up")


@keras.saving.register_keras_serializable(package="keras_sdn")
class SDNVAE(SDNVAEInference, SDNVAELadder, BaseVAE):
    """SDN-VAE (Miladinovic et al., ICLR 2021): a hierarchical VAE for image density.

    The IAF-VAE of Kingma et al. (2016) with the paper's changes. A
    convolution maps the image (scaled to [-1, 1]) to `hidden_channels`
    features; `num_layers` ladder layers follow, each with a bottom-up and a
    top-down gated residual block and one stochastic layer of
    `latent_channels` maps (see `LadderBlock`); the layers listed in
    `downsample_at` (counted from the image, 0-based) halve the resolution.
    The top-down path starts from a learned per-channel constant at the
    coarsest scale. Each stochastic layer has a diagonal Gaussian prior
    computed top-down and a posterior whose Gaussian parameters are the sum
    of a bottom-up and a top-down term, followed by one inverse
    autoregressive flow step (a masked 3x3 convolutional network with a
    context, as in the paper, autoregressive in raster order over pixels and
    over channels within a pixel, IAF-VAE's masks). The top-down output goes
    through ELU and a convolution to the parameters of a discretized mixture of logistics
    (`DiscretizedLogisticMixture`, RGB-coupled).

    With `use_sdn=True`, the two convolutions of every top-down block whose
    output scale (the larger side of its feature map) lies in
    `[sdn_min_scale, sdn_max_scale]` are `ResidualSpatialDependency` layers
    with `sdn_directions` directions each, handed out round-robin in
    `sdn_direction_order` across the layers, starting at the block nearest
    the image (`sdn_plan()` lists the layers, their scales, features and
    directions; `summary()` prints it). The default is the authors' order (left-to-right,
    right-to-left, top-to-bottom, bottom-to-top): with 2 directions one layer
    sweeps the rows both ways and the next the columns both ways, so that
    every layer links nearly the whole map. The output convolution becomes a
    four-direction ResSDN layer when the image scale is in that range. The
    layers have `sdn_features` features at the image scale and `sdn_features_decrement`
    fewer per halving. `use_sdn=False` is the convolutional baseline
    (IAF-VAE+), otherwise identical.

    Training (`fit` on a dataset of integer images, e.g. uint8) minimises the
    negative ELBO with free bits: `-log p(x | z) + sum_l max(free_bits,
    batch mean of KL_l)`, with one posterior sample and the one-sample KL
    estimate `log q(z_l | x) - log p(z_l)` per layer. As in the authors'
    code the objective is in nats per image (batch mean), not bits per
    dimension: Adam-style optimizers are invariant to the loss scale except
    through their epsilon, and with bits per dimension a gradient
    `height * width * channels * ln 2` times smaller would let epsilon damp
    the updates. Progress bar and history report `loss` (that objective),
    `elbo` and `kl` (nats per image) and `bpd` (negative ELBO in bits per
    dimension). `compile()` defaults to Adamax with learning rate 2e-3 and
    epsilon 1e-8 (PyTorch's default, used by the authors). Training, the
    metrics, `bits_per_dim`, `sample` and the scaling of images are those of
    `BaseVAE`, which `BetaVAE` shares. After every
    step an exponential moving average of the weights is updated (decay
    `min(ema_decay, (1 + t) / (10 + t))` at step t); evaluation (`evaluate`,
    `model(images)`), `log_likelihood`, `encode` and generation use the
    averaged weights (`encode` gives the posterior means, `sample=True`
    posterior samples). Mixed precision (`keras.mixed_precision`) works: the
    latents, flows and densities are computed in float32. Under a
    `tf.distribute` strategy the gradient is that of the global batch
    (`keras_sdn.distribute.replica_loss`, `replica_normal`), except that the
    free-bits floor applies to each replica's batch mean.

    As in the authors' code, every convolution and transposed convolution
    (those inside the ResSDN layers and the IAF networks included, not the
    sweeps' gate weights) is weight-normalised (`WeightNormalization`, the
    norm initialised to that of the initial kernel), and the kernels start
    orthogonal. An update whose gradient norm is not finite or more than
    `skip_factor` times its running level is skipped (`UpdateSkipper`), as
    NVAE and VDVAE do; the progress bar counts them as `skipped_updates`.

    Args:
        image_shape: `(height, width, channels)`; height and width divisible
            by `2 ** len(downsample_at)`.
        num_bits: Bits per sub-pixel; images hold integers in
            `[0, 2**num_bits - 1]`.
        hidden_channels: Channels of the deterministic path.
        latent_channels: Channels of each stochastic layer.
        num_layers: Number of ladder (stochastic) layers.
        downsample_at: Indices of the ladder layers that halve the resolution.
        num_mixtures: Components of the logistic mixture.
        use_sdn: Whether to use ResSDN layers on the top-down path.
        sdn_min_scale, sdn_max_scale: Range of feature-map scales that get
            ResSDN layers.
        sdn_features: ResSDN `num_features` at the image scale.
        sdn_features_decrement: Features removed per halving of the scale.
        sdn_directions: Directions per ResSDN layer of a ladder block, 1..4.
        sdn_direction_order: The order of `("up", "left", "right", "down")`
            in which directions are handed out to the ResSDN layers.
        iaf_hidden_channels: Hidden channels of the IAF networks.
        iaf_hidden_layers: Hidden layers of the IAF networks.
        iaf_ordering: Autoregressive order of the IAF networks (see
            `AutoregressiveConvNetwork`): `"raster"`, IAF-VAE's masks, or
            `"channels"`.
        context_channels: Channels of the IAF context.
        free_bits: KL floor in nats per stochastic layer (batch mean).
        ema_decay: Decay of the weight average, in [0, 1).
        weight_normalization: Whether the convolutions are weight-normalised.
        kernel_initializer: Initializer of the convolution kernels (and of
            the sweeps' input weights).
        skip_factor: Updates with a gradient norm above `skip_factor` times
            its running level, or not finite, are skipped; `None` applies
            every update.
        seed: Seed of the model's sampling (None: from Keras' global seed).
        **kwargs: Base `keras.Model` arguments (`name`, `dtype`, ...).

    Input shape:
        `(batch,) + image_shape` integer-valued images (e.g. uint8).

    Output shape:
        `model(images)` returns a dict of per-image `(batch,)` float32
        tensors, computed with the averaged weights when not training:
        `"elbo"` (nats) and `"kl"` (nats, summed over the layers).

    Example:

    ```python
    model = SDNVAE.from_preset("tiny", image_shape=(16, 16, 3))  # see keras_sdn.models.PRESETS
    model.compile(optimizer=keras.optimizers.Adamax(2e-3))
    model.fit(keras_sdn.data.load_images(image_size=16), epochs=3)
    nats = model.log_likelihood(images, num_samples=16)   # (batch,)
    bpd = model.bits_per_dim(nats)
    samples = model.sample(16, temperature=0.8)           # uint8 (16, 16, 16, 3)
    codes = model.encode(images)                          # posterior means, top layer first
    ```
    """

    default_learning_rate = 2e-3

    def __init__(
        self,
        image_shape=(32, 32, 3),
        num_bits=8,
        hidden_channels=200,
        latent_channels=4,
        num_layers=15,
        downsample_at=(5, 10),
        num_mixtures=5,
        use_sdn=True,
        sdn_min_scale=1,
        sdn_max_scale=32,
        sdn_features=360,
        sdn_features_decrement=128,
        sdn_directions=2,
        sdn_direction_order=AUTHORS_DIRECTION_ORDER,
        iaf_hidden_channels=100,
        iaf_hidden_layers=2,
        iaf_ordering="raster",
        context_channels=100,
        free_bits=0.01,
        ema_decay=0.999,
        weight_normalization=True,
        kernel_initializer="orthogonal",
        skip_factor=10.0,
        seed=None,
        **kwargs,
    ):
        require_tensorflow_backend(type(self).__name__)
        super().__init__(**kwargs)
        self.image_shape = check_image_shape("image_shape", image_shape)
        self.num_bits = check_int("num_bits", num_bits, 1, 8)
        self.hidden_channels = check_int("hidden_channels", hidden_channels, 1)
        self.latent_channels = check_int("latent_channels", latent_channels, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.downsample_at = self._checked_downsample_at(downsample_at)
        self.num_mixtures = check_int("num_mixtures", num_mixtures, 1)
        self.use_sdn = check_bool("use_sdn", use_sdn)
        self.sdn_min_scale = check_int("sdn_min_scale", sdn_min_scale, 1)
        self.sdn_max_scale = check_int("sdn_max_scale", sdn_max_scale, 1)
        check_ordered("sdn_min_scale", self.sdn_min_scale, "sdn_max_scale", self.sdn_max_scale)
        self.sdn_features = check_int("sdn_features", sdn_features, 1)
        self.sdn_features_decrement = check_int("sdn_features_decrement", sdn_features_decrement, 0)
        self.sdn_directions = check_int("sdn_directions", sdn_directions, 1, len(DIRECTIONS))
        self.sdn_direction_order = check_permutation(
            "sdn_direction_order", sdn_direction_order, DIRECTIONS
        )
        self.iaf_hidden_channels = check_int("iaf_hidden_channels", iaf_hidden_channels, 1)
        self.iaf_hidden_layers = check_int("iaf_hidden_layers", iaf_hidden_layers, 1)
        self.iaf_ordering = check_choice("iaf_ordering", iaf_ordering, ORDERINGS)
        self.context_channels = check_int("context_channels", context_channels, 1)
        self.free_bits = check_number("free_bits", free_bits, low=0)
        self.ema_decay = check_number("ema_decay", ema_decay, 0, 1, high_open=True)
        self.weight_normalization = check_bool("weight_normalization", weight_normalization)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if skip_factor is not None:
            skip_factor = check_number("skip_factor", skip_factor, low=1, low_open=True)
        self.skip_factor = skip_factor
        self.seed = seed
        self._make_layers()
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        self.update_skipper = None
        if skip_factor is not None:
            self.update_skipper = UpdateSkipper(factor=skip_factor, name="update_skipper")
        self._add_metrics("loss", "elbo", "kl", "bpd")
        self.build((None,) + self.image_shape)

    def _checked_downsample_at(self, downsample_at):
        """`downsample_at` as sorted unique layer indices that `image_shape` allows."""
        last = self.num_layers - 1
        downsample_at = tuple(
            sorted({check_int("downsample_at entry", i, 0, last) for i in downsample_at})
        )
        factor = 2 ** len(downsample_at)
        if self.image_shape[0] % factor or self.image_shape[1] % factor:
            raise ValueError(
                "Expected `image_shape` height and width divisible by 2**len(downsample_at) "
                f"= {factor}. Received: image_shape={self.image_shape}, "
                f"downsample_at={downsample_at}"
            )
        return downsample_at

    @classmethod
    def from_preset(cls, name, **overrides):
        """A model with the arguments of preset `name`, updated by `overrides`.

        Presets (`keras_sdn.models.PRESETS`): `"cifar10"`, `"imagenet32"`,
        `"celebahq256"` (the paper's configurations; CelebA-HQ with 5-bit
        images) and `"tiny"` (16x16 by default, a few seconds per epoch of a
        few hundred images on 2 CPU cores; pass `image_shape=(32, 32, 3)` for
        32x32).
        """
        check_choice("name", name, sorted(PRESETS))
        return cls(**{**PRESETS[name], **overrides})

    def build(self, input_shape=None):
        if input_shape is not None and tuple(input_shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected SDNVAE inputs of shape (batch,) + {self.image_shape}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if self.built:
            return
        self._build_ladder()
        self.averaged_weights = add_averaged_weights(self)

    def _elbo_terms_of(self, images, training):
        """`_elbo_terms` with the trained weights (`training`) or the averaged ones."""
        with contextlib.nullcontext() if training else averaged_weights_scope(self):
            return self._elbo_terms(images)

    def call(self, images, training=False):
        log_likelihood, kls, _ = self._elbo_terms_of(images, training)
        kl = total_kl(kls)
        return {"elbo": log_likelihood - kl, "kl": kl}

    # --------------------------------------------------------------- training

    def _objective(self, log_likelihood, kls):
        """The free-bits loss in nats per image (batch mean)."""
        floored_kl = sum(ops.maximum(ops.mean(kl), self.free_bits) for kl in kls)
        return -ops.mean(log_likelihood) + floored_kl

    def _loss_and_metrics(self, images, training):
        log_likelihood, kls, _ = self._elbo_terms_of(images, training)
        loss = self._objective(log_likelihood, kls)
        kl = total_kl(kls)
        elbo = log_likelihood - kl
        return loss, {"loss": loss, "elbo": elbo, "kl": kl, "bpd": self.bits_per_dim(elbo)}

    def train_step(self, data):
        logs = super().train_step(data)
        if self.update_skipper is not None:
            logs["skipped_updates"] = self.update_skipper.skipped_updates
        return logs

    def _apply_update(self, gradients, weights):
        """Applies the update unless `update_skipper` skips it; then moves the averages."""
        if self.update_skipper is None:
            super()._apply_update(gradients, weights)
            applied = True
        else:
            applied = self.update_skipper.apply(self.optimizer, gradients, weights)
        update_averaged_weights(self, self.ema_decay, applied)

    # ---------------------------------------------------------- serialization

    def get_config(self):
        return {
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "num_bits": self.num_bits,
            "hidden_channels": self.hidden_channels,
            "latent_channels": self.latent_channels,
            "num_layers": self.num_layers,
            "downsample_at": list(self.downsample_at),
            "num_mixtures": self.num_mixtures,
            "use_sdn": self.use_sdn,
            "sdn_min_scale": self.sdn_min_scale,
            "sdn_max_scale": self.sdn_max_scale,
            "sdn_features": self.sdn_features,
            "sdn_features_decrement": self.sdn_features_decrement,
            "sdn_directions": self.sdn_directions,
            "sdn_direction_order": list(self.sdn_direction_order),
            "iaf_hidden_channels": self.iaf_hidden_channels,
            "iaf_hidden_layers": self.iaf_hidden_layers,
            "iaf_ordering": self.iaf_ordering,
            "context_channels": self.context_channels,
            "free_bits": self.free_bits,
            "ema_decay": self.ema_decay,
            "weight_normalization": self.weight_normalization,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "skip_factor": self.skip_factor,
            "seed": self.seed,
        }
