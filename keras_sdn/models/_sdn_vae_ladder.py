"""The ladder of `SDNVAE`: its layers, built from the SDN plan, and its two passes."""

from typing import NamedTuple

from keras import ops

from keras_sdn.distributions import DiscretizedLogisticMixture
from keras_sdn.layers import ResidualSpatialDependency
from keras_sdn.layers._base import clone_initializer
from keras_sdn.models._ladder_blocks import LadderBlock
from keras_sdn.models._ladder_blocks import convolution
from keras_sdn.models.sdn_plan import format_sdn_plan
from keras_sdn.models.sdn_plan import make_sdn_plan


class TopDownPass(NamedTuple):
    """The result of the top-down pass, per-layer lists top layer first.

    Attributes:
        params: The output layer's parameters of p(x | z) (float32).
        latents: Each stochastic layer's latents (float32).
        kls: Each layer's `log q(z | x) - log p(z)` per image for a posterior
            pass; None entries otherwise.
    """

    params: object
    latents: list
    kls: list


class SDNVAELadder:
    """The layers of `SDNVAE` and its bottom-up and top-down passes (a base class of it).

    The layers: `input_layer` (image to features), `blocks` (one
    `LadderBlock` per stochastic layer, in construction order: from the
    image up, as `downsample_at` and the names `ladder_block_<i>` count),
    `output_layer` (features to the parameters of p(x | z)) and the learned
    `top_input`. The top-down layers are ResSDN layers or convolutions as
    `sdn_plan()` says, which `summary()` prints.

    Every per-layer list the passes take or give (posterior terms, latents,
    KLs) is ordered top layer first, the order of the top-down pass and of
    `encode`.
    """

    def sdn_plan(self):
        """The ResSDN layers of the top-down path: a tuple of `SDNLayerPlan`.

        One entry per ResSDN layer, in the order the directions are handed
        out (from the image up, the output layer last): the layer's name,
        its block's output scale, its directions and its features. Empty for
        `use_sdn=False`. `summary()` prints it after the layers.
        """
        return make_sdn_plan(
            self.image_shape,
            self.num_layers,
            self.downsample_at,
            self.use_sdn,
            self.sdn_min_scale,
            self.sdn_max_scale,
            self.sdn_features,
            self.sdn_features_decrement,
            self.sdn_directions,
            self.sdn_direction_order,
        )

    def summary(
        self,
        line_length=None,
        positions=None,
        print_fn=None,
        expand_nested=False,
        show_trainable=False,
        layer_range=None,
    ):
        """Keras' `Model.summary()`, followed by the SDN plan (`sdn_plan()`) as a table."""
        super().summary(
            line_length, positions, print_fn, expand_nested, show_trainable, layer_range
        )
        (print_fn or print)(format_sdn_plan(self.sdn_plan()))

    def _make_layers(self):
        """The input convolution, the ladder blocks and the output layer, after `sdn_plan()`."""
        plan = {entry.layer: entry for entry in self.sdn_plan()}
        self.input_layer = convolution(
            self.hidden_channels, 3, name="input_layer", **self._convolution_arguments()
        )
        self.blocks = [self._ladder_block(index, plan) for index in range(self.num_layers)]
        height, width, channels = self.image_shape
        factor = 2 ** len(self.downsample_at)
        self._top_shape = (height // factor, width // factor, self.hidden_channels)
        params_size = DiscretizedLogisticMixture.params_size(self.num_mixtures, channels)
        output = plan.get("output_layer")
        if output is None:
            self.output_layer = convolution(
                params_size, 3, name="output_layer", **self._convolution_arguments()
            )
        else:
            self.output_layer = ResidualSpatialDependency(
                params_size,
                num_features=output.features,
                directions=output.directions,
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

    def _ladder_block(self, index, plan):
        """Ladder layer `index` (from the image); `plan`: `{layer name: SDNLayerPlan}`."""
        name = f"ladder_block_{index}"
        down_in, down_out = plan.get(f"{name}/down_in"), plan.get(f"{name}/down_out")
        sdn = {}
        if down_in is not None:
            sdn = dict(
                sdn_features=down_in.features,
                sdn_directions=(down_in.directions, down_out.directions),
            )
        return LadderBlock(
            self.hidden_channels,
            self.latent_channels,
            self.context_channels,
            resample=index in self.downsample_at,
            top=index == self.num_layers - 1,
            iaf_hidden_channels=self.iaf_hidden_channels,
            iaf_hidden_layers=self.iaf_hidden_layers,
            iaf_ordering=self.iaf_ordering,
            name=name,
            seed=None if self.seed is None else self.seed + 1 + index,
            **sdn,
            **self._convolution_arguments(),
        )

    def _build_ladder(self):
        """Builds the layers and creates `top_input`."""
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

    def _bottom_up(self, images):
        """The bottom-up pass: each stochastic layer's `PosteriorTerms`, top layer first."""
        hidden = self.input_layer(self._to_unit_range(images))
        terms = []
        for block in self.blocks:
            hidden, block_terms = block.up(hidden)
            terms.insert(0, block_terms)
        return terms

    def _top_down(self, batch_size, step):
        """The top-down pass from `top_input`, as a `TopDownPass`.

        `step(depth, block, inputs)` runs the top-down step (a `TopDownStep`)
        of the block `depth` layers below the top.
        """
        top = ops.cast(self.top_input, self.compute_dtype)
        hidden = ops.broadcast_to(top, (batch_size,) + self._top_shape)
        steps = []
        for depth, block in enumerate(reversed(self.blocks)):
            steps.append(step(depth, block, hidden))
            hidden = steps[-1].outputs
        params = ops.cast(self.output_layer(ops.elu(hidden)), "float32")
        return TopDownPass(params, [s.latents for s in steps], [s.kl for s in steps])

    def _posterior_pass(self, images, sample=True):
        """Both passes, every latent drawn from the posterior (`sample=False`: its mean)."""
        terms = self._bottom_up(images)

        def step(depth, block, inputs):
            return block.down_posterior(inputs, terms[depth], sample)

        return self._top_down(ops.shape(images)[0], step)

    def _prior_pass(self, batch_size, temperature, fixed_latents=(), shared_noise=False):
        """The top-down pass with the top `len(fixed_latents)` layers' latents given.

        The layers below draw theirs from the prior at `temperature`
        (`shared_noise`: one noise map for the whole batch).
        """

        def step(depth, block, inputs):
            if depth < len(fixed_latents):
                return block.down_given(inputs, fixed_latents[depth])
            return block.down_prior(inputs, temperature, shared_noise)

        return self._top_down(batch_size, step)

    def observation_distribution(self, params, temperature=1.0):
        """p(x | z) for the decoder's output `params` (of the top-down pass)."""
        return DiscretizedLogisticMixture(
            params, channels=self.image_shape[-1], num_bits=self.num_bits, temperature=temperature
        )

    def _elbo_terms(self, images):
        """`(log p(x | z), [KL_l], decoder output)` per image, one posterior sample.

        The KLs are per stochastic layer, top layer first.
        """
        params, _, kls = self._posterior_pass(images)
        return self.observation_distribution(params).log_prob(images), kls, params


def total_kl(kls):
    """The KL of all stochastic layers per image, from `[KL_l]`."""
    return ops.sum(ops.stack(kls), axis=0)
