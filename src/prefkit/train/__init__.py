"""Fold training of transformer pair classifiers (accelerate): OOF, test predictions, resume."""
