-- The status without reading every rider or every activity where an index can say it
-- (models/status.py, models/weather.py): races by their state, races and riders held by
-- a call, histories a full refresh asked for, activities by weather state.
create index activities_races
  on public.activities (rider_id, enrichment_status, enrichment_attempts) where is_race;
create index activities_enrichment_leased
  on public.activities (enrichment_lease_expires_at) where enrichment_lease_token is not null;
create index activities_weather_state on public.activities (weather_status);
create index strava_connections_full_refresh
  on public.strava_connections (rider_id) where full_refresh_requested_at is not null;
create index strava_connections_history_left
  on public.strava_connections (rider_id) where history_complete_at is null;
