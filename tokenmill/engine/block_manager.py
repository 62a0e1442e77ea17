"""Paged KV-cache bookkeeping: block allocation, reference counts, and hash-chained prefix caching.

A block's hash covers its tokens and, through its parent's hash, every token before it, so equal hashes
mean equal prefixes. A block is registered for sharing only once it is full and its K/V are computed.
Freed blocks keep their contents and hash until they are handed out again (least recently freed first),
so a returning prefix can still hit.
"""

from __future__ import annotations

from collections import OrderedDict

from tokenmill.engine.sequence import Sequence


class Block:
    __slots__ = ("block_id", "hash", "ref_count", "token_ids")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] | None = None


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # eviction order
        self._cached: dict[int, int] = {}  # block hash -> block id

    @property
    def usage(self) -> float:
        """Fraction of blocks held by live sequences."""
        return 1.0 - len(self._free) / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _hash_block(self, seq: Sequence, index: int, parent: int | None) -> tuple[int, tuple[int, ...]]:
        tokens = tuple(seq.token_ids[index * self.block_size : (index + 1) * self.block_size])
        if parent is None and seq.lora is not None:  # a LoRA adapter salts the chain's root: its K/V differ
            parent = hash(("lora", seq.lora.uid))
        return hash((parent, tokens)), tokens

    def match_prefix(self, seq: Sequence) -> None:
        """Point a sequence without blocks at cached blocks of its longest known prefix.

        At least one token is always left to compute, since its logits are needed."""
        assert not seq.block_ids, "prefix matching starts from an empty block table"
        if not self.enable_prefix_caching:
            return
        parent = None
        for index in range((seq.num_tokens - 1) // self.block_size):
            block_hash, tokens = self._hash_block(seq, index, parent)
            block_id = self._cached.get(block_hash)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            self._acquire(block_id)
            seq.block_ids.append(block_id)
            seq.block_hashes.append(block_hash)
            parent = block_hash
        seq.num_computed_tokens = len(seq.block_ids) * self.block_size

    def allocate(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for `num_new_tokens` more computed tokens; False (and no change) if blocks run out."""
        needed = self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - len(seq.block_ids)
        if needed > len(self._free):
            return False
        for _ in range(needed):
            block_id, _ = self._free.popitem(last=False)
            block = self.blocks[block_id]
            if block.hash is not None:
                if self._cached.get(block.hash) == block_id:
                    del self._cached[block.hash]
                block.hash, block.token_ids = None, None
            block.ref_count = 1
            seq.block_ids.append(block_id)
        return True

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's newly full, computed blocks for sharing (only blocks whose tokens are
        all known: a continuation step computes a token the host learns later)."""
        if not self.enable_prefix_caching:
            return
        parent = seq.block_hashes[-1] if seq.block_hashes else None
        full = min(seq.num_computed_tokens, seq.num_tokens) // self.block_size
        for index in range(len(seq.block_hashes), full):
            block_hash, tokens = self._hash_block(seq, index, parent)
            block = self.blocks[seq.block_ids[index]]
            block.hash, block.token_ids = block_hash, tokens
            self._cached.setdefault(block_hash, block.block_id)
            seq.block_hashes.append(block_hash)
            parent = block_hash

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks; its tail blocks become the first candidates for reuse."""
        for block_id in reversed(seq.block_ids):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
                if block.hash is None:
                    self._free.move_to_end(block_id, last=False)
        seq.block_ids.clear()
        seq.block_hashes.clear()
        seq.block_generation += 1
        seq.num_computed_tokens = 0

    def _acquire(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1
