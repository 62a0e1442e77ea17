"""The engine core: requests in, one scheduled model step at a time, incremental outputs out.

Not thread-safe: exactly one thread (the caller of `LLM`, or `AsyncLLM`'s engine thread) drives it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from tokenmill.config import EngineConfig
from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.detokenizer import SequenceText
from tokenmill.engine.model_runner import (
    GiB,
    Launch,
    ModelRunner,
    activation_reserve_bytes,
    cuda_kv_budget_bytes,
    kv_bytes_per_block,
)
from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch, Scheduler
from tokenmill.engine.sequence import Sequence
from tokenmill.kernels import triton_usable
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.loader import load_model
from tokenmill.outputs import CompletionOutput, RequestOutput, RequestTimes
from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

Prompt = str | list[int]


@dataclass
class StepStats:
    """Counters for benchmarks: steps run, and the time of pure-decode steps and of the others."""

    steps: int = 0
    decode_steps: int = 0
    decode_seconds: float = 0.0
    other_seconds: float = 0.0  # steps with prompt tokens (prefill, or prefill mixed with decodes)
    continued_steps: int = 0  # decode steps launched before the previous step's tokens were known


@dataclass
class _Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    seqs: list[Sequence]
    texts: list[SequenceText]
    stream: bool  # an output every step; else only at the first token and at the end
    started: bool = False

    @property
    def finished(self) -> bool:
        return all(seq.is_finished for seq in self.seqs)


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        device = config.resolved_device()
        dtype = config.resolved_dtype(device)
        started = time.perf_counter()
        use_triton = _use_triton(config, device)
        cache_dtype = _kv_cache_dtype(config, device, dtype)
        loaded = load_model(config.model, device, dtype, config.max_model_len, config.seed, use_triton)
        self.model_name = loaded.name
        self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = loaded.config.eos_token_ids or _tokenizer_eos(loaded.tokenizer)
        model_len = config.max_model_len or loaded.config.max_position_embeddings
        self.max_num_batched_tokens = config.max_num_batched_tokens or max(
            8192 if device.type == "cuda" else 2048, config.max_num_seqs
        )
        num_blocks = config.num_kv_blocks or self._kv_blocks_from_memory(loaded.model, model_len, cache_dtype)
        self.max_model_len = min(model_len, num_blocks * config.block_size)
        if self.max_model_len < model_len:
            logger.warning(
                "max_model_len lowered to %d tokens: the KV cache holds no more", self.max_model_len
            )
        sampler = Sampler(device, config.seed, self.eos_token_ids)
        self.runner = ModelRunner(
            loaded.model,
            config.block_size,
            num_blocks,
            sampler,
            use_triton,
            cache_dtype,
            config.max_num_seqs,
            self.max_model_len,
            cuda_graphs=use_triton and not config.enforce_eager,
        )
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, self.max_num_batched_tokens)
        self.device = device
        self._requests: dict[str, _Request] = {}
        self._seq_owner: dict[int, _Request] = {}
        self.stats = StepStats()
        self._in_flight: tuple[ScheduledBatch, Launch] | None = None
        logger.info(
            "loaded %s on %s (%s, %s kernels, KV %s%s) in %.1fs: %d KV blocks of %d tokens, max_model_len %d",
            self.model_name,
            device,
            dtype,
            "Triton" if use_triton else "PyTorch",
            cache_dtype,
            ", CUDA graphs" if self.runner.graphs else "",
            time.perf_counter() - started,
            num_blocks,
            config.block_size,
            self.max_model_len,
        )

    def _kv_blocks_from_memory(self, model: LlamaForCausalLM, model_len: int, dtype: torch.dtype) -> int:
        per_block = kv_bytes_per_block(model, self.config.block_size, dtype)
        if next(model.parameters()).device.type == "cuda":
            reserve = activation_reserve_bytes(model, self.max_num_batched_tokens, self.config.max_num_seqs)
            budget = cuda_kv_budget_bytes(
                model, self.config.gpu_memory_utilization, reserve, self.config.max_gpu_memory_bytes()
            )
        else:
            budget = int(self.config.cpu_kv_cache_gib * GiB)
        useful = self.config.max_num_seqs * -(-model_len // self.config.block_size) + 1
        return max(1, min(budget // per_block, useful))

    # ---- requests ---------------------------------------------------------------------------------

    def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams, stream: bool = True
    ) -> None:
        """Queue a request; raises ValueError (naming the field) if it can never be served.

        A non-`stream` request reports only its first token (so callers know it started) and its end."""
        if request_id in self._requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        text, token_ids = self._tokenize(prompt)
        if not token_ids:
            raise ValueError("prompt must not be empty")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(
                f"prompt is {len(token_ids)} tokens; the limit is {self.max_model_len - 1} "
                f"(max_model_len {self.max_model_len} includes at least one generated token)"
            )
        vocab = self.model_config.vocab_size
        if any(not 0 <= t < vocab for t in token_ids):
            raise ValueError(f"prompt token ids must lie in [0, {vocab})")
        seqs = [Sequence(request_id, i, token_ids, params, self.device) for i in range(params.n)]
        texts = [SequenceText(self.tokenizer, params, incremental=stream) for _ in seqs]
        request = _Request(request_id, text, token_ids, seqs, texts, stream)
        self._requests[request_id] = request
        for seq in seqs:
            self._seq_owner[seq.seq_id] = request
            self.scheduler.add(seq)

    def _tokenize(self, prompt: Prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return None, list(prompt)
        raise ValueError("prompt must be a string or a list of token ids")

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its KV blocks; returns its final output (finish_reason 'abort')."""
        request = self._requests.get(request_id)
        if request is None:
            return None
        for seq in request.seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
        return self._finalize(request)

    # ---- the step loop ----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run the model once and return an output for every request that advanced.

        With async scheduling, while a pure-decode step runs on the device the next one is already
        queued behind it (fed by its sampled tokens on the device), and the host processes the
        finished step's tokens meanwhile; a sequence that ends discards its one speculative token."""
        started = time.perf_counter()
        current, self._in_flight = self._in_flight, None
        if current is None:
            batch = self.scheduler.schedule()
            if not batch.seqs:
                return []
            current = self._launch(batch)
        batch, launch = current
        if self.config.async_scheduling and self._may_continue(batch):
            follow = self.scheduler.continue_decoding(batch)
            if follow is not None:
                self._in_flight = self._launch(follow, launch.sampled)
                self.stats.continued_steps += 1
        sampled = self.runner.collect(launch)
        touched: dict[str, _Request] = {}
        for seq in batch.seqs:
            token = sampled.get(seq.seq_id)
            if token is None or seq.is_finished:
                continue
            request = self._seq_owner[seq.seq_id]
            self._append_token(request, seq, token)
            touched[request.request_id] = request
        outputs = []
        for request in touched.values():
            if request.finished:
                outputs.append(self._finalize(request))
            elif request.stream or not request.started:
                request.started = True
                outputs.append(self._output(request))
        self.stats.steps += 1
        if batch.num_decodes == len(batch):
            self.stats.decode_steps += 1
            self.stats.decode_seconds += time.perf_counter() - started
        else:
            self.stats.other_seconds += time.perf_counter() - started
        return outputs

    def _launch(
        self, batch: ScheduledBatch, token_source: torch.Tensor | None = None
    ) -> tuple[ScheduledBatch, Launch]:
        launch = self.runner.launch(batch, token_source)
        self.scheduler.commit(batch)
        return batch, launch

    def _may_continue(self, batch: ScheduledBatch) -> bool:
        """A step may be launched before this batch's tokens are known only if no sampling decision
        of the next step depends on them: no penalties, no logprobs, no min_tokens still pending."""
        if batch.num_decodes != len(batch):
            return False
        for seq in batch.seqs:
            params = seq.params
            if (
                params.uses_penalties
                or params.logprobs is not None
                or seq.num_output_tokens < params.min_tokens
            ):
                return False
            if seq.num_computed_tokens >= self.max_model_len:
                return False
        return True

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def _append_token(self, request: _Request, seq: Sequence, token: int) -> None:
        seq.token_ids.append(token)
        seq.token_times.append(time.monotonic())
        if seq.first_token_time is None:
            seq.first_token_time = seq.token_times[0]
        params = seq.params
        may_stop = seq.num_output_tokens >= params.min_tokens
        stop_string = request.texts[seq.index].append(token, check_stops=may_stop)
        if stop_string is not None:
            self.scheduler.finish(seq, "stop", stop_string)
        elif may_stop and not params.ignore_eos and token in self.eos_token_ids:
            self.scheduler.finish(seq, "stop")
        elif may_stop and token in params.stop_token_ids:
            self.scheduler.finish(seq, "stop", token)
        elif seq.num_output_tokens >= (params.max_tokens or self.max_model_len) or (
            seq.num_tokens >= self.max_model_len
        ):
            self.scheduler.finish(seq, "length")

    def _finalize(self, request: _Request) -> RequestOutput:
        del self._requests[request.request_id]
        for seq, text in zip(request.seqs, request.texts):
            self._seq_owner.pop(seq.seq_id, None)
            text.finish(seq.output_token_ids)
        return self._output(request)

    def _output(self, request: _Request) -> RequestOutput:
        outputs = []
        for seq, text in zip(request.seqs, request.texts):
            finished = seq.is_finished
            delta_text = text.take_delta(finished)
            delta_tokens = seq.output_token_ids[text.num_sent_tokens :]
            text.num_sent_tokens = seq.num_output_tokens
            outputs.append(
                CompletionOutput(
                    index=seq.index,
                    text=text.text[: text.num_sent_chars],
                    token_ids=seq.output_token_ids,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                    delta_text=delta_text,
                    delta_token_ids=delta_tokens,
                    logprobs=seq.logprobs,
                    token_times=seq.token_times,
                )
            )
        first = request.seqs[0]
        return RequestOutput(
            request_id=request.request_id,
            prompt=request.prompt,
            prompt_token_ids=request.prompt_token_ids,
            outputs=outputs,
            finished=request.finished,
            num_cached_tokens=first.num_cached_tokens,
            times=RequestTimes(first.arrival_time, first.first_scheduled_time, first.first_token_time),
        )


def _use_triton(config: EngineConfig, device: torch.device) -> bool:
    if config.kernels == "torch":
        return False
    if config.kernels == "triton" and not triton_usable(device):
        raise ValueError("kernels='triton' needs a CUDA device and the triton package")
    return triton_usable(device)


def _kv_cache_dtype(config: EngineConfig, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    if config.kv_cache_dtype == "auto":
        return dtype
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 9):
        raise ValueError(
            "kv_cache_dtype='fp8' needs a GPU with fp8 support (sm_89 or newer: Ada, Hopper, Blackwell)"
        )
    return torch.float8_e4m3fn


def _tokenizer_eos(tokenizer: Tokenizer) -> tuple[int, ...]:
    eos = tokenizer.eos_token_id
    return () if eos is None else (eos,)
