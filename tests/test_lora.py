"""LoRA adapters on the engine: greedy decoding under PEFT adapters is token-exact with transformers +
peft, alone and mixed in one batch with other adapters and the base model, through eviction, unload and
reload; prefix-cache blocks never cross adapters."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from tests.helpers.lora_adapters import peft_greedy, save_adapter
from tokenmill import LLM, LoRARequest, SamplingParams
from tokenmill.models import small_batch

MAX_TOKENS = 10
PARAMS = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)


def prompts(seed: int = 3) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 300) for _ in range(n)] for n in (1, 9, 23, 40)]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Function (arch, index) -> adapter directory; adapters differ in rank, alpha, targets and rsLoRA."""
    made = {}
    variants = [
        dict(rank=8, alpha=16),
        dict(rank=4, alpha=8, targets=["q_proj", "v_proj", "down_proj"]),
        dict(rank=16, alpha=4, targets=["k_proj", "o_proj", "gate_proj", "up_proj"], use_rslora=True),
    ]

    def get(arch: str, index: int):
        if (arch, index) not in made:
            directory = tmp_path_factory.mktemp(f"{arch}-lora{index}")
            made[(arch, index)] = save_adapter(
                tiny_model_dir(arch), directory, seed=10 + index, **variants[index]
            )
        return made[(arch, index)]

    return get


@pytest.fixture(scope="module")
def expected(tiny_model_dir, adapters):
    """Function (arch, adapter index or None) -> transformers + peft greedy outputs of `prompts()`."""
    cache = {}

    def get(arch: str, index: int | None):
        if (arch, index) not in cache:
            adapter = None if index is None else adapters(arch, index)
            cache[(arch, index)] = peft_greedy(tiny_model_dir(arch), adapter, prompts(), MAX_TOKENS)
        return cache[(arch, index)]

    return get


def _tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


@pytest.fixture
def fused_lora_rows(monkeypatch) -> list[int]:
    """The widths of the layer passes that ran on the fused small-batch path with LoRA wrappers (the
    decode steps of up to `max_rows` sequences), so a test knows which path it checked."""
    rows: list[int] = []
    forward = small_batch.forward

    def spy(ops, layer, positions, hidden, residual, meta):
        if isinstance(layer.self_attn.qkv_proj, small_batch.DeltaProjection):
            rows.append(hidden.shape[0])
        return forward(ops, layer, positions, hidden, residual, meta)

    monkeypatch.setattr(small_batch, "forward", spy)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3", "qwen2", "llama"])
def test_one_adapter_matches_peft(arch: str, tiny_model_dir, adapters, expected, fused_lora_rows) -> None:
    llm = LLM(str(tiny_model_dir(arch)), device="cpu", enable_lora=True, block_size=8)
    got = _tokens(
        llm.generate(prompts(), PARAMS, use_tqdm=False, lora_request=LoRARequest("a", str(adapters(arch, 0))))
    )
    assert got == expected(arch, 0)
    assert 4 in fused_lora_rows, "the decode steps (4 sequences) ran the fused small-batch path"
    assert got != expected(arch, None), "the adapter must change the output, or this test proves nothing"


