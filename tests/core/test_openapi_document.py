"""docs/openapi.json is the document the API serves; a change to the API must update it (`make openapi`)."""

import json
from pathlib import Path

from tests.app.conftest import client  # noqa: F401 - the shared fixture

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_document_is_the_served_one(client):  # noqa: F811
    served = client.get("/openapi.json").json()
    committed = json.loads(COMMITTED.read_text())
    assert served == committed, "docs/openapi.json is out of date: run `make openapi` and commit it"


def test_the_document_is_complete(client):  # noqa: F811
    document = client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation.get("summary") and operation.get("responses"), (method, path)
            assert operation.get("description"), (method, path)
    schemas = document["components"]["schemas"]
    for name in ("ModelOut", "DatasetOut", "JobOut", "JobCreate", "ArtifactOut", "Problem"):
        assert schemas[name].get("examples"), name
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["apiKey"]["description"],
    }
    assert {"apiKey": []} in document["paths"]["/v1/jobs"]["post"]["security"]
    assert "Idempotency-Key" in [p["name"] for p in document["paths"]["/v1/jobs"]["post"]["parameters"]]
