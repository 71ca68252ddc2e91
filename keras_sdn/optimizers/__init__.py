"""Helpers for the optimizer step of a custom `train_step`."""

from keras_sdn.optimizers.update_skipper import UpdateSkipper

__all__ = [
    "UpdateSkipper",
]
