"""The SDN plan of an `SDNVAE`: which top-down layers are ResSDN layers, and how they sweep."""

import itertools
import math
from typing import NamedTuple

from keras_sdn.layers import DIRECTIONS


class SDNLayerPlan(NamedTuple):
    """One `ResidualSpatialDependency` layer of an `SDNVAE`'s top-down path.

    Attributes:
        layer: The layer's name within the model: `"ladder_block_<i>/down_in"`,
            `"ladder_block_<i>/down_out"` (ladder layer `i`, counted from the
            image) or `"output_layer"`.
        scale: The larger side of the feature map its block outputs (a
            block that changes the resolution counts at the finer scale).
        directions: The directions it sweeps, in order.
        features: Its `num_features`.
    """

    layer: str
    scale: int
    directions: tuple
    features: int


def make_sdn_plan(
    image_shape,
    num_layers,
    downsample_at,
    use_sdn,
    sdn_min_scale,
    sdn_max_scale,
    sdn_features,
    sdn_features_decrement,
    sdn_directions,
    sdn_direction_order,
):
    """The ResSDN layers an `SDNVAE` with these (checked) arguments builds.

    The candidates, in the order directions are handed out: the two
    top-down layers (`down_in`, then `down_out`) of each ladder layer from
    the image up, each taking `sdn_directions` directions, then the output
    layer, taking all four. A candidate whose scale lies in `[sdn_min_scale,
    sdn_max_scale]` (and `use_sdn`) is a ResSDN layer with `sdn_features -
    sdn_features_decrement * halvings` features and the next directions of
    `sdn_direction_order`, cycled; the others are convolutions and take
    none.

    Returns:
        A tuple of `SDNLayerPlan`, in that order (empty without ResSDN layers).
    """
    image_scale = max(image_shape[:2])
    candidates = []
    scale = image_scale
    for index in range(num_layers):
        for part in ("down_in", "down_out"):
            candidates.append((f"ladder_block_{index}/{part}", scale, sdn_directions))
        if index in downsample_at:
            scale //= 2
    candidates.append(("output_layer", image_scale, len(DIRECTIONS)))

    directions = itertools.cycle(sdn_direction_order)
    plan = []
    for layer, scale, count in candidates:
        if use_sdn and sdn_min_scale <= scale <= sdn_max_scale:
            halvings = int(round(math.log2(image_scale / scale)))
            features = sdn_features - sdn_features_decrement * halvings
            if features < 1:
                raise ValueError(
                    "Expected `sdn_features_decrement` to leave SDN features at every scale "
                    f"with ResSDN layers; at scale {scale} it leaves {features}. Received: "
                    f"sdn_features_decrement={sdn_features_decrement}, "
                    f"sdn_features={sdn_features}"
                )
            plan.append(
                SDNLayerPlan(layer, scale, tuple(itertools.islice(directions, count)), features)
            )
    return tuple(plan)


def format_sdn_plan(plan):
    """`plan` as a text table, one line per ResSDN layer."""
    if not plan:
        return "SDN plan: no ResSDN layers (convolutions only)."
    rows = [("Layer", "Scale", "Features", "Directions")]
    rows += [(p.layer, str(p.scale), str(p.features), ", ".join(p.directions)) for p in plan]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
        for row in rows
    ]
    return "\n".join(["SDN plan:"] + lines)
