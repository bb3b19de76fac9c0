"""Property-based fuzzing of every route in the server's OpenAPI schema (schemathesis + hypothesis):
no generated request may produce a 5xx or hang. Runs against the live server with the tiny model."""

import pytest
import schemathesis
from conftest import LiveServer, make_server
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory, tiny_gguf, tiny_bert_dir):
    app = make_server(
        tmp_path_factory.mktemp("fuzz-home"), tiny_gguf, extra_models=[(tiny_bert_dir, "tiny-embed")]
    )
    with LiveServer(app) as srv:
        yield srv.url


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def api_schema(fuzz_url):
    return schemathesis.openapi.from_url(fuzz_url + "/openapi.json")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_causes_a_server_error(case, fuzz_url):
    response = case.call(base_url=fuzz_url, timeout=60)  # a hang fails here
    case.validate_response(response, checks=[not_a_server_error])
