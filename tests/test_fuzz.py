"""Fuzzing from openapi.yaml: schemathesis generates requests for every operation the
description has (taken from it, not from a list here, so an operation added there is
fuzzed too), valid ones and invalid ones, and sends them over HTTP to the app served on
loopback (its Strava the fake, served on loopback too), with the cron bearer on the
cron and admin operations and a signed-in rider's token on the rider ones.

Every answer must be no server error, declared for its operation with the declared
content type, headers and schema; an invalid request must be refused (4xx); a 405 must
carry `Allow`. Hypothesis runs derandomized (the same cases every run) with no example
database, a fixed number of cases an operation and mode.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hypothesis
import jwt
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fake_strava import FakeStrava, serve
from fake_strava.serve import serve_app
from tests.conftest import CLIENT_ID, CLIENT_SECRET, cron_headers, sizes
from tests.factories import connect_rider, execute, hs256_rider_headers

SPEC = Path(__file__).resolve().parent.parent / "openapi.yaml"
JWT_SECRET = "test-jwt-secret-for-fuzzing-8b1e"
# Cases an operation, per mode: small (the default run) and full (under the slow mark).
EXAMPLES_SMALL = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 3}
EXAMPLES_FULL = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 12}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SETTINGS = hypothesis.settings(
    max_examples=1,  # replaced per mode
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a finding is reported as found
)
# The credentials are given (valid), not generated; an undeclared query parameter is
# ignored by the service, as HTTP allows, so it is not generated as an invalid input.
CONFIG = SchemathesisConfig.from_dict(
    {"generation": {"allow-extra-parameters": False, "with-security-parameters": False}}
)
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def served_app(make_app, database):
    """The app on a loopback port, its Strava the fake on another, one connected rider
    whose Supabase user is the fuzzing rider; (base URL, rider headers)."""
    fake = FakeStrava(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    with serve(fake) as strava:
        rider = hs256_rider_headers(JWT_SECRET)
        user = jwt.decode(rider["Authorization"].split()[1], options={"verify_signature": False})
        rider_id = connect_rider(database, fake, 8801, activities=6, race_fraction=0.3)
        execute(
            database, "update riders set auth_user_id = %s where id = %s", user["sub"], rider_id
        )
        app = make_app(
            strava_api_url=strava.api_url,
            strava_oauth_url=strava.oauth_url,
            supabase_jwt_secret=JWT_SECRET,
            public_base_url="http://127.0.0.1",
            app_return_url="http://127.0.0.1/club",
            strava_webhook_verify_token="fuzz-verify-token",  # unset, its GET is a 503
        )
        server, thread = serve_app(app, name="app-under-fuzz")
        try:
            yield f"http://127.0.0.1:{server.port}", rider
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def auth_for(operation: Any, rider: dict[str, str]) -> dict[str, str]:
    """The credentials the operation declares: the cron bearer, a rider's token, or none."""
    schemes = {name for entry in operation.definition.raw.get("security", []) for name in entry}
    if "cronBearer" in schemes:
        return cron_headers()
    if "riderBearer" in schemes:
        return rider
    return {}


def fuzzer(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    call: dict[str, Any],
    counted: dict[str, int],
) -> Any:
    """One operation's cases in one mode, sent and checked."""
    # An operation that answers any body on purpose (`x-any-body-answered`: Strava's
    # webhook POST, where a malformed event is a 200 with nothing stored) is still fuzzed
    # with invalid input, but refusing it is not asked of it.
    lenient = operation.definition.raw.get("x-any-body-answered") is True
    negative = mode is GenerationMode.NEGATIVE and not lenient
    checks = CHECKS + ([negative_data_rejection] if negative else [])

    @hypothesis.settings(SETTINGS, max_examples=examples)
    @given(case=operation.as_strategy(generation_mode=mode, headers=call["headers"]))
    def fuzz(case: Any) -> None:
        counted["cases"] += 1
        response = case.call(base_url=call["base_url"], session=call["session"])
        if response.status_code == 405:
            assert response.headers.get("Allow"), f"405 without Allow: {case.as_curl_command()}"
        case.validate_response(response, checks=checks, headers=call["headers"])

    return fuzz


@pytest.mark.parametrize("examples", sizes(EXAMPLES_SMALL, EXAMPLES_FULL))
def test_fuzzing_every_operation_of_the_spec(served_app, examples):
    base_url, rider = served_app
    schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)
    findings: list[str] = []
    counted = {"cases": 0, "operations": 0, "nothing_to_negate": 0}
    session = requests.Session()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"openapi.yaml: {result.err()}"  # an unusable operation
        operation = result.ok()
        counted["operations"] += 1
        call = {"base_url": base_url, "session": session, "headers": auth_for(operation, rider)}
        for mode, cases in examples.items():
            try:
                fuzzer(operation, mode, cases, call, counted)()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
                counted["nothing_to_negate"] += 1  # no input that could be invalid
            except (AssertionError, BaseExceptionGroup) as exc:  # reported together, below
                findings.append(f"{operation.label} ({mode}): {exc}")
    assert counted["operations"] >= 20, counted
    # (at full size at least 300: about half of what 20 + 12 an operation could give)
    assert counted["cases"] >= 300 * sum(examples.values()) // 32, counted
    assert not findings, "\n\n".join(findings)
    print(f"\nfuzzing: {counted}")


def test_every_405_names_the_methods_of_its_path(served_app):
    """Each path of the spec, each method it does not declare: 405 in the JSON error
    shape, with `Allow` naming what the spec declares (and HEAD, OPTIONS)."""
    base_url, _ = served_app
    spec = schemathesis.openapi.from_path(SPEC).raw_schema
    checked = 0
    for path, item in spec["paths"].items():
        declared = {m.upper() for m in item if m in METHODS}
        url = base_url + re.sub(r"\{[^}]+\}", "1", path)
        for method in sorted(set(METHODS) - {m.lower() for m in declared}):
            response = requests.request(method.upper(), url, headers=cron_headers(), timeout=10)
            assert response.status_code == 405, (method, path)
            assert response.json()["error"]["code"] == "method_not_allowed"
            assert "Allow" in response.headers, f"405 without Allow: {method} {path}"
            allow = {m.strip() for m in response.headers["Allow"].split(",")}
            expected = declared | {"OPTIONS"} | ({"HEAD"} if "GET" in declared else set())
            assert allow == expected, (method, path, allow)
            checked += 1
    assert checked >= 40
