"""One ride recorded twice: marking copies, the rider's overrules, and which copy is kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.base import RIDE_SPORTS, RUN_SPORTS, Conn

# Two activities of one rider are one ride recorded twice when they are of the same kind,
# their time ranges overlap for at least this share of the longer one, and their
# distances differ by at most this share of the longer one.
DUPLICATE_MIN_OVERLAP = 0.7


DUPLICATE_MAX_DISTANCE_GAP = 0.15


# Bike computers (over phones) by the detailed activity's device name or the upload's
# external id; the copy kept is the better device, then the longer, then the first upload.
_BIKE_COMPUTERS = (
    r"garmin|edge|wahoo|elemnt|hammerhead|karoo|bryton|coros|polar|suunto|lezyne|sigma|srm|igpsport"  # noqa: E501
)


# The columns the duplicate rule compares, for an activity row `a`.
_DUPLICATE_FACTS = """
    a.id, a.strava_id, a.start_date, a.distance_m,
    greatest(coalesce(a.elapsed_time_s, a.moving_time_s, 0), 1) as seconds,
    a.start_date + make_interval(
        secs => greatest(coalesce(a.elapsed_time_s, a.moving_time_s, 0), 1)) as end_at,
    case when a.sport_type = any(%(rides)s) then 'ride'
         when a.sport_type = any(%(runs)s) then 'run'
         else a.sport_type end as kind,
    case when a.manual then 0
         when coalesce(a.details ->> 'device_name', '') ~* %(computers)s
           or coalesce(a.external_id, '') ~* '(^garmin|\\.fit$)' then 2
         else 1 end as device_rank
"""


# Each activity of the span is compared only with the rider's activities that started
# near it (an index range scan on activities_rider_start), so a page costs its size, not
# the square of the rider's history.
_MARK_DUPLICATES = f"""
    with scope as (
        select {_DUPLICATE_FACTS}
          from activities a
         where a.rider_id = %(rider_id)s
           and a.start_date >= %(since)s::timestamptz - interval '2 days'
           and a.start_date <= %(until)s::timestamptz + interval '2 days'
    ), candidates as (
        select x.id, y.id as keep_id,
               row_number() over (partition by x.id
                                  order by y.device_rank desc, y.distance_m desc, y.strava_id)
                   as n
          from scope x
          cross join lateral (
                select {_DUPLICATE_FACTS}
                  from activities a
                 where a.rider_id = %(rider_id)s and a.id <> x.id
                   and a.start_date >= x.start_date - interval '2 days'
                   and a.start_date < x.end_at
                union  -- and whatever an operator paired with it, wherever it lies
                select {_DUPLICATE_FACTS}
                  from duplicate_overrules p
                  join activities a
                    on a.strava_id = case when p.first_strava_id = x.strava_id
                                          then p.second_strava_id else p.first_strava_id end
                 where p.verdict = 'duplicate'
                   and x.strava_id in (p.first_strava_id, p.second_strava_id)
                   and a.rider_id = %(rider_id)s
          ) y
          left join duplicate_overrules o
            on o.first_strava_id = least(x.strava_id, y.strava_id)
           and o.second_strava_id = greatest(x.strava_id, y.strava_id)
         where case
             when o.verdict = 'distinct' then false
             when o.verdict = 'duplicate' then o.keep_strava_id = y.strava_id
             else y.kind = x.kind
                  and extract(epoch from least(x.end_at, y.end_at)
                                         - greatest(x.start_date, y.start_date))
                      >= %(overlap)s * greatest(x.seconds, y.seconds)
                  and abs(x.distance_m - y.distance_m)
                      <= %(gap)s * greatest(x.distance_m, y.distance_m)
                  and (y.device_rank, y.distance_m, -y.strava_id)
                      > (x.device_rank, x.distance_m, -x.strava_id)
         end
    ), wanted as (
        select s.id, c.keep_id
          from scope s left join candidates c on c.id = s.id and c.n = 1
    )
    update activities a
       set duplicate_of = w.keep_id
      from wanted w
     where a.id = w.id and a.duplicate_of is distinct from w.keep_id
    returning a.strava_id, w.keep_id
