"""A fake Open-Meteo historical weather API and historical forecast API: deterministic,
with faults and slow answers, for the tests, the demo and the benchmark (served on
loopback by serve.py)."""

from fake_weather.serve import ServedWeather, serve
from fake_weather.server import ARCHIVE_PATH, FORECAST_PATH, FakeWeather

__all__ = ["ARCHIVE_PATH", "FORECAST_PATH", "FakeWeather", "ServedWeather", "serve"]
