"""Turning pairs into model input: rendering under a token budget, batching by length."""
