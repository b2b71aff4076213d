"""Fuzzing the HTTP contract: schemathesis generates requests (valid and invalid) from a real
`chatee api` process's `/openapi.json` and sends them with a signed-in user's bearer token.

Every answer must be a non-5xx whose status code, content type and body are the ones the schema
documents (errors: `application/problem+json`). The run is bounded and derandomized, so CI sees
the same cases every time: `EXAMPLES` per operation × the schema's operations (printed at the
end of the run as `fuzz run size`).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import Stack

EXAMPLES = 10  # per operation (positive and negative cases): ~640 calls, under a minute here
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that would end the fuzzing user's own access rather than test anything: logging
# out revokes the bearer token every later case relies on.
SKIPPED = {"/api/v1/auth/logout"}


@pytest.fixture(scope="module")
def fuzz_headers(stack: Stack) -> dict[str, str]:
    r = httpx.post(
        f"{stack.base}/api/v1/auth/register",
        json={"username": f"fuzz-{uuid.uuid4().hex[:10]}", "password": "fuzzing horse"},
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_every_operation_keeps_its_contract(stack: Stack, fuzz_headers: dict[str, str]) -> None:
    """Positive and negative cases for each operation; all failures are reported together."""
    schema = schemathesis.openapi.from_url(f"{stack.base}/openapi.json")
    failures: list[str] = []
    calls: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIPPED:
            continue
        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the failure names its case
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.call_and_validate(
                base_url=stack.base, headers=fuzz_headers, checks=CHECKS, timeout=20
            )

        try:
            run()
        # schemathesis raises its FailureGroup, a BaseExceptionGroup: collect, report below
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    print(
        f"\nfuzz run size: {len(calls)} operations × ≤{EXAMPLES} examples"
        f" = {sum(calls.values())} calls"
    )
    assert len(calls) >= 40, f"the schema lost operations: {sorted(calls)}"
    assert not failures, "\n\n".join(failures)
