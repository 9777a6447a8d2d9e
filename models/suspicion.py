"""Polls on suspicion: what each rider's events say of their uploads (when the service
last heard from them, how long after a ride they upload)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.base import Conn


def upload_signals(conn: Conn, *, since: datetime) -> dict[int, dict[str, Any]]:
    """Per active auto-sync rider with events: the last event received, and the delays
    from a ride's end to its create event (Strava's event_time) for rides started since
    `since`."""
    rows = conn.execute(
        """
        select e.rider_id, max(e.received_at) as last_event_at,
               coalesce(array_agg(extract(epoch from e.event_time - (a.start_date
                            + make_interval(secs => coalesce(a.elapsed_time_s, 0)))))
                        filter (where a.id is not null and e.aspect_type = 'create'
                                and e.object_type = 'activity'), '{}') as delays_s
          from strava_webhook_events e
          join strava_connections c on c.rider_id = e.rider_id
          join riders r on r.id = c.rider_id
          left join activities a
                 on a.strava_id = e.object_id and a.rider_id = e.rider_id
                and a.start_date >= %(since)s
         where c.status = 'active' and r.auto_sync and e.received_at >= %(since)s
         group by e.rider_id
        """,
        {"since": since},
    ).fetchall()
    return {
        int(row["rider_id"]): {
            "last_event_at": row["last_event_at"],
            "delays_s": [float(d) for d in row["delays_s"]],
        }
        for row in rows
    }
