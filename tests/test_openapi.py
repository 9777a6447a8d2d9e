"""openapi.yaml against the app: a valid OpenAPI 3.1 document, the same routes and methods
as the Flask url_map, and real answers (real Postgres, the fake Strava, riders' signed
tokens) that validate against the schema declared for their path, method and status.

Answers are validated "closed": every object schema that lists `properties` and says
nothing about other members is checked with `unevaluatedProperties: false`, so a field
the code returns but the spec does not describe fails here as surely as a missing one.
"""

from __future__ import annotations

import copy
import functools
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml
from flask import Flask
from openapi_spec_validator import validate as validate_spec
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from fake_strava import make_activities
from tests.conftest import cron_headers
from tests.factories import connect_rider, execute, query

# Fixtures: keys, issuer, web (fake Strava + JWKS over HTTP), auth_settings, rider_app,
# rider_client.
pytest_plugins = ["tests.jwks_fixture"]

SPEC_PATH = Path(__file__).resolve().parent.parent / "openapi.yaml"
SPEC_URI = "urn:club-strava-sync:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CRON = ("/api/cron/sync-strava", "/api/cron/discover", "/api/cron/enrich")
STATUS = "/api/admin/status"
SYNC = "/api/riders/me/sync"
CRON_REQUEST = "/components/schemas/CronRequest"  # what the spec lets a cron body hold
ACTIONS = ("full-refresh", "reset", "pause", "resume")
# The browser's files (routes/web.py) and the type each is served with.
WEB_FILES = {
    "/widget.js": "text/javascript",
    "/widget.css": "text/css",
    "/admin": "text/html",
    "/admin/admin.js": "text/javascript",
    "/admin/admin.css": "text/css",
}  # POST /api/admin/riders/{rider_id}/...
# A Flask rule's variable: <name>, <conv:name> or <conv(args):name>.
VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


# --- the spec and a validator over it -------------------------------------------------


def load_spec() -> dict[str, Any]:
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def closed(node: Any) -> Any:
    """A copy where object schemas with `properties` and no word on other members refuse
    members they do not describe."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: closed(value) for key, value in node.items()}
    if (
        isinstance(node.get("properties"), dict)
        and "additionalProperties" not in node
        and "unevaluatedProperties" not in node
    ):
        out["unevaluatedProperties"] = False
    return out


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(spec: dict[str, Any], ref: str) -> tuple[str, dict[str, Any]]:
    """A local `#/...` reference: its JSON pointer and the object it names."""
    assert ref.startswith("#/"), ref
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return ref[1:], node


class Contract:
    """Looks up what the spec declares for an answer and validates the answer with it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.registry: Registry = Registry().with_resource(
            SPEC_URI, Resource.from_contents(closed(spec), default_specification=DRAFT202012)
        )
        self.seen: set[tuple[str, str, str]] = set()

    def declared(self, path: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
        operations = self.spec["paths"].get(path, {})
        assert method.lower() in operations, f"the spec has no {method.upper()} {path}"
        responses = operations[method.lower()]["responses"]
        assert str(status) in responses, (
            f"{method.upper()} {path} answered {status}; the spec declares {sorted(responses)}"
        )
        where = pointer("paths", path, method.lower(), "responses", str(status))
        declared = responses[str(status)]
        if "$ref" in declared:
            where, declared = resolve(self.spec, declared["$ref"])
        return where, declared

    def validator(self, schema_pointer: str) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(
            {"$ref": f"{SPEC_URI}#{schema_pointer}"},
            registry=self.registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )

    def check(self, response: Any, path: str, method: str) -> Any:
        """Assert the answer is declared and conforms (body and required headers); returns
        its JSON body, or None for an answer without one."""
        status = response.status_code
        where, declared = self.declared(path, method, status)
        for name, header in declared.get("headers", {}).items():
            if "$ref" in header:
                _, header = resolve(self.spec, header["$ref"])
            if header.get("required"):
                assert name in response.headers, f"{status} from {path} lacks {name}"
                schema = header["schema"]
                value: Any = response.headers[name]
                if schema.get("type") == "integer":
                    value = int(value)
                jsonschema.validate(value, schema)
        content = declared.get("content")
        self.seen.add((path, method.lower(), str(status)))
        if not content:
            return None
        if "application/json" not in content:  # a web page or file: its type, a body
            assert response.mimetype in content, (
                f"{method.upper()} {path} {status} is {response.mimetype}; "
                f"the spec declares {sorted(content)}"
            )
            text = response.get_data(as_text=True)
            assert text.strip(), f"{path} {status} is empty"
            return text
        assert response.is_json, f"{path} {status} is not JSON: {response.content_type}"
        body = response.get_json()
        validator = self.validator(where + pointer("content", "application/json", "schema"))
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method.upper()} {path} {status}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:5]
        )
        return body


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return load_spec()


