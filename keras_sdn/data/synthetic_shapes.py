"""A built-in generator of 3D-Shapes-like scenes with known factors."""

import numpy as np

from keras_sdn._checks import check_choice
from keras_sdn._checks import check_int
from keras_sdn.data.ground_truth import GroundTruthData

# Scene layout, in fractions of the image side (v grows downwards).
_OBJECT_GROUND = 0.84  # where objects touch the floor
_OBJECT_RADII = np.linspace(0.12, 0.24, 8)  # half-height of the object per scale
_SHIFTS = np.linspace(-1.0, 1.0, 15)  # camera orientation, one shift per value
_OBJECT_TRAVEL = 0.22  # object centre = 0.5 + _OBJECT_TRAVEL * shift
_CORNER_TRAVEL = -0.3  # the room corner moves against the object (parallax)
_CORNER_HEIGHT = 0.5  # the floor meets the wall highest at the corner
_HORIZON_SLOPE = 0.12
_SHADOW_STRENGTH = 0.18
_RENDER_CHUNK = 256  # images rendered at once into reused float32 buffers

# Fixed split of all factor combinations into disjoint test and train parts.
_SPLIT_SEED = 20210503
_NUM_TEST_COMBINATIONS = 10_000
_DEFAULT_SPLIT_SIZES = {"train": 50_000, "test": 10_000}


def _hue_to_rgb(hue):
    """Fully saturated, full-value HSV colours for hues in [0, 1), shape (..., 3)."""
    hue = np.asarray(hue, np.float64)[..., None] * 6.0
    rgb = np.abs(np.mod(hue + np.array([0.0, 4.0, 2.0]), 6.0) - 3.0) - 1.0
    return np.clip(rgb, 0.0, 1.0).astype(np.float32)


def _channels_first(light_maps):
    """float32 copy of (..., H, W) light maps with a channel axis: (..., 1, H, W)."""
    return np.asarray(light_maps, np.float32)[..., None, :, :]


def _box_sdf(px, py, half_width, half_height):
    qx = np.abs(px) - half_width
    qy = np.abs(py) - half_height
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _ellipse_sdf(px, py, radius_x, radius_y):
    # Not exact away from the boundary, but exact enough for anti-aliasing.
    return (np.hypot(px / radius_x, py / radius_y) - 1.0) * np.minimum(radius_x, radius_y)


def _shape_sdfs(px, py, r):
    """Signed distances of cube, cylinder, sphere and capsule of half-height r."""
    cylinder = np.minimum(
        _box_sdf(px, py, 0.75 * r, 0.8 * r),
        np.minimum(
            _ellipse_sdf(px, py - 0.8 * r, 0.75 * r, 0.2 * r),
            _ellipse_sdf(px, py + 0.8 * r, 0.75 * r, 0.2 * r),
        ),
    )
    capsule_axis = np.clip(py, -0.35 * r, 0.35 * r)
    capsule = np.hypot(px, py - capsule_axis) - 0.65 * r
    return [_box_sdf(px, py, r, r), cylinder, np.hypot(px, py) - r, capsule]


