"""The layer tests that run on every Keras backend.

Pytest collects them in the suite's own process (the TensorFlow backend), and
`tests/test_backends.py` runs them again under JAX and PyTorch, one
subprocess per backend: Keras fixes its backend when it is imported.
"""

import os
import pathlib
import sys

# sdn_reference.py, the float64 NumPy reference, sits one directory up.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

# The exchange of saved models between backends needs the files that
# tests/test_backends.py saves under TensorFlow before it starts the subprocess.
if "KERAS_SDN_EXCHANGE_DIR" not in os.environ:
    collect_ignore = ["test_spawned_backend.py"]
