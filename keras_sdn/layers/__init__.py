"""Spatial dependency layers and weight normalisation."""

from keras_sdn.layers.residual_spatial_dependency import ResidualSpatialDependency
from keras_sdn.layers.spatial_dependency import SpatialDependency
from keras_sdn.layers.sweep import DIRECTIONS
from keras_sdn.layers.weight_normalization import WeightNormalization
from keras_sdn.layers.weight_normalization import kernel_norm
from keras_sdn.layers.weight_normalization import normalize_kernel

__all__ = [
    "ResidualSpatialDependency",
    "SpatialDependency",
    "DIRECTIONS",
    "WeightNormalization",
    "kernel_norm",
    "normalize_kernel",
]
