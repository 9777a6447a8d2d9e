"""The demo's sharing step: a rider turns sharing on (the widget's switch, through the
service), a club member's read of `club_activities` (as Supabase's `authenticated` role
with the member's JWT claims) goes from nothing to the rider's public activities, and a
page draws a few of their routes in full (as stored, the rider's own) next to what the
club sees (the ends removed)."""

from __future__ import annotations

import html
import json
import math
import uuid
from pathlib import Path
from typing import Any

import psycopg
import requests
from psycopg.rows import dict_row

from fake_strava.polyline import decode

DRAWN = 4  # routes drawn side by side
BOX = 260  # px, each drawing


def read_as_member(database_url: str, member: uuid.UUID, sql: str) -> list[dict[str, Any]]:
    """A query as the club's page runs it with supabase-js: role `authenticated` and a
    signed-in member's claims (Row Level Security applies)."""
    claims = json.dumps({"sub": str(member), "role": "authenticated", "aud": "authenticated"})
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        conn.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', %s, true)",
            (claims,),
        )
        return conn.execute(sql).fetchall()


def _svg(
    points: list[tuple[float, float]], frame: tuple[float, float, float, float], colour: str
) -> str:
    """A route as an SVG polyline in a shared frame (equirectangular, north up)."""
    south, west, north, east = frame
    kx = math.cos(math.radians((south + north) / 2))
    width, height = max((east - west) * kx, 1e-9), max(north - south, 1e-9)
    scale = (BOX - 20) / max(width, height)
    coords = " ".join(
        f"{10 + (lng - west) * kx * scale:.1f},{10 + (north - lat) * scale:.1f}"
        for lat, lng in points
    )
    start = coords.split(" ")[0].split(",") if coords else ["0", "0"]
    return (
        f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2.5"/>'
        f'<circle cx="{start[0]}" cy="{start[1]}" r="4" fill="{colour}"/>'
    )


def routes_page(rows: list[dict[str, Any]], trim_m: int) -> str:
    """The page: each route in full beside the club's trimmed copy, on one frame."""
    figures = []
    for row in rows:
        full = decode(row["full"])
        trimmed = decode(row["trimmed"]) if row["trimmed"] else []
        lats, lngs = [p[0] for p in full], [p[1] for p in full]
        frame = (min(lats), min(lngs), max(lats), max(lngs))
        box = f'viewBox="0 0 {BOX} {BOX}" width="{BOX}" height="{BOX}" role="img"'
        figures.append(
            "<section><h2>"
            + html.escape(f"{row['rider_name']}: {row['name']}")
            + "</h2><div class=pair>"
            + f'<figure><svg {box} aria-label="the full route">'
            + _svg(full, frame, "#6b6b6b")
            + "</svg><figcaption>As stored (the rider's own view): "
            + f"{len(full)} points</figcaption></figure>"
            + f'<figure><svg {box} aria-label="the route the club sees">'
            + (_svg(trimmed, frame, "#c43f00") if trimmed else "")
            + "</svg><figcaption>What the club sees: "
            + (f"{len(trimmed)} points, {trim_m} m gone from each end" if trimmed else "no route")
            + f' · <a href="{html.escape(row["strava_url"])}">View on Strava</a>'
            + "</figcaption></figure></div></section>"
        )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Shared routes</title>"
        "<style>body{font-family:sans-serif;margin:1rem;color:#1f1f1f}"
        ".pair{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0}"
        "svg{border:1px solid #c9c9c9;background:#fff}a{color:#b33c00;font-weight:600}</style>"
        "<h1>What the club's pages read from club_activities</h1>"
        f"<p>Each route as stored, and as the club sees it: the first and last {trim_m} m "
        "along the route removed (Strava's API includes riders' hidden privacy zones). "
        "Dots mark where each line starts.</p>" + "".join(figures) + "<p>Powered by Strava</p>"
    )


def show_sharing(
    database_url: str, service_url: str, rider_token: str, out_path: Path
) -> tuple[bool, Path]:
    """Turn a rider's sharing on through the service and show what the club then reads;
    True when the view went from nothing to the rider's public activities, trimmed."""
    member = uuid.uuid4()
    query = "select * from club_activities"
    before = read_as_member(database_url, member, query)
    print(f"  a club member reads club_activities: {len(before)} rows (nobody shares yet)")
    answer = requests.put(
        f"{service_url}/api/riders/me/sharing",
        headers={"Authorization": f"Bearer {rider_token}"},
        json={"share": True},
        timeout=30,
    )
    answer.raise_for_status()
    sharing = answer.json()
    print(f"  the rider turns sharing on: {sharing['what_the_club_sees']}")
    after = read_as_member(database_url, member, query)
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        public = conn.execute(
            "select count(*) as n from activities a join riders r on r.id = a.rider_id"
            " where r.share_with_club_at is not null and a.visibility = 'everyone'"
            " and not a.private and a.duplicate_of is null"
        ).fetchone()
        stored = {
            r["strava_id"]: r["summary_polyline"]
            for r in conn.execute(
                "select strava_id, summary_polyline from activities"
                " where strava_id = any(%s) and summary_polyline is not null",
                ([r["strava_id"] for r in after],),
            ).fetchall()
        }
    assert public is not None
    print(
        f"  the member reads club_activities again: {len(after)} rows, the rider's public "
        f"activities ({public['n']}), with routes trimmed"
    )
    drawn = [
        {**row, "full": stored[row["strava_id"]], "trimmed": row["summary_polyline"]}
        for row in sorted(after, key=lambda r: r["distance_m"], reverse=True)
        if row["strava_id"] in stored
    ][:DRAWN]
    out_path.write_text(routes_page(drawn, sharing["route_trim_m"]), encoding="utf-8")
    trimmed = all(d["trimmed"] != d["full"] for d in drawn)
    return not before and len(after) == public["n"] > 0 and trimmed, out_path
