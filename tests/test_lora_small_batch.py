"""The one-launch LoRA delta of the small-batch path (Triton, run by the interpreter on CPU) against its
PyTorch reference and a per-row definition, for each input prologue (none, RMSNorm, SiLU-and-mul), fused
shards and mixed adapters; and that it compiles for Hopper and Blackwell."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch

from tests.helpers.gpu_compile import ARCHITECTURES, compile_for, run_compiled
from tests.helpers.launch_count import decode_step_launches
from tokenmill import LLM, LoRARequest
from tokenmill.kernels import reference
from tokenmill.kernels.lora_mapping import NO_ADAPTER

lora_small_batch = pytest.importorskip("tokenmill.kernels.triton.lora_small_batch")

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


def _definition(x, a, b, out_shards, token_slots, norm, silu_mul):
    """delta_t = Σ_s B[slot, shard s] · A[slot, s] · f(x_t), one row at a time in float64."""
    x = x.double()
    if norm is not None:
        weight, eps = norm
        x = weight.double() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    elif silu_mul:
        gate, up = x.chunk(2, dim=-1)
        x = torch.nn.functional.silu(gate) * up
    out = torch.zeros(x.shape[0], sum(out_shards), dtype=torch.float64, device=x.device)
    bounds = np.cumsum([0, *out_shards])
    for t, slot in enumerate(token_slots):
        if slot != NO_ADAPTER:
            for s in range(len(out_shards)):
                h = a[slot, s].double() @ x[t]
                out[t, bounds[s] : bounds[s + 1]] = b[slot, bounds[s] : bounds[s + 1]].double() @ h
    return out


CASES = [
    # (row slots, slots, in, out shards, rank, prologue)
    ([0], 1, 64, (96, 32, 32), 8, "norm"),  # one token, q|k|v: three shards, one tile each
    ([1, NO_ADAPTER, 0, 1], 2, 48, (40, 24, 24), 4, "norm"),  # mixed adapters and the base, ragged shards
    ([0, 0, 1], 3, 80, (72, 72), 20, "norm"),  # gate|up; a rank that is not a power of two
    ([1, 0, NO_ADAPTER, 1, 0, 1, 0, 1], 2, 600, (64,), 16, "none"),  # o: 8 rows, several K steps
    ([NO_ADAPTER, 0], 1, 96, (40,), 8, "silu_mul"),  # down: reads gate|up, 2 x 96 wide
    ([NO_ADAPTER] * 3, 2, 32, (32, 32), 4, "norm"),  # no adapter: nothing changes
    ([0], 1, 32, (3000,), 16, "none"),  # many column tiles
]


@pytest.mark.parametrize(("token_slots", "num_slots", "k", "out_shards", "rank", "prologue"), CASES)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_delta_adds_each_rows_adapter_of_its_prologued_input(
    backend, token_slots, num_slots, k, out_shards, rank, prologue
) -> None:
    torch.manual_seed(0)
    ops = reference if backend == "reference" else lora_small_batch
    rows = len(token_slots)
    x = torch.randn(rows, 2 * k if prologue == "silu_mul" else k, device=DEVICE)
    a = torch.randn(num_slots, len(out_shards), rank, k, device=DEVICE) / k**0.5
    b = torch.randn(num_slots, sum(out_shards), rank, device=DEVICE)
    norm = (torch.rand(k, device=DEVICE) + 0.5, 1e-6) if prologue == "norm" else None
    base = torch.randn(rows, sum(out_shards), device=DEVICE)
    slots = torch.tensor(token_slots, dtype=torch.int32, device=DEVICE)
    out = base.clone()
    ops.lora_delta(out, x, a, b, out_shards, slots, norm, prologue == "silu_mul")
    expected = base.double() + _definition(x, a, b, out_shards, token_slots, norm, prologue == "silu_mul")
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)


# Triton's interpreter computes bfloat16 wrongly (numpy has no bfloat16): bfloat16 runs on a GPU only.
@pytest.mark.parametrize("dtype", [torch.float16, *([torch.bfloat16] if ON_GPU else [])])
def test_triton_matches_reference_in_half_precision(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    slots = torch.tensor([2, NO_ADAPTER, 0, 2], dtype=torch.int32, device=DEVICE)
    x = torch.randn(4, 128, dtype=dtype, device=DEVICE)
    a = (torch.randn(3, 2, 16, 128, device=DEVICE) / 8).to(dtype)
    b = torch.randn(3, 192, 16, dtype=dtype, device=DEVICE)
    norm = (torch.rand(128, dtype=dtype, device=DEVICE) + 0.5, 1e-6)
    base = torch.randn(4, 192, dtype=dtype, device=DEVICE)
    want, got = base.clone(), base.clone()
    reference.lora_delta(want, x, a, b, (96, 96), slots, norm, False)
    lora_small_batch.lora_delta(got, x, a, b, (96, 96), slots, norm, False)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)


def test_tiles_are_few_and_wide_for_qwen3_0_6b_at_rank_16() -> None:
    """Every program repeats its row's shrink, so a launch has tens of programs, not hundreds."""
    programs, steps = {}, {}
    for name, (ranks, n, k) in {
        "qkv": (48, 4096, 1024), "o": (16, 1024, 2048), "gate_up": (32, 6144, 1024), "down": (16, 1024, 3072),
    }.items():  # fmt: skip
        block_n, block_r, block_k = lora_small_batch.tile_shape(ranks, n, k)
        assert block_r >= ranks and block_r * block_k <= 16384 and block_n * block_r <= 8192
        steps[name] = -(-k // block_k)
        programs[name] = -(-n // block_n)
    assert programs == {"qkv": 32, "o": 2, "gate_up": 24, "down": 2}
    assert steps == {"qkv": 4, "o": 2, "gate_up": 2, "down": 3}


def compile_every_prologue(capability: int) -> None:
    """Compile the kernel for each prologue in bf16 (called in a fresh Python: see `run_compiled`)."""
    x = torch.empty(1, dtype=torch.bfloat16)
    slots = torch.empty(1, dtype=torch.int32)
    sizes = dict(n=4096, k=1024, rank=16, ranks=48, shard_end0=2048, shard_end1=3072, stride_x=1024,
                 stride_o=4096, stride_a_slot=48 * 1024, stride_b_slot=4096 * 16, stride_b_row=16, eps=1e-6)  # fmt: skip
    for prologue in (0, 1, 2):
        compile_for(
            lora_small_batch._lora_delta_kernel, capability, x_ptr=x, out_ptr=x, a_ptr=x, b_ptr=x,
            slots_ptr=slots, norm_weight_ptr=x, **sizes, PROLOGUE=prologue, BLOCK_N=128, BLOCK_R=64, BLOCK_K=256,
            NORM_BLOCK=1024,
        )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "capability", [ARCHITECTURES["ampere"], ARCHITECTURES["hopper"], ARCHITECTURES["blackwell-rtx"]]
)
def test_kernel_compiles_for_hopper_and_blackwell(capability: int) -> None:
    run_compiled("tests.test_lora_small_batch:compile_every_prologue", capability)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="counts launches in the interpreter")
def test_an_adapter_adds_one_launch_per_projection_to_a_decode_step(tiny_model_dir, tmp_path) -> None:
    """Single stream, every module targeted: the base decode step's launches plus exactly four LoRA
    delta launches per layer (q|k|v, o, gate|up, down), and nothing else."""
    from tests.helpers.lora_adapters import save_adapter

    path = save_adapter(tiny_model_dir("qwen3"), tmp_path, seed=1)
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", kernels="triton", enable_lora=True)
    layers = llm.engine.model_config.num_hidden_layers
    base = decode_step_launches(llm, None)
    lora = decode_step_launches(llm, LoRARequest("a", str(path)))
    print(f"decode step launches, {layers} layers: base {base.total()}, one adapter {lora.total()}")
    assert lora - base == Counter({"triton._lora_delta_kernel": 4 * layers})
    assert sum(n for name, n in base.items() if "gemv" in name) == 4 * layers  # the fused path ran
