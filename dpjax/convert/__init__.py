r"""Import the original PyTorch Diffusion Policy's `.ckpt` files as dpjax runs (issue 16).

    python -m dpjax.convert --from_torch=epoch=0550-test_mean_score=0.969.ckpt --out=runs/from_torch
    python -m dpjax.rollout --checkpoint=runs/from_torch
    python -m dpjax.train --config=runs/from_torch/config.py --workdir=runs/from_torch    # fine-tune

Supported: low-dim Push-T `DiffusionUnetLowdimPolicy` (ConditionalUnet1D) and `DiffusionTransformerLowdimPolicy`
(TransformerForDiffusion). Carried over: raw and EMA weights, the LinearNormalizer, the architecture, sequence
shape and noise scheduler from the run's cfg, and its optimiser/EMA/batch settings for fine-tuning. Modules:
`payload` reads the file (torch's restricted unpickler), `torch_config` maps the cfg, `params` maps the state dict
(one table of transposes and splits), `run_dir` writes the result.
"""
import dataclasses
import hashlib
import pathlib

import jax
import numpy as np

from dpjax import policy as policy_lib
from dpjax.convert import params as params_lib
from dpjax.convert import payload as payload_lib
from dpjax.convert import run_dir as run_dir_lib
from dpjax.convert import torch_config
from dpjax.convert.payload import UnsupportedCheckpointError  # noqa: F401  (re-exported)

OBS_SHAPES = {"low_dim": (torch_config.OBS_DIM,)}


@dataclasses.dataclass(frozen=True)
class Converted:
  """A checkpoint in dpjax terms: config (configs/pusht.py:<variant> + overrides), spec, raw and EMA parameter
  trees (numpy), normaliser, notes."""
  variant: str
  overrides: dict
  config: object
  spec: policy_lib.PolicySpec
  params: dict
  ema_params: dict
  normalizer: dict
  notes: tuple[str, ...]


def convert_payload(payload: payload_lib.TorchPayload) -> Converted:
  """Maps a read checkpoint onto dpjax's config, spec and parameter trees; no files written."""
  variant, overrides, notes = torch_config.config_overrides(payload.cfg)
  config = torch_config.build_config(variant, overrides)
  spec = policy_lib.spec_from_config(config, OBS_SHAPES, torch_config.ACTION_DIM)
  abstract = jax.eval_shape(lambda key: policy_lib.init_params(spec, key), jax.random.key(0))
  kwargs = dict(spec.denoiser_kwargs)
  trees = {}
  for name in ("model", "ema_model"):
    state_dict = getattr(payload, name)
    if spec.denoiser == "transformer":
      params_lib.check_buffers(state_dict, kwargs)
    trees[name] = params_lib.fill_params(state_dict, spec.denoiser, kwargs.get("num_heads", 1), abstract)
  normalizer = params_lib.normalizer_from_state_dict(payload.ema_model)
  raw_normalizer = params_lib.normalizer_from_state_dict(payload.model)
  if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(normalizer), jax.tree.leaves(raw_normalizer))):
    notes.append("The raw and EMA policies carry different normalisers; the EMA policy's is used.")
  return Converted(variant=variant, overrides=overrides, config=config, spec=spec, params=trees["model"],
                   ema_params=trees["ema_model"], normalizer=normalizer, notes=tuple(notes))


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def convert(ckpt_path, out_dir) -> Converted:
  """Reads `ckpt_path` (an original workspace checkpoint) and writes the dpjax run directory `out_dir`."""
  ckpt_path = pathlib.Path(ckpt_path)
  payload = payload_lib.read_payload(ckpt_path)  # says how to install torch and omegaconf when they are missing
  from omegaconf import OmegaConf
  converted = convert_payload(payload)
  provenance = {
      "source": str(ckpt_path.resolve()), "sha256": _sha256(ckpt_path),
      "torch_policy": torch_config.select(payload.cfg, "policy._target_"),
      "torch_workspace_state": payload_lib.plain_pickles(payload.pickles),
      "parameters": policy_lib.count_params(converted.params), "notes": list(converted.notes),
      "carried_over": "weights (raw and EMA), normaliser, architecture, scheduler, optimiser/EMA/batch settings",
      "not_carried_over": "optimiser moments and step (fine-tuning starts at step 0 with a fresh AdamW state)",
  }
  run_dir_lib.write_run_dir(out_dir, converted.config, converted.spec, converted.params, converted.ema_params,
                            converted.normalizer,
                            config_file=run_dir_lib.config_py(converted.variant, converted.overrides),
                            torch_config_yaml=OmegaConf.to_yaml(payload.cfg),
                            provenance=provenance)
  return converted
