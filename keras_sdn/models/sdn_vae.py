"""SDN-VAE: the IAF-VAE ladder with residual spatial dependency layers on its top-down path."""

import contextlib
import itertools
import math

import keras
import tensorflow as tf
from keras import ops

from keras_sdn._checks import check_bool
from keras_sdn._checks import check_choice
from keras_sdn._checks import check_image_shape
from keras_sdn._checks import check_int
from keras_sdn._checks import check_number
from keras_sdn._checks import check_ordered
from keras_sdn._checks import check_permutation
from keras_sdn._checks import check_temperature
from keras_sdn._compat import require_tensorflow_backend
from keras_sdn.bijectors.autoregressive_conv_network import ORDERINGS
from keras_sdn.distributions import DiscretizedLogisticMixture
from keras_sdn.layers import DIRECTIONS
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers._base import clone_initializer
from keras_sdn.models._ladder_blocks import LadderBlock
from keras_sdn.models._ladder_blocks import convolution
from keras_sdn.models.base_vae import BaseVAE
from keras_sdn.models.presets import PRESETS
from keras_sdn.optimizers import UpdateSkipper

# The authors' `_get_dirs` order: left-to-right, right-to-left, top-to-bottom,
# bottom-to-top. Handed out two at a time, one layer sweeps the rows both ways
# and the next the columns both ways.
AUTHORS_DIRECTION_ORDER = ("right", "left", "down", "up")


