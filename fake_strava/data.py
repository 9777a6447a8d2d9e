"""Generators of Strava-shaped payloads: athletes and summary activities (resource_state 2).

Shapes follow the SummaryActivity example of Strava's swagger and real payloads (from
stravalib's test resources): nulls where Strava sends nulls, ids beyond 32 bits,
`upload_id` beyond 64 bits, `start_date_local` with a misleading "Z" suffix.
Everything is derived from seeded generators, so a given call always yields the same data.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fake_strava import polyline

RIDE_TYPES = frozenset(
    {
        "Ride",
        "GravelRide",
        "MountainBikeRide",
        "EBikeRide",
        "EMountainBikeRide",
        "VirtualRide",
        "Velomobile",
    }
)
RUN_TYPES = frozenset({"Run", "TrailRun", "VirtualRun"})

# The deprecated `type` field still comes with every activity; newer sport types fold into it.
_LEGACY_TYPE = {
    "GravelRide": "Ride",
    "MountainBikeRide": "Ride",
    "EMountainBikeRide": "EBikeRide",
    "TrailRun": "Run",
}
_SPEED_MS = {
    "Ride": 7.4,
    "GravelRide": 6.1,
    "MountainBikeRide": 4.6,
    "EBikeRide": 6.8,
    "EMountainBikeRide": 5.2,
    "VirtualRide": 8.7,
    "Velomobile": 10.5,
    "Run": 3.0,
    "TrailRun": 2.3,
    "VirtualRun": 3.2,
    "Walk": 1.4,
    "Hike": 1.1,
}
_VIRTUAL_TYPES = frozenset({"VirtualRide", "VirtualRun"})
# Zwift's Watopia sits in the Pacific; Strava maps virtual rides there.
_WATOPIA = (-11.6406, 166.9539)

HOME_ZONE = "Europe/Paris"
_PLACES = {
    "Europe/Paris": (45.7640, 4.8357),
    "Europe/Madrid": (41.9794, 2.8214),
    "America/New_York": (40.7128, -74.0060),
    "Asia/Tokyo": (35.6762, 139.6503),
}
_TRAVEL_ZONES = ("Europe/Madrid", "America/New_York", "Asia/Tokyo")

# Names riders really type: accents, emoji, quotes and markup that a page must escape.
_CUSTOM_NAMES = (
    "Sortie club du dimanche ☀️",
    "L'Étape du Tour — reco",
    'Intervals "VO2max" 5×4\'',
    "Col de la Croix-Rousse ×3",
    "Sortie <b>club</b> & amis",
    "Café ride ☕🚴",
    "Récup",
)
_RACE_NAMES = ("Grand Prix de Villeurbanne", "Cyclosportive La Lyonnaise", "Trail des Monts d'Or")
_TOWNS = ("Lyon", "Villefranche", "Vienne", "Bourg-en-Bresse")
_SPORT_WEIGHTS = {
    "Ride": 50,
    "GravelRide": 12,
    "VirtualRide": 10,
    "MountainBikeRide": 3,
    "Run": 13,
    "TrailRun": 2,
    "Walk": 10,
}
_DISTANCE_KM = {
    "Ride": (15.0, 180.0),
    "GravelRide": (10.0, 150.0),
    "MountainBikeRide": (8.0, 80.0),
    "VirtualRide": (10.0, 100.0),
    "Run": (3.0, 25.0),
    "TrailRun": (5.0, 40.0),
    "Walk": (1.0, 15.0),
}
_BREVET_KM = (200, 300, 400, 600)
_OUTDOOR_RIDES = frozenset({"Ride", "GravelRide"})
_OUTDOOR_RUNS = frozenset({"Run", "TrailRun"})


def legacy_type(sport_type: str) -> str:
    """The deprecated `type` Strava still sends alongside `sport_type`."""
    return _LEGACY_TYPE.get(sport_type, sport_type)


def iso_z(moment: datetime) -> str:
    """Format like Strava: whole seconds with a "Z" suffix."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_z(text: str) -> datetime:
    """Parse a Strava UTC timestamp ("...Z") into an aware datetime."""
    # fromisoformat is many times faster than strptime (worlds of 300,000 activities are
    # read); the shape is checked first, since it also reads forms Strava never sends.
    if len(text) != 20 or text[10] != "T" or text[19] != "Z" or not text[:4].isdigit():
        raise ValueError(f"not a Strava UTC timestamp: {text!r}")
    return datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)


