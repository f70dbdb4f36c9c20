"""Push-T experiments: one config family, variants picked by config string.

    python -m dpjax.train --config=configs/pusht.py                  # low-dim CNN (paper default)
    python -m dpjax.train --config=configs/pusht.py:image            # image CNN
    python -m dpjax.train --config=configs/pusht.py:transformer      # low-dim transformer
    python -m dpjax.train --config=configs/pusht.py:image,transformer
    python -m dpjax.train --config=configs/pusht.py:small            # CPU-sized low-dim CNN (~14 min on 2 idle cores)
    python -m dpjax.train --config=configs/pusht.py:small,transformer   # CPU-sized transformer (~35 min)
    python -m dpjax.train --config=configs/pusht.py:flow             # flow matching instead of DDPM
    python -m dpjax.train --config=configs/pusht.py:flow --config.distill.teacher=runs/TEACHER   # reflow student
    python -m dpjax.train --config=configs/pusht.py:smoke            # tiny, for tests

Variant words are comma separated and combine; `image_transformer` is accepted as a synonym of
`image,transformer`. Any field can be overridden on the command line: --config.train.num_steps=1000.
Values derived from others (padding, condition width, observation shapes) are computed in code.
"""
import ml_collections

VARIANT_WORDS = ("lowdim", "image", "cnn", "transformer", "flow", "small", "smoke")


def _parse_variant(arg):
  words = [w.strip() for w in (arg or "").replace("image_transformer", "image,transformer").split(",")]
  words = [w for w in words if w]
  unknown = [w for w in words if w not in VARIANT_WORDS]
  if unknown:
    raise ValueError(f"Unknown config variant(s) {unknown}; choose from {VARIANT_WORDS}, "
                     "e.g. configs/pusht.py:image,transformer")
  return set(words)


