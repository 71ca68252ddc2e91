"""The neighbourhood product of the unrolled sweeps, on lines held as rows."""

import tensorflow as tf


def rows_of_lines(lines):
    """The lines of a `(T, batch, A, C)` tensor, each as `(batch * A, C)` rows."""
    return [tf.reshape(line, (-1, lines.shape[-1])) for line in tf.unstack(lines)]


def lines_of_rows(rows, like):
    """The `(T, batch, A, C)` tensor, shaped as `like`, of `rows_of_lines`' lines."""
    shape = tf.concat([tf.shape(like)[:-1], [rows[0].shape[-1]]], 0)
    return tf.reshape(tf.stack(rows), shape)


class NeighbourhoodProducts:
    """The neighbourhood product across lines held as `(batch * A, C)` rows, and its transpose.

    `forward(neighbourhood(line))` is `sum_k line[j + k - 1] @ weights[k]` at
    every position `j` of each of the `batch` lines of `A` positions (zeros
    outside a line), `weights` being the `(3, F, 3F)` taps. It gathers each
    position's three neighbours and takes one matrix product: at the sizes
    the unrolled sweeps run at, several times faster than TensorFlow's CPU
    convolution across a line, which costs about 0.1 ms however small.

    Args:
        lines: Tensor `(T, batch, A, F)`, the swept lines (`A` static).
        weights: Tensor `(3, F, 3F)`, the taps.
    """

    def __init__(self, lines, weights):
        self.positions = lines.shape[2]
        self.size = (lines.shape[1] or tf.shape(lines)[1]) * self.positions
        self.weights = weights
        # The taps stacked as one `(3F, 3F)` matrix, for `forward`'s one product.
        self.stacked_weights = tf.reshape(weights, (-1, weights.shape[-1]))
        self.neighbours = self._rows([-1, 0, 1])

    def _rows(self, offsets, taps=1):
        """Rows to gather from `taps`-times-taller lines (row `taps * j + k` is
        tap k's at position j): for each position `j` and `k` in 0..2, row
        `taps * (j + offsets[k]) + (k if taps > 1 else 0)`, or the zero row
        appended to the rows (`_gather`) where `j + offsets[k]` is outside the
        line."""
        neighbours = tf.range(self.positions)[:, None] + tf.constant(offsets)
        inside = (neighbours >= 0) & (neighbours < self.positions)
        rows = (tf.range(0, self.size, self.positions)[:, None, None] + neighbours) * taps
        if taps > 1:
            rows += tf.range(taps)
        return tf.reshape(tf.where(inside, rows, self.size * taps), (-1,))

    @staticmethod
    def _gather(rows, indices):
        return tf.gather(tf.pad(rows, [[0, 1], [0, 0]]), indices)

    def neighbourhood(self, line):
        """`(batch * A, 3F)`: the three neighbours of every position, in the taps' order."""
        return tf.reshape(self._gather(line, self.neighbours), (-1, 3 * line.shape[-1]))

    def forward(self, neighbourhood):
        """`(batch * A, 3F)`: the product of `neighbourhood`'s rows with the taps."""
        return tf.matmul(neighbourhood, self.stacked_weights)

    def transposed(self):
        """The transposed product, a function of `(batch * A, 3F)` rows."""
        features = self.weights.shape[1]
        # Each tap's product first, `(batch * A, 3 taps x F)`; position j then
        # sums tap k's product at position j - k + 1 (a gather of F-wide rows
        # is several times cheaper than of the 3F-wide gradient).
        taps = tf.reshape(tf.transpose(self.weights, (2, 0, 1)), (-1, 3 * features))
        tap_rows = self._rows([1, 0, -1], taps=3)

        def transposed(gradient):
            tap_products = tf.reshape(tf.matmul(gradient, taps), (-1, features))
            gathered = self._gather(tap_products, tap_rows)
            return tf.reduce_sum(tf.reshape(gathered, (-1, 3, features)), 1)

        return transposed
