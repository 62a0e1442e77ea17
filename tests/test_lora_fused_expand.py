"""The LoRA expand of gate|up added by the SiLU-and-mul that reads its output, and o's and down's by the
residual RMSNorm that reads theirs (`LoRAExpand`), against the same op on y with the expand run first
(`lora_reference.expanded`), and the reference against a per-token loop that spells out the delta."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, resource_usage, run_compiled
from tokenmill.kernels import lora_reference, reference
from tokenmill.kernels.lora_mapping import NO_ADAPTER, ROW_DELTA_MAX_RANK, LoRAExpand, LoRAMapping, tiles

triton_activation = pytest.importorskip("tokenmill.kernels.triton.activation")
triton_norm = pytest.importorskip("tokenmill.kernels.triton.norm")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
# Triton's interpreter computes bfloat16 wrongly (numpy has no bfloat16): bfloat16 runs on a GPU only.
DTYPES = [torch.float32, *([torch.bfloat16] if ON_GPU else [])]


@pytest.fixture(autouse=True)
def _on_device():
    with torch.device(DEVICE):
        yield


def _mapping(token_slots: list[int], num_slots: int, device: torch.device = DEVICE) -> LoRAMapping:
    slots = np.array(token_slots, dtype=np.int32)
    return LoRAMapping(*(torch.from_numpy(a).to(device) for a in (slots, *tiles(slots, num_slots))))


CASES = {
    # name: (token slots, slots, ranks [slots][shards] (0: a shard the adapter skips), max rank)
    "decode mix, tiles crossing slots": ([0, 1, NO_ADAPTER, 1, 0, 2] * 7, 3, [[8, 5], [8, 8], [3, 0]], 8),
    "runs longer than a tile": ([1] * 20 + [NO_ADAPTER] * 5 + [0] * 19, 2, [[16, 16], [16, 16]], 16),
    "no adapter at all": ([NO_ADAPTER] * 7, 2, [[4, 4], [4, 4]], 4),
    "one token": ([1], 2, [[8, 8], [6, 6]], 8),
    "rank 32": ([0, NO_ADAPTER, 0] * 6, 1, [[32, 20]], 32),
    "rank 64: the expand runs first": ([1, 0, NO_ADAPTER] * 6, 2, [[64, 64], [40, 64]], 64),
}
PARTS = {"stacked": 1, "shrunk": 3, "shrunk in 8 parts: the expand runs first": 8}
# the kernel tests run these cases in the slow layer only (0.1-0.8 s each through the interpreter)
SLOW_CASES = ("decode mix, tiles crossing slots", "runs longer than a tile", "rank 32")
KERNEL_CASES = [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES]


def _expand(token_slots, num_slots, ranks, rank, out_shards, parts, dtype, stacked=True) -> LoRAExpand:
    """A random pending expand: h as the stacked GEMM leaves it (every slot, one part, the model dtype)
    or as the shrink does (the token's own slot, `parts` float32 parts, NaN where it writes nothing: past
    each slot's rank and on rows without an adapter): the stacked GEMM's where it is in one part, unless
    `stacked` is False. B zero past each slot's rank, and rank-major too where a wrapper keeps it so (one
    shard, up to ROW_DELTA_MAX_RANK)."""
    tokens, shards = len(token_slots), len(out_shards)
    ranks_t = torch.tensor([row[:shards] for row in ranks], dtype=torch.int32)
    if parts == 1 and stacked:
        h = torch.randn(1, tokens, num_slots, shards, rank).to(dtype)
    else:
        h = torch.randn(parts, tokens, 1, shards, rank) / 2
        for t, slot in enumerate(token_slots):
            for shard in range(shards):
                h[:, t, 0, shard, 0 if slot == NO_ADAPTER else ranks_t[slot, shard] :] = float("nan")
    b = torch.randn(num_slots, sum(out_shards), rank) / rank**0.5
    bounds = np.cumsum([0, *out_shards])
    for slot in range(num_slots):
        for shard in range(shards):
            b[slot, bounds[shard] : bounds[shard + 1], ranks_t[slot, shard] :] = 0
    b = b.to(dtype)
    by_rank = b.transpose(1, 2).contiguous() if shards == 1 and rank <= ROW_DELTA_MAX_RANK else None
    return LoRAExpand(h, b, ranks_t, tuple(out_shards), _mapping(token_slots, num_slots), by_rank)


def _written(lora: LoRAExpand) -> LoRAExpand:
    """The same expand with h's unwritten (NaN) entries 0, as the reference needs them."""
    return dataclasses.replace(lora, h=torch.nan_to_num(lora.h, nan=0.0))


