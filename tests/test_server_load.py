"""A bounded load test on loopback: 500 concurrent streaming requests, all complete, none lost."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow  # real server process under load

CONCURRENCY = 500


async def one(client: httpx.AsyncClient, index: int) -> tuple[int, str | None, int]:
    body = {"messages": [{"role": "user", "content": f"question {index}"}], "max_tokens": 6, "stream": True}
    finish, chunks = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        status = response.status_code
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunks += 1
            for choice in json.loads(line[6:])["choices"]:
                finish = choice["finish_reason"] or finish
    return status, finish, chunks


def test_500_concurrent_streams_all_complete(server: ServerProcess) -> None:
    async def run() -> list[tuple[int, str | None, int]]:
        limits = httpx.Limits(max_connections=CONCURRENCY + 10, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=240) as client:
            return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(CONCURRENCY))), 300)

    results = asyncio.run(run())
    assert len(results) == CONCURRENCY
    assert all(status == 200 for status, _, _ in results)
    assert all(finish in ("stop", "length") for _, finish, _ in results)
    assert all(chunks >= 2 for _, _, chunks in results)
    assert server.metric("tokenmill:num_requests_running") == 0
    assert server.metric("tokenmill:kv_cache_usage_perc") == 0
