"""Diffusion Policy on your own demonstrations: any zarr replay buffer in the original Diffusion Policy's layout
(`data/<array>` [N, ...] one row per step, `meta/episode_ends`; dpjax/data/replay.py), with the Push-T recipe of
configs/pusht.py (same variant words) as the starting point.

    python -m dpjax.train --config=configs/replay.py --workdir=runs/my_robot \\
        --config.data.path=/data/my_robot.zarr --config.data.obs_keys=state=eef_pos+eef_quat+gripper_qpos
    python -m dpjax.train --config=configs/replay.py:image --workdir=runs/my_robot_image \\
        --config.data.path=/data/my_robot.zarr \\
        --config.data.obs_keys=front=front_rgb,wrist=wrist_rgb,state=eef_pos+gripper_qpos \\
        --config.data.action_key='action[:7]' --config.policy.resnet18.crop_shape='(76, 76)'

config.data.obs_keys names the observation arrays (dpjax/data/obs_keys.py): each [H, W, C] uint8 array is a
camera with its own ResNet-18; low-dim arrays are concatenated per entry. Push-T's horizon (16), observation
history (2), executed actions (8) and epochs suit many manipulation tasks (the paper used them across its
benchmarks); override them on the command line. Training never runs the Push-T simulator here; evaluate on your
robot with `dpjax.sample` or `dpjax.control.RecedingHorizonController`.
"""
import pathlib

from dpjax import config_files


def get_config(arg=None):
  config = config_files.get_config(arg, pathlib.Path(__file__).with_name("pusht.py"))
  config.data.dataset = "replay"
  config.data.path = ""                  # required: --config.data.path=/path/to/demonstrations.zarr
  config.data.obs_keys = ""              # required: --config.data.obs_keys=NAME=ARRAY[+ARRAY...],...
  # Every episode but the validation ones (Push-T's 90 is the paper's protocol for that dataset only).
  config.data.max_train_episodes = 0
  # No simulator scores these runs: log the sampled chunks' error on held-out windows at each validation.
  config.train.val_sample_batches = 1
  return config
