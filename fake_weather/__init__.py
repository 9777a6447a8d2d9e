"""A fake Open-Meteo historical weather API: deterministic, with faults and slow answers,
for the tests, the demo and the benchmark (served on loopback by serve.py)."""

from fake_weather.serve import ServedWeather, serve
from fake_weather.server import ARCHIVE_PATH, FakeWeather

__all__ = ["ARCHIVE_PATH", "FakeWeather", "ServedWeather", "serve"]
