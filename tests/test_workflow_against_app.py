"""The workflows' caller script driving the real service (not a stub): the service on
127.0.0.1, Strava faked at the HTTP level, the script looping until the backlog is done."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from fake_strava.serve import ServedApp, serve_app
from tests.conftest import CRON_SECRET, sizes, standing_timer
from tests.factories import connect_rider, query

SCRIPT = Path(__file__).resolve().parent.parent / ".github" / "scripts" / "call-cron.sh"
# Outside GitHub Actions (a crontab) each line the script prints starts so.
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z ")


def assert_plain_log(text: str) -> None:
    """A crontab's log: timestamped lines, no workflow commands, no GitHub wording."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert TIMESTAMP.match(line), line
        assert "::" not in line and "repository secret" not in line, line


@pytest.fixture
def served_service(make_app):
    """The app on a loopback port, as Vercel or gunicorn would serve it; on a standing
    timer, as Strava answers at once here (how many calls the script makes is then the
    service's, not this machine's load's)."""
    app = make_app(sync_workers=2, timer=standing_timer)
    with ServedApp(*serve_app(app, name="service-for-the-script")) as served:
        yield served.url


def run_script(
    url: str, endpoint: str, summary: Path, **env: str | None
) -> subprocess.CompletedProcess:
    """Runs as from a crontab (no GITHUB_ACTIONS) unless GITHUB_ACTIONS is passed."""
    full_env: dict[str, str | None] = {
        "PATH": os.environ["PATH"],
        "SERVICE_URL": url,
        "CRON_SECRET": CRON_SECRET,
        "ENDPOINT": endpoint,
        "GITHUB_STEP_SUMMARY": str(summary),
        "CRON_PAUSE_S": "0",
        "CRON_RETRY_DELAY_S": "0",
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={key: value for key, value in full_env.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=120,
    )


# Histories of two pages (small) or three (full, under the slow mark), 200 a page.
@pytest.mark.parametrize("activities", sizes(250, 450))
def test_the_script_backfills_through_the_real_endpoints(
    served_service, strava, database, tmp_path, activities
):
    riders = [
        connect_rider(database, strava, 801 + i, activities=activities, history_complete=False)
        for i in range(3)
    ]
    summary = tmp_path / "summary.md"
    for endpoint, limit in (("sync-strava", "2"), ("discover", "1"), ("enrich", "5")):
        done = run_script(served_service, endpoint, summary, LIMIT=limit)
        assert done.returncode == 0, done.stdout + done.stderr
        assert CRON_SECRET not in done.stdout + done.stderr
        assert_plain_log(done.stdout + done.stderr)
    on_strava = sum(len(strava.activities_of(801 + i)) for i in range(3))
    stored = query(database, "select count(*) as n, count(distinct strava_id) as d from activities")
    assert stored[0] == {"n": on_strava, "d": on_strava}
    races = query(
        database,
        "select count(*) filter (where enrichment_status = 'done') as done, count(*) as races"
        " from activities where is_race",
    )[0]
    assert races["races"] > 0 and races["done"] == races["races"]
    complete = query(
        database,
        "select count(*) as n from strava_connections where history_complete_at is not null",
    )
    assert complete[0]["n"] == len(riders)
    text = summary.read_text()
    assert "sync-strava" in text and "discover" in text and "enrich" in text
    # the public summary shows counts only: no item fields, ids or names
    assert "rider_id" not in text and "activity_id" not in text and "Rider 80" not in text


@pytest.mark.parametrize("actions", ["true", None])
def test_a_wrong_secret_fails_the_run_with_the_status_only(
    served_service, strava, tmp_path, actions
):
    run = run_script(
        served_service,
        "sync-strava",
        tmp_path / "s.md",
        CRON_SECRET="a-wrong-secret-12345",
        GITHUB_ACTIONS=actions,
        # curl retries every error, a 401 too, and its --retry-delay 0 is its own backoff
        # (1, 2, 4 s): the answer is final, the retries would only wait.
        CRON_RETRIES="0",
    )
    assert run.returncode == 1
    assert "HTTP 401, error code unauthorized" in run.stdout
    assert "a-wrong-secret-12345" not in run.stdout + run.stderr
    assert CRON_SECRET not in run.stdout + run.stderr
    if actions:
        assert "::error title=Cron sync-strava failed::" in run.stdout
        assert "the CRON_SECRET repository secret does not match" in run.stdout
    else:
        assert_plain_log(run.stdout + run.stderr)
        assert "error: Call 1 to /api/cron/sync-strava failed: HTTP 401" in run.stdout
        assert "the CRON_SECRET in this environment does not match" in run.stdout


def test_a_manual_run_is_everyone_now_and_an_idle_call_says_why(
    served_service, strava, database, tmp_path
):
    """What "Run workflow" does: right after a call, the planned loop takes nothing and
    says why; everyone now takes the riders past the interval whatever their plan."""
    riders = [connect_rider(database, strava, 821 + i, activities=2) for i in range(3)]
    summary = tmp_path / "summary.md"
    first = run_script(served_service, "sync-strava", summary)
    assert first.returncode == 0, first.stdout + first.stderr
    planned = run_script(served_service, "sync-strava", summary)
    assert "processed=0" in planned.stdout and "idle_reason=none_due" in planned.stdout
    assert "took nothing: nothing was due; next due: 20" in planned.stdout
    # Two hours on, their plans still hours away: only everyone now takes them.
    query(
        database,
        "update strava_connections set last_synced_at = now() - interval '2 hours',"
        " next_poll_at = now() + interval '5 hours' returning rider_id",
    )
    assert "processed=0" in run_script(served_service, "sync-strava", summary).stdout
    everyone = run_script(served_service, "sync-strava", summary, ALL="true")
    assert everyone.returncode == 0, everyone.stdout + everyone.stderr
    assert "processed=3 succeeded=3" in everyone.stdout and "outcome=done" in everyone.stdout
    synced = query(
        database,
        "select count(*) as n from strava_connections"
        " where last_synced_at > now() - interval '1 minute'",
    )
    assert synced[0]["n"] == len(riders)


def test_the_sync_workflow_dispatch_is_everyone_now_by_default():
    import yaml

    workflows = SCRIPT.parent.parent / "workflows"
    sync = yaml.safe_load((workflows / "sync-strava.yml").read_text())
    # PyYAML reads the key `on` as True.
    who = sync[True]["workflow_dispatch"]["inputs"]["who"]
    assert who["options"] == ["everyone", "planned"] and who["default"] == "everyone"
    passed = sync["jobs"]["sync-strava"]["with"]["all"]
    assert passed == ("${{ github.event_name == 'workflow_dispatch' && inputs.who != 'planned' }}")
    reusable = yaml.safe_load((workflows / "cron-call.yml").read_text())
    assert reusable[True]["workflow_call"]["inputs"]["all"]["type"] == "boolean"
    assert reusable[True]["workflow_call"]["inputs"]["all"]["default"] is False
    step = reusable["jobs"]["call"]["steps"][-1]
    assert step["env"]["ALL"] == "${{ inputs.all }}"
    for other in ("discover.yml", "enrich.yml", "events.yml", "weather.yml"):
        assert (
            "all"
            not in yaml.safe_load((workflows / other).read_text())["jobs"].popitem()[1]["with"]
        )
