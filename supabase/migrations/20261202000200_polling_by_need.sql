-- Polling by need (services/schedule.py poll_plan): each rider's next poll, placed
-- around the local hours they usually upload, at least once a day, the fleet within the
-- incremental class's share of the budget. SYNC_MIN_INTERVAL_S stays the floor.
alter table public.strava_connections
  add column next_poll_at    timestamptz,   -- null: poll at once (a new connection)
  add column polls_per_day   integer check (polls_per_day >= 0),
  add column poll_reason     text;          -- the plan's decision in plain words
