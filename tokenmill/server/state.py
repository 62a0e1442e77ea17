"""The server's side of the engine, as request handlers see it: one object made of four parts.

- `lifecycle` (lifecycle.py): loading, readiness, draining, failure;
- `admission` (admission.py): request limits and the waiting queue;
- `prompts` (prompts.py): tokenization and chat templates, off the event loop and bounded;
- `generation` (generation.py): one request's run, its timeout and its outcome in the metrics.

Every endpoint goes through these parts, so limits and metrics hold the same everywhere.
"""

from __future__ import annotations

import gc
import logging
import time

from tokenmill.config import ServerConfig
from tokenmill.eval.datasets import load_items
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.admission import Admission, Ticket
from tokenmill.server.disconnect import unless_disconnected
from tokenmill.server.generation import Generation, new_id
from tokenmill.server.lifecycle import EngineLifecycle
from tokenmill.server.metrics import Metrics
from tokenmill.server.prompts import PromptEncoder, question_messages
from tokenmill.tokenizer import Tokenizer

__all__ = ["ServerState", "Ticket", "new_id", "question_messages", "unless_disconnected"]

logger = logging.getLogger(__name__)


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.lifecycle = EngineLifecycle(config)
        engine = self.lifecycle
        self.metrics = Metrics(lambda: engine.engine.loads() if engine.engine else [])
        self.admission = Admission(config, self.lifecycle)
        self.prompts = PromptEncoder(config, self.lifecycle, self.admission)
        self.generation = Generation(config, self.lifecycle, self.metrics)
        # the shortcuts the OpenAI and FastDeploy handlers call
        self.admit = self.admission.admit
        self.check_model = self.admission.check_model
        self.check_prompt_length = self.admission.check_prompt_length
        self.check_max_tokens = self.admission.check_max_tokens
        self.resolve_max_tokens = self.admission.resolve_max_tokens
        self.sampling_params = self.admission.sampling_params
        self.encode = self.prompts.encode
        self.encode_many = self.prompts.encode_many
        self.encode_chat = self.prompts.encode_chat
        self.encode_prompt = self.prompts.encode_prompt
        self.refuse_early = self.generation.refuse_early
        self.generate = self.generation.generate
        self.final_output = self.generation.final_output

    async def start(self) -> None:
        """Load the model (health endpoints keep answering meanwhile), then warm it up."""
        try:
            await self.lifecycle.load()
            self._check_default_lora()
            await self.prompts.prepare()
            if self.config.warmup:
                await self._warm_up()
        except Exception as exc:
            self.lifecycle.fail(exc)
            raise
        self.lifecycle.ready.set()
        logger.info("ready: serving %s on %s:%d", self.model_name, self.config.host, self.config.port)

    def _check_default_lora(self) -> None:
        default = self.config.default_lora
        if default is not None and default not in self.admission.lora_adapters():
            raise ValueError(f"default_lora {default!r} is not one of the adapters of lora_modules")

    async def _warm_up(self) -> None:
        """Run the batch shape the judge will send before reporting ready: with `warmup_file`, its
        questions through the chat template, as many at once as `max_num_seqs` allows; else made-up
        questions, still through the template, so its first rendering is not a request's. On a GPU the
        made-up batch is also `max_num_seqs` wide, so the first real batch meets no step shape (prefill
        chunk, sampler width, first replay of the widest graph) for the first time; on a CPU a few do."""
        started = time.perf_counter()
        params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
        if self.config.warmup_file:
            questions = [item.question for item in load_items(self.config.warmup_file)]
            count = min(self.config.max_num_seqs, self.config.warmup_prompts or self.config.max_num_seqs)
        else:
            on_gpu = self.lifecycle.engine is not None and self.lifecycle.engine.engine.device.type == "cuda"
            default = self.config.max_num_seqs if on_gpu else 8
            questions = [f"Warm-up question {i}: what does a GPU kernel launch cost?" for i in range(default)]
            count = min(self.config.max_num_seqs, self.config.warmup_prompts or default)
        system = self.config.system_prompt
        conversations = [question_messages(questions[i % len(questions)], system) for i in range(count)]
        limit = self.admission.max_prompt_tokens
        encoded = await self.prompts.run(self.prompts.conversations_now, conversations)
        await self.generation.generate_batch([ids[-limit:] for ids in encoded], params, "warmup")
        logger.info("warm-up of %d requests took %.2fs", count, time.perf_counter() - started)
        # Start-up leaves millions of young objects (modules, model wrappers, compiled kernels): the first
        # batch's allocations would trigger a full collection that walks them all, a pause of 0.1-0.4 s.
        # Collect now and freeze the survivors, so no later collection walks them again.
        gc.collect()
        gc.freeze()

    def shutdown(self) -> None:
        self.prompts.shutdown()
        self.lifecycle.shutdown()

    @property
    def model_name(self) -> str:
        return self.lifecycle.model_name

    @property
    def started_at(self) -> float:
        return self.lifecycle.started_at

    @property
    def tokenizer(self) -> Tokenizer:
        return self.prompts.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.lifecycle.running_engine().engine.model_config.vocab_size

    @property
    def max_prompt_tokens(self) -> int:
        return self.admission.max_prompt_tokens
