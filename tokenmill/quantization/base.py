"""The seam between a linear layer and how its weight is stored: one `QuantMethod` per format.

A method creates the layer's weight tensors (`create_weights`), fills them from checkpoint tensors one
fused shard at a time (`load`), may rearrange them once every shard is in (`after_loading`), and
multiplies by them (`apply`). A new format is one new subclass; the
model code only ever sees `QuantLinear`. Each `apply` is the PyTorch reference; on the Triton kernel
backend a method's `gemm` (set at load by `triton_gemms.use_triton_gemms`) runs instead, and is tested
against it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.kernels.fp8_rows import Fp8Rows, ScaledRows


class KernelGemm(Protocol):
    """(layer, x) -> x W^T on compiled kernels, whose variants depend on the number of tokens."""

    def __call__(self, layer: QuantLinear, x: torch.Tensor | Fp8Rows) -> torch.Tensor: ...

    def takes_fp8_rows(self, tokens: int) -> bool:
        """Whether `tokens` rows are multiplied as fp8 activations, so they may come as `Fp8Rows`."""
        ...

    def scaled(self, layer: QuantLinear, x: torch.Tensor | Fp8Rows) -> torch.Tensor | ScaledRows:
        """`self(layer, x)`, or its output as `ScaledRows` where that is cheaper."""
        ...

    def variant_tokens(self) -> tuple[int, ...]:
        """Token counts that between them launch every kernel variant (see `compile_gemm_variants`)."""
        ...

    def gemv_up_to(self) -> int:
        """The most tokens `fused_gemv` takes (0: none)."""
        ...

    def fused_gemv(
        self,
        layer: QuantLinear,
        x: torch.Tensor,
        norm: tuple[torch.Tensor, float] | None = None,
        silu_mul: bool = False,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One launch for the fused small-batch path: f(x) W^T (+ bias) (+ residual), f the RMSNorm
        `norm` (weight, eps), SiLU-and-mul of a gate|up x, or nothing."""
        ...


class QuantMethod(ABC):
    """How one linear layer's weight is stored, loaded and multiplied."""

    #: checkpoint tensors of each shard, beside `bias` (e.g. ("weight", "weight_scale_inv"))
    checkpoint_tensors: tuple[str, ...] = ("weight",)
    #: the Triton GEMM that replaces `apply` on the Triton backend; None: `apply`
    gemm: KernelGemm | None = None

    @abstractmethod
    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        """Register the layer's parameters (uninitialised) for `layer.in_features`/`layer.out_shards`."""

    @abstractmethod
    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        """Store checkpoint tensor `name` of output shard `shard` (None: the whole layer). A float
        `weight` is always accepted and quantized here, so bf16 checkpoints and random weights load too."""

    def after_loading(self, layer: QuantLinear) -> None:
        """Called once the layer's every shard is loaded, before any GEMM is chosen for it: a method may
        store its weight in another order here (and set `layer.input_order`). Nothing by default."""
        return

    @abstractmethod
    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x [tokens, in] -> [tokens, out] in x's dtype."""


def copy_checked(destination: torch.Tensor, tensor: torch.Tensor, what: str) -> None:
    """Copy with a shape check whose message names the checkpoint tensor."""
    if destination.shape != tensor.shape:
        raise ValueError(f"{what}: checkpoint shape {tuple(tensor.shape)} != {tuple(destination.shape)}")
    destination.copy_(tensor)


class UnquantizedMethod(QuantMethod):
    """The weight in the model dtype, multiplied with `F.linear`."""

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        layer.weight = nn.Parameter(torch.empty(layer.out_features, layer.in_features, dtype=dtype))

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        if name != "weight" or tensor.dtype == torch.float8_e4m3fn:
            raise ValueError(
                f"{layer.describe(name, shard)} is a quantized tensor but the model is not quantized "
                "(is config.json's quantization_config missing?)"
            )
        copy_checked(layer.weight.data[layer.shard_rows(shard)], tensor, layer.describe(name, shard))

    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, layer.weight, bias)


