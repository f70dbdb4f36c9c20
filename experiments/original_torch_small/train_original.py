"""Trains the original PyTorch Diffusion Policy (real-stanford/diffusion_policy) on Push-T low-dim, CPU-sized.

The original's own modules do the work: PushTLowdimDataset (its episode split, windows, padding and normaliser),
DiffusionUnetLowdimPolicy.compute_loss, ConditionalUnet1D, its EMAModel, AdamW and its cosine schedule (diffusers'),
in the order of TrainDiffusionUnetLowdimWorkspace.run, with the cfg of its train_diffusion_unet_lowdim_workspace.yaml
and task/pusht_lowdim.yaml. What is replaced: the zarr is read with zarr 3 (the original's
ReplayBuffer.copy_from_path needs zarr 2's API); numba's jit is the identity (the same indices, in Python); the
schedule's length is --steps instead of num_epochs x batches; the training loop stops at --steps; no env runner.
Checkpoints are written in the workspace's payload format, so `python -m dpjax.convert` reads them. README.md says
how to set up the original's code (a checkout of real-stanford/diffusion_policy, diffusers 0.11.1).

Usage: python train_original.py --original=DIR --out=DIR [--steps=10000] [--lr=3e-4] [--seed=42]
                                [--max_train_episodes=90]
"""
import argparse
import copy
import json
import os
import pathlib
import pickle
import random
import sys
import time
import types

os.environ.setdefault("USE_FLAX", "0")
numba = types.ModuleType("numba")
numba.jit = lambda *a, **k: (lambda f: f)
sys.modules["numba"] = numba

import numpy as np
import torch
import zarr
from omegaconf import OmegaConf

from diffusion_policy.common import replay_buffer as rb
from diffusion_policy.dataset.pusht_dataset import PushTLowdimDataset
from diffusion_policy.model.common.lr_scheduler import get_scheduler
from diffusion_policy.model.diffusion.conditional_unet1d import ConditionalUnet1D
from diffusion_policy.model.diffusion.ema_model import EMAModel
from diffusion_policy.policy.diffusion_unet_lowdim_policy import DiffusionUnetLowdimPolicy
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from dpjax.convert import payload

ZARR = os.environ.get("DPJAX_PUSHT_ZARR", str(pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "pusht"
                                              / "pusht_cchi_v7_replay.zarr"))


def replay_buffer_from_zarr3(path, keys):
  group = zarr.open_group(path, mode="r")
  data = {key: np.asarray(group["data"][key][:]) for key in keys}
  meta = {"episode_ends": np.asarray(group["meta"]["episode_ends"][:])}
  return rb.ReplayBuffer(root={"data": data, "meta": meta})


def workspace_cfg(original: pathlib.Path):
  """The cfg hydra composes for train_diffusion_unet_lowdim_workspace with task=pusht_lowdim (unresolved); its
  ${eval:...} values resolve with dpjax.convert's `eval` resolver (arithmetic only, where the workspace uses eval)."""
  payload.register_eval_resolver()
  config_dir = original / "diffusion_policy" / "config"
  cfg = OmegaConf.load(config_dir / "train_diffusion_unet_lowdim_workspace.yaml")
  del cfg["defaults"], cfg["hydra"]
  cfg.task = OmegaConf.load(config_dir / "task" / "pusht_lowdim.yaml")
  return cfg


