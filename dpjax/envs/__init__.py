"""Push-T simulation (needs the `env` extra: gym-pusht, pygame, imageio-ffmpeg).

- `pusht.PushTEnv`: one environment, faithful to the original Diffusion Policy Push-T.
- `vector.PushTVectorEnv`: N environments in lockstep with batched observations.
- `video.write_video`: mp4 (gif fallback) of rendered frames.
- `python -m dpjax.envs.fidelity`: replays demonstrations and reports how closely they are reproduced.

Submodules are not imported here, so `import dpjax.envs` works without the simulator installed.
"""
