"""Draws docs/sweeps_chain.png: which work of a sweep sits on the sequential chain.

Run from the repository root: `python docs/sweeps_chain.py`.
"""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

LINES = 4
CHAIN = "#d9534f"
OFF = "#5b8fd6"
ONCE = "#8c8c8c"
OUT = pathlib.Path(__file__).with_name("sweeps_chain.png")


def box(axis, x, y, width, height, text, color, size=8):
    axis.add_patch(
        FancyBboxPatch(
            (x, y),
            width,
            height,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color,
            edgecolor="black",
            linewidth=0.6,
            alpha=0.9,
        )
    )
    axis.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=size)


def arrow(axis, start, end, dashed=False):
    axis.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=9,
            linewidth=0.8,
            linestyle="--" if dashed else "-",
            color="black",
        )
    )


def forward(axis):
    axis.set_title("Forward: line t is corrected from the corrected line t - 1", fontsize=10)
    box(
        axis,
        0.0,
        2.3,
        4 * LINES + 0.6,
        0.6,
        "input projections x W + b_x: all lines, one product",
        ONCE,
    )
    for line in range(LINES):
        x = 0.3 + 4 * line
        box(
            axis,
            x,
            1.0,
            3.2,
            0.9,
            f"line {line}\nnb U (recurrent product)\n+ gate arithmetic",
            CHAIN,
        )
        arrow(axis, (x + 1.6, 2.3), (x + 1.6, 1.9), dashed=True)
        if line:
            arrow(axis, (x - 0.8, 1.45), (x, 1.45))
        box(axis, x + 0.4, 0.0, 2.4, 0.5, "keep r, z, n, nb", OFF)
        arrow(axis, (x + 1.6, 1.0), (x + 1.6, 0.5), dashed=True)


def backward(axis):
    axis.set_title(
        "Backward: g[t - 1] = upstream + transposed(d_rec[t] U^T), in the opposite order",
        fontsize=10,
    )
    for step, line in enumerate(reversed(range(LINES))):
        x = 0.3 + 4 * step
        box(axis, x, 2.2, 3.2, 0.7, f"gate coefficients of line {line}\n(forward values only)", OFF)
        box(axis, x, 1.0, 3.2, 0.9, f"line {line}\nd_rec = g * c_rec\n+ transposed product", CHAIN)
        arrow(axis, (x + 1.6, 2.2), (x + 1.6, 1.9), dashed=True)
        if step:
            arrow(axis, (x - 0.8, 1.45), (x, 1.45))
        box(axis, x, -0.2, 3.2, 0.7, "dL/dx = g z + d_proj W^T\nshares of dW, dU, db", OFF)
        arrow(axis, (x + 1.6, 1.0), (x + 1.6, 0.5), dashed=True)
    box(
        axis,
        0.0,
        -1.2,
        4 * LINES + 0.6,
        0.5,
        "weight and bias gradients: sum of the lines' shares",
        ONCE,
    )


def main():
    figure, axes = plt.subplots(2, 1, figsize=(10, 7.2))
    forward(axes[0])
    backward(axes[1])
    for axis, bottom in zip(axes, (-0.3, -1.4)):
        axis.set_xlim(-0.2, 4 * LINES + 0.8)
        axis.set_ylim(bottom, 3.1)
        axis.axis("off")
    handles = [
        plt.Rectangle((0, 0), 1, 1, facecolor=CHAIN, edgecolor="black"),
        plt.Rectangle((0, 0), 1, 1, facecolor=OFF, edgecolor="black"),
        plt.Rectangle((0, 0), 1, 1, facecolor=ONCE, edgecolor="black"),
    ]
    labels = [
        "on the sequential chain (one line after another)",
        "off the chain, per line (runs beside the chain)",
        "once per sweep, for all lines",
    ]
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main()