def get_config(arg=None):
  variant = _parse_variant(arg)
  image = "image" in variant
  transformer = "transformer" in variant

  config = ml_collections.ConfigDict()
  config.variant = ",".join(sorted(variant)) or "lowdim"
  config.seed = 42

  # --- data -------------------------------------------------------------------------------------
  config.data = ml_collections.ConfigDict()
  # "pusht": the Push-T demonstrations; "replay": your own replay buffer (configs/replay.py), its arrays named below.
  config.data.dataset = "pusht"
  config.data.source = "zarr"              # "zarr" or "tfds"
  config.data.path = ""                    # empty: $DPJAX_PUSHT_ZARR, then ../shared/data/pusht/...
  config.data.obs_type = "image" if image else "lowdim"
  # Which data/ arrays make the observations, "NAME=ARRAY[+ARRAY...],...", slices allowed ("state[:2]"); arrays of
  # per-step shape [H, W, C] are cameras (dpjax/data/obs_keys.py). Empty: Push-T's, by obs_type.
  config.data.obs_keys = ""
  config.data.action_key = ""              # the action array ("action[:7]", "a+b"); empty: "action"
  config.data.val_ratio = 0.02
  # The paper trains on 90 of Push-T's 206 demonstrations; 0 takes every non-validation one (202): off the paper's
  # protocol, it lifted a 10,000-step CPU-sized U-Net from 0.823 to 0.947 on 200 episodes
  # (experiments/small_precision_lr/).
  config.data.max_train_episodes = 90
  config.data.split_seed = 42
  config.data.normalizer_fit = "all"       # "all" episodes (paper) or "train" episodes only
  config.data.prefetch = 2                  # batches prefetched by the grain pipeline
  config.data.worker_count = 0              # grain worker processes (0: in-process)
  # "device": the demonstrations live on the accelerators and each step gathers its windows there (grain sends
  # window ids); "host": grain gathers batches on the host; "auto": device when a copy takes <= 1/4 of a device.
  config.data.placement = "auto"
  # TFDS/RLDS source only (source="tfds"; path = the dataset's version folder, e.g. .../pusht/1.0.0).
  config.data.tfds_name = ""
  config.data.tfds_split = "train"
  config.data.tfds_key_map = ""   # replay key -> step path, e.g. "img=observation/rgb,state=observation/state"

  # --- sequence shape (paper's Push-T) ---------------------------------------------------------
  # The released image transformer config predicts 10 steps; every other Push-T variant 16.
  config.horizon = 10 if (image and transformer) else 16
  config.n_obs_steps = 2
  config.n_action_steps = 8

  # --- policy: observation encoder + denoiser, picked by name ----------------------------------
  config.policy = ml_collections.ConfigDict()
  config.policy.encoder = "resnet18" if image else "lowdim"
  config.policy.denoiser = "transformer" if transformer else "unet1d"
  # Matmuls and convolutions run in this dtype; weights, optimiser state, EMA, norm statistics, softmaxes and the
  # loss stay float32. "auto": float32 on CPU, bfloat16 on GPU/TPU (BUILD_NOTES.md, "Mixed precision").
  # "bfloat16_matmuls": only the denoiser's matmul operands in bfloat16, everything else float32: the faster choice
  # on a CPU with bfloat16 units (AMX, AVX512-BF16; `dpjax/nets/precision.py`).
  config.policy.compute_dtype = "auto"
  # U-Net only: the sampling chain runs each conv block's norm, Mish, FiLM and residual as one Pallas kernel on
  # CUDA at small batch (4 GPU kernels per block -> 2; `dpjax/nets/conv_block_kernel.py`). Inference only, so it
  # can be switched per evaluation (`python -m dpjax.rollout --fused_sampling`). Off: on an H100 it saved 42 of 112
  # kernels per call and no time (DDPM-100 at batch 1: 24.5 vs 24.2 ms; BUILD_NOTES.md, "Session 18").
  config.policy.fused_sampling = False

  config.policy.unet1d = ml_collections.ConfigDict()
  config.policy.unet1d.down_dims = (512, 1024, 2048) if image else (256, 512, 1024)
  config.policy.unet1d.kernel_size = 5
  config.policy.unet1d.n_groups = 8
  config.policy.unet1d.step_embed_dim = 128 if image else 256

  config.policy.transformer = ml_collections.ConfigDict()
  config.policy.transformer.num_layers = 8
  config.policy.transformer.num_heads = 4
  config.policy.transformer.width = 256
  config.policy.transformer.embed_dropout = 0.0
  config.policy.transformer.attn_dropout = 0.3 if image else 0.01
  config.policy.transformer.causal_attn = True

  config.policy.resnet18 = ml_collections.ConfigDict()
  config.policy.resnet18.num_keypoints = 32
  config.policy.resnet18.feature_dim = 64
  config.policy.resnet18.crop_shape = (84, 84)
  config.policy.resnet18.width = 64         # channels of the stem; 64 is ResNet-18

  # --- diffusion ---------------------------------------------------------------------------------
  config.diffusion = ml_collections.ConfigDict()
  # "ddpm": predict the noise of a K-step DDPM (the paper); "flow": flow matching, predict the velocity of the
  # linear noise-to-data path (BUILD_NOTES.md, "Flow matching and distillation").
  config.diffusion.objective = "flow" if "flow" in variant else "ddpm"
  config.diffusion.num_diffusion_steps = 100              # K, the DDPM's diffusion steps (unused by "flow")
  config.diffusion.beta_schedule = "squaredcos_cap_v2"   # or "linear"
  config.diffusion.beta_start = 1e-4                      # linear schedule only
  config.diffusion.beta_end = 2e-2                        # linear schedule only
  config.diffusion.prediction_type = "epsilon"            # or "sample"
  config.diffusion.clip_sample = True
  # Which training steps a DDPM/DDIM chain of fewer than K steps visits: "leading" (the original's, diffusers'
  # default) or "trailing" (starts from pure noise; better at few steps: experiments/frontier/README.md).
  config.diffusion.timestep_spacing = "leading"
  # How flow matching draws its training times: "uniform", "logit_normal" (SD3) or "beta" (pi0); see flow.py.
  config.diffusion.flow_time_distribution = "uniform"
  # ddpm/ddim for the ddpm objective; euler/heun (the ODE) or ancestral (stochastic) for flow; a chunk costs
  # num_inference_steps network calls (heun 2x).
  config.diffusion.sampler = "euler" if "flow" in variant else "ddpm"
  config.diffusion.num_inference_steps = 10 if "flow" in variant else 100

  # --- distillation (reflow): a flow student learns a trained teacher's noise -> chunk map -----------------------
  config.distill = ml_collections.ConfigDict()
  config.distill.teacher = ""              # the teacher's run directory; empty: no distillation
  config.distill.teacher_step = 0          # teacher checkpoint step; 0: its latest
  config.distill.teacher_sampler = ""      # deterministic: ddim (a ddpm teacher) or euler/heun; empty: ddim / euler
  config.distill.teacher_steps = 10        # the teacher's chain length per training batch (its cost per step)
  config.distill.teacher_timestep_spacing = ""   # a ddim teacher's: leading or trailing; empty: the teacher's own
  config.distill.fraction_at_noise = 0.5   # share of each batch trained at t = 1, where one-step sampling starts
  config.distill.obs_noise = 0.0           # std of a shift of each normalised low-dim obs history (teacher and student)
  config.distill.visited_obs = ""          # on-policy: visited_obs.npz files (rollout --record_obs), comma-separated
  config.distill.visited_fraction = 0.5    # share of each batch whose observations come from visited_obs
  config.distill.init_from_teacher = True  # start from the teacher's EMA weights when the networks match

  # --- optimisation ------------------------------------------------------------------------------
  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-4
  config.optim.b1 = 0.9 if transformer else 0.95
  config.optim.b2 = 0.95 if transformer else 0.999
  config.optim.eps = 1e-8
  # Transformer kernels: 1e-1 low-dim (lowdim pusht workspace), 1e-3 image (hybrid workspace's
  # transformer_weight_decay); U-Net and encoder weights: 1e-6.
  config.optim.weight_decay = (1e-3 if image else 1e-1) if transformer else 1e-6
  config.optim.encoder_weight_decay = 1e-6                # vision encoder under the transformer
  config.optim.warmup_steps = 1000 if transformer else 500
  config.optim.schedule = "cosine"                        # or "constant"
  config.optim.grad_clip_norm = 0.0                       # 0 disables
  # Adam's moments as one vector each (True) or per parameter array (False): same numbers, ~100 fewer GPU kernels
  # per step but a second pass over the moments. None: chosen per network and backend (optim.resolve_flat_moments:
  # per array for the image U-Net and for transformers on a TPU, else flat); a run records what it used.
  config.optim.flat_moments = ml_collections.config_dict.placeholder(bool)

  config.ema = ml_collections.ConfigDict()
  config.ema.power = 0.75
  config.ema.inv_gamma = 1.0
  config.ema.min_decay = 0.0
  config.ema.max_decay = 0.9999
  config.ema.update_after_step = 0

  # --- training loop -----------------------------------------------------------------------------
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 64 if image else 256        # global batch, split over all devices
  # Optimiser steps per jitted call (a lax.scan); 0 = auto: 1 on CPU, 10 on GPU/TPU.
  config.train.steps_per_dispatch = 0
  # True: the EMA weights and the optimiser state are split over the devices (ZeRO stage 1 plus the EMA): each device
  # holds and updates 1/n of them, and the updated weights are all-gathered at every step. False: every device updates
  # every weight. No effect on one device; a run may resume with the other setting (BUILD_NOTES.md, "Session 30").
  config.train.shard_ema_and_moments = False
  # The original's epochs: 5000 (low-dim U-Net), 8000 (low-dim transformer), 3050 (image U-Net; assumed the
  # same for the image transformer). An epoch is every window of the training episodes once, ceil(windows /
  # batch_size) steps, counted on the actual training set at start-up (10,726 windows of the 90 Push-T training
  # episodes at horizon 16: 42 steps of 256), so another horizon, episode count or batch size keeps the epochs.
  config.train.num_epochs = 3050 if image else 8000 if transformer else 5000
  config.train.num_steps = 0                                # > 0: this many optimiser steps instead of num_epochs
  config.train.log_every = 50
  config.train.val_every = 1000
  config.train.val_batches = 8
  # At each validation the EMA policy also samples chunks for this many of those batches (its own sampler) and logs
  # their mean squared error against the demonstrations, normalised units (`val/action_mse_ema`; 0 disables).
  config.train.val_sample_batches = 0
  config.train.checkpoint_every = 1000
  config.train.checkpoint_every_minutes = 10.0            # also by wall-clock time (0 disables): a kill loses less
  config.train.keep_checkpoints = 3                        # the newest ones (what a resume needs)
  config.train.rollout_every = 0                           # simulator rollouts during training; 0 disables
  config.train.rollout_episodes = 50
  # > 0 (needs rollout_every): also save a checkpoint at every rollout and keep this many with the best score (the
  # original keeps its top 5); `python -m dpjax.rollout --step=best` evaluates the best one. Scores come from the
  # rollout seeds below: to keep the test seeds unseen, select on others (e.g. --config.rollout.seed_start=200000).
  config.train.keep_best_checkpoints = 0

  # --- rollout evaluation (in-training rollouts; `python -m dpjax.rollout` has its own flags) -----
  config.rollout = ml_collections.ConfigDict()
  config.rollout.max_steps = 300
  config.rollout.seed_start = 100000
  # True: the rollout at step N samples with policy seed N, its own noise, as the original's in-training rollouts drew
  # theirs (the paper's best is the best of such draws: experiments/sampling_spread/); False: seed 0 at every
  # rollout, the same noise, which pairs the rollouts and so ranks checkpoints (keep_best_checkpoints) more surely.
  config.rollout.policy_seed_per_checkpoint = False

  if "small" in variant:
    # Every network sized for a laptop CPU as a recorded run: the U-Net (experiments/pusht_lowdim_cnn_small, 0.918 in
    # 46 min on 2 cores; `make train`'s policy), the transformer at 4 layers x 128 (experiments/transformer_small_lr:
    # best 0.760 in 33 min at learning rate 2e-3; 0.663 at 1e-3, 0.622 at 4e-3) and ResNet-18 at half width
    # (pusht_image_cnn_small, pusht_image_transformer_small: both at 3e-4, the image transformer unmeasured at more).
    config.policy.unet1d.down_dims = (64, 128, 256)
    config.policy.unet1d.step_embed_dim = 64
    config.policy.transformer.num_layers = 4
    config.policy.transformer.width = 128
    config.policy.resnet18.width = 32
    config.optim.learning_rate = 2e-3 if (transformer and not image) else 3e-4
    config.optim.warmup_steps = 500
    config.train.num_steps = 4000
    config.train.checkpoint_every = 500
    config.train.val_every = 500

  if "smoke" in variant:
    config.policy.unet1d.down_dims = (16, 32)
    config.policy.unet1d.step_embed_dim = 16
    config.policy.unet1d.n_groups = 4
    config.policy.transformer.num_layers = 2
    config.policy.transformer.width = 32
    config.policy.transformer.num_heads = 2
    config.policy.resnet18.width = 16
    config.policy.resnet18.num_keypoints = 4
    config.policy.resnet18.feature_dim = 8
    config.diffusion.num_diffusion_steps = 10
    config.diffusion.num_inference_steps = 10
    config.optim.warmup_steps = 2
    config.train.batch_size = 8
    config.train.num_steps = 4
    config.train.log_every = 1
    config.train.val_every = 2
    config.train.val_batches = 1
    config.train.checkpoint_every = 2
  return config
