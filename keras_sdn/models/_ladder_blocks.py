"""One rung of the SDN-VAE ladder: a bottom-up and a top-down block sharing a stochastic layer."""

from typing import NamedTuple

import keras
from keras import ops

from keras_sdn.bijectors import AutoregressiveConvNetwork
from keras_sdn.bijectors import InverseAutoregressiveFlow
from keras_sdn.distribute import replica_normal
from keras_sdn.distributions import diagonal_gaussian
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers import WeightNormalization
from keras_sdn.layers._base import clone_initializer


def convolution(
    filters,
    kernel_size,
    strides=1,
    transpose=False,
    weight_normalization=False,
    kernel_initializer="glorot_uniform",
    **kwargs,
):
    """A "same"-padded `Conv2D` (or `Conv2DTranspose`), weight-normalised if asked.

    The layer gets its own copy of `kernel_initializer`: Keras initializers
    draw their seed once, so one instance shared by several layers would give
    them all the same random values.
    """
    layer_class = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    layer = layer_class(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer=clone_initializer(kernel_initializer),
        **kwargs,
    )
    return WeightNormalization(layer, name=layer.name) if weight_normalization else layer


def gated_residual(inputs, outputs):
    """`(1 - g) * inputs + g * h` with `[h, gate_logits] = outputs`, `g = sigmoid(gate_logits - 1)`.

    The -1 bias keeps the residual branch mostly closed at initialisation.
    """
    update, gate_logits = ops.split(outputs, 2, axis=-1)
    gate = ops.sigmoid(gate_logits - 1.0)
    return (1.0 - gate) * inputs + gate * update


class PosteriorTerms(NamedTuple):
    """Parameters of a stochastic layer's posterior (float32): Gaussian `loc`, `log_scale`, IAF `context`.

    The bottom-up pass gives one part and the top-down pass another; the
    posterior's parameters are their sums.
    """

    loc: object
    log_scale: object
    context: object


class TopDownStep(NamedTuple):
    """The result of a ladder block's top-down step.

    Attributes:
        outputs: The top-down features passed to the block below.
        latents: The block's latents (float32).
        kl: The one-sample estimate `log q(z | x) - log p(z)` per image
            (float32, `(batch,)`) for latents drawn from the posterior; None
            otherwise.
    """

    outputs: object
    latents: object
    kl: object = None


class _TopDownParameters(NamedTuple):
    """What the first top-down layer (`down_in`) computes."""

    features: object
    posterior: PosteriorTerms
    prior_loc: object
    prior_log_scale: object