def summary_athlete(athlete_id: int, firstname: str, lastname: str) -> dict[str, Any]:
    """Return a SummaryAthlete (resource_state 2) as Strava sends with a code exchange."""
    return {
        "id": athlete_id,
        "username": None,
        "resource_state": 2,
        "firstname": firstname,
        "lastname": lastname,
        "bio": "",
        "city": "Lyon",
        "state": "Auvergne-Rhône-Alpes",
        "country": "France",
        "sex": None,
        "premium": False,
        "summit": False,
        "created_at": "2015-03-14T09:26:53Z",
        "updated_at": "2024-11-02T17:40:11Z",
        "badge_type_id": 0,
        "weight": None,
        # Strava's default avatar really is this relative path, not a URL.
        "profile_medium": "avatar/athlete/medium.png",
        "profile": "avatar/athlete/large.png",
        "friend": None,
        "follower": None,
    }


def _zone_fields(start: datetime, zone: str) -> tuple[str, float, str]:
    """Return Strava's timezone label, utc_offset and start_date_local for a start time."""
    local = start.astimezone(ZoneInfo(zone))
    offset = local.utcoffset() or timedelta()
    # The label shows the standard offset even in summer; utc_offset is the actual one.
    standard = int((offset - (local.dst() or timedelta())).total_seconds())
    sign = "+" if standard >= 0 else "-"
    hours, minutes = divmod(abs(standard) // 60, 60)
    label = f"(GMT{sign}{hours:02d}:{minutes:02d}) {zone}"
    return label, offset.total_seconds(), iso_z(start + offset)


def _default_name(sport_type: str, local_hour: int) -> str:
    """Name an activity the way Strava does when the rider doesn't: "Morning Ride"."""
    if 5 <= local_hour < 11:
        part = "Morning"
    elif 11 <= local_hour < 14:
        part = "Lunch"
    elif 14 <= local_hour < 18:
        part = "Afternoon"
    elif 18 <= local_hour < 22:
        part = "Evening"
    else:
        part = "Night"
    label = "".join(f" {c}" if c.isupper() else c for c in sport_type).strip()
    return f"{part} {label}"


def _loop_track(
    rng: random.Random, origin: polyline.Point, distance_m: float
) -> list[polyline.Point]:
    """Return a rough closed loop of about distance_m starting near origin."""
    lat0 = origin[0] + rng.uniform(-0.05, 0.05)
    lng0 = origin[1] + rng.uniform(-0.05, 0.05)
    radius_deg = distance_m / (2 * math.pi) / 111_000
    phase = rng.uniform(0, 2 * math.pi)
    points = []
    for i in range(31):
        angle = phase + 2 * math.pi * i / 30
        wobble = 1 + rng.uniform(-0.15, 0.15) if 0 < i < 30 else 1
        lat = lat0 + radius_deg * wobble * (math.sin(angle) - math.sin(phase))
        lng_scale = math.cos(math.radians(lat0))
        lng = lng0 + radius_deg * wobble * (math.cos(angle) - math.cos(phase)) / lng_scale
        points.append((round(lat, 5), round(lng, 5)))
    return points


def make_activity(
    activity_id: int,
    *,
    athlete_id: int,
    start_date: datetime,
    sport_type: str = "Ride",
    distance_m: float = 30000.0,
    workout_type: int | None = None,
    private: bool = False,
    name: str | None = None,
    zone: str = HOME_ZONE,
    **overrides: Any,
) -> dict[str, Any]:
    """Return a summary activity (resource_state 2); overrides replace top-level fields last.

    `manual=True` gives null coordinates and polyline like a manual entry; `trainer=True`
    on a non-virtual sport gives empty ones like an indoor ride. `zone` is an IANA zone
    that sets timezone, utc_offset and start_date_local.
    """
    if start_date.tzinfo is None:
        raise ValueError("start_date must be timezone-aware")
    rng = random.Random(activity_id)
    start = start_date.astimezone(UTC).replace(microsecond=0)
    manual = bool(overrides.get("manual", False))
    trainer = bool(overrides.get("trainer", sport_type in _VIRTUAL_TYPES))
    is_ride = sport_type in RIDE_TYPES

    speed = _SPEED_MS.get(sport_type, 3.0) * rng.uniform(0.85, 1.15)
    moving_time = max(1, round(distance_m / speed))
    elapsed_time = moving_time + round(moving_time * rng.uniform(0.0, 0.2))
    elevation = round(distance_m / 1000 * rng.uniform(2.0, 14.0), 1)
    timezone, utc_offset, start_local = _zone_fields(start, zone)

    start_latlng: list[float] | None
    end_latlng: list[float] | None
    summary_polyline: str | None
    if manual:
        start_latlng = end_latlng = summary_polyline = None
    elif trainer and sport_type not in _VIRTUAL_TYPES:
        start_latlng, end_latlng, summary_polyline = [], [], ""
    else:
        origin = _WATOPIA if sport_type in _VIRTUAL_TYPES else _PLACES.get(zone, _PLACES[HOME_ZONE])
        track = _loop_track(rng, origin, distance_m)
        start_latlng, end_latlng = list(track[0]), list(track[-1])
        summary_polyline = polyline.encode(track)

    has_heartrate = not manual and rng.random() < 0.7
    device_watts = not manual and is_ride and (trainer or rng.random() < 0.3)
    if manual:
        upload_id = external_id = None
    elif rng.random() < 0.15:
        # Strava really sends upload ids past 2**63; JSON parsers must not truncate them.
        upload_id = rng.randrange(2**63, 10**21)
        external_id = f"garmin_ping_{rng.randrange(10**11, 10**12)}"
    else:
        upload_id = rng.randrange(10**9, 3 * 10**10)
        external_id = f"{rng.getrandbits(64):016x}.fit"
    photos = rng.choice((0, 0, 0, 0, 1, 2))

    activity: dict[str, Any] = {
        "resource_state": 2,
        "athlete": {"id": athlete_id, "resource_state": 1},
        "name": name or _default_name(sport_type, int(start_local[11:13])),
        "distance": round(distance_m, 1),
        "moving_time": moving_time,
        "elapsed_time": elapsed_time,
        "total_elevation_gain": elevation,
        "type": legacy_type(sport_type),
        "sport_type": sport_type,
        "workout_type": workout_type,
        "id": activity_id,
        "external_id": external_id,
        "upload_id": upload_id,
        "upload_id_str": None if upload_id is None else str(upload_id),
        "start_date": iso_z(start),
        "start_date_local": start_local,
        "timezone": timezone,
        "utc_offset": utc_offset,
        "start_latlng": start_latlng,
        "end_latlng": end_latlng,
        "location_city": None,
        "location_state": None,
        "location_country": "France" if zone == HOME_ZONE else None,
        "achievement_count": rng.randrange(0, 6),
        "kudos_count": rng.randrange(0, 25),
        "comment_count": rng.randrange(0, 3),
        "athlete_count": rng.choice((1, 1, 1, 2, 4, 9)),
        "photo_count": 0,
        "total_photo_count": photos,
        "map": {
            "id": f"a{activity_id}",
            "summary_polyline": summary_polyline,
            "resource_state": 2,
        },
        "trainer": trainer,
        "commute": False,
        "manual": manual,
        "private": private,
        "visibility": "only_me" if private else "everyone",
        "flagged": False,
        "gear_id": _gear_id(rng, sport_type),
        "from_accepted_tag": False,
        "average_speed": round(distance_m / moving_time, 3),
        "max_speed": round(distance_m / moving_time * rng.uniform(1.4, 2.2), 1),
        "has_heartrate": has_heartrate,
        "heartrate_opt_out": False,
        "display_hide_heartrate_option": has_heartrate,
        "elev_high": round(rng.uniform(150, 400) + elevation / 10, 1),
        "elev_low": round(rng.uniform(150, 200), 1),
        "pr_count": rng.randrange(0, 3),
        "has_kudoed": False,
        "suffer_score": float(rng.randrange(5, 300)) if has_heartrate else None,
    }
    if has_heartrate:
        activity["average_heartrate"] = round(rng.uniform(115, 160), 1)
        activity["max_heartrate"] = float(
            round(activity["average_heartrate"] + rng.randrange(15, 40))
        )
    if is_ride:
        watts = round(rng.uniform(120, 230), 1)
        activity["average_watts"] = watts
        activity["kilojoules"] = round(watts * moving_time / 1000, 1)
        activity["device_watts"] = device_watts
        if device_watts:
            activity["weighted_average_watts"] = round(watts * rng.uniform(1.02, 1.15))
            activity["max_watts"] = round(watts * rng.uniform(2.5, 5))
            activity["average_cadence"] = round(rng.uniform(75, 95), 1)
    activity.update(overrides)
    return activity


def _gear_id(rng: random.Random, sport_type: str) -> str | None:
    """Bikes are "b…", shoes "g…"; walks usually have no gear."""
    if sport_type in RIDE_TYPES:
        return f"b{rng.randrange(10**6, 10**8)}"
    if sport_type in RUN_TYPES:
        return f"g{rng.randrange(10**6, 10**8)}"
    return None


def make_activities(
    athlete_id: int,
    n: int,
    *,
    start: datetime,
    end: datetime | None = None,
    seed: int = 0,
    race_fraction: float = 0.03,
    private_fraction: float = 0.0,
    first_id: int | None = None,
) -> list[dict[str, Any]]:
    """Return n summary activities of one athlete, oldest first, deterministic for a seed.

    Start dates are distinct seconds in [start, end). Ids increase with start date and
    exceed 2**32; by default they derive from the start time and athlete id, so lists made
    for different athletes or periods don't collide. The mix holds rides, gravel, virtual
    and mountain-bike rides, runs and walks, exactly round(n * race_fraction) races
    (workout_type 11 for rides, 1 for runs), round(n * private_fraction) "Only Me"
    activities, and at least one brevet (a ride of 200 km or more) when there is a ride.
    """
    end = end or datetime.now(UTC)
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    span = int((end - start).total_seconds())
    if n > max(span, 0):
        raise ValueError("the period must hold at least one second per activity")
    rng = random.Random(f"{seed}:{athlete_id}")
    base = int(start.timestamp())
    epochs = sorted(base + offset for offset in rng.sample(range(span), n))
    sports = rng.choices(list(_SPORT_WEIGHTS), weights=list(_SPORT_WEIGHTS.values()), k=n)

    manual = {i for i in range(n) if sports[i] not in _VIRTUAL_TYPES and rng.random() < 0.02}
    indoor = {
        i for i in range(n) if sports[i] == "Ride" and i not in manual and rng.random() < 0.04
    }
    outdoor = [i for i in range(n) if i not in manual and i not in indoor]
    race_pool = [i for i in outdoor if sports[i] in _OUTDOOR_RIDES | _OUTDOOR_RUNS]
    races = set(rng.sample(race_pool, min(len(race_pool), round(n * race_fraction))))
    brevet_pool = [i for i in outdoor if sports[i] in _OUTDOOR_RIDES and i not in races]
    brevet_count = min(len(brevet_pool), max(1, round(n * 0.02)))
    brevets = set(rng.sample(brevet_pool, brevet_count))
    private = set(rng.sample(range(n), round(n * private_fraction)))

    activities = []
    next_id = first_id
    for i, epoch in enumerate(epochs):
        sport = sports[i]
        if next_id is None:
            activity_id = epoch * 1000 + athlete_id % 1000
        else:
            activity_id, next_id = next_id, next_id + rng.randrange(1, 10_000)
        low, high = _DISTANCE_KM[sport]
        distance_km = min(high, max(low, rng.lognormvariate(math.log((low + high) / 3), 0.45)))
        name = None
        if sport in _VIRTUAL_TYPES:
            name = rng.choice(("Zwift - Watopia", "Zwift - Volcano Circuit", "Zwift - Group Ride"))
        elif rng.random() < 0.15:
            name = rng.choice(_CUSTOM_NAMES)
        workout_type = _workout_type(rng, sport)
        if i in races:
            workout_type = 11 if sport in RIDE_TYPES else 1
            name = f"Course : {rng.choice(_RACE_NAMES)}"
        if i in brevets:
            distance_km = rng.choice(_BREVET_KM) * rng.uniform(1.0, 1.04)
            name = f"BRM {round(distance_km, -2):.0f} {rng.choice(_TOWNS)}"
        zone = HOME_ZONE if rng.random() < 0.92 else rng.choice(_TRAVEL_ZONES)
        activities.append(
            make_activity(
                activity_id,
                athlete_id=athlete_id,
                start_date=datetime.fromtimestamp(epoch, UTC),
                sport_type=sport,
                distance_m=distance_km * 1000,
                workout_type=workout_type,
                private=i in private,
                name=name,
                zone=zone,
                manual=i in manual,
                trainer=i in indoor or sport in _VIRTUAL_TYPES,
                commute=sport == "Ride" and i in outdoor and rng.random() < 0.05,
            )
        )
    return activities


def _workout_type(rng: random.Random, sport_type: str) -> int | None:
    """Pick a non-race workout_type; Strava leaves it null for many activities."""
    if sport_type in RIDE_TYPES:
        return rng.choice((10, 10, 10, None, None, 12))
    if sport_type in RUN_TYPES:
        return rng.choice((0, 0, 0, None, 2, 3))
    return None
