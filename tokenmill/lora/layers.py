"""LoRA around the decoder's projections, without the model code knowing: each `QuantLinear` a LoRA
adapter may target is replaced, after the weights are loaded, by a `LoRALinear` that runs it and then
adds every token's adapter through the batched ops (`Ops.lora_shrink`, `Ops.lora_expand`).

A wrapper holds `max_loras` resident slots per projection: A [slots, shards, max_rank, in] and
B [slots, out, max_rank], zero-padded to the largest rank, each adapter's scale folded into B. Fused
projections (q|k|v, gate|up) keep one A per shard and one B whose rows are the shards' outputs, so the
kernels serve the fused GEMM's output in one pass. A shard an adapter does not target stays zero.

Under tensor parallelism (`ShardedLinear` bases) each rank holds its part, as vLLM does: a column-parallel
projection (q|k|v, gate|up) keeps all of A and the rows of B of its own output rows; a row-parallel one
(o, down) keeps A's columns of its own input columns and all of B, and sums the ranks' partial shrinks
(one small all-reduce of [tokens, rank] values) before the expand adds the whole of B·A·x to the
already reduced output.

CUDA graphs stay on with LoRA: the adapter indices are graph inputs. The wrappers read the step's
mapping from `LoRAStep`'s persistent buffers, which the runner refills before every forward pass, and
the kernels' launch shape depends only on the token count, so one captured decode graph serves any mix
of adapters (and the base model) in its batch.
"""

from __future__ import annotations

import torch

from tokenmill.distributed.linear import ShardedLinear
from tokenmill.kernels.lora_mapping import LoRAMapping
from tokenmill.kernels.ops import Ops, SmallBatchOps
from tokenmill.lora.adapter import TARGET_MODULES, LoRAAdapter
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.small_batch import DeltaProjection
from tokenmill.quantization import QuantLinear


class LoRAStep:
    """The current step's token -> slot mapping, shared by every wrapper. Its tensors are persistent,
    so CUDA graphs captured over them replay under whatever mapping `load` wrote last."""

    def __init__(self, max_tokens: int, max_loras: int, device: torch.device) -> None:
        self.mapping = LoRAMapping.empty(max_tokens, max_loras, device)
        self.num_slots = max_loras
        self.active = True  # graph capture records the LoRA kernels (with no tiles to run)

    def load(self, host: LoRAMapping, always: bool) -> None:
        """Upload the step's mapping (built by the input builder in pinned host memory); with no
        adapter in the step and not `always` (a graph replay reads the buffers whatever the step), the
        wrappers skip the LoRA ops instead."""
        self.active = always or bool((host.tile_slots >= 0).any())
        if not self.active:
            return
        tokens, tiles, mapping = host.token_slots.numel(), host.tile_slots.numel(), self.mapping
        mapping.token_slots[:tokens].copy_(host.token_slots, non_blocking=True)
        mapping.sorted_tokens[:tokens].copy_(host.sorted_tokens, non_blocking=True)
        mapping.tile_slots[:tiles].copy_(host.tile_slots, non_blocking=True)
        mapping.tile_starts[:tiles].copy_(host.tile_starts, non_blocking=True)
        mapping.tile_ends[:tiles].copy_(host.tile_ends, non_blocking=True)


