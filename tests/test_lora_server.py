"""LoRA adapters over real HTTP: picked by `model` (OpenAI) and by `lora` (/predict), --default-lora for
the judge contract, /v1/models listing adapters with their parent, runtime load and unload behind the
API key. Answers are compared with the offline engine under the same adapter (itself token-exact with
peft in tests/test_lora.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import requests
import torch

from tests.helpers.lora_adapters import peft_model, save_adapter
from tests.helpers.server_process import ServerProcess
from tokenmill import LLM, LoRARequest, SamplingParams
from tokenmill.eval.local_server import free_port

pytestmark = pytest.mark.slow  # a server process and peft adapters

KEY = "secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROMPT = [17, 42, 99, 7, 250, 31, 5]
BODY = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    base = tiny_model_dir("qwen3")
    first = save_adapter(base, tmp_path_factory.mktemp("ft"), seed=21)
    second = save_adapter(
        base, tmp_path_factory.mktemp("second"), seed=22, rank=4, targets=["q_proj", "v_proj"]
    )
    llm = LLM(str(base), device="cpu", enable_lora=True)
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    texts = {
        name: llm.generate([PROMPT], params, use_tqdm=False, lora_request=request)[0].outputs[0].text
        for name, request in [
            ("base", None), ("ft", LoRARequest("ft", str(first))), ("second", LoRARequest("second", str(second)))
        ]
    }  # fmt: skip
    assert len(set(texts.values())) == 3, "each adapter must change the answer, or these tests prove nothing"
    grpc_port = free_port()
    server = ServerProcess(
        "--model", str(base), "--served-model-name", "base", "--enable-lora",
        "--lora-modules", json.dumps({"name": "ft", "path": str(first), "base_model_name": "qwen3-tiny"}),
        "--default-lora", "ft", "--runtime-lora-updates", "--api-key", KEY, "--no-warmup",
        "--grpc-port", str(grpc_port),
    ).wait_ready()  # fmt: skip
    server.grpc_address = f"127.0.0.1:{grpc_port}"
    server.adapter_dirs = {"base": None, "ft": first}
    yield server, texts, second
    server.stop()


def _complete(server: ServerProcess, model: str) -> requests.Response:
    return requests.post(
        server.url + "/v1/completions", json={**BODY, "model": model}, headers=AUTH, timeout=60
    )


def test_adapters_are_models_with_a_parent(setup) -> None:
    server, texts, _ = setup
    cards = requests.get(server.url + "/v1/models", headers=AUTH, timeout=10).json()["data"]
    assert [(c["id"], c.get("parent")) for c in cards] == [("base", None), ("ft", "qwen3-tiny")]
    for model in ("base", "ft"):
        response = _complete(server, model)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["text"] == texts[model]
        assert response.json()["model"] == model
    missing = _complete(server, "nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "model"


def test_grpc_model_name_picks_the_adapter(setup) -> None:
    """Over gRPC the model name picks the adapter as `model` does over HTTP."""
    import tritonclient.grpc as triton

    server, _, _ = setup
    client = triton.InferenceServerClient(server.grpc_address)
    settings = {"max_tokens": 8, "ignore_eos": True, "sampling_parameters": '{"temperature": 0}'}
    text = triton.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"What is shared memory?"], dtype=object))
    try:
        for model in ("base", "ft"):
            result = client.infer(
                model, [text], parameters=settings, headers={"authorization": f"Bearer {KEY}"}
            )
            expected = requests.post(
                server.url + "/v1/completions",
                json={"prompt": "What is shared memory?", "max_tokens": 8, "temperature": 0,
                      "ignore_eos": True, "model": model},
                headers=AUTH, timeout=60,
            ).json()["choices"][0]["text"]  # fmt: skip
            assert result.as_numpy("text_output")[0].decode() == expected, model
    finally:
        client.close()


def test_fastdeploy_request_names_the_adapter_by_model(setup, tiny_model_dir) -> None:
    """A FastDeploy request (FastDeploy's own fields, answered in its shapes) picks the adapter with
    `model`, as the OpenAI routes do; its greedy answer is transformers + peft's under that adapter."""
    server, _, _ = setup
    text, length = "What is shared memory?", 8
    messages = [{"role": "user", "content": text}]
    prompt = requests.post(server.url + "/tokenize", json={"messages": messages}, headers=AUTH, timeout=30)
    ids = torch.tensor([prompt.json()["tokens"]])
    for model, adapter in server.adapter_dirs.items():
        body = {"text": text, "model": model, "max_dec_len": length, "min_dec_len": length, "topp": 1e-6}
        answer = requests.post(
            server.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=60
        ).json()
        assert answer["error_code"] == 0, answer
        with torch.no_grad():
            out = peft_model(tiny_model_dir("qwen3"), adapter).generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=length,
                min_new_tokens=length, do_sample=False, pad_token_id=0,
            )  # fmt: skip
        tokens = out[0, ids.shape[1] :].tolist()
        peft_text = requests.post(
            server.url + "/detokenize", json={"tokens": tokens}, headers=AUTH, timeout=30
        ).json()["prompt"]
        assert answer["tokens_all"] == peft_text, model
    unknown = requests.post(
        server.url + "/v1/chat/completions", json={"text": "x", "model": "nope"}, headers=AUTH, timeout=30
    )
    assert unknown.status_code == 404 and "'nope' does not exist" in unknown.json()["error_msg"]


