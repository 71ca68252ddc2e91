"""The scaling of integer image values to [-1, 1], shared by the models and distributions."""


def to_unit_range(values, num_bits):
    """Values in `0 .. 2**num_bits - 1` mapped linearly onto [-1, 1].

    `values * (2 / (2**num_bits - 1)) - 1` in the floating dtype of `values`
    (a TensorFlow or Keras tensor): the factor is rounded once to that dtype,
    so float32 values give the numbers the models are trained with.
    """
    return values * (2.0 / (2**num_bits - 1)) - 1.0