def _delta_by_definition(lora: LoRAExpand) -> torch.Tensor:
    """[tokens, out] float64: token t's (Σ parts h)·Bᵀ under its slot, shard by shard."""
    token_slots = lora.mapping.token_slots.tolist()
    bounds = np.cumsum([0, *lora.out_shards])
    out = torch.zeros(len(token_slots), int(bounds[-1]), dtype=torch.float64)
    h = lora.h.double().sum(0)
    for t, slot in enumerate(token_slots):
        if slot == NO_ADAPTER:
            continue
        own = h[t, slot if h.shape[1] > 1 else 0]
        for s in range(len(lora.out_shards)):
            out[t, bounds[s] : bounds[s + 1]] = lora.b[slot, bounds[s] : bounds[s + 1]].double() @ own[s]
    return out


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("case", list(CASES))
def test_the_reference_adds_each_tokens_delta_before_the_op(case: str) -> None:
    torch.manual_seed(0)
    token_slots, num_slots, ranks, rank = CASES[case]
    lora = _expand(token_slots, num_slots, ranks, rank, (24, 24), 3, torch.float32)
    gate_up = torch.randn(len(token_slots), 48)
    before = gate_up.clone()
    added = (gate_up.double() + _delta_by_definition(_written(lora))).float()
    _close(reference.silu_and_mul(gate_up, _written(lora)), reference.silu_and_mul(added), torch.float32)
    assert torch.equal(gate_up, before), "the reference leaves y as it was"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h_from", list(PARTS))
