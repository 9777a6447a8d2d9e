-- Once a week each rider's poll lists the last 60 days whatever the cursor, to an empty
-- page: uploads dated back and edits whose events were lost are found within a week.
alter table public.strava_connections
  add column last_look_back_at timestamptz;  -- null: none yet (counted from connected_at)