"""


def mark_duplicates(conn: Conn, *, rider_id: int, since: datetime, until: datetime) -> int:
    """Mark (and unmark) one rider's rides recorded twice among the activities started
    between `since` and `until` (with a margin either side); one statement. Returns how
    many rows changed."""
    rows = conn.execute(
        _MARK_DUPLICATES,
        {
            "rider_id": rider_id,
            "since": since,
            "until": until,
            "rides": sorted(RIDE_SPORTS),
            "runs": sorted(RUN_SPORTS),
            "computers": _BIKE_COMPUTERS,
            "overlap": DUPLICATE_MIN_OVERLAP,
            "gap": DUPLICATE_MAX_DISTANCE_GAP,
        },
    ).fetchall()
    return len(rows)


def activity_span(
    conn: Conn, *, rider_id: int, strava_ids: list[int]
) -> tuple[datetime, datetime] | None:  # noqa: E501
    """The first and last start of some of a rider's activities (None if none is theirs)."""
    row = conn.execute(
        "select min(start_date) as lo, max(start_date) as hi from activities"
        " where rider_id = %s and strava_id = any(%s)",
        (rider_id, strava_ids),
    ).fetchone()
    return (row["lo"], row["hi"]) if row and row["lo"] else None


def save_duplicate_overrule(
    conn: Conn,
    *,
    rider_id: int,
    strava_ids: tuple[int, int],
    verdict: str | None,
    keep_strava_id: int | None,
    now: datetime,
) -> None:
    """Record an operator's word on a pair (verdict None: forget it, back to the rule)."""
    first, second = sorted(strava_ids)
    if verdict is None:
        conn.execute(
            "delete from duplicate_overrules where first_strava_id = %s and second_strava_id = %s",
            (first, second),
        )
        return
    conn.execute(
        """
        insert into duplicate_overrules
               (first_strava_id, second_strava_id, rider_id, verdict, keep_strava_id, created_at)
        values (%s, %s, %s, %s, %s, %s)
        on conflict (first_strava_id, second_strava_id) do update
           set verdict = excluded.verdict, keep_strava_id = excluded.keep_strava_id,
               created_at = excluded.created_at
        """,
        (first, second, rider_id, verdict, keep_strava_id, now),
    )


def rider_duplicates(conn: Conn, *, rider_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """A rider's copies and the activity each copies, newest first, with any overrule."""
    return conn.execute(
        """
        select d.strava_id as activity_id, k.strava_id as duplicate_of,
               d.sport_type, d.start_date, d.distance_m, k.distance_m as kept_distance_m,
               d.name, o.verdict as overruled
          from activities d
          join activities k on k.id = d.duplicate_of
          left join duplicate_overrules o
            on o.first_strava_id = least(d.strava_id, k.strava_id)
           and o.second_strava_id = greatest(d.strava_id, k.strava_id)
         where d.rider_id = %s
         order by d.start_date desc, d.strava_id
         limit %s
        """,
        (rider_id, limit),
    ).fetchall()


def rider_overrules(conn: Conn, *, rider_id: int) -> list[dict[str, Any]]:
    return conn.execute(
        """
        select first_strava_id, second_strava_id, verdict, keep_strava_id, created_at
          from duplicate_overrules where rider_id = %s order by created_at desc
        """,
        (rider_id,),
    ).fetchall()


def count_rider_activities(conn: Conn, *, rider_id: int, strava_ids: list[int]) -> int:
    row = conn.execute(
        "select count(*) as n from activities where rider_id = %s and strava_id = any(%s)",
        (rider_id, strava_ids),
    ).fetchone()
    return int(row["n"]) if row else 0


def better_copy(conn: Conn, *, strava_ids: list[int]) -> int:
    """Of two activities, the one the duplicate rule would keep."""
    row = conn.execute(
        """
        select strava_id from activities where strava_id = any(%(ids)s)
         order by case when manual then 0
                       when coalesce(details ->> 'device_name', '') ~* %(computers)s
                         or coalesce(external_id, '') ~* '(^garmin|\\.fit$)' then 2
                       else 1 end desc,
                  distance_m desc, strava_id
         limit 1
        """,
        {"ids": strava_ids, "computers": _BIKE_COMPUTERS},
    ).fetchone()
    assert row is not None
    return int(row["strava_id"])