@pytest.fixture(scope="module")
def contract(spec: dict[str, Any], request) -> Iterator[Contract]:
    """The answers checked in this module; when the whole module ran, every operation of
    the spec must have had at least one real answer checked (an error at teardown if not)."""
    checked = Contract(spec)
    yield checked
    ran = {item.originalname for item in request.session.items if item.module is request.module}
    defined = {name for name in vars(request.module) if name.startswith("test_")}
    if ran == defined:
        answered = {(path, method) for path, method, _ in checked.seen}
        missing = sorted(spec_operations(spec) - answered)
        assert not missing, f"operations with no real answer checked: {missing}"


# --- 1. a valid OpenAPI 3.1 document --------------------------------------------------


def test_the_spec_is_valid_openapi_3_1(spec):
    assert str(spec["openapi"]).startswith("3.1.")
    validate_spec(spec)
    assert set(spec["components"]["securitySchemes"]) == {"cronBearer", "riderBearer"}


def spoil_response(spec: dict[str, Any]) -> None:
    del spec["paths"]["/api/health"]["get"]["responses"]["200"]["description"]


def spoil_reference(spec: dict[str, Any]) -> None:
    spec["paths"]["/api/health"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] = {"$ref": "#/components/schemas/NoSuchSchema"}


def spoil_parameter(spec: dict[str, Any]) -> None:
    del spec["paths"]["/api/admin/riders/{rider_id}/reset"]["parameters"]


@pytest.mark.parametrize("spoil", [spoil_response, spoil_reference, spoil_parameter])
def test_the_validator_refuses_a_broken_spec(spec, spoil):
    broken = copy.deepcopy(spec)
    spoil(broken)
    with pytest.raises((OpenAPIValidationError, Unresolvable)):
        validate_spec(broken)


def test_every_local_reference_resolves(spec):
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs
    for ref in refs:
        resolve(spec, ref)  # raises KeyError for a dangling reference


# --- 2. routes and spec agree both ways -----------------------------------------------


def flask_operations(app: Flask) -> dict[tuple[str, str], dict[str, str]]:
    """(path, method) for every rule of the app (the API, the widget's files and the
    dashboard), Flask's `<conv:name>` as `{name}`, with the converters of its variables."""
    operations: dict[tuple[str, str], dict[str, str]] = {}
    for rule in app.url_map.iter_rules():
        path = VARIABLE.sub(r"{\2}", rule.rule)
        converters = {name: conv or "default" for conv, name in VARIABLE.findall(rule.rule)}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            key = (path, method.lower())
            assert key not in operations, f"two rules answer {key}"
            operations[key] = converters
    return operations


def spec_operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in spec["paths"].items()
        for method in HTTP_METHODS
        if method in item
    }


def test_routes_and_spec_agree_both_ways(app, spec):
    in_app = flask_operations(app)
    in_spec = spec_operations(spec)
    assert len(in_app) >= 16
    missing = sorted(set(in_app) - in_spec)
    extra = sorted(in_spec - set(in_app))
    assert not missing, f"routes the spec does not describe: {missing}"
    assert not extra, f"spec operations the app does not have: {extra}"


def test_every_route_is_described_the_web_files_too(app, spec):
    web = {path for path, _ in flask_operations(app) if not path.startswith("/api/")}
    assert web == set(WEB_FILES)  # and no /static route beside them
    for path, mimetype in WEB_FILES.items():
        assert set(spec["paths"][path]) == {"get"}
        assert set(spec["paths"][path]["get"]["responses"]["200"]["content"]) == {mimetype}


def test_path_variables_are_declared_with_their_types(app, spec):
    for (path, method), converters in flask_operations(app).items():
        item = spec["paths"].get(path, {})
        if method not in item:
            continue  # reported by test_routes_and_spec_agree_both_ways
        parameters = [*item.get("parameters", []), *item[method].get("parameters", [])]
        declared = {}
        for parameter in parameters:
            if "$ref" in parameter:
                _, parameter = resolve(spec, parameter["$ref"])
            if parameter["in"] == "path":
                declared[parameter["name"]] = parameter
        assert set(declared) == set(converters), (path, method)
        for name, converter in converters.items():
            assert declared[name]["required"] is True
            if converter == "int":
                assert declared[name]["schema"]["type"] == "integer", (path, name)