@pytest.mark.parametrize("case", KERNEL_CASES)
def test_silu_and_mul_adds_gate_ups_pending_expand(case: str, h_from: str, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    token_slots, num_slots, ranks, rank = CASES[case]
    lora = _expand(token_slots, num_slots, ranks, rank, (40, 40), PARTS[h_from], dtype)
    gate_up = torch.randn(len(token_slots), 80).to(dtype)
    want = reference.silu_and_mul(lora_reference.expanded(gate_up, _written(lora)))
    _close(triton_activation.silu_and_mul(gate_up.clone(), lora), want, dtype)


def test_a_tile_adds_only_the_adapters_of_its_own_tokens() -> None:
    """A tile holding slots 0 and 3 (slots 1 and 2 resident, used by no token, their B not finite): the
    slots between add nothing to it, not even 0·B."""
    torch.manual_seed(4)
    lora = _expand([0, 3, NO_ADAPTER, 0, 3] * 3, 4, [[8, 8]] * 4, 8, (32, 32), 1, torch.float32)
    lora.b[1:3] = float("inf")
    gate_up = torch.randn(15, 64)
    got = triton_activation.silu_and_mul(gate_up, lora)
    clean = dataclasses.replace(lora, b=torch.where(lora.b.isinf(), 0.0, lora.b))
    assert got.isfinite().all()
    _close(got, reference.silu_and_mul(gate_up, clean), torch.float32)


# h's source for the norm: (the stacked GEMM's, parts)
NORM_H = {"stacked": (True, 1), "shrunk": (False, 1), "shrunk in 3 parts: the expand runs first": (False, 3)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [True, pytest.param(False, marks=pytest.mark.slow)])
@pytest.mark.parametrize("h_from", list(NORM_H))
@pytest.mark.parametrize("case", KERNEL_CASES)
def test_the_residual_norm_adds_os_and_downs_pending_expand(
    case: str, h_from: str, with_residual: bool, dtype: torch.dtype
) -> None:
    torch.manual_seed(5)
    token_slots, num_slots, ranks, rank = CASES[case]
    stacked, parts = NORM_H[h_from]
    lora = _expand(token_slots, num_slots, ranks, rank, (48,), parts, dtype, stacked)
    x, weight = torch.randn(len(token_slots), 48).to(dtype), torch.randn(48).to(dtype)
    residual = torch.randn(len(token_slots), 48).to(dtype) if with_residual else None
    want, want_stream = reference.rms_norm(x, weight, 1e-6, residual, _written(lora))
    got, stream = triton_norm.rms_norm(
        x.clone(), weight, 1e-6, None if residual is None else residual.clone(), lora
    )
    _close(got, want, dtype)
    if with_residual:
        _close(stream, want_stream, dtype)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts launches in the interpreter")
def test_an_mlp_under_lora_launches_no_expand() -> None:
    """gate|up's expand rides in SiLU-and-mul, down's in the residual norm that reads the MLP's output
    (the MLP returns it pending): no expand launch, and the result of running each wrapper with its
    expand, then the norm."""
    from tests.helpers.launch_count import count_launches
    from tokenmill.kernels.ops import select_ops
    from tokenmill.lora.layers import LoRALinear, LoRAStep
    from tokenmill.models.config import ModelConfig
    from tokenmill.models.layers import MLP

    torch.manual_seed(3)
    ops = select_ops("triton", DEVICE, small_batch=False)
    config = ModelConfig(
        architecture="Qwen3ForCausalLM", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-6, rope_theta=1e4,
        max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip
    mlp = MLP(config, ops, "mlp")
    step = LoRAStep(max_tokens=20, max_loras=2, device=DEVICE)
    for name in ("gate_up_proj", "down_proj"):
        base = getattr(mlp, name)
        torch.nn.init.normal_(base.weight, std=0.2)
        wrapper = LoRALinear(base, 2, 4, step, ops, torch.float32)
        shards = [(torch.randn(4, base.in_features), torch.randn(rows, 4)) for rows in base.out_shards]
        wrapper.fill_slot(1, shards, scaling=0.5)
        setattr(mlp, name, wrapper)
    step.load(_mapping([1, NO_ADAPTER, 1, 1] * 5, 2, torch.device("cpu")), always=False)  # as the runner does
    x, weight, residual = torch.randn(20, 32), torch.randn(32), torch.randn(20, 32)
    with count_launches() as launches:
        y, down_expand = mlp(x)
        got, stream = ops.rms_norm(y, weight, 1e-6, residual.clone(), down_expand)
    assert launches["triton._lora_silu_and_mul_kernel"] == 1 and launches["triton._expand_kernel"] == 0
    assert launches["triton._add_rms_norm_kernel"] == 1
    want_y = mlp.down_proj(reference.silu_and_mul(mlp.gate_up_proj(x)))  # each wrapper with its expand
    want, want_stream = reference.rms_norm(want_y, weight, 1e-6, residual)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(stream, want_stream, rtol=1e-4, atol=1e-4)
    plain = mlp.down_proj.base(reference.silu_and_mul(mlp.gate_up_proj.base(x)))
    assert not torch.allclose(want_y, plain)


def test_the_rank_major_copy_of_b_follows_every_fill_of_a_slot() -> None:
    """A single-shard wrapper's `lora_b_by_rank` is B transposed after each load into a slot (a larger
    rank, a smaller one, none: the adapter skips it); fused shards and ranks past ROW_DELTA_MAX_RANK keep no
    copy (the norm then runs the expand first)."""
    from tokenmill.kernels.ops import select_ops
    from tokenmill.lora.layers import LoRALinear, LoRAStep
    from tokenmill.quantization import QuantLinear, UnquantizedMethod

    torch.manual_seed(6)
    ops = select_ops("triton", DEVICE, small_batch=False)
    step = LoRAStep(max_tokens=4, max_loras=2, device=DEVICE)
    wrapper = LoRALinear(QuantLinear(32, [24], False, UnquantizedMethod()), 2, 8, step, ops, torch.float32)
    for rank in (8, 4, None):
        shards = [None if rank is None else (torch.randn(rank, 32), torch.randn(24, rank))]
        wrapper.fill_slot(1, shards, scaling=0.5)
        assert torch.equal(wrapper.lora_b_by_rank[1], wrapper.lora_b[1].T)
        assert wrapper.lora_b_by_rank[1].any() == (rank is not None)
    assert not wrapper.lora_b_by_rank[0].any()
    fused = LoRALinear(QuantLinear(32, [16, 8], False, UnquantizedMethod()), 2, 8, step, ops, torch.float32)
    wide = LoRALinear(QuantLinear(32, [24], False, UnquantizedMethod()), 2, 64, step, ops, torch.float32)
    assert fused.lora_b_by_rank is None and wide.lora_b_by_rank is None


def compile_fused_expand_kernel(capability: int) -> None:
    """The kernel in bf16 at Qwen3-0.6B's gate|up (called in a fresh Python: `run_compiled`), built
    without spills at the ranks it takes (rank blocks 16 and 32), for h from the stacked GEMM (bf16, one
    part) and from the shrink (float32, up to 4 parts)."""
    x, ints, f32 = (torch.empty(1, dtype=dtype) for dtype in (torch.bfloat16, torch.int32, torch.float32))
    usages = {}
    for block_r, h, block_s in [(16, x, 2), (32, x, 2), (16, f32, 4), (32, f32, 4)]:
        cubin = compile_for(
            triton_activation._lora_silu_and_mul_kernel, capability,
            {"num_warps": triton_activation.lora_warps(capability)}, True, in_ptr=x, out_ptr=x,
            stride_in=6144 + 64, stride_out=3072, width=3072, num_tokens=358, h=h, b=x, ranks=ints,
            token_slots=ints, sorted_tokens=ints, splits=block_s, stride_h_split=358 * 6208, stride_h=6208,
            stride_h_slot=2 * block_r, stride_h_shard=block_r, stride_b_slot=6144 * block_r,
            stride_b_row=block_r, BLOCK_M=16, BLOCK_N=128, BLOCK_R=block_r, BLOCK_S=block_s, PRECISION="tf32",
        )  # fmt: skip
        usages[(block_r, block_s)] = usage = resource_usage(cubin)
        assert usage.get("STACK", 0) == 0 and usage.get("LOCAL", 0) == 0, usages


def compile_lora_norm_kernel(capability: int) -> None:
    """The residual norm with a row's delta in bf16, built without spills at the ranks it takes (rank
    blocks 16 and 32), for h from the stacked GEMM (bf16) and from the shrink (float32), at Qwen3-0.6B's
    1,024-wide rows (4 warps) and Qwen3-32B's 5,120 (8 warps)."""
    x, ints, f32 = (torch.empty(1, dtype=dtype) for dtype in (torch.bfloat16, torch.int32, torch.float32))
    usages = {}
    for n_cols, block_r, h in [(1024, 16, x), (1024, 32, f32), (5120, 16, x), (5120, 32, f32)]:
        cubin = compile_for(
            triton_norm._add_rms_norm_kernel, capability, {"num_warps": 4 if n_cols <= 2048 else 8}, True,
            x_ptr=x, residual_ptr=x, weight_ptr=x, out_ptr=x, residual_out_ptr=x, scale_ptr=x,
            x_row_scale_ptr=x, x_col_scale_ptr=x, stride_x=n_cols + 64, stride_r=n_cols, stride_o=n_cols, n_cols=n_cols, eps=1e-6, h_ptr=h, b_ptr=x,
            slots_ptr=ints, ranks_ptr=ints, stride_h=n_cols + 64, stride_h_slot=block_r,
            stride_b_slot=block_r * n_cols, stride_b_rank=n_cols, HAS_RESIDUAL=True, HAS_LORA=True,
            SCALED=False, QUANTIZE=False, BLOCK=triton_norm.triton.next_power_of_2(n_cols), BLOCK_R=block_r,
        )  # fmt: skip
        usages[(n_cols, block_r)] = usage = resource_usage(cubin)
        assert usage.get("STACK", 0) == 0 and usage.get("LOCAL", 0) == 0, usages


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["fused_expand", "lora_norm"])
@pytest.mark.parametrize("capability", [ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]])
def test_the_kernels_adding_an_expand_compile_for_hopper_and_blackwell(kernel: str, capability: int) -> None:
    run_compiled(f"tests.test_lora_fused_expand:compile_{kernel}_kernel", capability)
