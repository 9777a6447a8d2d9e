"""Google's encoded polyline format (precision 5), the one Strava uses for `map` fields."""

from __future__ import annotations

from functools import lru_cache

Point = tuple[float, float]


# Routes' steps repeat (a few thousand distinct values among the millions a fleet's world
# encodes): remembering them makes the world's routes several times cheaper.
@lru_cache(maxsize=1 << 16)
def _encode_value(value: int) -> str:
    """Encode one signed delta as polyline characters."""
    value = ~(value << 1) if value < 0 else value << 1
    chunks = []
    while value >= 0x20:
        chunks.append(chr((0x20 | (value & 0x1F)) + 63))
        value >>= 5
    chunks.append(chr(value + 63))
    return "".join(chunks)


def encode(points: list[Point]) -> str:
    """Encode (lat, lng) points as a polyline string."""
    out = []
    prev_lat = prev_lng = 0
    for lat, lng in points:
        ilat, ilng = round(lat * 1e5), round(lng * 1e5)
        out.append(_encode_value(ilat - prev_lat) + _encode_value(ilng - prev_lng))
        prev_lat, prev_lng = ilat, ilng
    return "".join(out)


def decode(polyline: str) -> list[Point]:
    """Decode a polyline string into (lat, lng) points."""
    values = []
    value = shift = 0
    for char in polyline:
        byte = ord(char) - 63
        value |= (byte & 0x1F) << shift
        shift += 5
        if byte < 0x20:
            values.append(~(value >> 1) if value & 1 else value >> 1)
            value = shift = 0
    points = []
    lat = lng = 0
    for dlat, dlng in zip(values[::2], values[1::2], strict=True):
        lat, lng = lat + dlat, lng + dlng
        points.append((lat / 1e5, lng / 1e5))
    return points
