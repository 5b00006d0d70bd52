"""Schemathesis against the gateway's OpenAPI schema: whatever it sends, the gateway never fails with a 5xx,
except a 503 the operation documents (a backend that is down, e.g. no Triton here for predictions).

Every operation gets valid (positive) and invalid (negative) requests generated from the schema, sent
through the ASGI app with a key holding both scopes (so every operation is reached, not refused).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from dermasynth.auth import Scope
from tests.services.platform import Platform

EXAMPLES_PER_OPERATION = 8


def _fuzz(operation: Any, mode: GenerationMode, documented: dict[str, Any], headers: dict[str, str]) -> bool:
    """Send generated requests to one operation; False when the mode has no request to make."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_server_error(case: schemathesis.Case) -> None:
        response = case.call(headers=dict(headers))
        if response.status_code == 503 and "503" in documented:
            assert isinstance(response.json(), dict), (operation.label, response.text)  # says why, as JSON
            return
        case.validate_response(response, checks=[not_a_server_error])

    try:
        no_server_error()
    except Unsatisfiable:  # an operation without inputs has no invalid request to make
        assert mode == GenerationMode.NEGATIVE
        return False
    return True


def test_no_operation_answers_5xx(app: FastAPI, shared_platform: Platform, dataset_id: str) -> None:
    headers = {"Authorization": f"Bearer {shared_platform.key(Scope.ENGINEER, Scope.CLINICIAN)}"}
    spec = app.openapi()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 9
    tried = sum(
        _fuzz(operation, mode, spec["paths"][operation.path][operation.method.lower()].get("responses", {}), headers)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    assert tried > len(operations)
