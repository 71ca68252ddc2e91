"""Spatial dependency layers."""

from keras_sdn.layers.residual_spatial_dependency import ResidualSpatialDependency
from keras_sdn.layers.spatial_dependency import SpatialDependency
from keras_sdn.layers.sweep import DIRECTIONS
