-- The status without reading every rider or every activity where an index can say it
-- (models/status.py, models/weather.py): races by their state, races held by a call,
-- histories left to walk, activities by weather state.
-- (Races waiting for details are the enrichment queue's; the detailed ones, and races
-- never queued, are counted from indexes that no query of the queue can use, so a claim
-- never reads every race.)
create index activities_races_detailed
  on public.activities (rider_id) where is_race and enrichment_status = 'done';
create index activities_races_unqueued
  on public.activities (rider_id) where is_race and enrichment_status is null;
create index activities_enrichment_leased
  on public.activities (enrichment_lease_expires_at) where enrichment_lease_token is not null;
create index activities_weather_state on public.activities (weather_status);
create index strava_connections_full_refresh
  on public.strava_connections (rider_id) where full_refresh_requested_at is not null;
create index strava_connections_history_left
  on public.strava_connections (rider_id) where history_complete_at is null;
