-- Riders' own endpoints (Connect Strava, Sync now), the Eddington number, and what the
-- admin status reads quickly.

-- One row per Connect Strava started: the state's nonce. The callback deletes the row in
-- the statement that checks it, so a state works once, even with two callbacks at once.
create table public.oauth_states (
  nonce         uuid primary key,
  auth_user_id  uuid not null,
  created_at    timestamptz not null default now(),
  expires_at    timestamptz not null
);
create index oauth_states_expires on public.oauth_states (expires_at);

alter table public.oauth_states enable row level security;
revoke all on public.oauth_states from anon, authenticated;
grant all on public.oauth_states to service_role;

-- The rider's cycling Eddington number, recomputed after a sync that stored rides.
alter table public.riders
  add column eddington_miles      integer check (eddington_miles >= 0),
  add column eddington_km         integer check (eddington_km >= 0),
  add column eddington_updated_at timestamptz;

-- Sync now's per-rider cooldown, and the Strava account's creation date (from the code
-- exchange), the floor of the history that discovery estimates its progress against.
alter table public.strava_connections
  add column last_sync_now_at   timestamptz,
  add column athlete_created_at timestamptz;

-- The admin status: a rider's recent runs by containment on the per-item outcomes, and
-- runs that never finished.
create index cron_runs_items on public.cron_runs using gin (items jsonb_path_ops);
create index cron_runs_unfinished on public.cron_runs (started_at) where finished_at is null;
