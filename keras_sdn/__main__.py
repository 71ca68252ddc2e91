"""`python -m keras_sdn`: the `keras-sdn` command (see keras_sdn.cli)."""

import sys

from keras_sdn.cli import main

if __name__ == "__main__":
    sys.exit(main())
