"""Pair features for the feature model: hand-crafted statistics plus cached feature files."""

from prefkit.features.extra import join_extra_features, read_feature_file
from prefkit.features.pair_features import SIDE_FEATURES, pair_features, swap_features

__all__ = ["SIDE_FEATURES", "join_extra_features", "pair_features", "read_feature_file", "swap_features"]
