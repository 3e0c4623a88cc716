"""The internal pair schema: validation errors name the row and column; swapping is exact."""

import numpy as np
import pytest

from prefkit.errors import InputError
from prefkit.schema import make_pairs, prompt_group, validate_pairs
from prefkit.testing.tiny import swap_pairs


def _pairs(labels=None, ids=("a", "b")):
    return make_pairs(
        ids,
        [["Hi there"], ["  hi   THERE "]],
        [["one"], ["two", "three"]],
        [["uno"], ["dos", "tres"]],
        labels=np.array(labels if labels is not None else [[1, 0, 0], [0, 0, 1]], dtype=float),
    )


def test_valid_pairs_pass_and_groups_ignore_case_and_spacing():
    pairs = validate_pairs(_pairs(), require_labels=True)
    assert pairs["group"].iloc[0] == pairs["group"].iloc[1]
    assert prompt_group(["a", "b"]) != prompt_group(["a b"])


def test_label_not_a_distribution_names_row_and_column():
    with pytest.raises(InputError, match=r"row 2, column 'p_a'"):
        validate_pairs(_pairs(labels=[[1, 0, 0], [1, 1, 0]]))


def test_duplicate_id_names_row():
    with pytest.raises(InputError, match=r"row 2, column 'id': duplicate id 'a'"):
        validate_pairs(_pairs(ids=("a", "a")))


def test_missing_label_when_required():
    with pytest.raises(InputError, match="label missing"):
        validate_pairs(_pairs(labels=[[np.nan] * 3, [0, 1, 0]]), require_labels=True)


def test_swap_exchanges_sides_and_labels_and_is_an_involution():
    pairs = _pairs(labels=[[0.7, 0.2, 0.1], [0, 0, 1]])
    swapped = swap_pairs(pairs)
    assert swapped["response_a"].tolist() == pairs["response_b"].tolist()
    assert swapped["p_a"].tolist() == pairs["p_b"].tolist()
    assert swapped["p_tie"].tolist() == pairs["p_tie"].tolist()
    back = swap_pairs(swapped)
    assert back.equals(pairs)
