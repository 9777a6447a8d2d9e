-- Where an activity ended: Strava's end_latlng where the payload carries it, else the
-- last point of its summary polyline (services/places.py). Filled in when the activity
-- is stored, like the start point beside it.
alter table public.activities
  add column end_lat double precision check (end_lat between -90 and 90),
  add column end_lng double precision check (end_lng between -180 and 180);