def test_every_operation_has_security_and_json_errors(spec):
    for path, method in spec_operations(spec):
        operation = spec["paths"][path][method]
        assert "security" in operation, (path, method)
        for status, declared in operation["responses"].items():
            if "$ref" in declared:
                _, declared = resolve(spec, declared["$ref"])
            if status.startswith(("4", "5")) and not path.endswith("/health"):
                schema = declared["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


# --- the closed check itself can fail -------------------------------------------------


def test_the_answer_check_catches_drift(contract):
    where, _ = contract.declared("/api/health", "get", 200)
    schema = where + pointer("content", "application/json", "schema")
    good = {"status": "ok", "database": "ok"}
    assert contract.validator(schema).is_valid(good)
    assert not contract.validator(schema).is_valid({**good, "undocumented": 1})
    assert not contract.validator(schema).is_valid({"status": "ok"})
    assert not contract.validator(schema).is_valid({**good, "status": "fine"})
    error = contract.validator(pointer("components", "schemas", "Error"))
    assert error.is_valid({"error": {"code": "x", "message": "y", "field": "limit"}})
    assert not error.is_valid({"error": {"code": "x", "message": "y", "hint": "z"}})
    timestamp = contract.validator(pointer("components", "schemas", "Timestamp"))
    assert timestamp.is_valid("2026-11-24T02:42:00.123456Z")
    assert not timestamp.is_valid("yesterday")


# --- 3. real answers conform ----------------------------------------------------------


def test_health(client, contract, monkeypatch):
    body = contract.check(client.get("/api/health"), "/api/health", "get")
    assert body == {"status": "ok", "database": "ok"}
    monkeypatch.setattr("routes.health.database_ok", lambda db: False)  # the database down
    down = client.get("/api/health")
    assert down.status_code == 503
    assert contract.check(down, "/api/health", "get") == {
        "status": "degraded",
        "database": "unreachable",
    }


def seed_fleet(database: str, fake: Any) -> dict[str, int]:
    """Riders the three cron endpoints all find work in."""
    now = datetime.now(UTC)
    return {
        "racer": connect_rider(
            database, fake, 7101, activities=12, race_fraction=0.4, seed=3, name="Racer"
        ),
        "plain": connect_rider(database, fake, 7102, activities=5),
        "new": connect_rider(
            database,
            fake,
            7103,
            activities=30,
            start=now - timedelta(days=400),
            history_complete=False,
        ),
    }


def cron(client: Any, contract: Contract, path: str, method: str = "post", **options: Any):
    response = client.open(path, method=method.upper(), headers=cron_headers(), **options)
    assert response.status_code == 200, response.get_data(as_text=True)
    return contract.check(response, path, method)


def test_cron_answers_admin_status_and_actions(client, strava, database, contract):
    riders = seed_fleet(database, strava)

    synced = cron(client, contract, "/api/cron/sync-strava")
    assert synced["processed"] == 3 and synced["succeeded"] == 3 and synced["done"] is True
    assert {item["rider_id"] for item in synced["items"]} == set(riders.values())
    added = {item["rider_id"]: item["added"] for item in synced["items"]}
    assert added[riders["racer"]] == 12 and added[riders["plain"]] == 5

    walked = cron(client, contract, "/api/cron/discover", "get", query_string={"limit": "5"})
    assert walked["items"] and walked["items"][0]["rider_id"] == riders["new"]
    assert walked["items"][0]["complete"] is True

    enriched = cron(client, contract, "/api/cron/enrich", json={"limit": 3})
    assert enriched["processed"] == 3 and enriched["remaining"] > 0 and not enriched["done"]
    assert all("activity_id" in item and "rider_id" in item for item in enriched["items"])
    enriched = cron(client, contract, "/api/cron/enrich", "get")
    assert enriched["items"] and enriched["done"] is True

    # Nothing due: empty items still conform.
    idle = cron(client, contract, "/api/cron/sync-strava", "get")
    assert idle["items"] == [] and idle["done"] is True

    fleet = contract.check(client.get(STATUS, headers=cron_headers()), STATUS, "get")
    assert "riders" in fleet and fleet["riders"]["total"] == 3
    assert fleet["runs"]["sync-strava"]["last"]

    detail = contract.check(
        client.get(STATUS, query_string={"rider_id": riders["racer"]}, headers=cron_headers()),
        STATUS,
        "get",
    )
    assert detail["rider"]["id"] == riders["racer"] and detail["connection"] is not None
    assert detail["runs"] and detail["sync"]["lease"] is None

    def action(rider_id: int, verb: str) -> Any:
        path = f"/api/admin/riders/{rider_id}/{verb}"
        return contract.check(
            client.post(path, headers=cron_headers()),
            "/api/admin/riders/{rider_id}/" + verb,
            "post",
        )

    assert action(riders["plain"], "pause") == {"rider_id": riders["plain"], "auto_sync": False}
    assert action(riders["plain"], "resume")["auto_sync"] is True
    assert action(riders["plain"], "reset")["detail"]["rider"]["id"] == riders["plain"]
    refresh = action(riders["racer"], "full-refresh")
    assert refresh["complete"] is False and refresh["pages"] == 0

    # A rider without a connection, and riders that do not exist.
    lonely = query(database, "insert into riders (name) values ('Lonely') returning id")[0]["id"]
    unconnected = contract.check(
        client.get(STATUS, query_string={"rider_id": lonely}, headers=cron_headers()),
        STATUS,
        "get",
    )
    assert unconnected["connection"] is None and "sync" not in unconnected
    assert action(lonely, "reset")["error"]["code"] == "not_connected"
    assert action(lonely, "full-refresh")["error"]["code"] == "not_connected"
    for verb in ACTIONS:
        assert action(999999, verb)["error"]["code"] == "rider_not_found"
    missing = client.get(STATUS, query_string={"rider_id": "999999"}, headers=cron_headers())
    assert contract.check(missing, STATUS, "get")["error"]["code"] == "rider_not_found"
    bad = client.get(STATUS, query_string={"rider_id": "x1"}, headers=cron_headers())
    assert contract.check(bad, STATUS, "get")["error"]["field"] == "rider_id"


def test_a_rate_limited_call_and_the_stuck_list(client, strava, database, contract):
    riders = seed_fleet(database, strava)
    execute(
        database,
        "update strava_rate_budget set blocked_until = now() + interval '10 minutes',"
        " blocked_reason = 'strava_429'",
    )
    answer = cron(client, contract, "/api/cron/sync-strava")
    assert answer["rate_limited"] is True and answer["stopped_by"] == "rate_limited"
    assert answer["rate_limit"]["blocked_until"] and answer["rate_limit"]["resets_at"]
    assert {item["reason"] for item in answer["items"]} == {"rate_limited"}
    assert answer["done"] is False
    walked = cron(client, contract, "/api/cron/discover")
    assert walked["items"][0]["status"] == "skipped" and walked["items"][0]["oldest"] is None
    # Every kind of stall: a call that died, leases that ran out, a history and a sync
    # waiting for an hour, a race waiting for its details.
    execute(
        database,
        "insert into cron_runs (kind, started_at) values ('enrich', now() - interval '2 hours')",
    )
    execute(
        database,
        "update strava_connections set lease_token = %s, lease_kind = 'sync',"
        " lease_expires_at = now() - interval '20 minutes' where rider_id = %s",
        uuid.uuid4(),
        riders["racer"],
    )
    execute(
        database,
        "update strava_connections set connected_at = now() - interval '1 hour'"
        " where rider_id = %s",
        riders["new"],
    )
    execute(
        database,
        "insert into activities (strava_id, rider_id, sport_type, start_date, distance_m,"
        " is_race, enrichment_status, enrichment_attempts, enrichment_lease_token,"
        " enrichment_lease_expires_at, created_at) values (555001, %s, 'Ride',"
        " now() - interval '3 days', 210000, true, 'failed', 2, %s,"
        " now() - interval '15 minutes', now() - interval '1 hour')",
        riders["plain"],
        uuid.uuid4(),
    )
    fleet = contract.check(client.get(STATUS, headers=cron_headers()), STATUS, "get")
    kinds = {item["kind"] for item in fleet["stuck"]["items"]}
    assert kinds == {
        "rate_limit_block",
        "run_unfinished",
        "rider_lease_expired",
        "race_lease_expired",
        "history_stalled",
        "sync_overdue",
        "race_stalled",
    }
    assert fleet["rate_limit"]["blocked"] is True and fleet["runs"]["enrich"]["last"]
    for rider in riders.values():
        detail = client.get(STATUS, query_string={"rider_id": rider}, headers=cron_headers())
        contract.check(detail, STATUS, "get")


def refused(
    contract: Contract, client: Any, path: str, method: str, **options: Any
) -> dict[str, Any]:
    """The `error` member of a refusal, checked against the spec."""
    response = client.open(path, method=method.upper(), **options)
    assert response.status_code >= 400, response.get_data(as_text=True)
    return contract.check(response, path, method)["error"]


@pytest.mark.parametrize("path", CRON)
def test_cron_refusals(make_app, client, contract, path):
    unset = make_app(cron_secret=None).test_client()
    for method in ("get", "post"):
        call = functools.partial(refused, contract, client, path, method)
        assert call()["code"] == "unauthorized"
        assert call(headers=cron_headers("wrong"))["code"] == "unauthorized"
        assert call(headers={"Authorization": "Basic abc"})["code"] == "unauthorized"
        for text in ("0", "501", "abc", "-1", "2.5", "", "1000"):
            assert call(query_string={"limit": text}, headers=cron_headers()) == {
                "code": "invalid_parameter",
                "message": "limit must be an integer from 1 to 500",
                "field": "limit",
            }
        for value in ("5", 5.0, True, None, 0, 501):
            assert call(json={"limit": value}, headers=cron_headers())["field"] == "limit"
            # ... and the spec refuses them too (but 5.0: JSON Schema counts it an integer)
            if not isinstance(value, float):
                assert not contract.validator(CRON_REQUEST).is_valid({"limit": value}), value
        assert contract.validator(CRON_REQUEST).is_valid({"limit": 5})
        assert call(json=[1], headers=cron_headers())["code"] == "invalid_body"
        closed_down = unset.open(path, method=method.upper(), headers=cron_headers())
        assert contract.check(closed_down, path, method)["error"]["code"] == "not_configured"


def test_admin_refusals(make_app, client, contract):
    unset = make_app(cron_secret=None).test_client()
    assert contract.check(client.get(STATUS), STATUS, "get")["error"]["code"] == "unauthorized"
    body = contract.check(unset.get(STATUS, headers=cron_headers()), STATUS, "get")
    assert body["error"]["code"] == "not_configured"
    for verb in ACTIONS:
        path = "/api/admin/riders/{rider_id}/" + verb
        url = f"/api/admin/riders/1/{verb}"
        wrong = client.post(url, headers=cron_headers("nope"))
        assert contract.check(wrong, path, "post")["error"]["code"] == "unauthorized"
        closed_down = unset.post(url, headers=cron_headers())
        assert contract.check(closed_down, path, "post")["error"]["code"] == "not_configured"


# --- riders' endpoints ----------------------------------------------------------------


def link(database: str, fake: Any, athlete_id: int, **options: Any) -> tuple[int, uuid.UUID]:
    """A connected rider owned by a new Supabase user."""
    user = uuid.uuid4()
    rider = connect_rider(database, fake, athlete_id, **options)
    execute(database, "update riders set auth_user_id = %s where id = %s", user, rider)
    return rider, user


@pytest.fixture
def as_rider(issuer) -> Any:
    """The Authorization header of a Supabase user's ES256 access token."""
    return lambda user: issuer.headers(issuer.es256(user))


def test_sync_now_and_its_state(rider_client, web, issuer, database, contract, as_rider):
    now = datetime.now(UTC)
    rider, user = link(database, web, 9101)
    web.add_activities(
        9101,
        make_activities(
            9101,
            10,
            start=now - timedelta(days=3),
            end=now - timedelta(hours=1),
            seed=9,
            race_fraction=0.3,
        ),
    )
    before = contract.check(rider_client.get(SYNC, headers=as_rider(user)), SYNC, "get")
    assert before["connected"] is True and before["sync_now_available"] is True

    synced = contract.check(rider_client.post(SYNC, headers=as_rider(user)), SYNC, "post")
    assert synced["status"] == "synced" and synced["added"] == 10
    assert synced["races_enriched"] == synced["races_found"] > 0
    assert synced["sync"]["eddington"]["km"] is not None

    cooldown = rider_client.post(SYNC, headers=as_rider(user))
    body = contract.check(cooldown, SYNC, "post")
    assert cooldown.status_code == 429 and body["error"]["code"] == "cooldown"
    after = contract.check(rider_client.get(SYNC, headers=as_rider(user)), SYNC, "get")
    assert after["sync_now_available"] is False and after["sync_now_available_at"]

    # Held by another call: 202.
    execute(
        database,
        "update strava_connections set last_sync_now_at = null, lease_token = %s,"
        " lease_kind = 'sync', lease_expires_at = now() + interval '1 minute'"
        " where rider_id = %s",
        uuid.uuid4(),
        rider,
    )
    held = rider_client.post(SYNC, headers=as_rider(user))
    assert held.status_code == 202
    assert contract.check(held, SYNC, "post")["sync"]["in_progress"] is True

    # The club's budget spent: 429 with the reset time.
    execute(
        database,
        "update strava_connections set lease_token = null, lease_kind = null,"
        " lease_expires_at = null where rider_id = %s",
        rider,
    )
    execute(
        database,
        "update strava_rate_budget set blocked_until = now() + interval '10 minutes',"
        " blocked_reason = 'strava_429'",
    )
    limited = rider_client.post(SYNC, headers=as_rider(user))
    error = contract.check(limited, SYNC, "post")["error"]
    assert limited.status_code == 429 and error["code"] == "rate_limited" and error["resets_at"]

    # The grant withdrawn: 409, and the state says so.
    execute(
        database, "update strava_connections set status = 'needs_reauth' where rider_id = %s", rider
    )
    reauth = rider_client.post(SYNC, headers=as_rider(user))
    assert contract.check(reauth, SYNC, "post")["error"]["code"] == "needs_reauth"
    state = contract.check(rider_client.get(SYNC, headers=as_rider(user)), SYNC, "get")
    assert state["needs_reconnect"] is True and state["last_error"]["message"]


def test_sync_now_refusals(make_app, rider_client, web, issuer, contract, as_rider):
    stranger = uuid.uuid4()
    state = contract.check(rider_client.get(SYNC, headers=as_rider(stranger)), SYNC, "get")
    assert state == {"connected": False, "in_progress": False, "sync_now_available": False}
    nothing = contract.check(rider_client.post(SYNC, headers=as_rider(stranger)), SYNC, "post")
    assert nothing["error"]["code"] == "not_connected"
    for method in ("get", "post"):
        anonymous = contract.check(rider_client.open(SYNC, method=method.upper()), SYNC, method)
        assert anonymous["error"]["code"] == "missing_token"
        expired = rider_client.open(
            SYNC, method=method.upper(), headers=issuer.headers(issuer.es256(stranger, exp=1))
        )
        assert contract.check(expired, SYNC, method)["error"]["code"] == "token_expired"
    unconfigured = make_app().test_client()  # neither SUPABASE_URL nor the JWT secret
    for method in ("get", "post"):
        response = unconfigured.open(SYNC, method=method.upper(), headers=as_rider(stranger))
        assert contract.check(response, SYNC, method)["error"]["code"] == "not_configured"
    for path in ("/api/strava/connect", "/api/strava/disconnect"):
        response = unconfigured.post(path, headers=as_rider(stranger))
        assert contract.check(response, path, "post")["error"]["code"] == "not_configured"


def test_sync_now_when_strava_fails(rider_client, web, database, contract, as_rider):
    _, user = link(database, web, 9102, activities=2)
    web.fail_next(3, status=500, path_contains="/athlete/activities")  # and urllib3's retries
    failed = rider_client.post(SYNC, headers=as_rider(user))
    assert failed.status_code == 502
    error = contract.check(failed, SYNC, "post")["error"]
    assert error["code"] == "sync_failed" and error["reason"] == "strava_unavailable"
    state = contract.check(rider_client.get(SYNC, headers=as_rider(user)), SYNC, "get")
    assert state["last_error"]["message"] and state["last_error"]["retry_at"]


def test_connect_callback_and_disconnect(make_app, auth_settings, web, issuer, database, contract):
    client = make_app(**auth_settings).test_client()
    user = uuid.uuid4()
    headers = issuer.headers(issuer.es256(user))
    connect = "/api/strava/connect"
    callback = "/api/strava/callback"
    disconnect = "/api/strava/disconnect"

    started = contract.check(client.post(connect, headers=headers), connect, "post")
    state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
    code = web.add_authorization_code(8101, scope="read,activity:read_all")
    params = {"state": state, "code": code, "scope": "read,activity:read_all"}
    connected = contract.check(client.get(callback, query_string=params), callback, "get")
    assert connected["connected"] is True and connected["athlete_id"] == 8101
    again = contract.check(client.get(callback, query_string=params), callback, "get")
    assert again["error"]["code"] == "state_used"

    # The same Strava account for a second user: 409. Strava failing the exchange: 502.
    other = issuer.headers(issuer.es256(uuid.uuid4()))
    for failure, status in ((None, 409), (500, 502)):
        started = contract.check(client.post(connect, headers=other), connect, "post")
        state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
        if failure:
            web.fail_next(1, status=failure, path_contains="/oauth/token")
        code = web.add_authorization_code(8101)
        params = {"state": state, "code": code, "scope": "read,activity:read_all"}
        response = client.get(callback, query_string=params)
        assert response.status_code == status, response.get_data(as_text=True)
        contract.check(response, callback, "get")

    gone = contract.check(client.post(disconnect, headers=headers), disconnect, "post")
    assert gone["disconnected"] is True and gone["tokens_deleted"] is True
    nobody = issuer.headers(issuer.es256(uuid.uuid4()))
    assert contract.check(client.post(disconnect, headers=nobody), disconnect, "post") == {
        "disconnected": False,
        "deauthorized": False,
        "activities_deleted": 0,
    }
    for path in (connect, disconnect):
        assert contract.check(client.post(path), path, "post")["error"]["code"] == "missing_token"

    # With APP_RETURN_URL the callback redirects, for success and failure alike.
    back = make_app(**auth_settings, app_return_url="https://club.example/me").test_client()
    started = contract.check(back.post(connect, headers=headers), connect, "post")
    state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
    denied = back.get(callback, query_string={"state": state, "error": "access_denied"})
    assert denied.status_code == 302 and contract.check(denied, callback, "get") is None
    assert parse_qs(urlsplit(denied.headers["Location"]).query)["reason"] == ["access_denied"]

    no_strava = make_app(**auth_settings, strava_client_secret=None).test_client()
    body = contract.check(no_strava.post(connect, headers=headers), connect, "post")
    assert body["error"]["code"] == "strava_not_configured"
    response = no_strava.get(callback, query_string={"state": state, "code": "x"})
    assert contract.check(response, callback, "get")["error"]["code"] == "strava_not_configured"


def test_sharing_answers(make_app, rider_client, web, database, contract, as_rider):
    path = "/api/riders/me/sharing"
    _, user = link(database, web, 9201, activities=1)
    on = contract.check(
        rider_client.put(path, headers=as_rider(user), json={"share": True}), path, "put"
    )
    assert on["shared"] is True and on["since"]
    state = contract.check(rider_client.get(SYNC, headers=as_rider(user)), SYNC, "get")
    assert state["sharing"] == on and state["realtime"]["topic"] == f"rider:{user}"
    assert state["last_sync"] is None  # never synced: nothing to report, not a zero
    off = contract.check(
        rider_client.put(path, headers=as_rider(user), json={"share": False}), path, "put"
    )
    assert off["shared"] is False and off["since"] is None
    bad = rider_client.put(path, headers=as_rider(user), json={"share": "on"})
    assert contract.check(bad, path, "put")["error"]["field"] == "share"
    nobody = rider_client.put(path, headers=as_rider(uuid.uuid4()), json={"share": True})
    assert contract.check(nobody, path, "put")["error"]["code"] == "not_connected"
    assert contract.check(rider_client.put(path, json={"share": True}), path, "put")["error"]
    unconfigured = make_app().test_client()
    response = unconfigured.put(path, headers=as_rider(user), json={"share": True})
    assert contract.check(response, path, "put")["error"]["code"] == "not_configured"


def test_widget_origin_answers(make_app, contract):
    path = "/api/widget/origin"
    client = make_app(allowed_origins=("https://club.example",)).test_client()
    listed = client.get(path, headers={"Origin": "https://club.example"})
    assert contract.check(listed, path, "get") == {
        "origin": "https://club.example",
        "allowed": True,
    }
    other = contract.check(
        client.get(path, headers={"Origin": "https://elsewhere.example"}), path, "get"
    )
    assert other == {"origin": "https://elsewhere.example", "allowed": False}
    assert contract.check(client.get(path), path, "get") == {"origin": None, "allowed": False}


def test_capacity_answers(make_app, auth_settings, web, issuer, database, contract):
    connect = "/api/strava/connect"
    callback = "/api/strava/callback"
    client = make_app(**auth_settings, strava_athlete_capacity=1).test_client()
    link(database, web, 9301)
    full = client.post(connect, headers=issuer.headers(issuer.es256(uuid.uuid4())))
    assert full.status_code == 409
    assert contract.check(full, connect, "post")["error"]["code"] == "athlete_capacity"
    status = contract.check(client.get(STATUS, headers=cron_headers()), STATUS, "get")
    assert status["athletes"] == {"connected": 1, "capacity": 1, "full": True}
    roomy = make_app(**auth_settings, strava_athlete_capacity=5).test_client()
    headers = issuer.headers(issuer.es256(uuid.uuid4()))
    started = contract.check(roomy.post(connect, headers=headers), connect, "post")
    state = parse_qs(urlsplit(started["authorize_url"]).query)["state"][0]
    refused = roomy.get(
        callback, query_string={"state": state, "error": "limit of connected athletes exceeded"}
    )
    assert refused.status_code == 409
    assert contract.check(refused, callback, "get")["error"]["code"] == "athlete_capacity"


def test_duplicate_overrule_answers(client, strava, database, contract):
    """POST /api/admin/riders/{rider_id}/duplicates: 200 and 400."""
    path = "/api/admin/riders/{rider_id}/duplicates"
    rider = connect_rider(database, strava, 8801, activities=2)
    cron = client.post("/api/cron/sync-strava", headers=cron_headers())
    assert cron.status_code == 200
    ids = [r["strava_id"] for r in query(database, "select strava_id from activities")]
    url = f"/api/admin/riders/{rider}/duplicates"
    paired = contract.check(
        client.post(
            url, json={"activity_ids": ids, "verdict": "duplicate"}, headers=cron_headers()
        ),
        path,
        "post",
    )
    assert paired["duplicate"] is not None and paired["verdict"] == "duplicate"
    refused = contract.check(
        client.post(url, json={"activity_ids": ids[:1], "verdict": "x"}, headers=cron_headers()),
        path,
        "post",
    )
    assert refused["error"]["code"] == "invalid_parameter"
    detail = contract.check(
        client.get(STATUS, query_string={"rider_id": rider}, headers=cron_headers()), STATUS, "get"
    )
    assert len(detail["duplicates"]) == 1


def test_weather_answers(make_app, fake, database, contract):
    """GET and POST /api/cron/weather against the fake weather on loopback."""
    import psycopg
    import psycopg.rows

    from fake_weather import FakeWeather, serve
    from models.activities import upsert_activities
    from services.activities import page_rows
    from tests.factories import connect_rider as connect

    path = "/api/cron/weather"
    rider = connect(database, fake, 8802)
    long_ago = datetime.now(UTC) - timedelta(days=40)
    summaries = make_activities(8802, 3, start=long_ago - timedelta(days=2), end=long_ago, seed=5)
    with psycopg.connect(database, row_factory=psycopg.rows.dict_row) as conn:
        upsert_activities(
            conn, rider_id=rider, rows=page_rows(summaries, min_race_distance_km=10_000),
            now=datetime.now(UTC),
        )  # fmt: skip
    with serve(FakeWeather()) as served:
        client = make_app(
            weather_api_url=served.archive_url, weather_forecast_url=served.forecast_url
        ).test_client()
        posted = contract.check(client.post(path, headers=cron_headers()), path, "post")
        assert posted["succeeded"] >= 1 and posted["weather_requests"] >= 1
        got = contract.check(client.get(path, headers=cron_headers()), path, "get")
        assert got["processed"] == 0 and got["done"] is True
        fleet = contract.check(client.get(STATUS, headers=cron_headers()), STATUS, "get")
        assert fleet["weather"]["activities"]["done"] == posted["succeeded"]
        bad = client.post(path, query_string={"limit": "0"}, headers=cron_headers())
        assert contract.check(bad, path, "post")["error"]["field"] == "limit"


def test_webhook_and_events_answers(make_app, strava, database, contract):
    """GET and POST /api/strava/webhook and /api/cron/events."""
    from models.webhooks import save_push_subscription
    from services.webhooks import validation_answer

    hook, events = "/api/strava/webhook", "/api/cron/events"
    client = make_app(strava_webhook_verify_token="v-token").test_client()
    challenge = {"hub.mode": "subscribe", "hub.challenge": "c1", "hub.verify_token": "v-token"}
    assert validation_answer(challenge, "v-token")[0] == 200
    assert contract.check(client.get(hook, query_string=challenge), hook, "get") == {
        "hub.challenge": "c1"
    }
    wrong = {**challenge, "hub.verify_token": "nope"}
    assert contract.check(client.get(hook, query_string=wrong), hook, "get")["error"]
    unset = make_app().test_client().get(hook, query_string=challenge)
    assert contract.check(unset, hook, "get")["error"]["code"] == "not_configured"

    rider = connect_rider(database, strava, 8803, activities=2)
    [activity] = [a["id"] for a in strava.activities_of(8803)][:1]
    import psycopg

    with psycopg.connect(database) as conn:
        save_push_subscription(
            conn, subscription_id=77, callback_url="https://x/api/strava/webhook",
            now=datetime.now(UTC),
        )  # fmt: skip
    body = {
        "object_type": "activity", "object_id": activity, "aspect_type": "create",
        "owner_id": 8803, "subscription_id": 77, "event_time": int(datetime.now(UTC).timestamp()),
        "updates": {},
    }  # fmt: skip
    stored = contract.check(client.post(hook, json=body), hook, "post")
    assert stored["stored"] is True and stored["processed"]["rider_id"] == rider
    again = contract.check(client.post(hook, json=body), hook, "post")
    assert again == {"stored": False, "ignored": "duplicate"}
    pending = {**body, "aspect_type": "update", "updates": {"title": "x"}}
    slow = make_app(strava_webhook_verify_token="v-token", webhook_inline_budget_s=0)
    assert contract.check(slow.test_client().post(hook, json=pending), hook, "post")["stored"]
    posted = contract.check(client.post(events, headers=cron_headers()), events, "post")
    assert posted["processed"] == 1 and posted["items"][0]["reason"] == "unchanged"
    got = contract.check(client.get(events, headers=cron_headers()), events, "get")
    assert got["done"] is True
    fleet = contract.check(client.get(STATUS, headers=cron_headers()), STATUS, "get")
    assert fleet["webhooks"]["events_24h"]["received"] == 2


def test_web_files_answer_with_their_types_and_304_when_unchanged(client, contract):
    """The widget's files and the dashboard (routes/web.py), against their operations."""
    for path, mimetype in WEB_FILES.items():
        response = client.get(path)
        text = contract.check(response, path, "get")
        assert response.mimetype == mimetype and text
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        again = client.get(path, headers={"If-None-Match": response.headers["ETag"]})
        assert again.status_code == 304 and again.get_data() == b""
        assert contract.check(again, path, "get") is None
    assert "ClubSync" in client.get("/widget.js").get_data(as_text=True)
    assert "connect-src 'self'" in client.get("/admin").headers["Content-Security-Policy"]


def test_operator_answers_rename_items_and_idle_calls(client, strava, database, contract):
    """PUT /api/admin/riders/{rider_id}/name, a rider's detail with every item, and a
    call that took nothing (with `idle_reason`) and everyone now (`all=true`)."""
    path = "/api/admin/riders/{rider_id}/name"
    rider = connect_rider(database, strava, 8804, activities=3)
    synced = cron(client, contract, "/api/cron/sync-strava", query_string={"all": "true"})
    assert synced["processed"] == 1 and "idle_reason" not in synced
    idle = cron(client, contract, "/api/cron/sync-strava", json={"all": True})
    assert idle["idle_reason"] == "none_due"
    named = client.put(f"/api/admin/riders/{rider}/name", json={"name": "Dev D."},
                       headers=cron_headers())  # fmt: skip
    assert contract.check(named, path, "put") == {
        "rider_id": rider, "name": "Dev D.", "named_by": "operator"
    }  # fmt: skip
    bad = client.put(f"/api/admin/riders/{rider}/name", json={"name": ""}, headers=cron_headers())
    assert contract.check(bad, path, "put")["error"]["field"] == "name"
    gone = client.put("/api/admin/riders/999999/name", json={"name": "x"}, headers=cron_headers())
    assert contract.check(gone, path, "put")["error"]["code"] == "rider_not_found"
    detail = contract.check(
        client.get(STATUS, query_string={"rider_id": rider, "items": "all"},
                   headers=cron_headers()),
        STATUS,
        "get",
    )  # fmt: skip
    assert detail["rider"]["name"] == "Dev D." and detail["items"]["count"] == 1
    assert detail["runs"][-1]["items_by_status"]["succeeded"] == 1
    fleet = contract.check(client.get(STATUS, headers=cron_headers()), STATUS, "get")
    assert fleet["runs"]["sync-strava"]["last"][0]["idle_reason"] == "none_due"
