"""Models: transformer pair classifiers, tiny test checkpoints, feature models."""