def test_predict_runs_the_default_adapter_unless_told(setup) -> None:
    server, _, _ = setup

    def predict(**extra) -> requests.Response:
        body = {"prompt": "What is shared memory?", "max_new_tokens": 8, "temperature": 0, **extra}
        return requests.post(server.url + "/predict", json=body, timeout=60)

    default, ft, base = predict().json(), predict(lora="ft").json(), predict(lora="base").json()
    assert default == ft != base
    unknown = predict(lora="nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "lora"


def test_runtime_load_and_unload(setup) -> None:
    server, texts, second = setup
    load = {"lora_name": "second", "lora_path": str(second)}
    assert requests.post(server.url + "/v1/load_lora_adapter", json=load, timeout=30).status_code == 401
    response = requests.post(server.url + "/v1/load_lora_adapter", json=load, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert _complete(server, "second").json()["choices"][0]["text"] == texts["second"]
    again = requests.post(server.url + "/v1/load_lora_adapter", json=load, headers=AUTH, timeout=30)
    assert again.status_code == 400 and "already loaded" in again.json()["error"]["message"]
    bad = {"lora_name": "bad", "lora_path": str(second / "missing")}
    refused = requests.post(server.url + "/v1/load_lora_adapter", json=bad, headers=AUTH, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "lora_path"
    unload = {"lora_name": "second"}
    assert requests.post(server.url + "/v1/unload_lora_adapter", json=unload, headers=AUTH, timeout=30).ok
    assert _complete(server, "second").status_code == 404
    gone = requests.post(server.url + "/v1/unload_lora_adapter", json=unload, headers=AUTH, timeout=30)
    assert gone.status_code == 404
    default = {"lora_name": "ft"}
    kept = requests.post(server.url + "/v1/unload_lora_adapter", json=default, headers=AUTH, timeout=30)
    assert kept.status_code == 409 and "--default-lora" in kept.json()["error"]["message"]


def test_a_corrupt_adapter_file_is_a_400_naming_lora_path(setup, tmp_path) -> None:
    server, _, second = setup
    corrupt = tmp_path / "corrupt"
    shutil.copytree(second, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\xff" * 1000)
    load = {"lora_name": "corrupt", "lora_path": str(corrupt)}
    response = requests.post(server.url + "/v1/load_lora_adapter", json=load, headers=AUTH, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "lora_path" and "not a readable safetensors file" in error["message"], error
    assert _complete(server, "ft").status_code == 200


def test_a_default_lora_that_is_not_loaded_stops_the_start(tiny_model_dir) -> None:
    server = ServerProcess("--model", str(tiny_model_dir("qwen3")), "--enable-lora", "--default-lora", "nope")
    try:
        with pytest.raises(RuntimeError, match="default_lora 'nope' is not one of the adapters"):
            server.wait_ready(timeout=120)
    finally:
        server.stop()


def test_the_openai_client_chats_with_an_adapter(setup) -> None:
    import openai

    server, _, _ = setup
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)
    assert [m.id for m in client.models.list()] == ["base", "ft"]
    messages = [{"role": "user", "content": "Name a prime number."}]

    def chat(model: str) -> str:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        assert reply.model == model
        return reply.choices[0].message.content

    streamed = client.chat.completions.create(
        model="ft", messages=messages, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == chat("ft")
    assert chat("ft") != chat("base")
