-- A cron call that took nothing says why (services/idle.py): its one-word reason and
-- when work is next due, kept with the run for the dashboard.
alter table public.cron_runs
  add column idle_reason text,
  add column next_due_at timestamptz;

-- Reading why a call took nothing must not read every rider: the few leased riders,
-- the few backing off, and the earliest planned polls, each from an index of its own.
create index strava_connections_leased
  on public.strava_connections (lease_expires_at) where lease_token is not null;
create index strava_connections_backing_off
  on public.strava_connections (next_attempt_at) where next_attempt_at is not null;
create index strava_connections_next_poll
  on public.strava_connections (next_poll_at nulls first) where status = 'active';
