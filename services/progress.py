"""Live progress for the rider's widget: what a running sync, Sync now or history walk
says as it goes, sent on Supabase Realtime Broadcast from the database.

Each message is `{phase, done, total, added, message, finished}` on the private channel
`rider:<auth_user_id>`, event `progress`. At most one a second per rider: a run's
Progress asks the database only when a second has passed on the runtime's clock since
its last message (so a throttled page costs no round trip), and the database's own gate
holds across processes. The last message of a run (`finished: true`) always goes. A
message is sent inside the transaction of the work it reports, so it goes out when that
work is committed, and never for work that was rolled back.

Broadcasts can be missed (a page opened late, a dropped socket): the widget reads the
state once on mount and again when a run finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import models
from services.calls import Call, Outcome
from services.clock import iso

# At most one message a second per rider (the last of a run always goes).
MIN_INTERVAL = timedelta(seconds=1)

# Phases: listing new activities (sync, Sync now), walking the history back, fetching
# the new races' details (after Sync now).
SYNC, HISTORY, RACES = "sync", "history", "races"

# Why a run stopped, in the rider's words (the item's `reason` of the call's answer).
_STOPPED = {
    "rate_limited": "the club's Strava allowance is used up for now; it goes on by itself "
    "when Strava's window resets",
    "time_budget": "this round's time was up; the next round goes on from here",
    "needs_reauth": "Strava access has expired or was withdrawn: press Reconnect Strava",
    "lease_lost": "another sync took over",
    "not_connected": "Strava was disconnected",
}


@dataclass(frozen=True)
class Report:
    """One progress message (the Broadcast payload)."""

    phase: str
    done: int
    total: int | None
    added: int
    message: str
    finished: bool = False

    def payload(self, at: datetime) -> dict[str, object]:
        """The message, and when it was sent on the service's clock (`at`, ISO 8601 UTC),
        so a page can order what it hears."""
        return {**asdict(self), "at": iso(at)}


# --- pure: when to send, and what to say ---------------------------------------------


def due(last_sent: datetime | None, now: datetime, *, finished: bool) -> bool:
    """Whether a message may go now: a run's last always; otherwise the first of the
    run, or a second after the previous (a clock set back counts as due)."""
    if finished or last_sent is None:
        return True
    return now < last_sent or now - last_sent >= MIN_INTERVAL


def _new(n: int) -> str:
    return f"{n} new activit{'y' if n == 1 else 'ies'}"


def listing(counts: Mapping[str, int], *, ended: bool = False, finished: bool = False) -> Report:
    """A page of new activities listed (sync, Sync now), or the listing `ended`;
    `finished` when that also ends the run."""
    looked, added = counts.get("fetched", 0), counts.get("added", 0)
    updated = counts.get("updated", 0)
    if ended:
        changed = [_new(added)] if added else []
        if updated:
            changed.append(f"{updated} updated")
        text = "Sync finished: " + (", ".join(changed) if changed else "nothing new") + "."
    else:
        text = (
            f"Checking Strava for new activities: {looked} looked at, "
            f"{_new(added) if added else 'none new'} so far."
        )
    return Report(SYNC, looked, None, added, text, finished)


def walk(
    *,
    percent: int,
    oldest: datetime | None,
    added: int,
    complete: bool = False,
    finished: bool = False,
) -> Report:
    """A page of the history walk, the walk complete, or this round of it over."""
    back_to = f"back to {oldest:%B %Y}" if oldest is not None else "just started"
    if complete:
        text, percent = "History complete: all your older activities are in.", 100
    elif finished:
        text = (
            f"Older activities: {back_to} ({percent}%). The walk goes on with the "
            "service's next round."
        )
    else:
        text = f"Bringing in your older activities: {back_to} ({percent}%)."
    return Report(HISTORY, percent, 100, added, text, finished or complete)


def races(done: int, total: int, *, finished: bool = False) -> Report:
    """The new races' details being fetched after Sync now."""
    if finished:
        text = f"Done: details of {done} of {total} new race{'s' if total != 1 else ''} fetched."
    else:
        text = f"Fetching the details of {total} new race{'s' if total != 1 else ''}."
    return Report(RACES, done, total, 0, text, finished)


def sync_now_done(counts: Mapping[str, int], races_done: int, races_total: int) -> Report:
    """Sync now's last message: what the listing brought, and the races detailed."""
    text = listing(counts, ended=True).message
    if races_total:
        text = (
            f"{text[:-1]}; details of {races_done} of {races_total} new "
            f"race{'s' if races_total != 1 else ''} fetched."
        )
    phase = RACES if races_total else SYNC
    done, total = (races_done, races_total) if races_total else (counts.get("fetched", 0), None)
    return Report(phase, done, total, counts.get("added", 0), text, finished=True)


def stopped(phase: str, reason: str | None, *, done: int = 0, added: int = 0) -> Report:
    """A run that ended before its work did (the reason in the rider's words)."""
    why = _STOPPED.get(reason or "", "Strava or the service failed; it is tried again soon")
    return Report(phase, done, None, added, f"Stopped: {why}.", finished=True)


# --- sending ---------------------------------------------------------------------------


class Progress:
    """One rider's run: sends its messages in the caller's transaction when due."""

    def __init__(self, rider_id: int, clock: Callable[[], datetime]) -> None:
        self.rider_id = rider_id
        self._clock = clock
        self._last_sent: datetime | None = None
        self.finished = False

    def report(self, conn: models.Conn, report: Report) -> bool:
        """Send `report` if due (a finished run sends nothing more); True if sent."""
        if self.finished:
            return False
        now = self._clock()
        if not due(self._last_sent, now, finished=report.finished):
            return False
        self._last_sent = now
        self.finished = report.finished
        return models.progress.send_progress(
            conn,
            rider_id=self.rider_id,
            payload=report.payload(now),
            finished=report.finished,
            min_interval_ms=int(MIN_INTERVAL.total_seconds() * 1000),
            now=now,
        )


def report_stop(call: Call, progress: Progress, phase: str, outcome: Outcome) -> None:
    """A run that ended early still sends its last message (the widget stops waiting)."""
    if progress.finished:
        return
    with call.db.connection() as conn:
        progress.report(
            conn,
            stopped(
                phase,
                outcome.detail,
                done=outcome.counts.get("fetched", 0),
                added=outcome.counts.get("added", 0),
            ),
        )
