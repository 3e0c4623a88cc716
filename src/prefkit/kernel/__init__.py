"""Offline Kaggle kernels: building, run-time estimates, the kaggle CLI."""