@pytest.mark.slow
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_layers_alternating_fused_and_unfused_keep_every_delta(
    kernels, tiny_model_dir, adapters, expected, fused_lora_rows, monkeypatch
) -> None:
    """Odd layers alone on the fused small-batch path (as a model quantized layer by layer can make it):
    each fused layer first adds the down projection's delta the unfused layer before it left pending for
    its norm, and the tokens stay peft's."""
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True, kernels=kernels, block_size=8)
    odd = {id(layer) for layer in llm.engine.runner.model.layers[1::2]}
    takes = small_batch.takes
    monkeypatch.setattr(
        small_batch, "takes", lambda ops, layer, rows: id(layer) in odd and takes(ops, layer, rows)
    )
    lora = LoRARequest("down", str(adapters("qwen3", 1)))  # rank 4 on q, v and down
    assert _tokens(llm.generate(prompts(), PARAMS, use_tqdm=False, lora_request=lora)) == expected("qwen3", 1)
    assert 4 in fused_lora_rows, "the decode steps ran the fused path on the odd layers"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arch", "max_loras", "kernels"),
    [("qwen3", 3, "torch"), ("qwen2", 1, "torch"), ("qwen3", 3, "triton")],  # triton: the interpreter, slow
)
def test_a_batch_mixing_three_adapters_and_the_base(
    arch, max_loras, kernels, tiny_model_dir, adapters, expected
):
    """Every prompt under each of the three adapters and the base, all submitted at once. With three
    slots they share steps; with one, adapters take turns as slots are evicted."""
    llm = LLM(
        str(tiny_model_dir(arch)), device="cpu", enable_lora=True, max_loras=max_loras, kernels=kernels,
        block_size=8,
    )  # fmt: skip
    requests = [None, *(LoRARequest(f"lora{i}", str(adapters(arch, i))) for i in range(3))]
    batch = [(p, r) for r in requests for p in prompts()]
    rng = random.Random(0)
    rng.shuffle(batch)
    outputs = llm.generate([p for p, _ in batch], PARAMS, use_tqdm=False, lora_request=[r for _, r in batch])
    want = {None: expected(arch, None), **{f"lora{i}": expected(arch, i) for i in range(3)}}
    for (prompt, request), got in zip(batch, _tokens(outputs)):
        assert got == want[None if request is None else request.name][prompts().index(prompt)]
    assert len(llm.engine.lora.resident()) == max_loras
    assert llm.engine.block_manager.usage == 0.0


@pytest.mark.slow
def test_unload_and_reload_under_the_same_name(tiny_model_dir, adapters, expected) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True, block_size=8)
    llm.engine.add_lora("ft", str(adapters("qwen3", 0)))
    assert _tokens(
        llm.generate(
            prompts(), PARAMS, use_tqdm=False, lora_request=LoRARequest("ft", str(adapters("qwen3", 0)))
        )
    ) == expected("qwen3", 0)
    with pytest.raises(ValueError, match="already loaded"):
        llm.engine.add_lora("ft", str(adapters("qwen3", 1)))
    llm.engine.remove_lora("ft")
    with pytest.raises(KeyError, match="not loaded"):
        llm.engine.remove_lora("ft")
    with pytest.raises(ValueError, match="no LoRA adapter named 'ft'"):
        llm.engine.add_request("x", [1, 2, 3], PARAMS, lora_request="ft")
    llm.engine.add_lora("ft", str(adapters("qwen3", 1)))  # same name, other weights: nothing stale is used
    outputs = llm.generate(
        prompts(), PARAMS, use_tqdm=False, lora_request=LoRARequest("ft", str(adapters("qwen3", 1)))
    )
    assert _tokens(outputs) == expected("qwen3", 1)
    assert all(o.num_cached_tokens == 0 for o in outputs)


@pytest.mark.slow
def test_the_prefix_cache_never_crosses_adapters(tiny_model_dir, adapters, expected) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True, block_size=4)
    first = LoRARequest("first", str(adapters("qwen3", 0)))
    second = LoRARequest("second", str(adapters("qwen3", 1)))
    runs = [(first, 0), (first, 0), (second, 1), (None, None), (second, 1)]
    cached = []
    for request, index in runs:
        outputs = llm.generate(prompts(), PARAMS, use_tqdm=False, lora_request=request)
        assert _tokens(outputs) == expected("qwen3", index)
        cached.append(outputs[-1].num_cached_tokens)  # the 40-token prompt: 36 tokens in full blocks
    assert cached == [0, 36, 0, 0, 36]


def test_lora_request_needs_enable_lora(tiny_model_dir, adapters) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu")
    with pytest.raises(ValueError, match="enable_lora"):
        llm.generate(
            [[1, 2]], PARAMS, use_tqdm=False, lora_request=LoRARequest("a", str(adapters("qwen3", 0)))
        )


def test_one_lora_request_per_prompt(tiny_model_dir, adapters) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True)
    with pytest.raises(ValueError, match="got 1 lora_request for 2 prompts"):
        llm.generate([[1, 2], [3]], PARAMS, use_tqdm=False, lora_request=[None])
    conversation = [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="got 2 lora_request for 1 prompts"):
        llm.chat(conversation, PARAMS, use_tqdm=False, lora_request=[None, None])


