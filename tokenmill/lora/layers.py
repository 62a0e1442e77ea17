"""LoRA around the decoder's projections, without the model code knowing: each `QuantLinear` a LoRA
adapter may target is replaced, after the weights are loaded, by a `LoRALinear` that runs it and then
adds every token's adapter through the batched ops (`Ops.lora_shrink`, `Ops.lora_expand`).

A wrapper holds `max_loras` resident slots per projection: A [slots, shards, max_rank, in] and
B [slots, out, max_rank], zero-padded to the largest rank, each adapter's scale folded into B. Fused
projections (q|k|v, gate|up) keep one A per shard and one B whose rows are the shards' outputs, so the
kernels serve the fused GEMM's output in one pass. A shard an adapter does not target stays zero.

On a plain base (one rank, the weight in the model dtype) the shrink rides in the base GEMM: A's slots
are stored as extra rows under the base weight (`_stack_under`), so one GEMM gives every token's output
and its x·Aᵀ under every slot, and only the expand is a launch of its own (2 launches a projection, not
3). The extra rows are slots x shards x rank (Qwen3-0.6B's q|k|v, 8 slots of rank 16: 384 under 4096),
and every token multiplies all of them: many slots of a large rank make that GEMM work grow past the
shrink launch it saves (`bench/lora_kernels.py` times both).

On a plain base only q|k|v's expand is a launch of its own: `deferred` hands gate|up's (`LoRAExpand`) to
the SiLU-and-mul that reads gate|up's output, and o's and down's to the residual RMSNorm that reads theirs,
which add it as they load the output (`MLP.forward`, `DecoderLayer.forward`; where h comes from a split
shrink, over a quantized or sharded base, the expand still runs first). The norm holds a whole row a
program, so it reads B rank-major: a single-shard projection up to ROW_DELTA_MAX_RANK keeps that copy of B
too (`lora_b_by_rank`: 7 MB more at Qwen3-0.6B, 4 slots of rank 16).

Under tensor parallelism (`ShardedLinear` bases) each rank holds its part, as vLLM does: a column-parallel
projection (q|k|v, gate|up) keeps all of A and the rows of B of its own output rows; a row-parallel one
(o, down) keeps A's columns of its own input columns and all of B, and sums the ranks' partial shrinks
(one small all-reduce of [tokens, rank] values) before the expand adds the whole of B·A·x to the
already reduced output.

CUDA graphs stay on with LoRA: the adapter indices are graph inputs. The wrappers read the step's
mapping from `LoRAStep`'s persistent buffers, which the runner refills before every forward pass, and
the kernels' launch shape depends only on the token count, so one captured decode graph serves any mix
of adapters (and the base model) in its batch. An adapter costs nothing on a projection it does not
target: outside graphs the wrapper skips its LoRA work when none of the step's adapters targets it, and
the fused small-batch GEMVs (in graphs too) load nothing for a shard whose rank is 0 in `lora_ranks`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.distributed.linear import ShardedLinear
from tokenmill.engine.host_staging import HostStaging
from tokenmill.kernels.lora_mapping import (
    MAX_FOLDED_RANK,
    MAX_SITES,
    PACKED_ORDER,
    ROW_DELTA_MAX_RANK,
    LoRAExpand,
    LoRAMapping,
    LoRAWeights,
    ShrinkScratch,
    packed_layout,
    packed_size,
)
from tokenmill.kernels.ops import SMALL_BATCH_MAX_ROWS, Ops
from tokenmill.lora.adapter import TARGET_MODULES, LoRAAdapter
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.small_batch import DeltaProjection
from tokenmill.quantization import QuantLinear, UnquantizedMethod


class LoRAStep:
    """The current step's token -> slot mapping, shared by every wrapper. Its tensors are persistent,
    so CUDA graphs captured over them replay under whatever mapping `load` wrote last."""

    def __init__(self, max_tokens: int, max_loras: int, device: torch.device) -> None:
        self.layout = packed_layout(max_tokens, max_loras)
        self.packed = torch.empty(packed_size(max_tokens, max_loras), dtype=torch.int32, device=device)
        self.mapping = LoRAMapping.packed(self.packed, max_tokens, max_loras)
        self.staging = HostStaging(device)  # where `load` packs a step's arrays for their one upload
        self.scratch = ShrinkScratch.allocate(SMALL_BATCH_MAX_ROWS, device)  # the fused GEMVs' shrinks
        self.num_slots = max_loras
        self.slots: frozenset[int] | None = None  # the step's slots; None: any (graph capture, replay)
        self.sites = 0  # projections wrapped so far, each counting its fused GEMVs' shrinks at its own site
        self.launched: set[int] = set()  # sites whose fused GEMV this forward has launched

    def new_site(self) -> int:
        """A site for one more wrapped projection (`ShrinkScratch`): distinct, below MAX_SITES."""
        assert self.sites < MAX_SITES, f"more than {MAX_SITES} LoRA-wrapped projections"
        self.sites += 1
        return self.sites - 1

    def begin_forward(self) -> None:
        """Called as each forward pass starts (eager, and inside what a CUDA graph captures): every site's
        count of shrink programs back to zero."""
        self.launched.clear()
        self.scratch.begin_forward()

    def claim_site(self, site: int) -> None:
        """Note a fused launch at `site` in this forward: a second one would find the count already full
        and read s before its shrink programs wrote it, so it is an error (checked on the host, where
        graph capture runs this code too)."""
        assert site not in self.launched, f"LoRA site {site} launched twice in one forward"
        self.launched.add(site)

    def load(self, host: LoRAMapping, always: bool) -> None:
        """Upload the step's mapping (built by the input builder) in one copy, packed in a pinned host
        buffer laid out as the device's (`PACKED_ORDER`), and note its slots, so wrappers no slot
        targets skip their LoRA ops; with `always` (a graph replay reads the buffers whatever the step)
        every wrapper runs them."""
        self.slots = None if always else frozenset(host.tile_slots[host.tile_slots >= 0].tolist())
        if self.slots == frozenset():
            return
        self.staging.next_step()
        end = self.layout[PACKED_ORDER[-1]][0] + host.token_slots.numel()
        staged = self.staging.tensor("lora_mapping", end, torch.int32)
        values = staged.numpy()
        for name, (offset, length) in self.layout.items():
            array = getattr(host, name).numpy()
            assert array.size <= length, f"the step's {name} outgrows its buffer"
            values[offset : offset + array.size] = array
        self.packed[:end].copy_(staged, non_blocking=True)

    def runs(self, targeted: set[int]) -> bool:
        """Whether a wrapper whose adapters sit in the `targeted` slots runs its LoRA ops this step."""
        return self.slots is None or not self.slots.isdisjoint(targeted)


class LoRALinear(DeltaProjection):
    """`base(x)` plus, for each token, its slot's B·A·x: on the batched shrink and expand kernels in
    `forward`, with the expand left to the kernel that reads the output next in `deferred`, or for a
    decode batch folded into the fused small-batch GEMVs (`delta_weights`)."""

    def __init__(
        self, base: QuantLinear, max_loras: int, max_rank: int, step: LoRAStep, ops: Ops, dtype: torch.dtype
    ) -> None:
        """`dtype` is the activations' (the model's), whatever the base weight's storage (int8, fp8, ...)."""
        super().__init__()
        self.base = base
        self.out_shards = base.out_shards
        self.folds = max_rank <= MAX_FOLDED_RANK
        device = step.mapping.token_slots.device
        shards, width = len(base.out_shards), base.in_features
        a_shape = (max_loras, shards, max_rank, width)
        plain = type(base) is QuantLinear and type(base.method) is UnquantizedMethod
        self.stacked: tuple[torch.Tensor, torch.Tensor | None] | None = None  # (weight, bias) over A
        if plain and base.weight.dtype == dtype:
            self.stacked = _stack_under(base, max_loras * shards * max_rank)
            self.register_buffer("lora_a", self.stacked[0][base.out_features :].view(a_shape))
        else:
            self.register_buffer("lora_a", torch.zeros(a_shape, dtype=dtype, device=device))
        self.register_buffer(
            "lora_b", torch.zeros(max_loras, base.out_features, max_rank, dtype=dtype, device=device)
        )
        by_rank = None  # [slots, rank, out]: B rank-major, for the residual norm that adds o's and down's
        if shards == 1 and max_rank <= ROW_DELTA_MAX_RANK:
            by_rank = torch.zeros(max_loras, max_rank, base.out_features, dtype=dtype, device=device)
        self.register_buffer("lora_b_by_rank", by_rank)
        self.register_buffer("lora_ranks", torch.zeros(max_loras, shards, dtype=torch.int32, device=device))
        self.targeted_slots: set[int] = set()  # slots whose adapter targets this projection
        self._delta_weights: dict[int, LoRAWeights] = {}  # by row count: views of persistent buffers
        self.step = step
        self.site = step.new_site()
        self.ops = ops
        sharded = isinstance(base, ShardedLinear)
        self.column_parts = base.row_parts if sharded and base.split == "column" else None
        self.input_columns = base.columns if sharded and base.split == "row" else None
        self.full_in = base.full_in if sharded else base.in_features
        self.full_shards = base.full_shards if sharded else base.out_shards

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, expand = self.deferred(x)
        if expand is not None:
            expand.add_to(y, self.ops.lora_expand)
        return y

    def deferred(self, x: torch.Tensor) -> tuple[torch.Tensor, LoRAExpand | None]:
        if not self.step.runs(self.targeted_slots):
            return self.base(x), None
        if self.stacked is not None:  # one GEMM: [y | x·Aᵀ of every slot], y a view of its first columns
            out = F.linear(x, *self.stacked)
            n = self.base.out_features
            y, h = out[:, :n], out[:, n:].unflatten(1, self.lora_a.shape[:3])[None]
        else:
            y = self.base(x)
            h = self.ops.lora_shrink(x, self.lora_a, self.lora_ranks, self.step.mapping)
            if self.input_columns is not None:
                h = self.base.tp.all_reduce(h)  # each rank shrank its own input columns
        return y, LoRAExpand(
            h, self.lora_b, self.lora_ranks, self.out_shards, self.step.mapping, self.lora_b_by_rank
        )

    def delta_weights(self, rows: int) -> LoRAWeights | None:
        if not self.step.runs(self.targeted_slots):
            return None
        self.step.claim_site(self.site)
        if rows not in self._delta_weights:
            token_slots = self.step.mapping.token_slots[:rows]
            self._delta_weights[rows] = LoRAWeights(
                self.lora_a,
                self.lora_b,
                self.lora_ranks,
                self.out_shards,
                token_slots,
                self.step.scratch,
                self.site,
            )
        return self._delta_weights[rows]

    def fill_slot(
        self, slot: int, shards: list[tuple[torch.Tensor, torch.Tensor] | None], scaling: float
    ) -> None:
        """Put one adapter's (A, B) of each shard (None: not targeted) into `slot`, replacing its last."""
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        self.lora_ranks[slot] = torch.tensor([0 if pair is None else pair[0].shape[0] for pair in shards])
        if any(pair is not None for pair in shards):
            self.targeted_slots.add(slot)
        else:
            self.targeted_slots.discard(slot)
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
        if self.lora_b_by_rank is not None:
            self.lora_b_by_rank[slot].copy_(self.lora_b[slot].T)

    def expected_shapes(self, shard: int, rank: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The shapes of A and B a rank-`rank` adapter of shard `shard` must have (the checkpoint's,
        whole: under tensor parallelism `fill_slot` takes this rank's part)."""
        return (rank, self.full_in), (self.full_shards[shard], rank)


def _stack_under(base: QuantLinear, rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Move `base`'s weight (and bias) into the first rows of a buffer `rows` rows taller (zeros below,
    the bias's zero), leaving `base` holding views of its own rows: (the whole weight, the whole bias)."""
    weight = base.weight.data
    stacked = torch.zeros(weight.shape[0] + rows, weight.shape[1], dtype=weight.dtype, device=weight.device)
    stacked[: weight.shape[0]] = weight
    base.weight = nn.Parameter(stacked[: weight.shape[0]], requires_grad=False)
    if base.bias is None:
        return stacked, None
    bias = torch.zeros(stacked.shape[0], dtype=base.bias.dtype, device=base.bias.device)
    bias[: weight.shape[0]] = base.bias.data
    base.bias = nn.Parameter(bias[: weight.shape[0]], requires_grad=False)
    return stacked, bias


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
        # Every call of the model, eager or captured into a graph (a device-side memset the replays repeat),
        # zeroes its fused GEMVs' counts: a hook, so no model code and no graph path has to remember it.
        model.register_forward_pre_hook(lambda module, args: self.step.begin_forward())

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
