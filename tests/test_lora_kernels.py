"""The batched LoRA kernels (Triton, run by the interpreter on CPU) against their PyTorch references,
and both against a per-token loop that spells out the definition."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tokenmill.kernels import reference
from tokenmill.kernels.lora_mapping import NO_ADAPTER, LoRAMapping, tiles

triton_lora = pytest.importorskip("tokenmill.kernels.triton.lora")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _mapping(token_slots: list[int], num_slots: int) -> LoRAMapping:
    slots = np.array(token_slots, dtype=np.int32)
    return LoRAMapping(*(torch.from_numpy(a).to(DEVICE) for a in (slots, *tiles(slots, num_slots))))


def _definition(x, a, b, out_shards, token_slots):
    """y_t = Σ_s B[slot, shard s] · A[slot, s] · x_t, one token at a time."""
    out = torch.zeros(x.shape[0], sum(out_shards), dtype=torch.float64, device=x.device)
    bounds = np.cumsum([0, *out_shards])
    for t, slot in enumerate(token_slots):
        if slot == NO_ADAPTER:
            continue
        for s in range(len(out_shards)):
            h = a[slot, s].double() @ x[t].double()
            out[t, bounds[s] : bounds[s + 1]] = b[slot, bounds[s] : bounds[s + 1]].double() @ h
    return out


CASES = [
    # (token slots, slots, in, out shards, rank)
    ([0, 1, NO_ADAPTER, 1, 0, 2], 3, 48, (40, 24, 24), 8),  # decode-like: every token its own adapter
    ([1] * 20 + [NO_ADAPTER] * 5 + [0] * 19, 2, 64, (96,), 16),  # prefill segments longer than a tile
    ([NO_ADAPTER] * 7, 2, 32, (32, 32), 4),  # no adapter at all: nothing changes
    ([0, 0, 1], 4, 80, (72, 72), 20),  # rank that is not a power of two, unused slots
    ([1, NO_ADAPTER], 2, 200, (32, 16, 16), 8),  # split-K shrink: 4 parts, the last one partial
    ([0, 0, NO_ADAPTER, 1], 2, 150, (40,), 8),  # 3 parts: the expand masks the fourth it could load
]


@pytest.mark.parametrize(("token_slots", "num_slots", "in_features", "out_shards", "rank"), CASES)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_shrink_then_expand_adds_each_tokens_adapter(
    backend: str, token_slots: list[int], num_slots: int, in_features: int, out_shards: tuple, rank: int
) -> None:
    torch.manual_seed(0)
    ops = reference if backend == "reference" else triton_lora
    x = torch.randn(len(token_slots), in_features)
    a = torch.randn(num_slots, len(out_shards), rank, in_features) / in_features**0.5
    b = torch.randn(num_slots, sum(out_shards), rank)
    base = torch.randn(len(token_slots), sum(out_shards))
    mapping = _mapping(token_slots, num_slots)
    h = ops.lora_shrink(x, a, mapping)
    y = base.clone()
    ops.lora_expand(y, h, b, out_shards, mapping)
    expected = base.double() + _definition(x, a, b, out_shards, token_slots)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


# Triton's interpreter computes bfloat16 dots wrongly (numpy has no bfloat16): bfloat16 runs on a GPU only.
@pytest.mark.parametrize("dtype", [torch.float16, *([torch.bfloat16] if ON_GPU else [])])
def test_triton_matches_reference_in_half_precision(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    token_slots = [2, NO_ADAPTER, 0, 2, 2, 1] * 3
    x = torch.randn(len(token_slots), 64, dtype=dtype)
    a = (torch.randn(3, 2, 16, 64) / 8).to(dtype)
    b = torch.randn(3, 128, 16, dtype=dtype)
    mapping = _mapping(token_slots, 3)
    y_ref = torch.zeros(len(token_slots), 128, dtype=dtype)
    y_tri = y_ref.clone()
    reference.lora_expand(y_ref, reference.lora_shrink(x, a, mapping), b, (64, 64), mapping)
    triton_lora.lora_expand(y_tri, triton_lora.lora_shrink(x, a, mapping), b, (64, 64), mapping)
    torch.testing.assert_close(y_tri.float(), y_ref.float(), rtol=2e-2, atol=2e-2)


def test_split_k_fills_the_gpu_for_decode_and_stays_whole_for_prefill() -> None:
    assert triton_lora.shrink_splits(num_tokens=1, shards=3, in_features=1024) == 16  # one K block each
    assert triton_lora.shrink_splits(num_tokens=1, shards=1, in_features=3072) == 16  # at most 16 parts
    assert triton_lora.shrink_splits(num_tokens=64, shards=3, in_features=1024) == 16
    assert triton_lora.shrink_splits(num_tokens=358, shards=3, in_features=1024) == 3
    assert triton_lora.shrink_splits(num_tokens=8192, shards=2, in_features=1024) == 1
    mapping = _mapping([0, NO_ADAPTER], 1)
    h = triton_lora.lora_shrink(torch.randn(2, 200), torch.randn(1, 3, 8, 200), mapping)
    assert h.shape == (4, 2, 3, 8) and h.dtype == torch.float32  # the expand sums these parts


def test_tiles_group_tokens_by_slot_at_most_a_tile_each() -> None:
    slots = np.array([1, -1, 0, 1, -1, 0, 1] + [2] * 17, dtype=np.int32)
    order, tile_slots, starts, ends = tiles(slots, 3)
    assert len(tile_slots) == 2 + 3  # ceil(24 / 16) + one partial tile per slot
    used = tile_slots >= 0
    assert tile_slots[used].tolist() == [0, 1, 2, 2]
    covered = [order[s:e].tolist() for s, e in zip(starts[used], ends[used])]
    assert covered == [[2, 5], [0, 3, 6], list(range(7, 23)), [23]]


def test_a_step_runs_the_lora_ops_of_its_adapters_targets_unless_a_graph_replays() -> None:
    from tokenmill.lora.layers import LoRAStep

    step = LoRAStep(max_tokens=8, max_loras=3, device=DEVICE)
    step.load(_mapping([1, 1, 0], 3), always=False)
    assert step.runs({0, 2}) and step.runs({1}) and not step.runs({2}) and not step.runs(set())
    assert step.mapping.tile_slots[:4].tolist() == [0, 1, NO_ADAPTER, NO_ADAPTER]
    assert step.mapping.sorted_tokens[:3].tolist() == [2, 0, 1]
    step.load(_mapping([NO_ADAPTER] * 4, 3), always=False)
    assert not step.runs({0, 1, 2})  # eager: nothing to add, nothing launched
    step.load(_mapping([NO_ADAPTER] * 4, 3), always=True)
    assert step.runs(set()) and (step.mapping.tile_slots == NO_ADAPTER).all()  # a graph finds no tile
