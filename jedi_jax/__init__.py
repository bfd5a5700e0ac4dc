"""jedi_jax: JEDI, the latent end-to-end diffusion world model for Atari100k, in JAX/Flax."""

__version__ = "0.1.0"
