"""The `keras-sdn` command: sample, reconstruct, interpolate, evaluate and export trained models.

Each subcommand works on a run folder, the folder a training example wrote
(`examples/train_sdn_vae.py --output-dir`, or one model's folder of
`examples/train_beta_vae.py`), which holds the trained model as
`model.keras`. See `keras-sdn --help` and docs/cli.md.

Example:

```python
from keras_sdn.cli import main
main(["sample", "runs/sdn_vae", "--count", "16", "--output", "samples.png"])
```
"""

import argparse
import sys

from keras_sdn.cli import evaluate
from keras_sdn.cli import export
from keras_sdn.cli import interpolate
from keras_sdn.cli import reconstruct
from keras_sdn.cli import sample
from keras_sdn.cli.run_folder import CommandError

SUBCOMMANDS = (sample, reconstruct, interpolate, evaluate, export)

DESCRIPTION = """\
Use a model trained by the keras-sdn examples: draw samples, reconstruct or
interpolate your images, evaluate bits/dim on a dataset, or export it for TF
Serving. RUN is the folder a training run wrote, e.g. runs/sdn_vae after

  python examples/train_sdn_vae.py --output-dir runs/sdn_vae

Run `keras-sdn COMMAND --help` for a command's options and examples.
"""


def build_parser():
    """The argument parser of `keras-sdn` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="keras-sdn",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.add_parser(subparsers)
    return parser


def main(argv=None):
    """Runs `keras-sdn` with the arguments `argv` (default: the command line).

    Returns:
        The exit status: 0 on success, 1 when the command failed (a one-line
        message on stderr). Bad arguments exit with status 2, as argparse
        does (`SystemExit`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_sdn.data import DatasetNotAvailableError

    try:
        args.command(args)
    except (CommandError, DatasetNotAvailableError, ValueError, OSError) as error:
        message = " ".join(str(error).split())
        print(
            f"{parser.prog} {args.command.__module__.rsplit('.', 1)[-1]}: error: {message}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    return 0
