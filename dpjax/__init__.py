"""dpjax: Diffusion Policy (Chi et al., 2023) in pure JAX.

    policy = dpjax.load_policy("runs/my_run")          # EMA weights by default
    actions = dpjax.sample(policy, obs, jax.random.key(0))  # [B, T, Da], unnormalised
    controller = dpjax.RecedingHorizonController(policy, jax.random.key(0))   # act(obs) -> next action
"""
from dpjax.control import RecedingHorizonController  # noqa: F401
from dpjax.policy import Policy, PolicySpec, sample  # noqa: F401


def load_policy(run_dir, *, use_ema: bool = True, step: int | None = None) -> Policy:
  """Loads the policy saved by `python -m dpjax.train` in `run_dir` (latest checkpoint unless `step`)."""
  from dpjax import checkpoint  # imported lazily: orbax is heavy
  return checkpoint.load_policy(run_dir, use_ema=use_ema, step=step)
