"""Prototype: distribution-matching distillation (DMD; Yin et al. 2024, OneDP: Wang et al. 2024) of a DDPM teacher
into a one-step student, to test whether it beats the reflow ceiling (the teacher's deterministic map) on the
CPU-sized network before it becomes a library method.

    python experiments/distill_dmd/prototype.py --teacher=runs/lowdim_cnn_small_ddpm \
      --student=runs/lowdim_cnn_small_student_trailing --out=runs/dmd_b --steps=400 --batch_size=128

Generator: the reflow student's flow network, one Euler step from t = 1 (x = z - v(z, 1)). Each step:
  x = G(z, obs); k ~ U[k_min, k_max]; x_k = q_sample(x, k)
  real / fake x0 estimates from the teacher's epsilon and a "fake" epsilon network (initialised from the teacher,
  trained online by the DDPM loss on the generator's samples);
  generator loss 0.5 ||x - sg(x - g)||^2, g = (x0_fake - x0_real) / mean|x - x0_real| (DMD's normalised KL
  gradient), weighted by --dmd_weight, plus --reg_weight * the one-step regression onto the teacher's (noise,
  chunk) pairs from --pair_sampler (ddim: reflow's deterministic map; ddpm: the stochastic chain from that noise).
Evaluates the generator's EMA on --eval_episodes episodes (seeds from 100000; the first 50 are the test seeds)
every --eval_every steps and writes JSON lines to --out/log.jsonl. Results: README.md beside this file.
"""
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import argparse

from dpjax import checkpoint, config_json, data, policy, rollout
from dpjax import ema as ema_lib
from dpjax.data import device_data, normalizer as normalizer_lib
from dpjax.diffusion import flow, objective

PARSER = argparse.ArgumentParser(description=__doc__.split('\n')[0])
PARSER.add_argument("--teacher", type=str, default="runs/lowdim_cnn_small_ddpm", help="DDPM teacher run")
PARSER.add_argument("--student", type=str, default="runs/lowdim_cnn_small_student_trailing",
                    help="flow student run (generator init)")
PARSER.add_argument("--out", type=str, default="runs/dmd_proto", help="output folder")
PARSER.add_argument("--steps", type=int, default=600, help="generator steps")
PARSER.add_argument("--batch_size", type=int, default=256, help="batch")
PARSER.add_argument("--gen_lr", type=float, default=1e-5, help="generator learning rate")
PARSER.add_argument("--fake_lr", type=float, default=1e-4, help="fake score learning rate")
PARSER.add_argument("--fake_updates", type=int, default=1, help="fake-score updates per generator update (TTUR)")
PARSER.add_argument("--reg_weight", type=float, default=0.0,
                    help="weight of the reflow regression loss (teacher DDIM pairs)")
PARSER.add_argument("--dmd_weight", type=float, default=1.0, help="weight of the DMD term (0: regression only)")
PARSER.add_argument("--pair_sampler", type=str, default="ddim",
                    help="teacher chain for the regression pairs: ddim or ddpm (stochastic)")
PARSER.add_argument("--pair_steps", type=int, default=10, help="teacher chain length for the pairs")
PARSER.add_argument("--pair_spacing", type=str, default="trailing", help="teacher timestep spacing for the pairs")
PARSER.add_argument("--k_min", type=int, default=2, help="smallest diffusion step for the DMD gradient")
PARSER.add_argument("--k_max", type=int, default=98, help="largest diffusion step for the DMD gradient")
PARSER.add_argument("--ema_decay", type=float, default=0.99, help="generator EMA")
PARSER.add_argument("--eval_every", type=int, default=100, help="evaluate every n steps (0: only at the end)")
PARSER.add_argument("--eval_episodes", type=int, default=200,
                    help="episodes per evaluation (the first 50: the test seeds)")
PARSER.add_argument("--seed", type=int, default=0, help="seed")


