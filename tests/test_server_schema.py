"""Property-based requests generated from the server's own OpenAPI schema never cause a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.helpers.server_process import ServerProcess

pytestmark = pytest.mark.slow  # schemathesis against a real server process

SERVER: ServerProcess | None = None


@pytest.fixture(scope="module", autouse=True)
def _bind_server(server: ServerProcess) -> None:
    global SERVER
    SERVER = server


schema = schemathesis.pytest.from_fixture("openapi_schema")


@pytest.fixture(scope="module")
def openapi_schema(server: ServerProcess):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:
    assert SERVER is not None
    case.call_and_validate(base_url=SERVER.url, checks=[not_a_server_error], timeout=60)