class QuantLinear(nn.Module):
    """y = x W^T (+ b) where W is one or more fused output shards (q|k|v, gate|up) stored by `method`.

    `input_order` (None: the identity) says which input feature each stored weight row multiplies:
    a method that reorders the rows at load (act-order GPTQ) sets it, and every GEMM of the layer reads
    x's columns in that order (`stored_order`)."""

    input_order: torch.Tensor | None

    def __init__(self, in_features: int, out_shards: Sequence[int], bias: bool, method: QuantMethod) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_shards = tuple(out_shards)
        self.out_features = sum(self.out_shards)
        self.method = method
        self.register_buffer("input_order", None, persistent=False)
        dtype = torch.get_default_dtype()
        method.create_weights(self, dtype)
        self.bias = nn.Parameter(torch.empty(self.out_features, dtype=dtype)) if bias else None

    def shard_rows(self, shard: int | None) -> slice:
        """Output rows of shard `shard` of the fused weight (None: all of them)."""
        if shard is None:
            return slice(None)
        start = sum(self.out_shards[:shard])
        return slice(start, start + self.out_shards[shard])

    def checkpoint_shape(self) -> tuple[int, int]:
        """The (out, in) shape of the whole weight in a checkpoint (a tensor-parallel layer holds a part)."""
        return self.out_features, self.in_features

    def tensor_names(self) -> tuple[str, ...]:
        """Checkpoint tensors each shard must provide."""
        return self.method.checkpoint_tensors + (("bias",) if self.bias is not None else ())

    def describe(self, name: str, shard: int | None) -> str:
        return f"tensor {name!r}" + ("" if shard is None else f" of shard {shard}")

    def load(self, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        if name == "bias" and self.bias is not None:
            copy_checked(self.bias.data[self.shard_rows(shard)], tensor, self.describe(name, shard))
        else:
            self.method.load(self, name, tensor, shard)

    def after_loading(self) -> None:
        """Every shard is loaded: let the method rearrange what it stores (`QuantMethod.after_loading`)."""
        self.method.after_loading(self)

    def stored_order(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] with its columns in the stored weight's row order (`input_order`)."""
        return x if self.input_order is None else x.index_select(-1, self.input_order)

    def takes_fp8_rows(self, tokens: int) -> bool:
        """Whether this layer multiplies `tokens` rows as fp8 activations: the kernel that writes its input
        may then write `Fp8Rows` (only a Triton-backend GEMM does; see `kernels/fp8_rows.py`)."""
        gemm = self.method.gemm
        return gemm is not None and gemm.takes_fp8_rows(tokens)

    def product(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor:
        """x W^T without the bias: the method's GEMM where it has one, else its reference."""
        gemm = self.method.gemm
        if gemm is None:
            assert isinstance(x, torch.Tensor), "only a kernel GEMM takes Fp8Rows"
            return self.method.apply(self, x, None)
        return gemm(self, x)

    def forward_scaled(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor | ScaledRows:
        """`self(x)`, whose output may come as `ScaledRows` (an fp8 GEMM's, before its scales): for a
        caller whose next kernel applies them. A bias, added after the scales, keeps the output plain."""
        gemm = self.method.gemm
        if gemm is None or self.bias is not None:
            return self(x)
        return gemm.scaled(self, x)

    def forward(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor:
        if self.method.gemm is None:
            assert isinstance(x, torch.Tensor), "only a kernel GEMM takes Fp8Rows"
            return self.method.apply(self, x, self.bias)
        y = self.method.gemm(self, x)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_shards}, method={type(self.method).__name__}"


class ChannelScaledMethod(QuantMethod):
    """Float weights quantized at load to `storage_dtype` with one float32 scale per output channel, so a
    shard quantizes on its own as it arrives and no float copy of the layer is ever held. The reference
    multiplies in the activation dtype on the stored values (exact there) and scales the output columns,
    the order a weight-only GEMM applies them in registers."""

    checkpoint_tensors = ("weight",)
    storage_dtype: torch.dtype
    format_name: str

    @staticmethod
    @abstractmethod
    def quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """weight [out, in] float -> (values in `storage_dtype`, float32 scale [out])."""

    def create_weights(self, layer: QuantLinear, dtype: torch.dtype) -> None:
        out, inp = layer.out_features, layer.in_features
        layer.weight = nn.Parameter(torch.empty(out, inp, dtype=self.storage_dtype), requires_grad=False)
        layer.weight_scale = nn.Parameter(torch.empty(out, dtype=torch.float32), requires_grad=False)

    def load(self, layer: QuantLinear, name: str, tensor: torch.Tensor, shard: int | None) -> None:
        what = layer.describe(name, shard)
        if name != "weight" or not tensor.is_floating_point() or tensor.dtype == torch.float8_e4m3fn:
            raise ValueError(f"{what}: {self.format_name} quantization at load reads float weights only")
        rows = layer.shard_rows(shard)
        quantized, scale = self.quantize(tensor.to(layer.weight.device))
        copy_checked(layer.weight.data[rows], quantized, what)
        layer.weight_scale.data[rows] = scale

    def apply(self, layer: QuantLinear, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        y = F.linear(x, layer.weight.to(x.dtype)) * layer.weight_scale.to(x.dtype)
        return y if bias is None else y + bias
