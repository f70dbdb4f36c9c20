"""PyTorch's default initialisers for Linear and Conv layers, as flax initialisers.

torch initialises weights with kaiming_uniform(a=sqrt(5)) = uniform(+-1/sqrt(fan_in)), which is
variance_scaling(1/3, "fan_in", "uniform") for flax's kernel layouts, and biases with uniform(+-1/sqrt(fan_in)).
Flax's bias initialisers never see fan_in, so `bias_init` takes it.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def bias_init(fan_in: int):
  """uniform(+-1/sqrt(fan_in)), torch's default bias init for a layer with `fan_in` inputs per output."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init
