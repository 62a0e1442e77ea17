"""Block manager, no model: allocation, prefix-cache hits with exact block ids, eviction order, ref counts."""

from __future__ import annotations

from tests.helpers.fake_sequences import make_seq
from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.sequence import Sequence

BLOCK = 4


def admit(manager: BlockManager, seq: Sequence) -> None:
    """Match the cached prefix, allocate the rest, and compute it (registering the full blocks)."""
    manager.match_prefix(seq)
    assert manager.allocate(seq, seq.num_uncomputed_tokens)
    seq.num_computed_tokens = seq.num_tokens
    manager.cache_full_blocks(seq)


def ref_counts(manager: BlockManager) -> list[int]:
    return [block.ref_count for block in manager.blocks]


def test_allocation_takes_free_blocks_in_order_and_rounds_up() -> None:
    manager = BlockManager(num_blocks=8, block_size=BLOCK)
    a, b = make_seq(9), make_seq(4)
    assert manager.allocate(a, 9)
    assert manager.allocate(b, 4)
    assert (a.block_ids, b.block_ids) == ([0, 1, 2], [3])
    assert manager.usage == 4 / 8
    a.num_computed_tokens, b.num_computed_tokens = 9, 4  # room is counted past the computed tokens
    assert manager.allocate(b, 1)  # the fifth token needs a second block
    assert b.block_ids == [3, 4]
    assert manager.allocate(a, 3)  # 9 + 3 = 12 tokens still fit three blocks
    assert a.block_ids == [0, 1, 2]


def test_allocation_is_all_or_nothing() -> None:
    manager = BlockManager(num_blocks=3, block_size=BLOCK)
    seq = make_seq(13)
    assert not manager.allocate(seq, 13)  # needs four
    assert seq.block_ids == [] and manager.usage == 0.0


def test_prefix_hit_shares_full_blocks_and_leaves_one_token_to_compute() -> None:
    manager = BlockManager(num_blocks=10, block_size=BLOCK)
    first = make_seq(list(range(1, 11)))  # 10 tokens: blocks 0 and 1 full, block 2 partial
    admit(manager, first)
    assert first.block_ids == [0, 1, 2]

    longer = make_seq([*range(1, 11), 50, 51])  # same 10 tokens, then more
    manager.match_prefix(longer)
    assert longer.block_ids == [0, 1]  # only full, computed blocks are shared
    assert longer.num_computed_tokens == 8
    assert manager.allocate(longer, longer.num_uncomputed_tokens)
    assert longer.block_ids == [0, 1, 3]

    exact = make_seq(list(range(1, 9)))  # exactly two blocks: the last token must be recomputed
    manager.match_prefix(exact)
    assert exact.block_ids == [0] and exact.num_computed_tokens == 4

    other = make_seq([1, 2, 3, 99, 5, 6, 7, 8, 9])  # differs inside the first block
    manager.match_prefix(other)
    assert other.block_ids == [] and other.num_computed_tokens == 0

    assert ref_counts(manager)[:4] == [3, 2, 1, 1]


def test_a_block_hash_covers_the_whole_prefix() -> None:
    manager = BlockManager(num_blocks=10, block_size=BLOCK)
    admit(manager, make_seq([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    same_second_block = make_seq([0, 2, 3, 4, 5, 6, 7, 8, 9])  # block 1's tokens match, its parent not
    manager.match_prefix(same_second_block)
    assert same_second_block.block_ids == []


def test_free_returns_blocks_and_keeps_cached_contents_for_later_hits() -> None:
    manager = BlockManager(num_blocks=6, block_size=BLOCK)
    first = make_seq(list(range(1, 11)))
    admit(manager, first)
    manager.free(first)
    assert first.block_ids == [] and first.num_computed_tokens == 0
    assert manager.usage == 0.0 and ref_counts(manager) == [0] * 6

    again = make_seq(list(range(1, 11)))
    manager.match_prefix(again)
    assert again.block_ids == [0, 1] and again.num_computed_tokens == 8
    assert ref_counts(manager)[:2] == [1, 1]


def test_eviction_order_uncached_first_then_least_recently_freed_tail_first() -> None:
    manager = BlockManager(num_blocks=6, block_size=BLOCK)
    old, new = make_seq(list(range(1, 10))), make_seq(list(range(20, 29)))
    admit(manager, old)  # blocks 0, 1 full (cached), 2 partial
    admit(manager, new)  # blocks 3, 4 full (cached), 5 partial
    manager.free(old)
    manager.free(new)
    # partial blocks (no cached contents) go first, then cached ones: the older sequence's first,
    # each sequence's tail before its head, so the most shareable blocks live longest
    taker = make_seq(24)
    assert manager.allocate(taker, 24)
    assert taker.block_ids == [5, 2, 1, 0, 4, 3]


def test_reusing_a_cached_block_forgets_its_prefix() -> None:
    manager = BlockManager(num_blocks=3, block_size=BLOCK)
    first = make_seq(list(range(1, 10)))
    admit(manager, first)
    manager.free(first)
    taker = make_seq(8)
    assert manager.allocate(taker, 8)
    assert taker.block_ids == [2, 1]  # block 1 (first's second block) was evicted, block 0 survives
    manager.free(taker)
    again = make_seq(list(range(1, 10)))
    manager.match_prefix(again)
    assert again.block_ids == [0] and again.num_computed_tokens == 4


def test_shared_block_is_freed_only_by_its_last_user() -> None:
    manager = BlockManager(num_blocks=4, block_size=BLOCK)
    a, b = make_seq(list(range(1, 10))), make_seq(list(range(1, 10)))
    admit(manager, a)
    admit(manager, b)
    assert (a.block_ids, b.block_ids) == ([0, 1, 2], [0, 1, 3])
    manager.free(a)
    assert ref_counts(manager) == [1, 1, 0, 1]
    manager.free(b)
    assert ref_counts(manager) == [0, 0, 0, 0] and manager.usage == 0.0


def test_without_prefix_caching_nothing_is_shared() -> None:
    manager = BlockManager(num_blocks=6, block_size=BLOCK, enable_prefix_caching=False)
    admit(manager, make_seq(list(range(1, 10))))
    again = make_seq(list(range(1, 10)))
    manager.match_prefix(again)
    assert again.block_ids == [] and again.num_computed_tokens == 0