class SyntheticShapes(GroundTruthData):
    """Deterministic scenes in the spirit of 3D Shapes, rendered with NumPy.

    An object stands on a floor in front of a two-sided wall. Six factors,
    each sampled independently, control the scene (in this order):

    - `floor_hue` (10), `wall_hue` (10), `object_hue` (10): hues k / 10;
    - `scale` (8): the object's size;
    - `shape` (4): cube, cylinder, sphere, capsule;
    - `orientation` (15): the camera's azimuth, which moves the object and,
      against it, the room's corner.

    Every factor visibly changes every image. Edges are anti-aliased from
    signed distances, and all geometry is tabulated at construction, so
    rendering is a few vectorised gathers and blends (tens of thousands of
    64x64 images per second or two). Rendering is deterministic.

    `split_factors("train" | "test")` gives fixed, disjoint sets of factor
    combinations; `keras_sdn.data.load_images("synthetic_shapes")` serves them
    as a `tf.data` pipeline.

    Args:
        image_size: side of the square images, at least 8.

    Output: `render(factors)` with factors `(n, 6)` returns uint8 `(n,
    image_size, image_size, 3)`.

    Example:

    >>> shapes = SyntheticShapes(image_size=32)
    >>> factors, images = shapes.sample(4, seed=0)
    >>> images.shape, images.dtype
    ((4, 32, 32, 3), dtype('uint8'))
    """

    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    shape_names = ("cube", "cylinder", "sphere", "capsule")

    def __init__(self, image_size=64):
        self.image_size = check_int("image_size", image_size, 8)
        self._hues = _hue_to_rgb(np.arange(10) / 10.0)[:, :, None, None]
        self._object_sizes = (len(self.shape_names), len(_OBJECT_RADII), len(_SHIFTS))
        self._tabulate_scenes()

    @property
    def factor_sizes(self):
        return (10, 10, 10, len(_OBJECT_RADII), len(self.shape_names), len(_SHIFTS))

    @property
    def observation_shape(self):
        return (self.image_size, self.image_size, 3)

    def _coverage(self, signed_distance):
        """Fraction of each pixel inside a region, from its signed distance."""
        return np.clip(0.5 - signed_distance * self.image_size, 0.0, 1.0)

    def _tabulate_scenes(self):
        size = self.image_size
        centres = (np.arange(size) + 0.5) / size
        v, u = np.meshgrid(centres, centres, indexing="ij")  # (size, size)
        shift = _SHIFTS[:, None, None]

        # Background per orientation: two wall planes meeting at a corner,
        # and a floor whose far edge rises towards that corner.
        corner = 0.5 + _CORNER_TRAVEL * shift
        floor_edge = _CORNER_HEIGHT + _HORIZON_SLOPE * np.abs(u - corner)
        floor = self._coverage(floor_edge - v)
        left_wall = self._coverage(u - corner)
        wall_light = 0.72 * left_wall + 0.92 * (1.0 - left_wall)
        floor_light = 0.7 + 0.3 * np.clip((v - floor_edge) / (1.0 - floor_edge), 0.0, 1.0)
        self._wall_light = _channels_first((1.0 - floor) * wall_light)
        self._floor_light = _channels_first(floor * floor_light)

        # Object per (shape, scale, orientation): its coverage times its
        # shading, and what remains of the background (occlusion, shadow).
        radius = _OBJECT_RADII[:, None, None, None]  # (scale, 1, 1, 1)
        px = u - (0.5 + _OBJECT_TRAVEL * shift)  # (orientation, size, size)
        py = v - (_OBJECT_GROUND - radius)  # (scale, 1, size, size)
        light = 1.0 - 0.12 * ((px / radius + 0.35) ** 2 + (py / radius + 0.45) ** 2)
        light = np.clip(light, 0.55, 1.0)
        shadow_distance = _ellipse_sdf(
            px - 0.25 * radius, v - _OBJECT_GROUND, 1.1 * radius, 0.22 * radius
        )
        shadow = self._coverage(0.5 * shadow_distance)  # halved distance: a softer edge
        darkening = 1.0 - _SHADOW_STRENGTH * shadow * floor
        covers = np.stack([self._coverage(sdf) for sdf in _shape_sdfs(px, py, radius)])
        # Flattened over (shape, scale, orientation), in ravel order.
        flat_shape = (-1, 1, size, size)
        self._object_paint = _channels_first(covers * light).reshape(flat_shape)
        self._background_kept = _channels_first((1.0 - covers) * darkening).reshape(flat_shape)

    def render(self, factors):
        factors = self.check_factors(factors)
        images = np.empty((len(factors),) + self.observation_shape, np.uint8)
        # Rendering works channels-first, where broadcasting a colour over a
        # light map is fast, in scratch buffers reused across chunks.
        chunk = min(len(factors), _RENDER_CHUNK)
        side = (self.image_size, self.image_size)
        scratch = (
            np.empty((chunk, 3) + side, np.float32),
            np.empty((chunk, 3) + side, np.float32),
            np.empty((chunk, 1) + side, np.float32),
        )
        for start in range(0, len(factors), _RENDER_CHUNK):
            stop = min(start + _RENDER_CHUNK, len(factors))
            image = self._render_chunk(factors[start:stop], *scratch)
            np.copyto(images[start:stop], image.transpose(0, 2, 3, 1), casting="unsafe")
        return images

    def _render_chunk(self, factors, image, layer, light):
        """Renders `factors` into `image` (channels-first, values in [0, 255])."""
        floor_hue, wall_hue, object_hue, scale, shape, orientation = factors.T
        image, layer, light = image[: len(factors)], layer[: len(factors)], light[: len(factors)]
        placement = np.ravel_multi_index((shape, scale, orientation), self._object_sizes)

        def paint(light_table, index, hue, out):
            np.take(light_table, index, axis=0, out=light)
            np.multiply(light, self._hues[hue], out=out)

        paint(self._wall_light, orientation, wall_hue, out=image)
        paint(self._floor_light, orientation, floor_hue, out=layer)
        image += layer
        image *= np.take(self._background_kept, placement, axis=0, out=light)
        paint(self._object_paint, placement, object_hue, out=layer)
        image += layer
        image *= 255.0
        return np.rint(image, out=image)

    def split_factors(self, split, num_examples=None):
        """The fixed factor combinations of a split, in a fixed order.

        The test split holds 10,000 combinations, the train split all others
        (470,000); they are disjoint. By default the first 50,000 train and
        all 10,000 test combinations are used.

        Args:
            split: "train" or "test".
            num_examples: how many to take (default 50,000 for "train",
                10,000 for "test").

        Returns:
            int64 array of shape `(num_examples, 6)`.
        """
        check_choice("split", split, tuple(_DEFAULT_SPLIT_SIZES))
        order = np.random.default_rng(_SPLIT_SEED).permutation(np.prod(self.factor_sizes))
        if split == "test":
            combinations = order[:_NUM_TEST_COMBINATIONS]
        else:
            combinations = order[_NUM_TEST_COMBINATIONS:]
        if num_examples is None:
            num_examples = _DEFAULT_SPLIT_SIZES[split]
        num_examples = check_int("num_examples", num_examples, 1, len(combinations))
        chosen = combinations[:num_examples]
        return np.stack(np.unravel_index(chosen, self.factor_sizes), axis=1).astype(np.int64)
