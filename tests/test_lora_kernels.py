"""The batched LoRA kernels (Triton, run by the interpreter on CPU) against their PyTorch references,
and both against a per-token loop that spells out the definition."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, resource_usage, run_compiled
from tokenmill.kernels import lora_reference
from tokenmill.kernels.lora_mapping import NO_ADAPTER, LoRAMapping, tiles

triton_lora = pytest.importorskip("tokenmill.kernels.triton.lora")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _full_ranks(num_slots: int, shards: int, rank: int) -> torch.Tensor:
    """Every slot's adapter targets every shard at the full (padded) rank."""
    return torch.full((num_slots, shards), rank, dtype=torch.int32, device=DEVICE)


def _mapping(token_slots: list[int], num_slots: int, device: torch.device = DEVICE) -> LoRAMapping:
    slots = np.array(token_slots, dtype=np.int32)
    return LoRAMapping(*(torch.from_numpy(a).to(device) for a in (slots, *tiles(slots, num_slots))))


HOST = torch.device("cpu")  # where the input builder leaves a step's mapping for `LoRAStep.load`


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
    ops = lora_reference if backend == "reference" else triton_lora
    x = torch.randn(len(token_slots), in_features)
    a = torch.randn(num_slots, len(out_shards), rank, in_features) / in_features**0.5
    b = torch.randn(num_slots, sum(out_shards), rank)
    base = torch.randn(len(token_slots), sum(out_shards))
    mapping = _mapping(token_slots, num_slots)
    ranks = _full_ranks(num_slots, len(out_shards), rank)
    h = ops.lora_shrink(x, a, ranks, mapping)
    y = base.clone()
    ops.lora_expand(y, h, b, ranks, out_shards, mapping)
    expected = base.double() + _definition(x, a, b, out_shards, token_slots)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


def test_triton_reads_each_adapters_own_rank_and_skips_shards_it_does_not_target() -> None:
    """Slots padded to rank 8 with garbage past each adapter's rank: slot 0 targets q (rank 8) and v
    (rank 3) only, slot 1 all three shards at rank 5. The result is that of the real ranks alone."""
    torch.manual_seed(2)
    token_slots, out_shards, in_features = [0, 1, NO_ADAPTER, 0] * 5, (40, 24, 24), 200
    ranks = torch.tensor([[8, 0, 3], [5, 5, 5]], dtype=torch.int32)
    a = torch.randn(2, 3, 8, in_features) / in_features**0.5
    b = torch.randn(2, 88, 8)
    bounds = np.cumsum([0, *out_shards])
    real_a, real_b = a.clone(), b.clone()
    for slot in range(2):
        for shard, rank in enumerate(ranks[slot].tolist()):
            a[slot, shard, rank:] = 1e3
            real_a[slot, shard, rank:] = 0
            b[slot, bounds[shard] : bounds[shard + 1], rank:] = 1e3
            real_b[slot, bounds[shard] : bounds[shard + 1], rank:] = 0
    x = torch.randn(len(token_slots), in_features)
    mapping = _mapping(token_slots, 2)
    y = torch.zeros(len(token_slots), 88)
    triton_lora.lora_expand(y, triton_lora.lora_shrink(x, a, ranks, mapping), b, ranks, out_shards, mapping)
    expected = _definition(x, real_a, real_b, out_shards, token_slots)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)


