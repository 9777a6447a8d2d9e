-- A round of sync-strava: every rider due when the round opened is synced (or tried)
-- once, then the round closes. The calls of one workflow loop, and overlapping
-- schedulers, share the open round, so a rider a call has just done is not due again
-- until the next round, even with SYNC_MIN_INTERVAL_S=0: `remaining` reaches 0 and
-- the loop ends.
create table public.work_rounds (
  kind       text primary key check (kind in ('sync-strava')),
  opened_at  timestamptz not null,
  closed_at  timestamptz
);

alter table public.work_rounds enable row level security;
revoke all on public.work_rounds from anon, authenticated;
grant all on public.work_rounds to service_role;

-- When a rider's sync last ended, succeeded or failed: the round's test of "done".
alter table public.strava_connections
  add column last_sync_attempt_at timestamptz;
