"""The draft model keeps the keys and values it wrote for drafts the target accepted (draft_model._first_to_compute)."""

import torch

from pagedllm_core.spec_decode.draft_model import _block_ids, _first_to_compute

BLOCK_SIZE = 4


def first(computed, start, num_accepted, block_table):
    return _first_to_compute(computed, start, num_accepted, torch.tensor(block_table), BLOCK_SIZE)


def test_a_continuing_sequence_skips_its_new_token_and_the_accepted_drafts_it_wrote():
    # Last step: new token at position 9 (end 10), drafts written at 10 and 11, in blocks 7 (8-11) and 3 (12-15).
    table = [5, 6, 7, 3]
    computed = (10, 2, _block_ids(torch.tensor(table), BLOCK_SIZE, 9, 12))
    assert first(computed, 9, 3, table) == 12  # all accepted: the third draft (never written) on
    assert first(computed, 9, 1, table) == 11  # the second draft rejected: the target's token at 11 on
    assert first(computed, 9, 0, table) == 10  # every draft rejected
    assert first((10, 0, _block_ids(torch.tensor(table), BLOCK_SIZE, 9, 10)), 9, 0, table) == 10  # no drafts


def test_a_lookahead_block_that_came_back_as_another_is_computed_again():
    # The new token at 11 (end 12) in block 7, drafts written at 12-14 in block 3; block 3 is now block 9.
    computed = (12, 3, _block_ids(torch.tensor([5, 6, 7, 3]), BLOCK_SIZE, 11, 15))
    assert first(computed, 11, 3, [5, 6, 7, 9]) == 12
    # The new token's own block changed: everything from the step's first input.
    assert first(computed, 11, 3, [5, 6, 8, 3]) == 11


def test_a_sequence_that_does_not_continue_the_last_step_starts_at_its_first_input():
    table = [5, 6, 7, 3]
    computed = (10, 2, _block_ids(torch.tensor(table), BLOCK_SIZE, 9, 12))
    assert first(None, 9, 0, table) == 9
    assert first(computed, 0, 0, table) == 0  # recomputed from the start after preemption