@pytest.mark.slow
def test_an_adapter_on_a_quantized_base(tiny_model_dir, adapters) -> None:
    """int8 weights store no float dtype: the adapter's slots take the model's, and it changes the output."""
    llm = LLM(
        str(tiny_model_dir("qwen3")), device="cpu", dtype="bfloat16", enable_lora=True, quantization="int8"
    )
    request = LoRARequest("a", str(adapters("qwen3", 0)))
    wrapper = llm.engine.lora.layers.wrappers[(0, "self_attn.qkv_proj")]
    assert wrapper.lora_a.dtype == wrapper.lora_b.dtype == torch.bfloat16
    with_adapter = _tokens(llm.generate(prompts(), PARAMS, use_tqdm=False, lora_request=request))
    assert with_adapter != _tokens(llm.generate(prompts(), PARAMS, use_tqdm=False))


class _EagerGraphs:
    """Stands in for DecodeGraphs on CPU: pads pure-decode batches to a graph size like the real ones
    and 'replays' by running the padded inputs eagerly, so the LoRA mapping of padded graph steps (the
    `always` path, padding rows under no adapter) is exercised without CUDA."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.replays = 0

    def __len__(self) -> int:
        return 1

    def padded_size(self, batch) -> int | None:
        if batch.num_decodes != len(batch):
            return None
        return 1 << (len(batch) - 1).bit_length() if len(batch) > 1 else 2

    def replay(self, inputs):
        self.replays += 1
        assert self.runner.lora_step.runs(set()), "a graph replay always runs the LoRA kernels"
        if inputs.token_source is not None:  # as StaticInputs.load: device tokens fill the real rows
            ids = torch.zeros(inputs.num_rows, dtype=torch.long)
            ids[: inputs.num_seqs] = inputs.token_source
            inputs = dataclasses.replace(inputs, input_ids=ids, token_source=None)
        return self.runner._forward(inputs)[: inputs.num_seqs]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kernels", "per_request", "fused"),
    [
        ("torch", 3, False),  # 12 sequences padded to 16: the batched shrink and expand
        ("torch", 2, True),  # 8 sequences: the fused small-batch path, the delta folded into its GEMVs
        ("triton", 2, True),  # the same through the Triton kernels (the interpreter)
    ],
)
def test_padded_graph_steps_keep_each_sequence_on_its_adapter(
    kernels, per_request, fused, tiny_model_dir, adapters, expected, fused_lora_rows
) -> None:
    llm = LLM(
        str(tiny_model_dir("qwen3")),
        device="cpu",
        enable_lora=True,
        max_loras=3,
        block_size=8,
        kernels=kernels,
    )
    runner = llm.engine.runner
    runner.graphs = _EagerGraphs(runner)
    requests = [None, *(LoRARequest(f"lora{i}", str(adapters("qwen3", i))) for i in range(3))]
    batch = [(p, r) for r in requests for p in prompts()[:per_request]]
    outputs = llm.generate([p for p, _ in batch], PARAMS, use_tqdm=False, lora_request=[r for _, r in batch])
    want = {None: expected("qwen3", None), **{f"lora{i}": expected("qwen3", i) for i in range(3)}}
    for (prompt, request), got in zip(batch, _tokens(outputs)):
        assert got == want[None if request is None else request.name][prompts().index(prompt)]
    assert runner.graphs.replays > 0
    assert (len(batch) in fused_lora_rows) == fused


def test_a_lora_request_for_a_missing_directory_names_the_field(tiny_model_dir, tmp_path) -> None:
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu", enable_lora=True)
    with pytest.raises(
        ValueError, match=r"prompt 0: lora_request: LoRA adapter 'gone': .* is not a directory"
    ):
        llm.generate(
            [[1, 2]], PARAMS, use_tqdm=False, lora_request=LoRARequest("gone", str(tmp_path / "gone"))
        )
    assert not llm.engine.has_unfinished_requests()
