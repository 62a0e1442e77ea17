"""Structured outputs offline: every constraint form yields text that parses and validates, over many
seeded sampled runs of a random tiny model (whose unconstrained output is byte noise), batched with
unconstrained requests; bad constraints are ValueErrors naming the field."""

from __future__ import annotations

import json
import re
import sys

import jsonschema
import pytest
import torch

from tokenmill.engine.llm import LLM
from tokenmill.sampling_params import SamplingParams
from tokenmill.structured_output import StructuredOutputsParams
from tokenmill.structured_output.compiler import GrammarCompiler, GrammarError, nesting_depth
from tokenmill.structured_output.text_guards import guard_row
from tokenmill.structured_output.token_mask import StepMask, apply_token_mask_reference
from tokenmill.tokenizer import Tokenizer

RUNS = 50

PERSON = {
    "$defs": {
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 6},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
        }
    },
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "role": {"enum": ["admin", "user", "guest"]},
        "active": {"type": "boolean"},
        "home": {"$ref": "#/$defs/address"},
        "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 4},
        "tags": {
            "type": "array",
            "items": {"type": "object", "properties": {"k": {"enum": ["x", "y"]}}, "required": ["k"]},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["name", "age", "role", "active", "home", "scores", "tags"],
}


@pytest.fixture(scope="module")
def llm(tiny_model_dir) -> LLM:
    return LLM(str(tiny_model_dir("qwen3")), device="cpu", max_model_len=512, max_num_seqs=64)


def sampled(
    llm: LLM, constraint: StructuredOutputsParams, max_tokens: int = 200, plain: int = 2
) -> list[str]:
    """RUNS seeded sampled constrained outputs, batched with `plain` unconstrained requests."""
    params = [
        SamplingParams(temperature=1.0, seed=seed, max_tokens=max_tokens, structured_outputs=constraint)
        for seed in range(RUNS)
    ]
    params += [SamplingParams(temperature=1.0, seed=seed, max_tokens=8) for seed in range(plain)]
    outputs = llm.generate([f"request {i}" for i in range(len(params))], params, use_tqdm=False)
    for output in outputs[RUNS:]:  # the plain requests were not constrained
        assert len(output.outputs[0].token_ids) == 8
    constrained = [o.outputs[0] for o in outputs[:RUNS]]
    assert all(c.finish_reason == "stop" for c in constrained), [c.text for c in constrained]
    return [c.text for c in constrained]


# ---- units ----------------------------------------------------------------------------------------


def test_params_need_exactly_one_valid_constraint() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams()
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams(regex="a", choice=["a"])
    with pytest.raises(ValueError, match=r"structured_outputs\.choice must be"):
        StructuredOutputsParams(choice=[])
    with pytest.raises(ValueError, match=r"structured_outputs\.json must be"):
        StructuredOutputsParams(json=3)  # type: ignore[arg-type]
    params = SamplingParams(structured_outputs={"regex": "[ab]+"})
    assert params.structured_outputs == StructuredOutputsParams(regex="[ab]+")
    with pytest.raises(ValueError, match="structured_outputs"):
        SamplingParams(structured_outputs={"jsn": {}})
    with pytest.raises(ValueError, match="structured_outputs must be"):
        SamplingParams(structured_outputs="json")  # type: ignore[arg-type]


def test_text_guards_ban_control_bytes_in_json_and_surrogates_everywhere() -> None:
    """On a byte vocabulary: JSON rows lose bytes below 0x20; after a token ending on ED (a surrogate's
    lead byte) every row loses A0..BF; every constrained row loses the model's padding ids (past the
    tokenizer's); the unconstrained row keeps every token."""
    import xgrammar

    tokenizer = Tokenizer.byte_level()
    compiler = GrammarCompiler(tokenizer, 320, (256,))
    compiler.compile(StructuredOutputsParams(regex="a"))
    guards = compiler.guards
    assert guards is not None
    grammar_vocab = compiler.grammar_vocab_size
    assert grammar_vocab == len(tokenizer.hf) < 320
    vocab = xgrammar.TokenizerInfo.from_huggingface(tokenizer.hf).decoded_vocab
    byte_of = {text[0]: token for token, text in enumerate(vocab) if len(text) == 1}
    bitmask = torch.full((4, guards.rows.shape[1]), -1, dtype=torch.int32)  # the grammar allows all
    flags = [(False, False), (True, False), (False, True), (True, True)]
    logits = torch.zeros(5, 320)
    placement = torch.tensor([[0, 1, 2, 4], [guard_row(*f) for f in flags]], dtype=torch.int32)
    apply_token_mask_reference(logits, StepMask(bitmask, placement), guards.rows, grammar_vocab)
    banned = [set(torch.isinf(logits[row]).nonzero().flatten().tolist()) for row in range(5)]
    controls = {byte_of[b] for b in range(0x20)}
    continuations = {byte_of[b] for b in range(0xA0, 0xC0)}
    padding = set(range(grammar_vocab, 320))
    assert banned[3] == set()
    assert banned[0] == padding
    assert banned[1] == controls | padding
    assert banned[2] == continuations | padding
    assert banned[4] == controls | continuations | padding
    assert guards.ends_on_lead[byte_of[0xED]] and not guards.ends_on_lead[byte_of[0x41]]


