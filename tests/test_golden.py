"""Every policy variant and sampler reproduces its stored outputs on a fixed batch (tests/golden_outputs.py)."""
import numpy as np

from tests import golden_outputs

# float32 on one CPU: the same program gives the same bits; the tolerance only absorbs XLA versions that reorder
# reductions. Actions are pixels of a 512 px workspace.
ACTION_ATOL = 1e-2
LOSS_RTOL = 1e-4


def test_outputs_match_the_golden_file():
  stored = dict(np.load(golden_outputs.GOLDEN))
  current = golden_outputs.outputs()
  assert sorted(current) == sorted(stored), "cases changed: regenerate with python -m tests.golden_outputs"
  for name, value in current.items():
    if name.endswith("/loss"):
      np.testing.assert_allclose(value, stored[name], rtol=LOSS_RTOL, err_msg=name)
    else:
      np.testing.assert_allclose(value, stored[name], rtol=0, atol=ACTION_ATOL, err_msg=name)
