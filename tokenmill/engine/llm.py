"""The offline API: `LLM(...).generate(prompts, params)`, shaped like vLLM's so its users feel at home."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from tokenmill.config import EngineConfig
from tokenmill.engine.input_processor import Prompt
from tokenmill.engine.llm_engine import LLMEngine
from tokenmill.lora.adapter import LoRARequest
from tokenmill.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams
from tokenmill.tokenizer import Tokenizer

Message = dict[str, str]


class LLM:
    """Runs batches of prompts to completion. Keyword arguments are the fields of `EngineConfig`."""

    def __init__(self, model: str | None = None, **engine_args: Any) -> None:
        config = EngineConfig(model=model, **engine_args)
        if config.data_parallel_size > 1:
            raise ValueError(
                "data_parallel_size: LLM runs one engine; replicas are served by `tokenmill serve` "
                "(or tokenmill.distributed.data_parallel.DataParallelLLM)"
            )
        self.engine = LLMEngine(config)
        self._ids = itertools.count()

    def shutdown(self) -> None:
        """Stop the engine's tensor-parallel workers, if any (they also stop when this process ends)."""
        self.engine.shutdown()

    @property
    def tokenizer(self) -> Tokenizer:
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt (text or token ids); outputs come back in prompt order.
        `lora_request`: one LoRA adapter for every prompt, or a list of one (or None) per prompt."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        params = sampling_params if sampling_params is not None else SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(params)} sampling_params for {len(prompts)} prompts")
        loras = [lora_request] * len(prompts) if not isinstance(lora_request, Sequence) else lora_request
        if len(loras) != len(prompts):
            raise ValueError(f"got {len(loras)} lora_request for {len(prompts)} prompts")
        order: dict[str, int] = {}
        try:
            for prompt, param, lora in zip(prompts, params, loras):
                request_id = str(next(self._ids))
                self.engine.add_request(request_id, prompt, param, stream=False, lora_request=lora)
                order[request_id] = len(order)
        except ValueError as exc:
            for request_id in order:
                self.engine.abort_request(request_id)
            raise ValueError(f"prompt {len(order)}: {exc}") from exc
        return self._run(order, use_tqdm)

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate replies to one conversation or a list of them, through the model's chat template."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        prompts = [self.tokenizer.encode_chat(c, **(chat_template_kwargs or {})) for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm, lora_request)

    def _run(self, order: dict[str, int], use_tqdm: bool) -> list[RequestOutput]:
        results: list[RequestOutput | None] = [None] * len(order)
        with tqdm(total=len(order), desc="generate", disable=not use_tqdm) as progress:
            while self.engine.has_unfinished_requests():
                for output in self.engine.step():
                    if output.finished:
                        results[order[output.request_id]] = output
                        progress.update(1)
        return [r for r in results if r is not None]
