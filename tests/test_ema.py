import jax.numpy as jnp
import numpy as np

from dpjax import ema


def _decay(step, **kw):
  args = dict(power=0.75, inv_gamma=1.0, min_decay=0.0, max_decay=0.9999, update_after_step=0)
  args.update(kw)
  return float(ema.ema_decay(step, **args))


def test_decay_matches_original_formula():
  # As the original EMAModel: the first two updates copy the weights; update k then uses
  # 1 - (1 + s)^-0.75 with s = k - 2 (its counter is read before it is incremented, then 1 is subtracted).
  assert _decay(1) == 0.0 and _decay(2) == 0.0
  np.testing.assert_allclose(_decay(3), 1 - 2 ** -0.75, rtol=1e-6)  # 0.405
  for step in (10, 1000):
    np.testing.assert_allclose(_decay(step), 1 - (1 + step - 2) ** -0.75, rtol=1e-6)
  assert _decay(10**9) == np.float32(0.9999)
  assert _decay(12, update_after_step=10) == 0.0 and _decay(13, update_after_step=10) > 0.0
  np.testing.assert_allclose(_decay(4, min_decay=0.6), 0.6)
  np.testing.assert_allclose(_decay(4, min_decay=0.5), 1 - 3 ** -0.75, rtol=1e-6)


def test_update_interpolates_leaves():
  ema_params = {"w": jnp.zeros(3)}
  params = {"w": jnp.ones(3)}
  np.testing.assert_allclose(ema.ema_update(ema_params, params, jnp.float32(0.9))["w"], 0.1 * np.ones(3), rtol=1e-6)
  np.testing.assert_allclose(ema.ema_update(ema_params, params, jnp.float32(0.0))["w"], np.ones(3))
