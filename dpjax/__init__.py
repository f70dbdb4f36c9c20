"""dpjax: Diffusion Policy in pure JAX."""
