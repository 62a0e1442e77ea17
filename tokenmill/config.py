"""Settings: the engine's knobs, and the server's on top of them, validated in one place."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from tokenmill.config_env import SeedAliasSource
from tokenmill.config_values import LoRAModule, canonical_lora_modules, parse_bytes
from tokenmill.kernels.metadata import MAX_VERIFY_WIDTH

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(BaseModel):
    """Knobs of the inference engine (names follow vLLM's `LLM` arguments)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    model: str | None = Field(
        default=None, description="HF directory, .gguf file or random:<preset>; None = embedded default"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Dtype = "auto"
    max_num_seqs: int = Field(default=256, ge=1, description="most sequences decoded together")
    max_model_len: int | None = Field(default=None, ge=2, description="prompt + output limit in tokens")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="token budget of one step")
    block_size: int = Field(default=16, ge=1, le=1024, description="tokens per KV-cache block")
    num_kv_blocks: int | None = Field(default=None, ge=1, description="fixes the KV cache size")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    cpu_kv_cache_gib: float = Field(default=2.0, gt=0, description="KV cache budget on CPU")
    enable_prefix_caching: bool = True
    seed: int = 0
    kv_cache_dtype: Literal["auto", "fp8", "int8"] = Field(
        default="auto",
        description="KV-cache precision: the model dtype, fp8 (e4m3, CUDA sm_89+) or int8 (a scale per "
        "token and head, any device)",
    )
    quantization: Literal["fp8", "int8", "awq", "gptq"] | None = Field(
        default=None,
        description="quantize float weights at load: fp8 (per output channel), int8 (weight-only, per "
        "channel), awq (int4 with zero points, groups of 128) or gptq (symmetric int4, groups of 128); "
        "quantized checkpoints are detected from config.json",
    )
    kernels: Literal["auto", "triton", "torch"] = Field(
        default="auto", description="Triton kernels on CUDA (auto), or the PyTorch reference everywhere"
    )
    small_batch_kernels: bool = Field(
        default=True,
        description="decode batches of at most 8 tokens on GEMVs with the norms, SiLU-and-mul and "
        "residual adds fused in (off: the large-batch kernels, to measure the difference)",
    )
    enforce_eager: bool = Field(default=False, description="no CUDA graphs for decode steps")
    symmetric_all_reduce: bool = Field(
        default=True,
        description="tensor parallelism: small all-reduces through symmetric memory (one kernel over "
        "peer-mapped buffers: the one-way kernel up to 1 MiB, PyTorch's one-shot up to 4 MiB) where every "
        "GPU allows it; NCCL otherwise",
    )
    async_scheduling: bool = Field(
        default=True, description="launch the next decode step before the current one's tokens are back"
    )
    structured_output_threads: int | None = Field(
        default=None, ge=1, le=256, description="threads filling grammar token masks; default min(8, cores)"
    )
    max_gpu_memory: str | None = Field(
        default=None,
        description="absolute cap on this process's GPU memory, e.g. 32GiB (emulates a smaller card)",
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs one model is split over (one process per GPU; gloo on CPU)"
    )
    data_parallel_size: int = Field(
        default=1, ge=1, description="engine replicas behind one server, each on its own GPUs"
    )
    collective_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="tensor parallelism: a collective waiting longer fails the process (NCCL's watchdog)",
    )
    step_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="tensor parallelism: a longer step prints every rank's stacks and stops the engine",
    )
    enable_lora: bool = Field(
        default=False, description="serve PEFT LoRA adapters on the base model (implied by lora_modules)"
    )
    lora_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="LoRA adapters to load at start-up, vLLM's forms: name=path ... (several after one flag, "
        'or the flag repeated) or {"name": ..., "path": ..., "base_model_name": ...}; in the environment '
        "one string of them separated by spaces, or a JSON list",
    )
    max_loras: int = Field(default=4, ge=1, le=256, description="LoRA adapters resident at once (slots)")
    max_lora_rank: int = Field(default=16, ge=1, le=256, description="largest LoRA rank accepted")
    speculative_method: Literal["none", "ngram", "draft"] = Field(
        default="none",
        description="speculative decoding: ngram (prompt lookup in the request's tokens) or a draft model",
    )
    num_speculative_tokens: int = Field(
        default=4, ge=1, le=MAX_VERIFY_WIDTH - 1, description="tokens proposed per step"
    )
    prompt_lookup_min: int = Field(default=2, ge=1, description="ngram: shortest suffix to look up")
    prompt_lookup_max: int = Field(default=4, ge=1, description="ngram: longest suffix to look up")
    speculative_model: str | None = Field(
        default=None, description="draft model (HF directory or random:<preset>, the target's tokenizer)"
    )
    speculative_disable_batch_size: int = Field(
        default=32, ge=1, description="no speculation while more sequences than this decode together"
    )
    speculative_adaptive: bool = Field(
        default=True, description="k follows the accepted length; pause while it gains under 0.5 token/step"
    )

    @field_validator("model")
    @classmethod
    def _empty_model_is_default(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("lora_modules", mode="before")
    @classmethod
    def _lora_module_forms(cls, value: Any) -> list[str]:
        return canonical_lora_modules(value)

    def lora_module_specs(self) -> list[LoRAModule]:
        return [LoRAModule.parse(item) for item in self.lora_modules]

    def lora_module_paths(self) -> dict[str, str]:
        return {module.name: module.path for module in self.lora_module_specs()}

    @property
    def lora_enabled(self) -> bool:
        return self.enable_lora or bool(self.lora_modules)

    @model_validator(mode="after")
    def _speculation_is_consistent(self) -> EngineConfig:
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(
                f"prompt_lookup_min ({self.prompt_lookup_min}) exceeds prompt_lookup_max "
                f"({self.prompt_lookup_max})"
            )
        if (self.speculative_method == "draft") != (self.speculative_model is not None):
            raise ValueError(
                "speculative_model (the draft model) goes with speculative_method='draft', and "
                f"speculative_method='draft' needs it (got method {self.speculative_method!r}, model "
                f"{self.speculative_model!r})"
            )
        if self.speculative_method != "none" and self.tensor_parallel_size > 1:
            raise ValueError(
                "speculative_method needs tensor_parallel_size=1 (verify steps are not sent to "
                "tensor-parallel ranks yet); data_parallel_size works"
            )
        return self

    @field_validator("max_gpu_memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_bytes(value)
        return value

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but no CUDA device is available")
        return torch.device(self.device)

    def max_gpu_memory_bytes(self) -> int | None:
        return None if self.max_gpu_memory is None else parse_bytes(self.max_gpu_memory)

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype != "auto":
            return getattr(torch, self.dtype)
        return torch.bfloat16 if device.type == "cuda" else torch.float32


class ServerConfig(BaseSettings, EngineConfig):
    """Everything a server process needs: the engine's knobs plus the HTTP side's.

    Each field can be set by a CLI flag (`--max-num-seqs`), by `TOKENMILL_<FIELD>` in the environment,
    or by the seeds' names listed in `SEED_ENV_ALIASES` (e.g. BATCH_SIZE, MAX_SEQ_LEN)."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENMILL_", extra="forbid", validate_assignment=True, protected_namespaces=()
    )

    host: str = Field(default="0.0.0.0", description="address to listen on")
    port: int = Field(default=8000, ge=1, le=65535, description="port to listen on")
    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="also serve gRPC (Open Inference Protocol v2 and Triton's streaming) on this port; "
        "8001 by Triton's convention; needs the grpc extra",
    )
    served_model_name: str | None = Field(
        default=None, description="model name in the API (default: its file name)"
    )
    batch_mode: bool = Field(default=True, description='judge contract: GET / answers {"status":"batch"}')
    health_waits_for_ready: bool = Field(
        default=True, description="GET / waits until the model is warm instead of answering 503 at once"
    )
    system_prompt: str | None = Field(
        default=None, description="system message /predict puts before each prompt"
    )
    default_max_tokens: int = Field(default=256, ge=1, description="max new tokens of /predict answers")
    predict_max_new_tokens: int = Field(
        default=4096, ge=1, description="largest max_new_tokens a /predict request may ask for"
    )
    predict_temperature: float = Field(default=0.0, ge=0, description="sampling temperature of /predict")
    predict_stop: list[str] = Field(default_factory=list, description="stop strings of /predict answers")
    enable_thinking: bool = Field(default=False, description="Qwen3 chat template: let the model think first")
    strip_thinking: bool = Field(default=True, description="remove <think>...</think> from /predict answers")
    max_input_tokens: int | None = Field(default=None, ge=1, description="longest prompt accepted, in tokens")
    max_dec_len: int | None = Field(
        default=None, ge=1, description="largest max_tokens a request may ask for"
    )
    max_queued_requests: int = Field(
        default=512, ge=1, description="requests waiting for a first token before 429"
    )
    request_timeout: float | None = Field(
        default=None, gt=0, description="seconds before a request is aborted"
    )
    max_body_bytes: int = Field(default=8 << 20, ge=1024, description="larger request bodies get 413")
    max_prompts_per_request: int = Field(
        default=16384,
        ge=1,
        description="most sequences one request may create: its prompts times n (a /predict or "
        "/v1/completions batch, or a chat's n choices)",
    )
    allow_request_chat_template: bool = Field(
        default=False,
        description="let requests supply chat_template_kwargs.chat_template (trusted callers only: "
        "a template is code and can loop for as long as it likes)",
    )
    keep_alive_timeout: int = Field(
        default=5, ge=1, description="seconds an idle keep-alive connection lives"
    )
    header_read_timeout: float = Field(
        default=10.0, gt=0, description="seconds a connection may take to send a request's headers"
    )
    api_key: str | None = Field(default=None, description="Bearer token required on /v1/*")
    api_key_everywhere: bool = Field(
        default=False, description="also require the key on health, metrics, judge"
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS ('*' for any)")
    shutdown_timeout: float = Field(
        default=30.0, ge=0, description="seconds in-flight requests get on SIGTERM"
    )
    warmup: bool = Field(default=True, description="run a warm-up batch before reporting ready")
    warmup_file: str | None = Field(
        default=None, description="questions (any eval format) whose batch shape the warm-up runs"
    )
    warmup_prompts: int | None = Field(
        default=None, ge=1, description="warm-up batch size (default: max_num_seqs; 8 on CPU without a file)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="log verbosity"
    )
    default_lora: str | None = Field(
        default=None,
        description="LoRA adapter (a lora_modules name) that /predict and requests naming no model run under",
    )
    runtime_lora_updates: bool = Field(
        default=False, description="allow POST /v1/load_lora_adapter and /v1/unload_lora_adapter"
    )

    @model_validator(mode="after")
    def _runtime_lora_updates_on_one_replica(self) -> ServerConfig:
        if self.runtime_lora_updates and self.data_parallel_size > 1:
            raise ValueError(
                "runtime_lora_updates needs data_parallel_size=1 (a runtime load would reach one replica); "
                "give the adapters with lora_modules instead, which every replica loads"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SeedAliasSource(settings_cls)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(**{name: getattr(self, name) for name in EngineConfig.model_fields})
