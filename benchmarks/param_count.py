"""The paper's parameter comparison (Appendix A.3, Table 5) for F = 200.

Counts the trainable parameters of 3x3, 5x5 and 7x7 convolutions with F input
and output channels against the correction stage of a spatial dependency
layer with 1, 2 and 4 directions, and against its project stages (1x1
project-in and project-out), by building the Keras layers and checking each
count against its formula.

    python benchmarks/param_count.py [--features 200] [--output benchmarks/param_count.json]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from common import write_json  # noqa: E402
from keras_sdn import SpatialDependency  # noqa: E402


def built_count(layer, channels):
    layer.build((None, None, None, channels))
    return layer.count_params()


def rows(features):
    table = []
    for size in (3, 5, 7):
        count = built_count(keras.layers.Conv2D(features, size), features)
        assert count == size * size * features * features + features
        table.append({"layer": f"CNN {size}x{size}", "parameters": count})
    for directions in (1, 2, 4):
        sdn = SpatialDependency(features, num_features=features, directions=directions)
        total = built_count(sdn, features)
        project = sdn.project_in.count_params() + sdn.project_out.count_params()
        correction = total - project
        assert correction == directions * (12 * features**2 + 6 * features)
        table.append({"layer": f"SDN {directions} dir (correction)", "parameters": correction})
        table.append({"layer": f"SDN {directions} dir (whole layer)", "parameters": total})
    table.append({"layer": "SDN project phase (in + out)", "parameters": project})
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--output", default="benchmarks/param_count.json")
    args = parser.parse_args()
    table = rows(args.features)
    print(f"F = {args.features}")
    print(f"{'layer':32s} {'parameters':>12s}")
    for row in table:
        print(f"{row['layer']:32s} {row['parameters']:>12,d}")
    write_json(args.output, {"features": args.features, "rows": table})


if __name__ == "__main__":
    main()
