"""Models: transformer backbones with their heads, and packed (varlen) attention."""
