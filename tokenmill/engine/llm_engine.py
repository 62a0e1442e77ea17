"""The engine core: requests in, one scheduled model step at a time, incremental outputs out.

`step()` is the data path: schedule, execute on the device, update the sequences from what was sampled.
The input processor (tokenization, validation), output processor (text, stops, outputs), KV-cache
sizing, the async-scheduling policy (`AsyncScheduler`) and the step counters (`StepStats`) each live in
their own module; the scheduler takes back rejected proposals (`settle_proposals`).

Not thread-safe: exactly one thread (the caller of `LLM`, or `AsyncLLM`'s engine thread) drives it.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from tokenmill.config import EngineConfig
from tokenmill.distributed.workers import start_tensor_parallel
from tokenmill.engine.async_scheduler import AsyncScheduler
from tokenmill.engine.block_manager import BlockManager
from tokenmill.engine.input_processor import InputProcessor, Prompt
from tokenmill.engine.model_runner import Launch
from tokenmill.engine.output_processor import OutputProcessor
from tokenmill.engine.rank_model import RankModel, load_rank_model
from tokenmill.engine.sampler import Sampler
from tokenmill.engine.scheduler import ScheduledBatch, Scheduler
from tokenmill.engine.sequence import Sequence
from tokenmill.engine.stats import StepStats
from tokenmill.lora.adapter import LoRARequest
from tokenmill.lora.manager import LoRAManager
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.spec_decode.draft_model import load_draft_proposer
from tokenmill.spec_decode.speculator import build_speculator
from tokenmill.structured_output.compiler import GrammarCompiler
from tokenmill.structured_output.manager import StructuredOutputs
from tokenmill.structured_output.token_mask import token_mask_op
from tokenmill.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        started = time.perf_counter()
        device, tp, self.workers = start_tensor_parallel(config)
        try:
            rank = load_rank_model(config, device, tp)
            self.max_num_batched_tokens = rank.max_num_batched_tokens
            self.lora = self._lora_manager(rank) if config.lora_enabled else None
            draft = load_draft_proposer(config, rank) if config.speculative_method == "draft" else None
            kv = rank.plan_kv_cache()
        except BaseException:
            if self.workers is not None:  # no runner yet, so no graphs to release first
                self.workers.shutdown()
            raise
        loaded, dtype, ops = rank.loaded, rank.dtype, rank.ops
        self.model_name = loaded.name
        self.model_config = loaded.config
        self.tokenizer = loaded.tokenizer
        self.eos_token_ids = loaded.config.eos_token_ids or _tokenizer_eos(loaded.tokenizer)
        num_blocks, cache_dtype, self.max_model_len = kv.num_blocks, kv.dtype, kv.max_model_len
        self.structured = StructuredOutputs(
            GrammarCompiler(self.tokenizer, loaded.config.vocab_size, self.eos_token_ids),
            config.structured_output_threads,
            token_mask_op(ops.name),
            device,
        )
        sampler = Sampler(device, config.seed, self.eos_token_ids, logits_processor=self.structured)
        self.runner = rank.runner(kv, sampler, self.workers, None if self.lora is None else self.lora.step)
        self.block_manager = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching)
        scheduler_class = AsyncScheduler if config.async_scheduling else Scheduler
        self.speculator = build_speculator(config, draft)
        self.scheduler = scheduler_class(
            self.block_manager,
            config.max_num_seqs,
            self.max_num_batched_tokens,
            self.max_model_len,
            self.speculator,
        )
        self.scheduler.lora = self.lora
        self.input_processor = InputProcessor(
            self.tokenizer, loaded.config.vocab_size, self.max_model_len, self.eos_token_ids
        )
        self.output_processor = OutputProcessor(
            self.tokenizer, self.eos_token_ids, self.max_model_len, self.structured
        )
        self.device = device
        self.stats = StepStats()
        self._in_flight: tuple[ScheduledBatch, Launch] | None = None
        self._stepping: ScheduledBatch | None = None  # the batch of the step under way, for recovery
        self._step_guard = contextlib.nullcontext() if self.workers is None else self.workers.step_guard()
        if self.workers is not None:
            self.workers.started()
        logger.info(
            "loaded %s on %s%s (%s, %s kernels, KV %s%s) in %.1fs: %d KV blocks of %d tokens, "
            "max_model_len %d",
            self.model_name,
            device,
            f" and {tp.size - 1} tensor-parallel workers" if tp.size > 1 else "",
            dtype,
            ops.name,
            cache_dtype,
            ", CUDA graphs" if self.runner.graphs else "",
            time.perf_counter() - started,
            num_blocks,
            config.block_size,
            self.max_model_len,
        )

    def _lora_manager(self, rank: RankModel) -> LoRAManager:
        """The LoRA wrappers and slots (tensor-parallel workers fill theirs as rank 0 does), with the
        adapters of `lora_modules` registered."""
        on_fill = None if self.workers is None else self.workers.fill_lora_slot
        manager = LoRAManager(rank.lora_layers(), on_fill)
        for name, path in self.config.lora_module_paths().items():
            manager.add(name, path)
        return manager

    # ---- requests ---------------------------------------------------------------------------------

    def add_request(
        self,
        request_id: str,
        prompt: Prompt,
        params: SamplingParams,
        stream: bool = True,
        lora_request: LoRARequest | str | None = None,
    ) -> None:
        """Queue a request; raises ValueError (naming the field) if it can never be served.

        A non-`stream` request reports only its first token (so callers know it started) and its end.
        `lora_request` names the LoRA adapter to run under: a `LoRARequest` (read on first use) or the
        name of one already loaded."""
        if request_id in self.output_processor:
            raise ValueError(f"request_id {request_id!r} is already in use")
        adapter = None if lora_request is None else self._lora_on().adapter_for(lora_request)
        request = self.input_processor.process(request_id, prompt, params)
        seqs = [
            Sequence(request_id, i, request.prompt_token_ids, params, self.device) for i in range(params.n)
        ]
        for seq in seqs:
            seq.lora = adapter
        if params.structured_outputs is not None:
            self.structured.attach(seqs, params.structured_outputs)
        self.output_processor.add(request, seqs, stream)
        for seq in seqs:
            self.scheduler.add(seq)

    def _lora_on(self) -> LoRAManager:
        if self.lora is None:
            raise ValueError("lora_request needs an engine started with enable_lora=True (--enable-lora)")
        return self.lora

    def add_lora(self, name: str, path: str) -> None:
        """Register a LoRA adapter (read and checked now, made resident when a request first uses it)."""
        self._lora_on().add(name, path)

    def remove_lora(self, name: str) -> None:
        """Forget a LoRA adapter; refused while an unfinished request runs under it."""
        self._lora_on().remove(name, [*self.scheduler.waiting, *self.scheduler.running])

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its KV blocks; returns its final output (finish_reason 'abort')."""
        seqs = self.output_processor.seqs_of(request_id)
        if seqs is None:
            return None
        for seq in seqs:
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
        return self.output_processor.finalize(request_id)

    def has_unfinished_requests(self) -> bool:
        return len(self.output_processor) > 0

    def shutdown(self) -> None:
        """Stop the tensor-parallel workers, if any (they also exit on their own when this process does)."""
        if self.workers is not None:
            self.runner.graphs.release()
            self.workers.shutdown()

    # ---- the step loop ----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run the model once and return an output for every request that advanced.

        With an `AsyncScheduler`, the next decode step is launched before this one's tokens are
        collected, so the device never waits for the host's text and stop work. Under tensor
        parallelism, a step that does not end in `step_timeout_s` stops the engine (`StepWatchdog`)."""
        with self._step_guard:
            return self._step()

    def _step(self) -> list[RequestOutput]:
        started = time.perf_counter()
        if self._in_flight is not None:
            (batch, launch), self._in_flight = self._in_flight, None
            self._stepping = batch
        else:
            batch = self.scheduler.schedule()
            if not batch.seqs:
                return []
            self._stepping = batch
            launch = self._launch(batch)
        follow = self.scheduler.continue_decoding(batch)
        unsampled = None
        if follow is not None:
            # Grammar masks follow every accepted token: such a step's forward pass runs ahead, and its
            # sampling is queued once this step's tokens have advanced the matchers.
            defer = self.structured.constrains(follow.seqs)
            follow_launch = self._launch(follow, launch.sampled, sample=not defer)
            self._in_flight = follow, follow_launch
            unsampled = follow_launch if defer else None
            self.stats.continued_steps += 1
        sampled = self.runner.collect(launch)
        outputs = self._update_from_output(sampled, batch)
        if unsampled is not None:
            self.runner.sample(unsampled)
        self._stepping = None
        self._record_step(batch, time.perf_counter() - started)
        return outputs

    def _launch(
        self, batch: ScheduledBatch, token_source: torch.Tensor | None = None, sample: bool = True
    ) -> Launch:
        runner = self.runner
        launch = runner.launch(batch, token_source) if sample else runner.launch_forward(batch, token_source)
        self.scheduler.commit(batch)
        return launch

    def _update_from_output(
        self, sampled: list[tuple[Sequence, int]], batch: ScheduledBatch
    ) -> list[RequestOutput]:
        """Append each sampled token, end the sequences that stop, and report the requests that advanced.
        A sequence that finished after this batch was launched ahead drops its speculative token; one
        that verified proposals appends several tokens, up to the first that ends it; one whose grammar
        refuses its token ends without it (`OutputProcessor.grammar_accepts`)."""
        advanced = []
        now = time.monotonic()  # one timestamp for the step's tokens: they all arrived together
        process_token = self.output_processor.process_token
        grammar_accepts = self.output_processor.grammar_accepts
        constrained = self.structured.constrains(batch.seqs)
        for seq, token in sampled:
            if seq.is_finished:
                continue
            if constrained and not grammar_accepts(seq, token):
                self.scheduler.finish(seq, "abort")
            else:
                seq.append_token(token, now)
                stop = process_token(seq, token)
                if stop is not None:
                    self.scheduler.finish(seq, *stop)
            advanced.append(seq)
        if self.speculator is not None:
            self.stats.record_speculation(*self.scheduler.settle_proposals(sampled, batch))
        return self.output_processor.outputs(advanced)

    def _record_step(self, batch: ScheduledBatch, seconds: float) -> None:
        if self.speculator is not None:
            self.speculator.record_time(batch, seconds)
        self.stats.record_step(batch, seconds)

    def abort_failed_step(self) -> list[str]:
        """After `step()` raised: abort the requests of the step that failed and of any step launched
        behind it (every request, if the failure came before a batch existed); returns their ids.
        Waits for the device first, so no aborted request's step still runs while its blocks are reused
        (on a broken device that wait raises again, which callers treat as fatal)."""
        seqs = list(self._stepping.seqs) if self._stepping is not None else []
        if self._in_flight is not None:
            seqs += self._in_flight[0].seqs
        self._stepping, self._in_flight = None, None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        request_ids = list(dict.fromkeys(seq.request_id for seq in seqs))
        request_ids = request_ids or self.output_processor.request_ids()
        for request_id in request_ids:
            self.abort_request(request_id)
        return request_ids


def _tokenizer_eos(tokenizer: Tokenizer) -> tuple[int, ...]:
    eos = tokenizer.eos_token_id
    return () if eos is None else (eos,)