class LoRALinear(DeltaProjection):
    """`base(x)` plus, for each token, its slot's B·A·x: on the batched shrink and expand kernels in
    `forward`, or for a decode batch on the fused small-batch path, in one launch (`add_delta`)."""

    def __init__(
        self, base: QuantLinear, max_loras: int, max_rank: int, step: LoRAStep, ops: Ops, dtype: torch.dtype
    ) -> None:
        """`dtype` is the activations' (the model's), whatever the base weight's storage (int8, fp8, ...)."""
        super().__init__()
        self.base = base
        self.out_shards = base.out_shards
        device = step.mapping.token_slots.device
        shards, width = len(base.out_shards), base.in_features
        self.register_buffer(
            "lora_a", torch.zeros(max_loras, shards, max_rank, width, dtype=dtype, device=device)
        )
        self.register_buffer(
            "lora_b", torch.zeros(max_loras, base.out_features, max_rank, dtype=dtype, device=device)
        )
        self.step = step
        self.ops = ops
        sharded = isinstance(base, ShardedLinear)
        self.column_parts = base.row_parts if sharded and base.split == "column" else None
        self.input_columns = base.columns if sharded and base.split == "row" else None
        self.full_in = base.full_in if sharded else base.in_features
        self.full_shards = base.full_shards if sharded else base.out_shards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.step.active:
            h = self.ops.lora_shrink(x, self.lora_a, self.step.mapping)
            if self.input_columns is not None:
                h = self.base.tp.all_reduce(h)  # each rank shrank its own input columns
            self.ops.lora_expand(y, h, self.lora_b, self.out_shards, self.step.mapping)
        return y

    def add_delta(
        self,
        ops: SmallBatchOps,
        out: torch.Tensor,
        x: torch.Tensor,
        norm: tuple[torch.Tensor, float] | None = None,
        silu_mul: bool = False,
    ) -> None:
        if self.step.active:
            slots = self.step.mapping.token_slots[: x.shape[0]]
            ops.lora_delta(out, x, self.lora_a, self.lora_b, self.out_shards, slots, norm, silu_mul)

    def fill_slot(
        self, slot: int, shards: list[tuple[torch.Tensor, torch.Tensor] | None], scaling: float
    ) -> None:
        """Put one adapter's (A, B) of each shard (None: not targeted) into `slot`, replacing its last."""
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        for shard, pair in enumerate(shards):
            if pair is None:
                continue
            a, b = pair
            if self.input_columns is not None:
                a = a[:, self.input_columns]
            if self.column_parts is not None:
                b = b[self.column_parts[shard]]
            rows = self.base.shard_rows(shard)
            self.lora_a[slot, shard, : a.shape[0]].copy_(a)
            self.lora_b[slot, rows, : b.shape[1]].copy_(b.to(torch.float32) * scaling)

    def expected_shapes(self, shard: int, rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The shapes of A and B a rank-`rank` adapter of shard `shard` must have (the checkpoint's,
        whole: under tensor parallelism `fill_slot` takes this rank's part)."""
        return (rank, self.full_in), (self.full_shards[shard], rank)


class LoRAModel:
    """The wrappers of one model, by (layer index, fused module path), and the step they share."""

    def __init__(
        self, model: LlamaForCausalLM, max_loras: int, max_rank: int, max_tokens: int, ops: Ops
    ) -> None:
        embeddings = model.embed_tokens.weight
        self.max_rank = max_rank
        self.step = LoRAStep(max_tokens, max_loras, embeddings.device)
        self.wrappers: dict[tuple[int, str], LoRALinear] = {}
        for index, layer in enumerate(model.layers):
            for path in dict.fromkeys(module for module, _ in TARGET_MODULES.values()):
                owner_name, _, attribute = path.rpartition(".")
                owner = layer.get_submodule(owner_name)
                base = getattr(owner, attribute)
                wrapper = LoRALinear(base, max_loras, max_rank, self.step, ops, embeddings.dtype)
                setattr(owner, attribute, wrapper)
                self.wrappers[(index, path)] = wrapper

    def check(self, adapter: LoRAAdapter) -> None:
        """Raise ValueError if an adapter's layers or shapes do not fit this model."""
        for (layer, module), (a, b) in adapter.weights.items():
            path, shard = TARGET_MODULES[module]
            wrapper = self.wrappers.get((layer, path))
            if wrapper is None:
                raise ValueError(f"LoRA adapter {adapter.name!r}: layers.{layer} does not exist in the model")
            want_a, want_b = wrapper.expected_shapes(shard, adapter.rank)
            if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
                raise ValueError(
                    f"LoRA adapter {adapter.name!r}: layers.{layer}.{module} has lora_A {tuple(a.shape)} and "
                    f"lora_B {tuple(b.shape)}; this model needs {want_a} and {want_b} (another base model?)"
                )

    def fill_slot(self, slot: int, adapter: LoRAAdapter) -> None:
        for (layer, path), wrapper in self.wrappers.items():
            shards: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(wrapper.out_shards)
            for module, (target, shard) in TARGET_MODULES.items():
                if target == path and (layer, module) in adapter.weights:
                    shards[shard] = adapter.weights[(layer, module)]
            wrapper.fill_slot(slot, shards, adapter.scaling)
