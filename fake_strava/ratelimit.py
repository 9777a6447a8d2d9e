"""Strava's application-wide rate limits: overall and read budgets, per 15 minutes and per day."""

from __future__ import annotations

from dataclasses import dataclass, field

QUARTER_S = 15 * 60
DAY_S = 24 * 60 * 60


@dataclass
class RateLimits:
    """Usage counters in clock-aligned windows (:00/:15/:30/:45 and midnight UTC)."""

    limit_15min: int
    limit_daily: int
    read_limit_15min: int
    read_limit_daily: int
    usage_15min: int = 0
    usage_daily: int = 0
    read_usage_15min: int = 0
    read_usage_daily: int = 0
    _quarter: int = field(default=-1, init=False, repr=False)
    _day: int = field(default=-1, init=False, repr=False)

    def roll(self, now: float) -> None:
        """Reset the counters of windows that have ended by `now`."""
        quarter, day = int(now // QUARTER_S), int(now // DAY_S)
        if quarter != self._quarter:
            self._quarter = quarter
            self.usage_15min = self.read_usage_15min = 0
        if day != self._day:
            self._day = day
            self.usage_daily = self.read_usage_daily = 0

    def admit(self, now: float, *, read: bool) -> bool:
        """Count one request and say whether it is within every applicable limit."""
        self.roll(now)
        over = self.usage_15min >= self.limit_15min or self.usage_daily >= self.limit_daily
        if read:
            over = (
                over
                or self.read_usage_15min >= self.read_limit_15min
                or self.read_usage_daily >= self.read_limit_daily
            )
        # Rejected requests still count against the day (reported by users), so a client
        # retrying after a 429 burns its daily budget; the 15-minute usage stays at its cap.
        self.usage_daily += 1
        self.read_usage_daily += read
        if not over:
            self.usage_15min += 1
            self.read_usage_15min += read
        return not over

    def headers(self) -> dict[str, str]:
        """The four X-*RateLimit-* headers Strava puts on every API answer."""
        return {
            "X-RateLimit-Limit": f"{self.limit_15min},{self.limit_daily}",
            "X-RateLimit-Usage": f"{self.usage_15min},{self.usage_daily}",
            "X-ReadRateLimit-Limit": f"{self.read_limit_15min},{self.read_limit_daily}",
            "X-ReadRateLimit-Usage": f"{self.read_usage_15min},{self.read_usage_daily}",
        }