def main():
  global FLAGS
  FLAGS = PARSER.parse_args()
  out = pathlib.Path(FLAGS.out)
  out.mkdir(parents=True, exist_ok=True)
  teacher = checkpoint.load_policy(FLAGS.teacher)
  student = checkpoint.load_policy(FLAGS.student)
  config = config_json.get_config(pathlib.Path(FLAGS.student) / "config.json")
  bundle = data.build_data(config)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  resident = device_data.put_replicated(bundle.train_source, sharding)
  num_windows = len(bundle.train_source)
  normalizer = teacher.normalizer
  t_net, s_net = policy.PolicyNet(teacher.spec), policy.PolicyNet(student.spec)
  schedule = policy.make_schedule(teacher.spec)
  K = teacher.spec.num_diffusion_steps

  def eps_fn(params, obs_n, x, k):
    features = t_net.apply({"params": params}, obs_n, False, method=policy.PolicyNet.encode)
    return t_net.apply({"params": params}, x, k, features, False, method=policy.PolicyNet.denoise)

  def generate(params, obs_n, z):
    """One Euler step of the student from t = 1 (noise z) to t = 0."""
    features = s_net.apply({"params": params}, obs_n, False, method=policy.PolicyNet.encode)

    def denoise_fn(x, step_input):
      return s_net.apply({"params": params}, x, step_input, features, False, method=policy.PolicyNet.denoise)

    return flow.euler_step(denoise_fn, z, 1.0, 0.0)

  def x0_from_eps(x_k, k, eps):
    a = objective.gather(schedule.sqrt_alphas_cumprod, k, x_k.ndim)
    s = objective.gather(schedule.sqrt_one_minus_alphas_cumprod, k, x_k.ndim)
    return (x_k - s * eps) / a

  gen_opt = optax.adam(FLAGS.gen_lr)
  fake_opt = optax.adam(FLAGS.fake_lr)

  def obs_batch(key, resident):
    ids = jax.random.randint(key, (FLAGS.batch_size,), 0, num_windows)
    batch = device_data.gather(resident, ids)
    obs = {k: v[:, :teacher.spec.n_obs_steps] for k, v in batch["obs"].items()}
    return normalizer_lib.normalize_obs(normalizer, obs)

  def fake_update(fake, fake_state, gen, key, resident):
    obs_key, z_key, k_key, n_key = jax.random.split(key, 4)
    obs_n = obs_batch(obs_key, resident)
    z = jax.random.normal(z_key, (FLAGS.batch_size, teacher.spec.horizon, teacher.spec.action_dim))
    x = jax.lax.stop_gradient(generate(gen, obs_n, z))
    k = jax.random.randint(k_key, (FLAGS.batch_size,), 0, K)
    noise = jax.random.normal(n_key, x.shape)

    def loss(fake):
      return jnp.mean(jnp.square(eps_fn(fake, obs_n, objective.q_sample(schedule, x, noise, k), k) - noise))

    value, grads = jax.value_and_grad(loss)(fake)
    updates, fake_state = fake_opt.update(grads, fake_state, fake)
    return optax.apply_updates(fake, updates), fake_state, value

  @jax.jit
  def step(state, key, teacher_params, resident):
    gen, gen_state, fake, fake_state, ema = state
    fake_keys = jax.random.split(jax.random.fold_in(key, 1), FLAGS.fake_updates)
    fake_loss = jnp.zeros(())
    for fk in fake_keys:
      fake, fake_state, fake_loss = fake_update(fake, fake_state, gen, fk, resident)
    obs_key, z_key, k_key, n_key, reg_key = jax.random.split(key, 5)
    obs_n = obs_batch(obs_key, resident)
    z = jax.random.normal(z_key, (FLAGS.batch_size, teacher.spec.horizon, teacher.spec.action_dim))
    k = jax.random.randint(k_key, (FLAGS.batch_size,), FLAGS.k_min, FLAGS.k_max + 1)
    noise = jax.random.normal(n_key, z.shape)
    if FLAGS.reg_weight:
      pairs_z = jax.random.normal(reg_key, z.shape)
      pair_teacher = teacher.replace(params=teacher_params,
                                     spec=dataclasses.replace(teacher.spec, timestep_spacing=FLAGS.pair_spacing))
      pairs_x = jax.lax.stop_gradient(policy._chain_from_normalized(
          pair_teacher, obs_n, noise=pairs_z, key=jax.random.fold_in(reg_key, 1), method=FLAGS.pair_sampler,
          num_inference_steps=FLAGS.pair_steps))

    def loss(gen):
      dmd = total = 0.0
      if FLAGS.dmd_weight:
        x = generate(gen, obs_n, z)
        x_k = jax.lax.stop_gradient(objective.q_sample(schedule, x, noise, k))
        x0_real = x0_from_eps(x_k, k, eps_fn(teacher_params, obs_n, x_k, k))
        x0_fake = x0_from_eps(x_k, k, eps_fn(fake, obs_n, x_k, k))
        weight = jnp.mean(jnp.abs(jax.lax.stop_gradient(x) - x0_real), axis=(1, 2), keepdims=True)
        g = jnp.nan_to_num((x0_fake - x0_real) / jnp.maximum(weight, 1e-6))
        dmd = 0.5 * jnp.mean(jnp.square(x - jax.lax.stop_gradient(x - g)))
        total = FLAGS.dmd_weight * dmd
      reg = 0.0
      if FLAGS.reg_weight:
        reg = jnp.mean(jnp.square(generate(gen, obs_n, pairs_z) - pairs_x))
        total = total + FLAGS.reg_weight * reg
      return total, (dmd, reg)

    (_, (dmd, reg)), grads = jax.value_and_grad(loss, has_aux=True)(gen)
    updates, gen_state = gen_opt.update(grads, gen_state, gen)
    gen = optax.apply_updates(gen, updates)
    ema = ema_lib.ema_update(ema, gen, FLAGS.ema_decay)
    return (gen, gen_state, fake, fake_state, ema), {"dmd": jnp.asarray(dmd), "reg": jnp.asarray(reg),
                                                     "fake": fake_loss,
                                                     "grad_norm": optax.tree.norm(grads)}

  gen = student.params
  fake = teacher.params
  state = (gen, gen_opt.init(gen), fake, fake_opt.init(fake), gen)
  log = open(out / "log.jsonl", "a", encoding="utf-8")

  def evaluate(params, step_i, tag, samplers=(("euler", 1), ("euler", 2))):
    for method, n in samplers:
      result = rollout.evaluate(student.replace(params=params), method=method, num_inference_steps=n,
                                num_episodes=FLAGS.eval_episodes, show_progress=False)
      scores = np.asarray(result["scores"])
      line = {"step": step_i, "weights": tag, "sampler": f"{method}{n}",
              "mean_score_50": float(scores[:50].mean()), "mean_score": result["mean_score"],
              "episodes": len(scores), "success_rate": result["success_rate"]}
      print(json.dumps(line), flush=True)
      log.write(json.dumps(line) + "\n")
      log.flush()

  print(json.dumps({"flags": vars(FLAGS)}, default=str), file=log, flush=True)
  if FLAGS.eval_every:
    evaluate(state[4], 0, "ema", samplers=(("euler", 1),))
  key = jax.random.key(FLAGS.seed)
  start = time.perf_counter()
  for i in range(1, FLAGS.steps + 1):
    state, m = step(state, jax.random.fold_in(key, i), teacher.params, resident)
    if i % 25 == 0:
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      line = {"step": i, **m, "seconds": time.perf_counter() - start}
      print(json.dumps(line), flush=True)
      log.write(json.dumps(line) + "\n")
      log.flush()
    if (FLAGS.eval_every and i % FLAGS.eval_every == 0) or i == FLAGS.steps:
      evaluate(state[4], i, "ema", samplers=(("euler", 1),) if i < FLAGS.steps else (("euler", 1), ("euler", 2)))


if __name__ == "__main__":
  main()