# "a", then a rule that only recurses: every output starts a match that can never end
DEAD_END = 'root ::= "a" tail\ntail ::= tail "b"'


DEEP_SCHEMA_TEXT = '{"type": "array", "items": ' * 1500 + '{"type": "integer"}' + "}" * 1500


def test_nesting_depth_skips_strings() -> None:
    assert nesting_depth('{"a": [1, {"b": "[[{\\"]"}], "c": "\\\\"}') == 3
    assert nesting_depth(DEEP_SCHEMA_TEXT) == 1501 and nesting_depth('"[{"') == 0


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (
            StructuredOutputsParams(json={"type": "fish"}),
            r"structured_outputs\.json: invalid JSON schema: .*fish",
        ),
        (StructuredOutputsParams(json="{not json"), r"structured_outputs\.json: invalid JSON schema"),
        (
            StructuredOutputsParams(regex="a(b"),
            r"structured_outputs\.regex: invalid regular expression: .*parenthesis",
        ),
        (
            StructuredOutputsParams(grammar="root ::= nowhere"),
            r"structured_outputs\.grammar: invalid EBNF grammar: .*nowhere",
        ),
        pytest.param(
            StructuredOutputsParams(json=DEEP_SCHEMA_TEXT),
            r"structured_outputs\.json: the schema nests 1501 levels deep; at most 128 are accepted",
            id="deep",
        ),
        (StructuredOutputsParams(json={"not": {}}), r"structured_outputs\.json: the schema uses `not`"),
        (
            StructuredOutputsParams(json='{"type": "array", "items": {"not": {"type": "null"}}}'),
            r"structured_outputs\.json: the schema uses `not`, which xgrammar ignores",
        ),
        (
            StructuredOutputsParams(regex="[^\\x00-\\U0010FFFF]"),
            r"structured_outputs\.regex: no text matches it \(no token .* can begin a match\)",
        ),
        (
            StructuredOutputsParams(grammar='root ::= root "a"'),
            r"structured_outputs\.grammar: no text matches",
        ),
    ],
)
def test_bad_constraints_are_value_errors_naming_the_field(constraint, message) -> None:
    compiler = GrammarCompiler(Tokenizer.byte_level(), 320, (256,))
    with pytest.raises(GrammarError, match=message) as error:
        compiler.compile(constraint)
    assert error.value.kind == constraint.kind


@pytest.mark.parametrize(
    "constraint",
    [
        StructuredOutputsParams(grammar='root ::= ""'),  # matches the empty text only: EOS at once
        StructuredOutputsParams(grammar=DEAD_END),  # "a" begins it; the engine ends it there
        StructuredOutputsParams(
            json={
                "type": "object",
                "properties": {"not": {"enum": [{"not": 1}]}},
                "required": ["not"],
                "dependentRequired": {"not": []},
            }
        ),
    ],
)
def test_constraints_that_can_begin_and_say_not_only_as_a_name_compile(constraint) -> None:
    for stop_token_ids in [(256,), ()]:
        GrammarCompiler(Tokenizer.byte_level(), 320, stop_token_ids).compile(constraint)


def test_compiles_are_cached_by_constraint() -> None:
    compiler = GrammarCompiler(Tokenizer.byte_level(), 320, (256,))
    first = compiler.compile(StructuredOutputsParams(json={"type": "object"}))
    assert compiler.compile(StructuredOutputsParams(json={"type": "object"})) is first
    assert compiler.compile(StructuredOutputsParams(json_object=True)) is not first


# ---- the engine -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_json_schema_outputs_validate(llm: LLM) -> None:
    texts = sampled(llm, StructuredOutputsParams(json=PERSON), max_tokens=300)
    for text in texts:
        jsonschema.validate(json.loads(text), PERSON)
    assert len(set(texts)) > RUNS // 2  # sampled, not one forced string


