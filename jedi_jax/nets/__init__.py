"""Flax (linen) modules, NHWC: DIAMOND's blocks, the encoder, denoisers, reward/end model, actor-critic."""