@keras.saving.register_keras_serializable(package="keras_sdn")
class SDNVAE(BaseVAE):
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
    over channels within a pixel, IAF-VAE's masks). The top-down output goes through ELU and a
    convolution to the parameters of a discretized mixture of logistics
    (`DiscretizedLogisticMixture`, RGB-coupled).

    With `use_sdn=True`, the two convolutions of every top-down block whose
    output scale (the larger side of its feature map) lies in
    `[sdn_min_scale, sdn_max_scale]` are `ResidualSpatialDependency` layers
    with `sdn_directions` directions each, handed out round-robin in
    `sdn_direction_order` across the layers, starting at the block nearest
    the image. The default is the authors' order (left-to-right,
    right-to-left, top-to-bottom, bottom-to-top): with 2 directions one layer
    sweeps the rows both ways and the next the columns both ways, so that
    every layer links nearly the whole map. The output convolution becomes a
    four-direction ResSDN layer when the image scale is in that range. The layers have
    `sdn_features` features at the image scale and `sdn_features_decrement`
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
        # Compiled generation and evaluation functions, kept out of Keras and
        # SavedModel tracking (they are rebuilt on demand).
        object.__setattr__(self, "_compiled_functions", {})
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

    # ------------------------------------------------------------- the ladder

    def _make_layers(self):
        """The input convolution, the ladder blocks and the output layer."""
        directions = itertools.cycle(self.sdn_direction_order)

        def take(count):
            """The next `count` directions of the round-robin."""
            return tuple(itertools.islice(directions, count))

        self.input_layer = convolution(
            self.hidden_channels, 3, name="input_layer", **self._convolution_arguments()
        )
        self.blocks = []
        scale = max(self.image_shape[:2])
        for index in range(self.num_layers):
            features = self._sdn_features_at(scale)
            pair = None
            if features is not None:
                pair = (take(self.sdn_directions), take(self.sdn_directions))
            self.blocks.append(self._ladder_block(index, features, pair))
            if index in self.downsample_at:
                scale //= 2
        height, width, channels = self.image_shape
        factor = 2 ** len(self.downsample_at)
        self._top_shape = (height // factor, width // factor, self.hidden_channels)
        params_size = DiscretizedLogisticMixture.params_size(self.num_mixtures, channels)
        output_features = self._sdn_features_at(max(height, width))
        if output_features is None:
            self.output_layer = convolution(
                params_size, 3, name="output_layer", **self._convolution_arguments()
            )
        else:
            self.output_layer = ResidualSpatialDependency(
                params_size,
                num_features=output_features,
                directions=take(len(DIRECTIONS)),
                kernel_size=3,
                weight_normalization=self.weight_normalization,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                name="output_layer",
                dtype=self.dtype_policy,
            )

    def _convolution_arguments(self):
        return dict(
            weight_normalization=self.weight_normalization,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
        )

    def _ladder_block(self, index, sdn_features, sdn_directions):
        return LadderBlock(
            self.hidden_channels,
            self.latent_channels,
            self.context_channels,
            resample=index in self.downsample_at,
            top=index == self.num_layers - 1,
            sdn_features=sdn_features,
            sdn_directions=sdn_directions,
            iaf_hidden_channels=self.iaf_hidden_channels,
            iaf_hidden_layers=self.iaf_hidden_layers,
            iaf_ordering=self.iaf_ordering,
            name=f"ladder_block_{index}",
            seed=None if self.seed is None else self.seed + 1 + index,
            **self._convolution_arguments(),
        )

    def _sdn_features_at(self, scale):
        """ResSDN features for a block of output scale `scale`, or None for convolutions."""
        if not (self.use_sdn and self.sdn_min_scale <= scale <= self.sdn_max_scale):
            return None
        halvings = int(round(math.log2(max(self.image_shape[:2]) / scale)))
        features = self.sdn_features - self.sdn_features_decrement * halvings
        if features < 1:
            raise ValueError(
                "Expected `sdn_features_decrement` to leave SDN features at every scale with "
                f"ResSDN layers; at scale {scale} it leaves {features}. Received: "
                f"sdn_features_decrement={self.sdn_features_decrement}, "
                f"sdn_features={self.sdn_features}"
            )
        return features

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
        height, width, channels = self.image_shape
        shape = (None, height, width, self.hidden_channels)
        self.input_layer.build((None, height, width, channels))
        for block in self.blocks:
            block.build(shape)
            if block.resample:
                shape = (None, shape[1] // 2, shape[2] // 2, self.hidden_channels)
        self.output_layer.build((None, height, width, self.hidden_channels))
        self.top_input = self.add_weight(
            shape=(self.hidden_channels,), initializer="zeros", name="top_input"
        )
        self.averaged_weights = [
            self.add_weight(
                shape=weight.shape,
                dtype=weight.dtype,
                initializer=lambda shape, dtype, weight=weight: ops.copy(weight.value),
                trainable=False,
                # Every replica computes the same average from synchronised weights.
                aggregation="only_first_replica",
                name=f"average_{index}",
            )
            for index, weight in enumerate(self.trainable_weights)
        ]

    def _encode_terms(self, images):
        """Bottom-up pass: the posterior terms of every layer, bottom layer first."""
        hidden = self.input_layer(self._to_unit_range(images))
        terms = []
        for block in self.blocks:
            hidden, block_terms = block.up(hidden)
            terms.append(block_terms)
        return terms

    def _top_down(
        self, batch_size, posterior_terms=None, latents=None, temperature=1.0, shared_noise=False
    ):
        """Top-down pass: `(observation params, latents, kls)`, both lists top layer first.

        Layer `i` from the top uses `latents[i]` when given (not None), else
        the posterior when `posterior_terms` are given, else the prior at
        `temperature`.
        """
        top = ops.cast(self.top_input, self.compute_dtype)
        hidden = ops.broadcast_to(top, (batch_size,) + self._top_shape)
        all_latents, kls = [], []
        for depth, block in enumerate(reversed(self.blocks)):
            hidden, block_latents, kl = block.down(
                hidden,
                posterior_terms=None if posterior_terms is None else posterior_terms[-1 - depth],
                latents=None if latents is None else latents[depth],
                temperature=temperature,
                shared_noise=shared_noise,
            )
            all_latents.append(block_latents)
            kls.append(kl)
        params = ops.cast(self.output_layer(ops.elu(hidden)), "float32")
        return params, all_latents, kls

    def observation_distribution(self, params, temperature=1.0):
        """p(x | z) for the decoder's output `params` (of the top-down pass)."""
        return DiscretizedLogisticMixture(
            params, channels=self.image_shape[-1], num_bits=self.num_bits, temperature=temperature
        )

    def _posterior_pass(self, images):
        """The decoder's output and `[KL_l]` (top layer first) for one posterior sample."""
        terms = self._encode_terms(images)
        params, _, kls = self._top_down(ops.shape(images)[0], posterior_terms=terms)
        return params, kls

    def _elbo_terms(self, images):
        """`(log p(x | z), [KL_l], decoder output)` per image, one posterior sample.

        The KLs are per stochastic layer, top layer first.
        """
        params, kls = self._posterior_pass(images)
        return self.observation_distribution(params).log_prob(images), kls, params

    def _elbo_terms_of(self, images, training):
        """`_elbo_terms` with the trained weights (`training`) or the averaged ones."""
        with contextlib.nullcontext() if training else self._averaged():
            return self._elbo_terms(images)

    def call(self, images, training=False):
        log_likelihood, kls, _ = self._elbo_terms_of(images, training)
        kl = _total_kl(kls)
        return {"elbo": log_likelihood - kl, "kl": kl}

    # --------------------------------------------------------------- training

    def _objective(self, log_likelihood, kls):
        """The free-bits loss in nats per image (batch mean)."""
        floored_kl = sum(ops.maximum(ops.mean(kl), self.free_bits) for kl in kls)
        return -ops.mean(log_likelihood) + floored_kl

    def _loss_and_metrics(self, images, training):
        log_likelihood, kls, _ = self._elbo_terms_of(images, training)
        loss = self._objective(log_likelihood, kls)
        kl = _total_kl(kls)
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
        self._update_averages(applied)

    def _update_averages(self, applied):
        """Moves the averages towards the weights, unless the update was skipped."""
        step = ops.cast(self.optimizer.iterations, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        decay = ops.where(applied, decay, 1.0)
        for weight, average in zip(self.trainable_weights, self.averaged_weights):
            average.assign(decay * average + (1.0 - decay) * weight)

    @contextlib.contextmanager
    def _averaged(self):
        """Runs the model with the averaged weights in place of the trained ones."""
        mapping = [(w, a.value) for w, a in zip(self.trainable_weights, self.averaged_weights)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            yield
        # Keep the state that advanced inside the scope (the random seeds).
        for variable in self.non_trainable_variables:
            value = scope.get_current_value(variable)
            if value is not None:
                variable.assign(value)

    def _compiled(self, name, function):
        """`function` run with the averaged weights, compiled once per model.

        Called inside another `tf.function` (e.g. a signature that
        `keras_sdn.export.export_for_serving` traces), it is traced inline,
        in the caller's tracing context, and no compiled function is kept.
        """

        def averaged_function(*args):
            with self._averaged():
                return function(*args)

        if tf.inside_function():
            return averaged_function
        if name not in self._compiled_functions:
            self._compiled_functions[name] = tf.function(averaged_function, reduce_retracing=True)
        return self._compiled_functions[name]

    # ------------------------------------------------------------- evaluation

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
        log_weight = self._compiled("log_weight", self._log_weight)
        log_weights = []
        for first in range(0, num_samples, samples_per_pass):
            count = min(samples_per_pass, num_samples - first)
            tiled = ops.tile(images, (count, 1, 1, 1))  # sample-major
            log_weights.append(ops.reshape(log_weight(tiled), (count, batch_size)))
        log_weights = ops.concatenate(log_weights, axis=0)
        return ops.logsumexp(log_weights, axis=0) - math.log(num_samples)

    def _log_weight(self, images):
        log_likelihood, kls, _ = self._elbo_terms(images)
        return log_likelihood - _total_kl(kls)

    # ------------------------------------------------------------- generation

    def _sample(self, num_images, temperature, sample_pixels):
        def generate(num_images, temperature):
            params, _, _ = self._top_down(num_images, temperature=temperature)
            return self._images_from(params, temperature, sample_pixels)

        return self._compiled(f"sample_{sample_pixels}", generate)(num_images, temperature)

    def encode(self, images, sample=False):
        """The latent code of `images`: every stochastic layer's latents, top layer first.

        Args:
            images: `(batch,) + image_shape` integer images.
            sample: If False (default), the deterministic code: each layer's
                posterior Gaussian mean, through its inverse autoregressive
                flow, with the layers above it fixed the same way (the
                posterior at temperature 0). If True, a sample of the
                posterior.

        Returns:
            A list of `num_layers` float32 tensors `(batch, h_l, w_l,
            latent_channels)`.
        """
        images = self._check_images(images)
        sample = check_bool("sample", sample)

        def encode(images):
            terms = self._encode_terms(images)
            _, latents, _ = self._top_down(
                ops.shape(images)[0], posterior_terms=terms, temperature=1.0 if sample else 0.0
            )
            return latents

        return self._compiled(f"encode_{sample}", encode)(images)

    def _decode(self, latents, temperature, shared_noise=False):
        """Images from given latents (top first, None entries sampled from the prior)."""
        known = [z for z in latents if z is not None]
        params, _, _ = self._top_down(
            ops.shape(known[0])[0],
            latents=latents,
            temperature=temperature,
            shared_noise=shared_noise,
        )
        return self._images_from(params, temperature)

    def reconstruct(self, images):
        """The most likely images given latents drawn from the posterior of `images` (uint8)."""
        images = self._check_images(images)

        def reconstruct(images):
            return self._images_from(self._posterior_pass(images)[0])

        return self._compiled("reconstruct", reconstruct)(images)

    def elbo_and_reconstruction(self, images):
        """The ELBO (nats per image) and the reconstruction (uint8) of `images`.

        Both from one posterior sample: the reconstruction is the most likely
        image given the latents whose ELBO is returned (half the work of
        `model(images)["elbo"]` and `reconstruct(images)`).
        """
        images = self._check_images(images)

        def elbo_and_reconstruction(images):
            log_likelihood, kls, params = self._elbo_terms(images)
            return log_likelihood - _total_kl(kls), self._images_from(params)

        return self._compiled("elbo_and_reconstruction", elbo_and_reconstruction)(images)

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

        def around(codes, temperature):
            latents = [ops.repeat(z, num_samples, axis=0) for z in codes[:fixed_layers]]
            if not latents:
                params, _, _ = self._top_down(num_samples, temperature=temperature)
                return self._images_from(params, temperature)
            return self._decode(latents + [None] * (self.num_layers - fixed_layers), temperature)

        name = f"sample_around_{fixed_layers}_{num_samples}"
        return self._compiled(name, around)(codes, tf.constant(temperature, tf.float32))

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

        def interpolate(codes, temperature):
            weights = ops.reshape(ops.linspace(0.0, 1.0, steps), (steps, 1, 1, 1))
            latents = [(1.0 - weights) * z[:1] + weights * z[1:] for z in codes[:fixed_layers]]
            return self._decode(
                latents + [None] * (self.num_layers - fixed_layers), temperature, shared_noise=True
            )

        name = f"interpolate_{fixed_layers}_{steps}"
        return self._compiled(name, interpolate)(codes, tf.constant(temperature, tf.float32))

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


def _total_kl(kls):
    """The KL of all stochastic layers per image, from `[KL_l]`."""
    return ops.sum(ops.stack(kls), axis=0)
