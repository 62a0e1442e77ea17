"""Owns the model and its KV cache on the device; turns a scheduled batch into sampled tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

from tokenmill.engine.block_table import BlockTable
from tokenmill.engine.cuda_graphs import DecodeGraphs, GraphsByWidth, StaticInputs
from tokenmill.engine.kv_cache_sizing import allocate_kv_cache
from tokenmill.engine.prefill_graphs import PrefillGraphs
from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.engine.step_inputs import InputBuilder, StepInputs
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import Ops
from tokenmill.lora.layers import LoRAStep
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.quantization.warm_up import compile_gemm_variants, prompt_variant_tokens
from tokenmill.spec_decode.rejection_sampler import RejectionSampler, emitted_tokens
from tokenmill.spec_decode.verify_graphs import VerifyGraphs

logger = logging.getLogger(__name__)


@dataclass
class Launch:
    """A step queued on the device: the sequences that sample, their tokens on the device and on their
    way to the host, the event that marks them ready, the logits (for logprobs), and the proposals
    verified (then `sampled` has a token per logit row, see RejectionSampler). The token fields stay
    None until the step is sampled (`ModelRunner.sample`)."""

    seqs: list[Sequence]
    sampled: torch.Tensor | None
    host: torch.Tensor | None
    done: torch.cuda.Event | None
    logits: torch.Tensor | None
    proposals: list[list[int]] | None = None


class StepPeers(Protocol):
    """The other tensor-parallel ranks, as rank 0's runner drives them (`distributed/workers.py`)."""

    def send_step(self, inputs: StepInputs, use_graph: bool) -> None:
        """Start the same forward pass on every other rank."""

    def share_sampled(self, sampled: torch.Tensor) -> None:
        """Give every other rank the step's sampled tokens (a continuation step's input tokens)."""


