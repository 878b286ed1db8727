"""Every error is an RFC 9457 problem (application/problem+json) with a stable, resolvable `type`."""

from app.core.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES
from tests.app.conftest import client  # noqa: F401 - the shared fixture


def assert_problem(response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["title"] == PROBLEM_TYPES[slug].title
    assert body["status"] == status
    assert body["detail"] and isinstance(body["errors"], list)
    return body


def test_service_errors_validation_errors_and_routing_errors_share_the_shape(client):  # noqa: F811
    body = assert_problem(client.get("/v1/models/nope"), 404, "not-found")
    assert body["instance"] == "/v1/models/nope" and "nope" in body["detail"]

    body = assert_problem(client.get("/v1/jobs", params={"status": "sleeping"}), 422, "invalid-request")
    assert body["errors"][0]["loc"] == ["query", "status"]
    assert "succeeded" in body["errors"][0]["allowed"]

    assert_problem(client.get("/v1/no-such-thing"), 404, "not-found")
    assert_problem(client.put("/v1/models"), 405, "method-not-allowed")


def test_each_type_resolves_to_its_explanation(client):  # noqa: F811
    for slug, problem in PROBLEM_TYPES.items():
        described = client.get(f"/problems/{slug}")
        assert described.status_code == 200
        assert described.json() == problem.model_dump()
    assert_problem(client.get("/problems/no-such-problem"), 404, "not-found")


def test_the_openapi_document_describes_errors_as_problems(client):  # noqa: F811
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error_responses = [
        (path, method, status, response)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    ]
    assert len(error_responses) > 20
    for path, method, status, response in error_responses:
        assert list(response.get("content", {})) in ([PROBLEM_MEDIA_TYPE], []), (path, method, status)
    submit = document["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"401", "422", "429", "503"} <= set(submit)
    assert submit["429"]["content"][PROBLEM_MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