# Triton's interpreter computes bfloat16 dots wrongly (numpy has no bfloat16): bfloat16 runs on a GPU only.
@pytest.mark.parametrize("dtype", [torch.float16, *([torch.bfloat16] if ON_GPU else [])])
def test_triton_matches_reference_in_half_precision(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    token_slots = [2, NO_ADAPTER, 0, 2, 2, 1] * 3
    x = torch.randn(len(token_slots), 64, dtype=dtype)
    a = (torch.randn(3, 2, 16, 64) / 8).to(dtype)
    b = torch.randn(3, 128, 16, dtype=dtype)
    mapping, ranks = _mapping(token_slots, 3), _full_ranks(3, 2, 16)
    y_ref = torch.zeros(len(token_slots), 128, dtype=dtype)
    y_tri = y_ref.clone()
    lora_reference.lora_expand(
        y_ref, lora_reference.lora_shrink(x, a, ranks, mapping), b, ranks, (64, 64), mapping
    )
    triton_lora.lora_expand(y_tri, triton_lora.lora_shrink(x, a, ranks, mapping), b, ranks, (64, 64), mapping)
    torch.testing.assert_close(y_tri.float(), y_ref.float(), rtol=2e-2, atol=2e-2)


def test_split_k_fills_the_gpu_for_decode_and_stays_whole_for_prefill() -> None:
    assert triton_lora.shrink_splits(num_tokens=1, shards=3, in_features=1024) == 16  # one K block each
    assert triton_lora.shrink_splits(num_tokens=1, shards=1, in_features=3072) == 16  # at most 16 parts
    assert triton_lora.shrink_splits(num_tokens=64, shards=3, in_features=1024) == 16
    assert triton_lora.shrink_splits(num_tokens=358, shards=3, in_features=1024) == 3
    assert triton_lora.shrink_splits(num_tokens=8192, shards=2, in_features=1024) == 1
    mapping = _mapping([0, NO_ADAPTER], 1)
    h = triton_lora.lora_shrink(torch.randn(2, 200), torch.randn(1, 3, 8, 200), _full_ranks(1, 3, 8), mapping)
    assert h.shape == (4, 2, 1, 3, 8) and h.dtype == torch.float32  # the expand sums these parts


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
    step.load(_mapping([1, 1, 0], 3, HOST), always=False)
    assert step.runs({0, 2}) and step.runs({1}) and not step.runs({2}) and not step.runs(set())
    assert step.mapping.tile_slots[:4].tolist() == [0, 1, NO_ADAPTER, NO_ADAPTER]
    assert step.mapping.sorted_tokens[:3].tolist() == [2, 0, 1]
    step.load(_mapping([NO_ADAPTER] * 4, 3, HOST), always=False)
    assert not step.runs({0, 1, 2})  # eager: nothing to add, nothing launched
    step.load(_mapping([NO_ADAPTER] * 4, 3, HOST), always=True)
    assert step.runs(set()) and (step.mapping.tile_slots == NO_ADAPTER).all()  # a graph finds no tile


def test_a_step_uploads_its_mapping_in_one_copy() -> None:
    """Steps of 5, then 1, then 7 tokens: each `load` is one copy, after which every array's first
    entries (as many as the step has) are the step's, on the device."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from tokenmill.lora.layers import LoRAStep

    class CountCopies(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.copies = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.copies += func is torch.ops.aten.copy_.default
            return func(*args, **(kwargs or {}))

    step = LoRAStep(max_tokens=8, max_loras=3, device=DEVICE)
    for token_slots in ([1, NO_ADAPTER, 0, 2, 1], [2], [0, 0, 1, NO_ADAPTER, 2, 2, 2]):
        host = _mapping(token_slots, 3, HOST)
        with CountCopies() as counted:
            step.load(host, always=True)
        assert counted.copies == 1
        for name in ("token_slots", "sorted_tokens", "tile_slots", "tile_starts", "tile_ends"):
            want = getattr(host, name)
            assert getattr(step.mapping, name)[: want.numel()].tolist() == want.tolist(), name


def compile_batched_kernels(capability: int) -> None:
    """The shrink and expand in bf16 at Qwen3-0.6B's q|k|v (called in a fresh Python: `run_compiled`), the
    expand in the 128-column tiles it takes up to rank 32, without spills."""
    x, h, ints = (torch.empty(1, dtype=dtype) for dtype in (torch.bfloat16, torch.float32, torch.int32))
    mapping = dict(ranks=ints, sorted_tokens=ints, tile_slots=ints, tile_starts=ints, tile_ends=ints)
    h_strides = dict(stride_h_split=358 * 48, stride_h=48, stride_h_shard=16, h=h)
    compile_for(
        triton_lora._shrink_kernel, capability, x=x, a=x, **mapping, **h_strides, in_features=1024,
        num_shards=3, k_per_split=64, stride_x=1024, stride_a_slot=48 * 1024, stride_a_shard=16 * 1024,
        stride_a_rank=1024, BLOCK_M=16, BLOCK_R=16, BLOCK_K=64, PRECISION="tf32",
    )  # fmt: skip
    cubin = compile_for(
        triton_lora._expand_kernel, capability, y=x, b=x, **mapping, **h_strides, stride_h_slot=48, shard_offsets=ints,
        num_shards=3, splits=3, stride_y=4096, stride_b_slot=4096 * 16, stride_b_row=16,
        BLOCK_M=16, BLOCK_N=128, BLOCK_R=16, BLOCK_S=4, PRECISION="tf32",
    )  # fmt: skip
    usage = resource_usage(cubin)
    assert usage.get("STACK", 0) == 0 and usage.get("LOCAL", 0) == 0, usage


@pytest.mark.slow
@pytest.mark.parametrize("capability", [ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]])
def test_batched_kernels_compile_for_hopper_and_blackwell(capability: int) -> None:
    run_compiled("tests.test_lora_kernels:compile_batched_kernels", capability)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_the_expand_takes_every_slots_shrink_from_the_base_gemms_extra_columns(backend: str) -> None:
    """h [1, tokens, slots, shards, rank] (each token's own slot picked) gives what the shrink's gives."""
    torch.manual_seed(3)
    ops = lora_reference if backend == "reference" else triton_lora
    token_slots, out_shards, rank = [1, NO_ADAPTER, 0, 2, 1] * 4, (40, 24, 24), 8
    x = torch.randn(len(token_slots), 64)
    a = torch.randn(3, 3, rank, 64) / 8
    b = torch.randn(3, 88, rank)
    mapping, ranks = _mapping(token_slots, 3), _full_ranks(3, 3, rank)
    every_slot = (x @ a.flatten(0, 2).T).unflatten(1, (3, 3, rank))[None]
    y_stacked, y_shrunk = torch.zeros(len(token_slots), 88), torch.zeros(len(token_slots), 88)
    ops.lora_expand(y_stacked, every_slot, b, ranks, out_shards, mapping)
    ops.lora_expand(y_shrunk, ops.lora_shrink(x, a, ranks, mapping), b, ranks, out_shards, mapping)
    torch.testing.assert_close(y_stacked, y_shrunk, rtol=1e-5, atol=1e-5)
    assert y_stacked.abs().sum() > 0


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts launches in the interpreter")
@pytest.mark.parametrize("bias", [False, True])
def test_a_plain_projection_shrinks_in_its_base_gemm(bias: bool) -> None:
    """A's slots live under the base weight (no copy of it): one GEMM gives y and every slot's x·Aᵀ,
    and the expand is the only LoRA launch; the result is base + B·A·x per token's slot."""
    from tests.helpers.launch_count import count_launches
    from tokenmill.kernels.ops import select_ops
    from tokenmill.lora.layers import LoRALinear, LoRAStep
    from tokenmill.quantization import QuantLinear, UnquantizedMethod

    torch.manual_seed(4)
    base = QuantLinear(32, (16, 8), bias, UnquantizedMethod())
    torch.nn.init.normal_(base.weight)
    if bias:
        torch.nn.init.normal_(base.bias)
    weight, base_bias = (
        base.weight.detach().clone(),
        None if base.bias is None else base.bias.detach().clone(),
    )
    step = LoRAStep(max_tokens=20, max_loras=2, device=DEVICE)
    wrapper = LoRALinear(base, 2, 4, step, select_ops("triton", DEVICE), torch.float32)
    assert wrapper.stacked is not None and base.weight.data_ptr() == wrapper.stacked[0].data_ptr()
    pairs = [(torch.randn(4, 32), torch.randn(16, 4)), (torch.randn(3, 32), torch.randn(8, 3))]
    wrapper.fill_slot(1, pairs, scaling=0.5)
    token_slots = [1, NO_ADAPTER, 1] * 6
    step.load(_mapping(token_slots, 2, HOST), always=False)
    x = torch.randn(len(token_slots), 32)
    with count_launches() as launches:
        y = wrapper(x)
    assert launches["triton._expand_kernel"] == 1 and launches["triton._shrink_kernel"] == 0
    delta = torch.cat([x @ a.T @ b.T * 0.5 for a, b in pairs], dim=1)
    expected = (
        torch.nn.functional.linear(x, weight, base_bias) + delta * (torch.tensor(token_slots) == 1)[:, None]
    )
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)
