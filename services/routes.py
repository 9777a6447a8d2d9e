"""Routes for the club's eyes: the ends of a route cut off, because Strava's API returns
routes with the rider's hidden privacy zones included (a privacy zone is a circle around
an address, 200 m to 1.6 km; the API does not say where it is).

Pure: given an encoded polyline (Google's format, precision 5, as Strava sends `map`
routes) and the trim in metres, the route the club may see.
"""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius

Unit = tuple[int, int]  # latitude and longitude in 1e-5 degrees (the polyline's unit)


def decode(route: str) -> list[Unit] | None:
    """The points of an encoded polyline, exactly, in its own units; None when it is not
    one (a character out of range, or cut off mid-value or mid-point)."""
    read = _read(route)
    return None if read is None else list(zip(read[0], read[1], strict=True))


def _read(route: str) -> tuple[list[int], list[int], list[int]] | None:
    """decode's work: the points' latitudes and longitudes, and where each point's
    characters end in `route` (so a stretch of the route can be cut out as it is)."""
    try:
        data = route.encode("ascii")
    except UnicodeEncodeError:
        return None
    lats: list[int] = []
    lngs: list[int] = []
    ends: list[int] = []
    value = shift = lat = lng = 0
    dlat: int | None = None
    for index, char in enumerate(data):
        byte = char - 63
        if byte < 0 or byte > 63 or shift > 60:
            return None
        value |= (byte & 0x1F) << shift
        shift += 5
        if byte < 0x20:
            delta = ~(value >> 1) if value & 1 else value >> 1
            value = shift = 0
            if dlat is None:
                dlat = delta
            else:
                lat, lng = lat + dlat, lng + delta
                lats.append(lat)
                lngs.append(lng)
                ends.append(index + 1)
                dlat = None
    if shift or dlat is not None:
        return None
    return lats, lngs, ends


def _encode_value(value: int) -> str:
    value = ~(value << 1) if value < 0 else value << 1
    out = []
    while value >= 0x20:
        out.append(chr((0x20 | (value & 0x1F)) + 63))
        value >>= 5
    out.append(chr(value + 63))
    return "".join(out)


def _flat(lat1: float, lng1: float, cos1: float, lat2: float, lng2: float, cos2: float) -> float:
    """Metres between two points (radians, and their latitudes' cosines): the great
    circle by the equirectangular approximation, well under a metre off for the segments
    of a route and the distances of a trim."""
    dx = (lng2 - lng1) * (cos1 + cos2) / 2
    return EARTH_RADIUS_M * math.hypot(lat2 - lat1, dx)


def trim_route(route: str | None, trim_m: int) -> str | None:
    """`route` with at least `trim_m` metres removed from each end; None when
    nothing would be left (a route no longer than twice the trim) or it does not decode.

    Each end is cut at whichever comes later along the route: `trim_m` metres along it,
    or its last exit before half way from the circle of radius `trim_m` around that end,
    so a ride that circles the block at home before leaving does not start next to home.
    The route resumes at its first recorded point past the cut: no point is made up, so
    what is shown starts at least `trim_m` from the real start, along the route and (in
    its first half) in a straight line, and likewise at the end. 0 keeps the route whole.
    """
    if route is None:
        return None
    if trim_m <= 0:
        return route
    read = _read(route)
    if read is None or len(read[0]) < 2:
        return None
    units_lat, units_lng, ends = read
    lats = [math.radians(lat / 1e5) for lat in units_lat]
    lngs = [math.radians(lng / 1e5) for lng in units_lng]
    coss = [math.cos(lat) for lat in lats]
    along = [0.0]
    for i in range(1, len(lats)):
        step = _flat(lats[i - 1], lngs[i - 1], coss[i - 1], lats[i], lngs[i], coss[i])
        along.append(along[-1] + step)
    total = along[-1]
    if total <= 2 * trim_m:
        return None
    half, end = total / 2, len(lats) - 1

    def near(i: int, j: int) -> bool:
        return _flat(lats[i], lngs[i], coss[i], lats[j], lngs[j], coss[j]) < trim_m

    first = next(i for i, d in enumerate(along) if d >= trim_m)
    for i in range(end, -1, -1):  # the last point of the first half near the start
        if along[i] <= half and near(0, i):
            first = max(first, i + 1)
            break
    last = next(i for i in range(end, -1, -1) if along[i] <= total - trim_m)
    for i in range(end + 1):  # the first point of the second half near the end
        if along[i] >= half and near(end, i):
            last = min(last, i - 1)
            break
    if last - first < 1:
        return None  # fewer than two points left: no route
    # The first point kept, from 0 as a polyline starts; the steps after it as they were.
    head = _encode_value(units_lat[first]) + _encode_value(units_lng[first])
    return head + route[ends[first] : ends[last]]
