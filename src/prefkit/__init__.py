"""prefkit: pairwise preference modelling, from raw files to a validated submission."""

__version__ = "0.1.0"
