"""Compiling every quantized GEMM variant a batch can select before the engine serves, so that no request
waits for Triton to compile one (the decode sizes would be compiled by CUDA-graph capture, but prefill
sizes and the dense route only by the first batch that needs them)."""

from __future__ import annotations

import torch
from torch import nn

from tokenmill.kernels.ops import SMALL_BATCH_MAX_ROWS
from tokenmill.quantization.base import QuantLinear


@torch.inference_mode()
def compile_gemm_variants(model: nn.Module, dtype: torch.dtype) -> int:
    """Run each distinct quantized linear's GEMM (per method, shape, routing table entry and whether it
    reads its input through an order: a model's other layers reuse the same compiled variants) once per
    token count of its `variant_tokens`, on zero activations in `dtype`. The GEMM is called without the
    layer's forward, so no tensor-parallel collective runs. Returns the number of calls; none on the
    reference backend, where no method has a `gemm`."""
    seen: set[tuple[object, ...]] = set()
    calls = 0
    for module in model.modules():
        if not isinstance(module, QuantLinear) or module.method.gemm is None:
            continue
        gemm = module.method.gemm
        table_key = getattr(gemm, "table_key", None)
        ordered = module.input_order is not None  # act-order GPTQ: its GEMVs gather (their own variants)
        key = (type(module.method).__name__, module.in_features, module.out_features, table_key, ordered)
        if key in seen:
            continue
        seen.add(key)
        device = next(module.parameters()).device
        for tokens in gemm.variant_tokens():
            zeros = torch.zeros(tokens, module.in_features, dtype=dtype, device=device)
            gemm(module, zeros)
            gemm.scaled(module, zeros)  # its variant leaving the scales to the next kernel
            if 1 < tokens <= min(gemm.gemv_up_to(), SMALL_BATCH_MAX_ROWS):
                # the fused path's GEMVs (the layer's bias, then a residual or none), which graph capture
                # compiles only for the decode batch sizes captured: a prompt's last few tokens take them too
                residual = torch.zeros(tokens, module.out_features, dtype=dtype, device=device)
                gemm.fused_gemv(module, zeros)
                gemm.fused_gemv(module, zeros, residual=residual)
            calls += 1
    return calls


def prompt_variant_tokens(model: nn.Module, limit: int) -> list[int]:
    """The token counts (2 to `limit`) at which some quantized GEMM of `model` changes its kernel variant:
    an eager prompt chunk of each runs the kernels around the GEMMs (RMSNorm, SiLU-and-mul) in the
    variant each route's output takes (fp8 rows with their scales, or not), which `compile_gemm_variants`
    does not launch."""
    counts = {
        tokens
        for module in model.modules()
        if isinstance(module, QuantLinear) and module.method.gemm is not None
        for tokens in module.method.gemm.variant_tokens()
    }
    return sorted(t for t in counts if 1 < t <= limit)
