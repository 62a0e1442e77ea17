"""The judge's contract over real HTTP: GET / and POST /predict, single and batch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from tests.helpers.server_process import ServerProcess
from tokenmill.eval.datasets import read_question_file
from tokenmill.server.judge import strip_thinking

DATA = Path(__file__).resolve().parents[1] / "data"
QUESTIONS = [item.question for item in read_question_file(DATA / "official_test.txt")]


@pytest.mark.slow
def test_health_reports_batch_mode(server: ServerProcess) -> None:
    response = requests.get(server.url + "/", timeout=10)
    assert response.status_code == 200 and response.json() == {"status": "batch"}


@pytest.mark.slow
def test_single_prompt_gets_a_single_answer(server: ServerProcess) -> None:
    response = requests.post(server.url + "/predict", json={"prompt": "什么是共享内存？"}, timeout=60)
    assert response.status_code == 200
    assert isinstance(response.json()["response"], str)


@pytest.mark.slow
def test_batch_of_358_keeps_length_and_order(server: ServerProcess) -> None:
    body = {"prompt": QUESTIONS, "max_new_tokens": 12}
    response = requests.post(server.url + "/predict", json=body, timeout=300)
    assert response.status_code == 200
    answers = response.json()["response"]
    assert len(answers) == 358 and all(isinstance(a, str) for a in answers)
    assert any(answers)
    assert all(answers[i] == answers[i % 92] for i in range(358))  # the file repeats every 92 items
    for index in (0, 45, 91, 200):  # each answer belongs to its own question
        alone = requests.post(
            server.url + "/predict", json={"prompt": QUESTIONS[index], "max_new_tokens": 12}, timeout=60
        )
        assert alone.json()["response"] == answers[index]
    distinct = {answers[i] for i in range(92)}
    assert len(distinct) > 10


@pytest.mark.slow
def test_predict_answers_equal_the_offline_engine(server: ServerProcess, tiny_model_dir) -> None:
    """One /predict batch through real HTTP answers what `LLM.generate` answers for the same prompts
    (bench/first_batch.py --offline times exactly this pair)."""
    from tokenmill import LLM, SamplingParams
    from tokenmill.bench.judge_workload import JudgeWorkload

    body = {"prompt": QUESTIONS, "max_new_tokens": 8, "temperature": 0.0}
    response = requests.post(server.url + "/predict", json=body, timeout=300)
    assert response.status_code == 200
    llm = LLM(str(tiny_model_dir("qwen3")), device="cpu")
    prompts = JudgeWorkload("judge", str(DATA / "official_test.txt")).prompts(llm.tokenizer)
    offline = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
    assert len({len(p) for p in prompts}) > 10  # the questions reach the engine as different prompts
    answers = response.json()["response"]
    assert sum(bool(answer) for answer in answers) > 300
    assert answers == [strip_thinking(o.outputs[0].text) for o in offline]


@pytest.mark.slow
def test_empty_and_overlong_items_do_not_fail_the_batch(server: ServerProcess) -> None:
    long_question = "并行" * 400  # far over --max-input-tokens 400
    body = {"prompt": ["", "   ", long_question, "hello"], "max_new_tokens": 4}
    response = requests.post(server.url + "/predict", json=body, timeout=120)
    assert response.status_code == 200
    answers = response.json()["response"]
    assert len(answers) == 4 and answers[0] == "" and answers[1] == ""
    assert "cut from the left" in server.log()


@pytest.mark.slow
def test_overrides_are_applied(server: ServerProcess) -> None:
    body = {"prompt": "hello", "max_new_tokens": 1, "temperature": 0.0}
    one = requests.post(server.url + "/predict", json=body, timeout=60).json()["response"]
    body["max_new_tokens"] = 40
    longer = requests.post(server.url + "/predict", json=body, timeout=60).json()["response"]
    assert len(one.encode()) <= 4 and longer.startswith(one)


@pytest.mark.slow
@pytest.mark.parametrize(
    "body,param",
    [
        ({}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["a", 3]}, "prompt[1]"),
        ({"prompt": None}, "prompt"),
        ({"prompt": "a", "max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt": "a", "max_new_tokens": 100000}, "max_new_tokens"),
        ({"prompt": "a", "temperature": -1}, "temperature"),
        ({"prompt": "a", "top_p": 2}, "top_p"),
    ],
)
def test_bad_predict_requests_are_400_naming_the_field(server: ServerProcess, body: dict, param: str) -> None:
    response = requests.post(server.url + "/predict", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param.split("[")[0] in error["message"]


@pytest.mark.slow
def test_ok_status_without_batch_mode_and_immediate_health(tiny_model_dir) -> None:
    process = ServerProcess(
        "--model",
        str(tiny_model_dir("llama")),
        "--no-batch-mode",
        "--no-health-waits-for-ready",
        env={"BATCH_MODE": "true"},
    )
    try:
        process.wait_ready()
        assert requests.get(process.url + "/", timeout=10).json() == {"status": "ok"}
    finally:
        assert process.stop() == 0


@pytest.mark.slow
def test_seed_environment_names_configure_the_server(tiny_model_dir) -> None:
    env = {
        "MODEL_DIR": str(tiny_model_dir("qwen2")),
        "BATCH_MODE": "false",
        "MODEL_NAME": "judge-model",
        "MAX_NEW_TOKENS": "3",
    }
    process = ServerProcess(env=env)
    try:
        process.wait_ready()
        assert requests.get(process.url + "/", timeout=10).json() == {"status": "ok"}
        assert requests.get(process.url + "/v1/models", timeout=10).json()["data"][0]["id"] == "judge-model"
        chat = requests.post(
            process.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
            timeout=30,
        )
        assert chat.json()["usage"]["completion_tokens"] <= 3
    finally:
        process.stop()


def test_strip_thinking() -> None:
    assert strip_thinking("<think>\nhmm\n</think>\n\n答案") == "答案"
    assert strip_thinking("<think>never closed") == ""
    assert strip_thinking("plain") == "plain"


@pytest.mark.slow
def test_runs_under_plain_uvicorn_with_environment_config(tiny_model_dir) -> None:
    """The seeds' Dockerfiles start `uvicorn module:app`; settings then come from the environment."""
    env = {
        "MODEL_DIR": str(tiny_model_dir("llama")),
        "TOKENMILL_DEVICE": "cpu",
        "TOKENMILL_CORS_ORIGINS": '["http://judge.example"]',
    }
    uvicorn = [
        sys.executable,
        "-m",
        "uvicorn",
        "tokenmill.server.app:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]
    process = ServerProcess(env=env, command=uvicorn)
    try:
        process.wait_ready()
        assert requests.get(process.url + "/", timeout=30).json() == {"status": "batch"}
        answer = requests.post(
            process.url + "/predict",
            json={"prompt": ["a", "b"], "max_new_tokens": 2},
            headers={"Origin": "http://judge.example"},
            timeout=30,
        )
        assert len(answer.json()["response"]) == 2
        assert answer.headers["access-control-allow-origin"] == "http://judge.example"
        other = requests.get(process.url + "/", headers={"Origin": "http://elsewhere.example"}, timeout=10)
        assert "access-control-allow-origin" not in other.headers
    finally:
        process.stop()  # plain uvicorn re-raises SIGTERM after a graceful shutdown
    assert "Application shutdown complete" in process.log_path.read_text()