@keras.saving.register_keras_serializable(package="keras_sdn")
class LadderBlock(keras.layers.Layer):
    """Bottom-up and top-down residual blocks of one IAF-VAE ladder layer.

    Bottom-up (`up`): `ELU -> conv` gives the block's hidden features and the
    bottom-up part of the posterior (mean, log-scale and IAF context),
    `ELU -> conv` then gives the gated residual update. Top-down:
    `ELU -> conv` gives the deterministic features, the top-down part of the
    posterior and the prior; the block's latent `z` is drawn from the
    posterior `N(up + down terms)` followed by one IAF step
    (`down_posterior`), drawn from the prior (`down_prior`) or given
    (`down_given`), and `ELU -> conv` of `[z, features]` gives the gated
    residual update. With
    `sdn_features` set, both top-down convolutions are
    `ResidualSpatialDependency` layers. A resampling block halves the
    resolution bottom-up (stride-2 convolution, nearest-neighbour skip) and
    doubles it top-down (transposed convolution, nearest-neighbour skip); its
    latent lives at the coarse resolution.

    Args:
        hidden_channels: Channels of the deterministic path.
        latent_channels: Channels of the latent `z`.
        context_channels: Channels of the IAF context.
        resample: Whether the block changes the resolution by 2.
        top: Whether this is the top block, whose bottom-up pass only
            computes the posterior terms.
        sdn_features: `num_features` of the top-down ResSDN layers, or `None`
            for convolutions.
        sdn_directions: Pair of direction sequences for the two ResSDN
            layers (ignored without `sdn_features`).
        iaf_hidden_channels: Hidden channels of the IAF's masked network.
        iaf_hidden_layers: Hidden layers of the IAF's masked network.
        iaf_ordering: Autoregressive order of the IAF's masked network.
        weight_normalization: Whether every convolution (those of the
            ResSDN layers and of the IAF network included, not the sweeps'
            gate weights) is weight-normalised.
        kernel_initializer: Initializer of the convolution kernels.
        seed: Seed of the block's latent sampling.
        **kwargs: Base `keras.layers.Layer` arguments.

    Shapes: `up` maps `(batch, H, W, hidden_channels)` to `(batch, H', W',
    hidden_channels)` with `H' = H / 2` when resampling; the `down_*` steps
    map the coarse shape back. Latents are `(batch, H', W', latent_channels)`.
    """

    def __init__(
        self,
        hidden_channels,
        latent_channels,
        context_channels,
        resample=False,
        top=False,
        sdn_features=None,
        sdn_directions=None,
        iaf_hidden_channels=100,
        iaf_hidden_layers=2,
        iaf_ordering="raster",
        weight_normalization=False,
        kernel_initializer="glorot_uniform",
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_channels = hidden_channels
        self.latent_channels = latent_channels
        self.context_channels = context_channels
        self.resample = resample
        self.top = top
        self.sdn_features = sdn_features
        self.sdn_directions = (
            None if sdn_features is None else tuple(tuple(d) for d in sdn_directions)
        )
        self.iaf_hidden_channels = iaf_hidden_channels
        self.iaf_hidden_layers = iaf_hidden_layers
        self.iaf_ordering = iaf_ordering
        self.weight_normalization = weight_normalization
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed

        hidden, latent, context = hidden_channels, latent_channels, context_channels
        self._up_split = [hidden, latent, latent, context]
        self._down_split = [hidden, latent, latent, context, latent, latent]
        self.up_in = self._convolution(
            sum(self._up_split), 4 if resample else 3, strides=2 if resample else 1, name="up_in"
        )
        # Nothing reads the bottom-up output of the top block.
        self.up_out = None if top else self._convolution(2 * hidden, 3, name="up_out")
        self.down_in, self.down_out = self._top_down_layers()
        # The flow and the densities are computed in float32 under mixed precision.
        self.iaf_network = AutoregressiveConvNetwork(
            latent,
            hidden_channels=iaf_hidden_channels,
            num_hidden_layers=iaf_hidden_layers,
            weight_normalization=weight_normalization,
            ordering=iaf_ordering,
            name="iaf_network",
            dtype="float32",
        )
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def _top_down_layers(self):
        """The top-down path's two layers: convolutions, or ResSDN layers with `sdn_features`."""
        hidden, resample = self.hidden_channels, self.resample
        if self.sdn_features is None:
            down_in = self._convolution(sum(self._down_split), 3, name="down_in")
            down_out = self._convolution(
                2 * hidden,
                4 if resample else 3,
                strides=2 if resample else 1,
                transpose=resample,
                name="down_out",
            )
            return down_in, down_out
        directions_in, directions_out = self.sdn_directions
        sdn = dict(
            num_features=self.sdn_features,
            weight_normalization=self.weight_normalization,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
        )
        down_in = ResidualSpatialDependency(
            sum(self._down_split), directions=directions_in, kernel_size=3, name="down_in", **sdn
        )
        down_out = ResidualSpatialDependency(
            2 * hidden,
            directions=directions_out,
            kernel_size=4 if resample else 3,
            upsample=2 if resample else 1,
            name="down_out",
            **sdn,
        )
        return down_in, down_out

    def _convolution(self, filters, kernel_size, strides=1, transpose=False, name=None):
        """A "same"-padded convolution (or transposed one), weight-normalised if asked."""
        return convolution(
            filters,
            kernel_size,
            strides=strides,
            transpose=transpose,
            weight_normalization=self.weight_normalization,
            kernel_initializer=self.kernel_initializer,
            name=name,
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        batch, height, width, _ = input_shape
        factor = 2 if self.resample else 1
        coarse = (batch, height // factor, width // factor)
        self.up_in.build(input_shape)
        if not self.top:
            self.up_out.build(coarse + (self.hidden_channels,))
        self.down_in.build(coarse + (self.hidden_channels,))
        self.down_out.build(coarse + (self.hidden_channels + self.latent_channels,))
        self.iaf_network(
            keras.KerasTensor(coarse + (self.latent_channels,), "float32"),
            keras.KerasTensor(coarse + (self.context_channels,), "float32"),
        )

    def up(self, inputs):
        """Bottom-up pass: `(outputs, PosteriorTerms)`, the terms in float32.

        `outputs` is None for the top block.
        """
        hidden, loc, log_scale, context = ops.split(
            self.up_in(ops.elu(inputs)), _split_points(self._up_split), axis=-1
        )
        terms = PosteriorTerms(*(ops.cast(t, "float32") for t in (loc, log_scale, context)))
        if self.top:
            return None, terms
        skip = inputs[:, ::2, ::2, :] if self.resample else inputs
        return gated_residual(skip, self.up_out(ops.elu(hidden))), terms

    def down_posterior(self, inputs, bottom_up_terms, sample=True):
        """Top-down step with the latent drawn from the posterior q(z | x).

        The posterior is the Gaussian whose parameters are the sums of the
        bottom-up and top-down terms, followed by one IAF step.

        Args:
            inputs: `(batch, H', W', hidden_channels)` top-down features.
            bottom_up_terms: The block's `PosteriorTerms` from `up`.
            sample: If True, a sample of the posterior; if False, the
                Gaussian's mean through the flow (no noise is drawn).

        Returns:
            `TopDownStep` with `kl` the one-sample estimate
            `log q(z | x) - log p(z)` at the latents.
        """
        parameters = self._top_down_parameters(inputs)
        loc, log_scale, context = (
            up + down for up, down in zip(bottom_up_terms, parameters.posterior)
        )
        initial = loc
        if sample:
            noise = replica_normal(ops.shape(loc), seed=self.seed_generator)
            initial = loc + ops.exp(log_scale) * noise
        flow = InverseAutoregressiveFlow(self.iaf_network, context)
        # The forward pass caches its log-determinant for this same `initial`
        # tensor: the IAF network runs once.
        latents = flow.forward(initial)
        log_posterior = diagonal_gaussian(loc, log_scale).log_prob(initial)
        log_posterior -= flow.forward_log_det_jacobian(initial, event_ndims=3)
        prior = diagonal_gaussian(parameters.prior_loc, parameters.prior_log_scale)
        kl = log_posterior - prior.log_prob(latents)
        return TopDownStep(self._merge(inputs, parameters.features, latents), latents, kl)

    def down_prior(self, inputs, temperature=1.0, shared_noise=False):
        """Top-down step with the latent drawn from the prior p(z).

        Args:
            inputs: `(batch, H', W', hidden_channels)` top-down features.
            temperature: Scale of the prior's standard deviation (0 gives
                its mean).
            shared_noise: Draw one noise map for the whole batch.

        Returns:
            `TopDownStep` (without `kl`).
        """
        parameters = self._top_down_parameters(inputs)
        noise_shape = ops.shape(parameters.prior_loc)
        if shared_noise:
            noise_shape = (1,) + tuple(noise_shape[1:])
        noise = keras.random.normal(noise_shape, seed=self.seed_generator)
        scale = ops.exp(parameters.prior_log_scale) * ops.cast(temperature, "float32")
        latents = parameters.prior_loc + scale * noise
        return TopDownStep(self._merge(inputs, parameters.features, latents), latents)

    def down_given(self, inputs, latents):
        """Top-down step with given latents `(batch, H', W', latent_channels)`.

        Returns:
            `TopDownStep` (without `kl`).
        """
        latents = ops.cast(latents, "float32")
        features = self._top_down_parameters(inputs).features
        return TopDownStep(self._merge(inputs, features, latents), latents)

    def _top_down_parameters(self, inputs):
        """`_TopDownParameters` of `down_in`; the posterior and prior terms in float32."""
        features, *terms = ops.split(
            self.down_in(ops.elu(inputs)), _split_points(self._down_split), axis=-1
        )
        loc, log_scale, context, prior_loc, prior_log_scale = (
            ops.cast(t, "float32") for t in terms
        )
        return _TopDownParameters(
            features, PosteriorTerms(loc, log_scale, context), prior_loc, prior_log_scale
        )

    def _merge(self, inputs, features, latents):
        """The gated residual update of `inputs` from `down_out` of `[latents, features]`."""
        merged = ops.concatenate([ops.cast(latents, features.dtype), features], axis=-1)
        update = self.down_out(ops.elu(merged))
        skip = inputs
        if self.resample:
            skip = ops.repeat(ops.repeat(inputs, 2, axis=1), 2, axis=2)
        return gated_residual(skip, update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_channels": self.hidden_channels,
                "latent_channels": self.latent_channels,
                "context_channels": self.context_channels,
                "resample": self.resample,
                "top": self.top,
                "sdn_features": self.sdn_features,
                "sdn_directions": None
                if self.sdn_directions is None
                else [list(d) for d in self.sdn_directions],
                "iaf_hidden_channels": self.iaf_hidden_channels,
                "iaf_hidden_layers": self.iaf_hidden_layers,
                "iaf_ordering": self.iaf_ordering,
                "weight_normalization": self.weight_normalization,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "seed": self.seed,
            }
        )
        return config


def _split_points(sizes):
    """Cumulative split indices for `ops.split` from section sizes."""
    points, total = [], 0
    for size in sizes[:-1]:
        total += size
        points.append(total)
    return points
