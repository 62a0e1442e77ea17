"""Programmatic dependent launch (`dependent_launch`): off where it cannot run (the CPU, Triton's
interpreter, GPUs before sm_90); on a Hopper or later GPU, a CUDA graph of a decode step's kernels
launched with it gives the bits of the same chain launched without it, so every kernel waited for what
its predecessors wrote."""

from __future__ import annotations

import os

import pytest
import torch

from tokenmill.kernels.triton import dependent_launch

ON_HOPPER = (
    torch.cuda.is_available()
    and os.environ.get("TRITON_INTERPRET") != "1"
    and torch.cuda.get_device_capability() >= (9, 0)
)


def test_off_without_a_gpu_that_has_it() -> None:
    assert dependent_launch.launch_args(torch.device("cpu")) == {"PDL": False, "launch_pdl": False}


def _decode_layers(x: torch.Tensor, weights: dict[str, torch.Tensor], layers: int) -> torch.Tensor:
    """`layers` times a decoder layer's kernels at one token, each reading what the one before wrote:
    RMSNorm + q|k|v, q/k norm + RoPE + cache write, split decode attention and merge, o + residual,
    RMSNorm + gate|up (fp8), SiLU-and-mul + down + residual."""
    from tokenmill.kernels.triton import attention, fp8_gemv, rope, skinny_gemm
    from tokenmill.kernels.triton.gemv_fusion import Fusion

    heads, kv_heads, head_dim = 4, 2, 64
    cache, tables = weights["cache"], weights["tables"]
    for layer in range(layers):
        qkv = skinny_gemm.rms_norm_linear(x, weights["norm"], 1e-6, weights["qkv"], None, None)
        q, k, v = qkv.view(1, heads + 2 * kv_heads, head_dim).split([heads, kv_heads, kv_heads], dim=1)
        slot = weights["slots"][layer : layer + 1]
        q = rope.norm_rope_and_cache(
            q, k, v, weights["positions"], weights["cos"], weights["sin"], cache, slot,
            (weights["q_norm"], weights["k_norm"], 1e-6),
        )  # fmt: skip
        attended = attention.decode_attention(q, cache, tables, weights["seq_lens"] + layer, 0.125, 4)
        x = skinny_gemm.linear(attended.view(1, -1), weights["o"], None, x, None)
        gate_up = fp8_gemv.gemv(
            x, weights["gate_up"], weights["gate_up_scales"], Fusion(norm=(weights["norm"], 1e-6))
        )
        x = skinny_gemm.silu_mul_linear(gate_up, weights["down"], x, None)
    return x


@pytest.mark.skipif(not ON_HOPPER, reason="programmatic dependent launch needs a GPU of sm_90 or later")
def test_a_graph_of_dependent_launches_equals_the_chain_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    dim, ffn, layers, page, pages = 256, 512, 24, 16, 8
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    weights = {
        "norm": torch.rand(dim, device=dev, dtype=bf16) + 0.5,
        "qkv": torch.randn(8 * 64, dim, device=dev, dtype=bf16) / 16,
        "q_norm": torch.rand(64, device=dev, dtype=bf16) + 0.5,
        "k_norm": torch.rand(64, device=dev, dtype=bf16) + 0.5,
        "o": torch.randn(dim, 4 * 64, device=dev, dtype=bf16) / 16,
        "gate_up": (torch.randn(2 * ffn, dim, device=dev) / 16).to(torch.float8_e4m3fn),
        "gate_up_scales": torch.rand(2 * ffn, device=dev) + 0.5,
        "down": torch.randn(dim, ffn, device=dev, dtype=bf16) / 32,
        "positions": torch.tensor([40], device=dev),
        "cos": torch.rand(4096, 32, device=dev),
        "sin": torch.rand(4096, 32, device=dev),
        "tables": torch.arange(pages, dtype=torch.int32, device=dev)[None],
        "seq_lens": torch.tensor([60], dtype=torch.int32, device=dev),
        "slots": torch.arange(59, 59 + layers, device=dev),
    }
    x = torch.randn(1, dim, device=dev, dtype=bf16)
    initial_cache = torch.randn(2, pages, page, 2, 64, device=dev, dtype=bf16)

    monkeypatch.setattr(dependent_launch, "enabled", lambda device: False)
    weights["cache"] = initial_cache.clone()
    expected = _decode_layers(x, weights, layers)
    expected_cache = weights["cache"].clone()

    monkeypatch.setattr(dependent_launch, "enabled", lambda device: True)
    weights["cache"] = initial_cache.clone()
    _decode_layers(x, weights, layers)  # compiles the PDL variants outside the graph
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = _decode_layers(x, weights, layers)
    for _ in range(3):
        weights["cache"].copy_(initial_cache)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, expected)
        assert torch.equal(weights["cache"], expected_cache)
