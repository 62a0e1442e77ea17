"""Owns the model and its KV cache on the device; turns a scheduled batch into sampled tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch
from tokenmill.engine.sequence import Sequence
from tokenmill.kernels.metadata import AttentionMetadata
from tokenmill.kernels.ops import Ops
from tokenmill.models.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)


@dataclass
class Launch:
    """A step queued on the device: the sequences that sample, their tokens on the device and on their
    way to the host, the event that marks them ready, and the logits (for logprobs)."""

    seqs: list[Sequence]
    sampled: torch.Tensor | None
    host: torch.Tensor | None
    done: torch.cuda.Event | None
    logits: torch.Tensor | None


_NUMPY_TYPES = {torch.long: np.int64, torch.int32: np.int32}
GRAPH_BATCH_SIZES = (1, 2, 4, 8, *range(16, 513, 16))


class ModelRunner:
    """Runs one scheduled batch per call. Pure decode batches replay a CUDA graph captured for the
    next larger batch size; everything else runs eagerly. The cache has one extra "null" block that
    padded graph rows read and write, so padding never touches a live sequence."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        block_size: int,
        num_blocks: int,
        sampler: Sampler,
        ops: Ops,
        kv_cache_dtype: torch.dtype | None = None,
        max_num_seqs: int = 256,
        max_model_len: int = 4096,
        cuda_graphs: bool = False,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.sampler = sampler
        self.ops = ops
        params = next(model.parameters())
        self.device, self.dtype = params.device, params.dtype
        cfg = model.config
        self.null_block = num_blocks
        cache_dtype = kv_cache_dtype or self.dtype
        shape = (2, num_blocks + 1, block_size, cfg.num_key_value_heads, cfg.head_dim)
        self.kv_caches = [torch.zeros(shape, dtype=cache_dtype, device=self.device) for _ in model.layers]
        for attention, cache in zip(model.attention_layers(), self.kv_caches):
            attention.kv_cache = cache
        fp8 = cache_dtype == torch.float8_e4m3fn
        self.kv_scales = torch.ones(2, dtype=torch.float32, device=self.device) if fp8 else None
        self.num_sms = (
            torch.cuda.get_device_properties(self.device).multi_processor_count
            if self.device.type == "cuda"
            else 1
        )
        self.max_model_len = max_model_len
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pinned: dict[str, torch.Tensor] = {}
        self._parity = 0  # alternates per launch; selects the set of host buffers a launch may write
        ops.warm_up(self.kv_caches[0], cfg.num_attention_heads, self.dtype, self.null_block, self.kv_scales)
        if cuda_graphs:
            self._capture_decode_graphs(max_num_seqs)

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch, token_source: torch.Tensor | None = None) -> Launch:
        """Queue one step on the device without waiting for it. The tokens of sequences whose known tokens
        will all be computed are sampled and copied back asynchronously; `collect` waits for them.

        `token_source` (a previous launch's sampled tokens, still on the device) gives the input tokens
        of a continuation batch, whose tokens the host does not know yet."""
        self._parity ^= 1
        if self.graphs and batch.num_decodes == len(batch) and len(batch) <= max(self.graphs):
            hidden = self._replay_decode_graph(batch, token_source)
            logits = self.model.compute_logits(hidden)
            sampling_seqs = batch.seqs
        else:
            input_ids, positions, meta, logit_rows, sampling_seqs = self._prepare(batch, token_source)
            hidden = self.model(input_ids, positions, meta)
            if not sampling_seqs:
                return Launch([], None, None, None, None)
            logits = self.model.compute_logits(hidden[logit_rows])
        sampled = self.sampler(logits, sampling_seqs)
        if self.device.type != "cuda":
            return Launch(sampling_seqs, sampled, sampled, None, logits)
        host = self._pinned_buffer(f"sampled{self._parity}", sampled.numel(), torch.long)
        host.copy_(sampled, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return Launch(sampling_seqs, sampled, host, done, logits)

    @torch.inference_mode()
    def collect(self, launch: Launch) -> dict[int, int]:
        """Wait for a launched step; returns the sampled token of each sequence that sampled one.
        Sequences that asked for logprobs get them appended (log-softmax of the raw logits)."""
        if launch.sampled is None:
            return {}
        if launch.done is not None:
            launch.done.synchronize()
        tokens = launch.host.tolist()
        wanting = [
            row for row, seq in enumerate(launch.seqs) if seq.logprobs is not None and not seq.is_finished
        ]
        if wanting:
            _record_logprobs(launch.logits, launch.sampled, wanting, launch.seqs)
        return {seq.seq_id: token for seq, token in zip(launch.seqs, tokens)}

    def _pinned_buffer(self, name: str, size: int, dtype: torch.dtype) -> torch.Tensor:
        buffer = self._pinned.get(name)
        if buffer is None or buffer.numel() < size:
            buffer = torch.empty(max(2 * size, 4096), dtype=dtype, pin_memory=True)
            self._pinned[name] = buffer
        return buffer[:size]

    def _upload(self, name: str, values: list[int] | list[list[int]], dtype: torch.dtype) -> torch.Tensor:
        """Host values on the device. On CUDA they go through pinned buffers kept per array and per launch
        parity: the copy of the step still in flight is never overwritten, and no pinned memory is
        allocated per step."""
        if self.device.type != "cuda":
            return torch.tensor(values, dtype=dtype)
        array = np.asarray(values, dtype=_NUMPY_TYPES[dtype])
        staged = self._pinned_buffer(f"{name}{self._parity}", array.size, dtype)
        staged.numpy()[:] = array.ravel()
        return staged.view(array.shape).to(self.device, non_blocking=True)

    def _decode_splits(self, num_seqs: int, max_len: int) -> int:
        return self.ops.decode_splits(num_seqs, self.model.config.num_key_value_heads, max_len, self.num_sms)

    def _prepare(
        self, batch: ScheduledBatch, token_source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor, list[Sequence]]:
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        seq_lens: list[int] = []
        query_starts = [0]
        logit_rows: list[int] = []
        sampling_seqs: list[Sequence] = []
        for seq, num_new in zip(batch.seqs, batch.num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + num_new
            if token_source is None:
                input_ids += seq.token_ids[start:end]
            positions += range(start, end)
            table = seq.block_ids
            slots += [table[p // bs] * bs + p % bs for p in range(start, end)]
            seq_lens.append(end)
            query_starts.append(query_starts[-1] + num_new)
            if end >= seq.num_tokens:  # beyond: a continuation, whose newest token is still on the device
                logit_rows.append(query_starts[-1] - 1)
                sampling_seqs.append(seq)
        width = max(len(seq.block_ids) for seq in batch.seqs)
        tables = [seq.block_ids + [self.null_block] * (width - len(seq.block_ids)) for seq in batch.seqs]
        nd = batch.num_decodes
        meta = AttentionMetadata(
            slot_mapping=self._upload("slots", slots, torch.long),
            block_tables=self._upload("tables", tables, torch.int32),
            seq_lens=self._upload("seq_lens", seq_lens, torch.int32),
            query_start_loc=self._upload("query_starts", query_starts, torch.int32),
            num_decodes=nd,
            seq_lens_cpu=seq_lens,
            query_lens_cpu=batch.num_new_tokens,
            block_size=bs,
            max_query_len=max(batch.num_new_tokens),
            decode_splits=self._decode_splits(nd, max(seq_lens[:nd], default=1)),
            kv_scales=self.kv_scales,
        )
        return (
            token_source if token_source is not None else self._upload("input_ids", input_ids, torch.long),
            self._upload("positions", positions, torch.long),
            meta,
            self._upload("logit_rows", logit_rows, torch.long),
            sampling_seqs,
        )

    # ---- CUDA graphs for decode -------------------------------------------------------------------

    def _capture_decode_graphs(self, max_num_seqs: int) -> None:
        sizes = sorted({b for b in GRAPH_BATCH_SIZES if b < max_num_seqs} | {min(max_num_seqs, 512)})
        largest = sizes[-1]
        width = -(-self.max_model_len // self.block_size)
        device = self.device
        self._graph_inputs = {
            "input_ids": torch.zeros(largest, dtype=torch.long, device=device),
            "positions": torch.zeros(largest, dtype=torch.long, device=device),
            "slot_mapping": torch.full(
                (largest,), self.null_block * self.block_size, dtype=torch.long, device=device
            ),
            "block_tables": torch.full((largest, width), self.null_block, dtype=torch.int32, device=device),
            "seq_lens": torch.ones(largest, dtype=torch.int32, device=device),
            "query_start_loc": torch.arange(largest + 1, dtype=torch.int32, device=device),
        }
        self._table_host = [torch.empty(largest, width, dtype=torch.int32, pin_memory=True) for _ in range(2)]
        self._table_rows: list[list[tuple[int, int, int] | None]] = [[None] * largest for _ in range(2)]
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for size in reversed(sizes):
                meta = self._graph_metadata(size)
                inputs = self._graph_inputs
                self.model(inputs["input_ids"][:size], inputs["positions"][:size], meta)  # compile, warm up
                torch.cuda.synchronize(device)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    hidden = self.model(inputs["input_ids"][:size], inputs["positions"][:size], meta)
                self.graphs[size] = (graph, hidden)
        torch.cuda.synchronize(device)

    def _host_block_tables(self, seqs: list[Sequence], width: int) -> torch.Tensor:
        """The batch's block tables in a pinned buffer kept across steps: in steady decoding the batch
        order rarely changes, so only rows whose sequence or block count changed are rewritten."""
        host, rows = self._table_host[self._parity], self._table_rows[self._parity]
        for row, seq in enumerate(seqs):
            key = (seq.seq_id, seq.block_generation, len(seq.block_ids))
            if rows[row] != key:
                host.numpy()[row, : key[2]] = seq.block_ids
                rows[row] = key
        return host[: len(seqs), :width]

    def _graph_metadata(self, size: int) -> AttentionMetadata:
        inputs = self._graph_inputs
        return AttentionMetadata(
            slot_mapping=inputs["slot_mapping"][:size],
            block_tables=inputs["block_tables"][:size],
            seq_lens=inputs["seq_lens"][:size],
            query_start_loc=inputs["query_start_loc"][: size + 1],
            num_decodes=size,
            seq_lens_cpu=[],
            query_lens_cpu=[],
            block_size=self.block_size,
            decode_splits=self._decode_splits(size, self.max_model_len),
            kv_scales=self.kv_scales,
        )

    def _replay_decode_graph(self, batch: ScheduledBatch, token_source: torch.Tensor | None) -> torch.Tensor:
        num = len(batch)
        size = min(s for s in self.graphs if s >= num)
        bs = self.block_size
        seqs = batch.seqs
        positions = [seq.num_computed_tokens for seq in seqs]
        ids = [0] * num if token_source is not None else [seq.token_ids[p] for seq, p in zip(seqs, positions)]
        slots = [seq.block_ids[p // bs] * bs + p % bs for seq, p in zip(seqs, positions)]
        lens = [p + 1 for p in positions]
        inputs = self._graph_inputs
        step = self._upload("decode", [ids, positions, slots, lens], torch.long)
        inputs["input_ids"][:num].copy_(step[0] if token_source is None else token_source)
        inputs["positions"][:num].copy_(step[1])
        inputs["slot_mapping"][:num].copy_(step[2])
        inputs["seq_lens"][:num].copy_(step[3])
        width = max(len(seq.block_ids) for seq in seqs)
        inputs["block_tables"][:num, :width].copy_(self._host_block_tables(seqs, width), non_blocking=True)
        if size > num:  # padding rows: one token in the null block
            inputs["slot_mapping"][num:size].fill_(self.null_block * bs)
            inputs["seq_lens"][num:size].fill_(1)
            inputs["block_tables"][num:size, 0].fill_(self.null_block)
        graph, hidden = self.graphs[size]
        graph.replay()
        return hidden[:num]


def _record_logprobs(
    logits: torch.Tensor, sampled: torch.Tensor, rows: list[int], seqs: list[Sequence]
) -> None:
    index = torch.tensor(rows, device=logits.device)
    logprobs = logits[index].float().log_softmax(dim=-1)
    chosen = logprobs.gather(-1, sampled[index][:, None])[:, 0].tolist()
    top_n = max(seqs[row].params.logprobs or 0 for row in rows)
    top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n else (logprobs[:, :0], logprobs[:, :0])
    top_values, top_ids = top_values.tolist(), top_ids.long().tolist()
    sampled_ids = sampled[index].tolist()
    for i, row in enumerate(rows):
        seq = seqs[row]
        n = seq.params.logprobs or 0
        entry = dict(zip(top_ids[i][:n], top_values[i][:n]))
        entry[sampled_ids[i]] = chosen[i]
        assert seq.logprobs is not None
        seq.logprobs.append(entry)
