"""Property-based fuzzing of every route in the server's OpenAPI schema (schemathesis strategies driven
by hypothesis): no generated request may produce a 5xx or hang. Runs against the live tiny-model server.
(schemathesis's own pytest plugin does not load under pytest 9, so the operations are iterated here.)"""

import schemathesis
from conftest import LiveServer, make_server
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

EXAMPLES_PER_ROUTE = 25


def test_no_generated_request_causes_a_server_error(tmp_path, tiny_gguf, tiny_bert_dir):
    app = make_server(tmp_path / "home", tiny_gguf, extra_models=[(tiny_bert_dir, "tiny-embed")])
    with LiveServer(app) as srv:
        schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
        ops = [r.ok() for r in schema.get_all_operations()]
        assert {op.path for op in ops} >= {
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/models",
            "/v1/kb/{name}/search",
            "/v1/kb/{name}/documents",
        }
        calls = []
        for op in ops:  # noqa: B023 (each check runs before the loop moves on)

            @settings(
                max_examples=EXAMPLES_PER_ROUTE,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(case=op.as_strategy())
            def check(case):
                response = case.call(base_url=srv.url, timeout=60)  # a hang fails here
                calls.append((case.operation.path, response.status_code))
                case.validate_response(response, checks=[not_a_server_error])

            check()
        assert len(calls) >= len(ops) and all(code < 500 for _, code in calls)