@pytest.mark.slow
def test_json_object_outputs_parse_as_objects_unless_cut_by_max_tokens(llm: LLM) -> None:
    """Any object may grow without bound (a random model writes long keys), so some reach max_tokens;
    every one that ended by itself parses."""
    params = [
        SamplingParams(
            seed=seed, max_tokens=400, structured_outputs=StructuredOutputsParams(json_object=True)
        )
        for seed in range(RUNS)
    ]
    outputs = [o.outputs[0] for o in llm.generate(["obj"] * RUNS, params, use_tqdm=False)]
    finished = [c for c in outputs if c.finish_reason == "stop"]
    assert len(finished) > RUNS // 2
    assert all(c.finish_reason == "length" and len(c.token_ids) == 400 for c in outputs if c not in finished)
    assert all(isinstance(json.loads(c.text), dict) for c in finished)


@pytest.mark.slow
def test_default_model_schema_outputs_validate(default_llm) -> None:
    """The embedded model's real BPE vocabulary: sampled answers under a schema all end and validate
    (its strings are bounded, so max_tokens cannot cut one)."""
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "population": {"type": "integer", "minimum": 0, "maximum": 10**9},
            "capital": {"type": "boolean"},
        },
        "required": ["city", "population", "capital"],
    }
    conversations = [[{"role": "user", "content": f"Describe city number {i} as JSON."}] for i in range(6)]
    constraint = StructuredOutputsParams(json=schema)
    params = [
        SamplingParams(seed=i, temperature=0.8, max_tokens=100, structured_outputs=constraint)
        for i in range(6)
    ]
    for output in default_llm.chat(conversations, params, use_tqdm=False):
        assert output.outputs[0].finish_reason == "stop", output.outputs[0].text
        jsonschema.validate(json.loads(output.outputs[0].text), schema)


@pytest.mark.slow
def test_regex_choice_and_grammar_outputs_match(llm: LLM) -> None:
    regex = r"[a-z]{2,5}-[0-9]{3}"
    assert all(re.fullmatch(regex, t) for t in sampled(llm, StructuredOutputsParams(regex=regex), 16))
    choices = ["red", "green", 'blue "sky"']
    texts = sampled(llm, StructuredOutputsParams(choice=choices), 16)
    assert set(texts) <= set(choices) and len(set(texts)) > 1
    grammar = 'root ::= "(" num ("+" num){0,3} ")"\nnum ::= [1-9] [0-9]?'
    pattern = r"\([1-9][0-9]?(\+[1-9][0-9]?){0,3}\)"
    assert all(re.fullmatch(pattern, t) for t in sampled(llm, StructuredOutputsParams(grammar=grammar), 24))


def test_constrained_and_plain_requests_share_a_batch(llm: LLM) -> None:
    regex = StructuredOutputsParams(regex="[a-z]{3}-[0-9]{2}")
    params = [SamplingParams(seed=s, max_tokens=16, structured_outputs=regex) for s in range(4)]
    params += [SamplingParams(seed=s, max_tokens=6, ignore_eos=True) for s in range(2)]
    outputs = [o.outputs[0] for o in llm.generate(["a", "b", "c", "d", "e", "f"], params, use_tqdm=False)]
    assert all(re.fullmatch("[a-z]{3}-[0-9]{2}", c.text) and c.finish_reason == "stop" for c in outputs[:4])
    assert [len(c.token_ids) for c in outputs[4:]] == [6, 6]


def test_greedy_constrained_output_is_the_best_allowed_choice(llm: LLM) -> None:
    """Greedy decoding under a choice grammar picks the choice whose tokens the model ranks first."""
    prompt = "pick"
    (free,) = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
    first = llm.tokenizer.decode(free.outputs[0].token_ids)
    choices = [first + "x", chr(ord(first[0]) ^ 1) + "y"] if first.isprintable() and first else ["a", "b"]
    (out,) = llm.generate(
        prompt,
        SamplingParams(
            temperature=0, max_tokens=8, structured_outputs=StructuredOutputsParams(choice=choices)
        ),
        use_tqdm=False,
    )
    assert out.outputs[0].text in choices
    if choices[0].startswith(first):
        assert out.outputs[0].text == choices[0]


def test_bad_constraint_is_refused_before_anything_runs(llm: LLM) -> None:
    bad = SamplingParams(structured_outputs=StructuredOutputsParams(regex="(("))
    with pytest.raises(ValueError, match=r"prompt 1: structured_outputs\.regex"):
        llm.generate(["a", "b"], [SamplingParams(max_tokens=2), bad], use_tqdm=False)
    assert not llm.engine.has_unfinished_requests()


