"""Generative pairwise judges: LLM annotation of pairs and judges trained with GRPO."""
