"""Small models shared by the tests and their subprocess scripts."""

# The benchmark scripts' `--set` flags for a two-layer SDN-VAE with one
# down-sampling: their tests check what they record, not how well it learns.
TWO_LAYER_FLAGS = ["--set", "num_layers=2", "--set", "downsample_at=[0]"]


def tiny_sdn_vae(**overrides):
    """A 4x4 SDN-VAE, its convolutional variant: SDN layers, slow to trace, are
    covered by the generic models and the beta-VAE's decoder where it is used."""
    from keras_sdn.models import SDNVAE

    config = dict(
        image_shape=(4, 4, 3),
        hidden_channels=4,
        latent_channels=2,
        num_layers=1,
        downsample_at=(),
        num_mixtures=2,
        use_sdn=False,
        iaf_hidden_channels=4,
        iaf_hidden_layers=1,
        context_channels=4,
        seed=1,
    )
    return SDNVAE(**{**config, **overrides})