def test_min_tokens_gives_way_to_a_complete_grammar(llm: LLM) -> None:
    """A complete choice's grammar allows only EOS, which min_tokens bans: the sequence ends with the
    choice ("stop") instead of drawing token 0 from a row of -inf."""
    choice = StructuredOutputsParams(choice=["yes"])
    params = [
        SamplingParams(temperature=t, seed=1, max_tokens=8, min_tokens=5, structured_outputs=choice)
        for t in (0.0, 1.0)
    ]
    for output in llm.generate(["a", "b"], params, use_tqdm=False):
        completion = output.outputs[0]
        assert (completion.text, completion.finish_reason) == ("yes", "stop")
        assert completion.token_ids[-1] in llm.engine.eos_token_ids and 0 not in completion.token_ids


def test_a_grammar_with_no_way_on_ends_its_sequence_with_abort(llm: LLM) -> None:
    """After "a" the grammar allows no token: the sequence ends there with finish_reason "abort",
    without the token drawn from the row of -inf or its logprobs; a plain batch mate runs on."""
    dead_end = StructuredOutputsParams(grammar=DEAD_END)
    params = [
        SamplingParams(temperature=t, seed=2, max_tokens=8, logprobs=1, structured_outputs=dead_end)
        for t in (0.0, 1.0)
    ]
    params.append(SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    outputs = [o.outputs[0] for o in llm.generate(["a", "b", "c"], params, use_tqdm=False)]
    for completion in outputs[:2]:
        assert (completion.text, completion.finish_reason) == ("a", "abort")
        assert len(completion.token_ids) == len(completion.logprobs or []) == 1
    assert len(outputs[2].token_ids) == 4


def test_grammar_steps_run_ahead_and_match_the_synchronous_path(tiny_model_dir) -> None:
    """With async scheduling, steps of a batch holding grammar requests are launched ahead too (their
    sampling waits for the matchers, not their forward pass), and every output is token for token the
    synchronous engine's: greedy and seeded, constrained and plain, ending at different steps."""
    model = str(tiny_model_dir("qwen3"))
    regex = StructuredOutputsParams(regex="[a-c]{3,12}")
    schema = {"type": "object", "properties": {"k": {"enum": ["x", "yy"]}}, "required": ["k"]}
    params = [
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=16, structured_outputs=regex),
        SamplingParams(temperature=1.0, seed=3, max_tokens=16, structured_outputs=regex),
        SamplingParams(temperature=1.0, seed=4, max_tokens=40, structured_outputs={"json": schema}),
        SamplingParams(temperature=1.0, seed=5, max_tokens=9, ignore_eos=True),
    ]
    prompts = ["x", "y", "z", "w", "v"]
    results = {}
    for async_scheduling in (True, False):
        llm = LLM(model, device="cpu", max_model_len=256, async_scheduling=async_scheduling)
        outputs = llm.generate(prompts, params, use_tqdm=False)
        results[async_scheduling] = [o.outputs[0].token_ids for o in outputs], llm.engine.stats
        texts = [o.outputs[0].text for o in outputs]
        assert all(re.fullmatch("[a-c]{3,12}", t) for t in texts[1:3]), texts
        assert json.loads(texts[3])["k"] in ("x", "yy")
    (ahead, ahead_stats), (synchronous, synchronous_stats) = results[True], results[False]
    assert ahead == synchronous
    assert synchronous_stats.continued_steps == 0
    assert ahead_stats.continued_steps >= ahead_stats.decode_steps - 4


def test_without_xgrammar_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "xgrammar", None)  # makes `import xgrammar` fail
    compiler = GrammarCompiler(Tokenizer.byte_level(), 320, (256,))
    with pytest.raises(RuntimeError, match=r"pip install 'xgrammar"):
        compiler.compile(StructuredOutputsParams(regex="a"))


@pytest.mark.slow
def test_speculation_leaves_grammar_requests_alone(tiny_model_dir) -> None:
    """With n-gram speculation on, a request under a grammar is never proposed for (its mask covers the
    next token only), while plain requests in the same batch still speculate; outputs keep matching."""
    llm = LLM(
        str(tiny_model_dir("qwen3")), device="cpu", max_model_len=512, speculative_method="ngram",
        speculative_adaptive=False,
    )  # fmt: skip
    prompt = [5, 6, 7, 8] * 12
    regex = r"[a-z]{1,8}"
    constrained = SamplingParams(
        temperature=0, max_tokens=12, structured_outputs=StructuredOutputsParams(regex=regex)
    )
    llm.generate([prompt] * 3, constrained, use_tqdm=False)
    assert llm.engine.stats.spec_proposed_tokens == 0
    plain = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    outputs = llm.generate([prompt] * 4, [constrained, plain, constrained, plain], use_tqdm=False)
    assert llm.engine.stats.spec_proposed_tokens > 0
    assert all(re.fullmatch(regex, outputs[i].outputs[0].text) for i in (0, 2))
