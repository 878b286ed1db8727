"""Schemathesis against the app's own /openapi.json: generated requests for every operation, a
bounded number each. No answer may be a 5xx, and every answer must match the documented schema
(status code, content type, body)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app

MAX_EXAMPLES = 25
# What issue 6 asks: no 5xx, and every response as documented. Left out: "schema-valid data must be
# accepted", since an upload that fits the schema (a file and a name) may still not be a model archive.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@pytest.fixture(autouse=True)
def _migrated(database):
    """Every generated request runs against the test run's migrated Postgres."""


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_without_5xx_and_as_documented(case):
    case.call_and_validate(checks=CHECKS)
