-- Riders are named from their Strava athlete at connect ("Anna B."), so an operator can
-- tell whom to ask to reconnect; a name the operator gave is kept over Strava's.
alter table public.riders
  add column named_by_operator_at timestamptz;  -- null: the name follows Strava's
