"""Diffusion core: noise schedules, training objective, DDPM/DDIM steps and the scanned sampler."""
