"""Files: images, atomic writes, model checkpoints, raw stores, outputs."""