def arguments(section) -> dict:
  """A cfg section's constructor arguments: interpolations resolved, without its _target_."""
  values = OmegaConf.to_container(section, resolve=True)
  values.pop("_target_")
  return values


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--original", required=True, help="checkout of real-stanford/diffusion_policy")
  parser.add_argument("--out", required=True)
  parser.add_argument("--steps", type=int, default=10000)
  parser.add_argument("--save_every", type=int, default=1000)
  parser.add_argument("--lr", type=float, default=3e-4)
  parser.add_argument("--seed", type=int, default=42)
  parser.add_argument("--max_train_episodes", type=int, default=90)
  parser.add_argument("--down_dims", default="64,128,256")
  parser.add_argument("--step_embed", type=int, default=64)
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  (out / "checkpoints").mkdir(parents=True, exist_ok=True)
  torch.set_num_threads(2)
  torch.manual_seed(args.seed)
  np.random.seed(args.seed)
  random.seed(args.seed)
  down_dims = [int(d) for d in args.down_dims.split(",")]

  cfg = workspace_cfg(pathlib.Path(args.original))
  cfg.policy.model.down_dims = down_dims
  cfg.policy.model.diffusion_step_embed_dim = args.step_embed
  cfg.optimizer.lr = args.lr
  cfg.training.seed = args.seed
  cfg.training.device = "cpu"
  cfg.task.dataset.zarr_path = ZARR
  cfg.task.dataset.max_train_episodes = None if args.max_train_episodes <= 0 else args.max_train_episodes
  cfg.exp_name = "orig_cpu_small"

  # Every object from its cfg section, as the workspace's hydra.utils.instantiate would build it: the checkpoint's
  # cfg (what dpjax.convert reads) is then the run's by construction.
  model = ConditionalUnet1D(**arguments(cfg.policy.model))
  scheduler = DDPMScheduler(**arguments(cfg.policy.noise_scheduler))
  policy_arguments = {k: v for k, v in arguments(cfg.policy).items() if k not in ("model", "noise_scheduler")}
  policy = DiffusionUnetLowdimPolicy(model=model, noise_scheduler=scheduler, **policy_arguments)
  ema_policy = copy.deepcopy(policy)
  optimizer = torch.optim.AdamW(policy.parameters(), **arguments(cfg.optimizer))

  rb.ReplayBuffer.copy_from_path = classmethod(lambda cls, path, keys=None, **kw: replay_buffer_from_zarr3(path, keys))
  dataset = PushTLowdimDataset(**arguments(cfg.task.dataset))
  loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.dataloader.batch_size, shuffle=cfg.dataloader.shuffle,
                                       num_workers=0)
  normalizer = dataset.get_normalizer()
  val_loader = torch.utils.data.DataLoader(dataset.get_validation_dataset(), batch_size=cfg.val_dataloader.batch_size,
                                           shuffle=False)
  policy.set_normalizer(normalizer)
  ema_policy.set_normalizer(normalizer)
  lr_scheduler = get_scheduler(cfg.training.lr_scheduler, optimizer=optimizer,
                               num_warmup_steps=cfg.training.lr_warmup_steps, num_training_steps=args.steps,
                               last_epoch=-1)
  ema = EMAModel(model=ema_policy, **arguments(cfg.ema))
  print(f"train windows {len(dataset)}, batches per epoch {len(loader)}, train episodes "
        f"{int(dataset.train_mask.sum())}, validation windows {len(val_loader.dataset)}", flush=True)

  log = open(out / "log.jsonl", "a")
  step, epoch, losses, start = 0, 0, [], time.time()
  while step < args.steps:
    for batch in loader:
      loss = policy.compute_loss(batch)
      loss.backward()
      optimizer.step()
      optimizer.zero_grad()
      lr_scheduler.step()
      ema.step(policy)
      losses.append(loss.item())
      step += 1
      if step % args.save_every == 0 or step == args.steps:
        val = validation_losses(policy, ema_policy, val_loader)
        record = {"step": step, "epoch": epoch, "train_loss": float(np.mean(losses)),
                  "lr": lr_scheduler.get_last_lr()[0], "wall_s": round(time.time() - start, 1), **val}
        print(json.dumps(record), flush=True)
        log.write(json.dumps(record) + "\n")
        log.flush()
        losses = []
        save(out / "checkpoints" / f"step_{step}.ckpt", cfg, policy, ema_policy, step, epoch)
      if step >= args.steps:
        break
    epoch += 1


def validation_losses(policy, ema_policy, val_loader):
  """Mean loss of the raw and the EMA policy over the original's validation set (every episode not trained on)."""
  result = {}
  with torch.random.fork_rng(), torch.no_grad():
    torch.manual_seed(0)
    for name, p in (("val_loss_raw", policy), ("val_loss_ema", ema_policy)):
      result[name] = float(np.mean([p.compute_loss(b).item() for b in val_loader]))
  return result


def save(path, cfg, policy, ema_policy, step, epoch):
  """The workspace's payload (cfg, state dicts, pickles), written to a temporary name and renamed."""
  payload = {"cfg": cfg, "state_dicts": {"model": policy.state_dict(), "ema_model": ema_policy.state_dict()},
             "pickles": {"_output_dir": pickle.dumps(str(path.parent.parent)), "global_step": pickle.dumps(step),
                         "epoch": pickle.dumps(epoch)}}
  tmp = path.with_suffix(".tmp")
  torch.save(payload, tmp)
  os.replace(tmp, path)


if __name__ == "__main__":
  main()