class ModelRunner:
    """Runs one scheduled batch per call. Pure decode batches replay a CUDA graph captured for the
    next larger batch size, and so do verify batches of speculative decoding with `verify_graphs`;
    everything else runs eagerly. The cache has one extra "null" block that
    padded graph rows read and write, so padding never touches a live sequence. With LoRA, each step's
    token -> adapter-slot mapping is written into `lora_step`'s persistent buffers before the forward
    pass, so the graphs (captured with the LoRA kernels in them) serve any mix of adapters."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        block_size: int,
        num_blocks: int,
        sampler: Sampler | None,
        ops: Ops,
        kv_cache_dtype: torch.dtype | None = None,
        max_num_seqs: int = 256,
        max_model_len: int = 4096,
        cuda_graphs: bool = False,
        peers: StepPeers | None = None,
        lora_step: LoRAStep | None = None,
        verify_graphs: VerifyGraphs | None = None,
        prefill_graphs: PrefillGraphs | None = None,
    ) -> None:
        """`sampler` is None on a tensor-parallel worker; `peers` are rank 0's workers; `verify_graphs`
        and `prefill_graphs` (captured here with the decode graphs) run the verify steps of speculative
        decoding and the steps of one sequence's prompt chunk."""
        self.model = model
        self.peers = peers
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.sampler = sampler
        self.rejection_sampler = RejectionSampler(sampler)
        self.ops = ops
        params = next(model.parameters())
        self.device, self.dtype = params.device, params.dtype
        cfg = model.config
        num_heads, self.num_kv_heads = model.local_heads()
        self.null_block = num_blocks
        shape = (2, num_blocks + 1, block_size, self.num_kv_heads, cfg.head_dim)
        self.kv_caches, kv_scales = allocate_kv_cache(
            shape, kv_cache_dtype or self.dtype, len(model.layers), self.device
        )
        for attention, cache, scales in zip(model.attention_layers(), self.kv_caches, kv_scales):
            attention.kv_cache, attention.kv_scales = cache, scales
        self.num_sms = (
            torch.cuda.get_device_properties(self.device).multi_processor_count
            if self.device.type == "cuda"
            else 1
        )
        self.max_model_len = max_model_len
        max_blocks_per_seq = -(-max_model_len // block_size)
        block_table = BlockTable(block_size, max_num_seqs, max_blocks_per_seq, self.null_block)
        self.lora_step = lora_step
        self.inputs = InputBuilder(block_table, self.device, 0 if lora_step is None else lora_step.num_slots)
        self.graphs = DecodeGraphs()
        self.verify_graphs = verify_graphs
        self.prefill_graphs = prefill_graphs
        ops.warm_up(self.kv_caches[0], num_heads, self.dtype, self.null_block, kv_scales[0])
        compile_gemm_variants(model, self.dtype)
        self._compile_prompt_variants()
        if cuda_graphs:
            splits = self._graph_splits
            self.graphs.capture(model, block_table, self.device, max_num_seqs, splits)
            for wide in (verify_graphs, prefill_graphs):
                if wide is not None:
                    wide.capture(model, block_table, self.device, self.graphs.pool, splits)

    @torch.inference_mode()
    def _compile_prompt_variants(self) -> None:
        """An eager one-row prompt chunk on the null block at each token count where a quantized GEMM
        changes route, so that no request's prompt compiles the kernels around it (graph capture
        compiles only the captured shapes'); on every tensor-parallel rank alike."""
        for tokens in prompt_variant_tokens(self.model, self.max_model_len):
            static = StaticInputs(1, self.inputs.block_table, self.device, tokens, verifies=False)
            self.model(static.input_ids, static.positions, static.metadata(1, 1))

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch, token_source: torch.Tensor | None = None) -> Launch:
        """Queue one step on the device without waiting for it. The tokens of sequences whose known tokens
        will all be computed are sampled and copied back asynchronously; `collect` waits for them.

        `token_source` (a previous launch's sampled tokens, still on the device) gives the input tokens
        of a continuation batch, whose tokens the host does not know yet."""
        launch = self.launch_forward(batch, token_source)
        self.sample(launch)
        return launch

    @torch.inference_mode()
    def launch_forward(self, batch: ScheduledBatch, token_source: torch.Tensor | None = None) -> Launch:
        """`launch` without the sampling: the caller queues that with `sample`, once what the sampler
        reads (grammar matchers) has caught up with the step before."""
        graph_size, width = self.graphs.padded_size(batch), 1
        for wide in (self.verify_graphs, self.prefill_graphs):
            if graph_size is None and wide is not None:
                graph_size, width = wide.plan(batch) or (None, 1)
        inputs = self.inputs.build_inputs(batch, token_source, graph_size, width)
        if self.peers is not None:
            self.peers.send_step(inputs, graph_size is not None)
        logits = self.run_model(inputs, graph_size is not None)
        return Launch(inputs.sampling_seqs, None, None, None, logits, inputs.proposals)

    @torch.inference_mode()
    def sample(self, launch: Launch) -> None:
        """Queue the sampling of a launched step's logits and the copy of its tokens to the host."""
        if launch.logits is None:
            return
        assert self.sampler is not None, "rank 0 samples"
        logits, seqs, proposals = launch.logits, launch.seqs, launch.proposals
        if proposals is None:
            sampled = self.sampler(logits, seqs)
        else:
            sampled = self.rejection_sampler(logits, seqs, proposals)
        if self.peers is not None:
            self.peers.share_sampled(sampled)
        launch.sampled = sampled
        if self.device.type != "cuda":
            launch.host = sampled
            return
        host = self.inputs.staging.tensor("sampled", sampled.numel(), torch.long)
        host.copy_(sampled, non_blocking=True)
        launch.host, launch.done = host, torch.cuda.Event()
        launch.done.record()

    @torch.inference_mode()
    def collect(self, launch: Launch) -> list[tuple[Sequence, int]]:
        """Wait for a launched step; returns each sequence that sampled a token with that token, in batch
        order (a sequence that verified proposals once per token it emits). Sequences that asked for
        logprobs get them appended."""
        if launch.sampled is None:
            return []
        if launch.done is not None:
            launch.done.synchronize()
        tokens = launch.host.tolist()
        assert self.sampler is not None, "rank 0 samples"
        if launch.proposals is None:
            self.sampler.record_logprobs(launch.logits, launch.sampled, launch.seqs)
            return list(zip(launch.seqs, tokens))
        pairs, rows = emitted_tokens(launch.seqs, launch.proposals, tokens)
        if any(seq.logprobs is not None for seq in launch.seqs):
            index = torch.tensor(rows, device=self.device)
            self.sampler.record_logprobs(launch.logits[index], launch.sampled[index], [s for s, _ in pairs])
        return pairs

    def run_model(self, inputs: StepInputs, use_graph: bool) -> torch.Tensor | None:
        """The forward pass, then the logits of the tokens that sample (None if none does, and on a
        tensor-parallel worker, which only contributes its part). Every rank loads the step's LoRA
        mapping here, so all of them run (or skip) the same LoRA collectives."""
        if self.lora_step is not None and inputs.lora is not None:
            self.lora_step.load(inputs.lora, always=use_graph)
        if not use_graph:
            hidden = self._forward(inputs)
        elif inputs.width > 1:
            hidden = self._wide_graphs(inputs.width).replay(inputs)
        else:
            hidden = self.graphs.replay(inputs)
        num_sampling = len(inputs.logits_indices)
        if num_sampling == 0:
            return None
        if num_sampling < len(hidden):
            hidden = hidden[inputs.logits_indices.to(self.device, non_blocking=True)]
        return self.model.compute_logits(hidden)

    def _wide_graphs(self, width: int) -> GraphsByWidth:
        """The graphs of rows `width` tokens wide: the prefill graphs' widths exceed every verify width."""
        prefill = self.prefill_graphs
        wide = prefill if prefill is not None and width in prefill.by_width else self.verify_graphs
        assert wide is not None, f"no graph has rows of {width} tokens"
        return wide

    def _forward(self, inputs: StepInputs) -> torch.Tensor:
        """The eager forward pass: upload the step's inputs and run the model on them."""

        def upload(host: torch.Tensor) -> torch.Tensor:
            return host.to(self.device, non_blocking=True)

        meta = AttentionMetadata(
            slot_mapping=upload(inputs.slot_mapping),
            block_tables=upload(inputs.block_tables),
            seq_lens=upload(inputs.seq_lens),
            query_start_loc=upload(inputs.query_start_loc),
            num_decodes=inputs.num_decodes,
            seq_lens_cpu=inputs.seq_lens_cpu,
            query_lens_cpu=inputs.query_lens,
            block_size=self.block_size,
            max_query_len=max(inputs.query_lens),
            verifies=inputs.proposals is not None,
        )
        # the sequences whose tokens attend as decodes: all of them in a step of decodes and verify chunks
        decoded = inputs.num_rows if meta.attends_as_decodes else inputs.num_decodes
        meta.decode_splits = self._decode_splits(decoded, max(inputs.seq_lens_cpu[:decoded], default=1))
        input_ids = inputs.token_source if inputs.input_ids is None else upload(inputs.input_ids)
        return self.model(input_ids, upload(inputs.positions), meta)

    def _graph_splits(self, num_seqs: int) -> int:
        """The split count a graph of `num_seqs` rows is captured with: for the longest context."""
        return self._decode_splits(num_seqs, self.max_model_len)

    def _decode_splits(self, num_seqs: int, max_len: int) -> int:
        return self.ops.decode_splits(num_seqs, self.num_kv_heads, max_len, self.num_sms)
