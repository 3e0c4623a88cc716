"""Inference from a saved checkpoint; importable without the training code."""
