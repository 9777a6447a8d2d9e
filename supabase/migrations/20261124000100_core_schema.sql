-- Riders, their Strava connections, activities, the shared rate budget and the run log.
-- The queue of work is derived from these rows (who is due, which races are pending),
-- never from separate batch rows that could go missing.

create table public.riders (
  id            bigint generated always as identity primary key,
  auth_user_id  uuid unique,                      -- the Supabase user; null for riders made by hand
  name          text not null default '',
  auto_sync     boolean not null default true,
  created_at    timestamptz not null default now()
);

create table public.strava_connections (
  rider_id        bigint primary key references public.riders (id) on delete cascade,
  athlete_id      bigint not null unique,
  access_token    text not null,
  refresh_token   text not null,
  expires_at      timestamptz not null,
  scope           text not null default '',
  status          text not null default 'active'
                  check (status in ('active', 'needs_reauth', 'revoked')),
  connected_at    timestamptz not null default now(),

  -- Incremental sync: the newest start_date a completed listing stored.
  sync_cursor     timestamptz,
  last_synced_at  timestamptz,
  last_sync_added   integer not null default 0,
  last_sync_updated integer not null default 0,

  -- Failures back a rider off; the error class says which kind (rate-limit stops are not failures).
  last_error      text,
  error_class     text,
  failure_count   integer not null default 0 check (failure_count >= 0),
  next_attempt_at timestamptz,

  -- One lease for all kinds of work on a rider, so a rider is in one call at a time.
  lease_token      uuid,
  lease_kind       text check (lease_kind in ('sync', 'discover', 'sync_now')),
  lease_expires_at timestamptz,

  -- History walk (discover): backwards from history_walk_started_at down to history_cursor.
  history_complete_at       timestamptz,
  history_walk_started_at   timestamptz,
  history_cursor            timestamptz,
  history_pages             integer not null default 0,
  history_activities        integer not null default 0,
  history_races             integer not null default 0,
  full_refresh_requested_at timestamptz,

  last_progress_at timestamptz,
  updated_at       timestamptz not null default now(),

  check ((lease_token is null) = (lease_expires_at is null))
);

create index strava_connections_sync_due
  on public.strava_connections (last_synced_at nulls first)
  where status = 'active';
create index strava_connections_history_due
  on public.strava_connections (connected_at)
  where status = 'active' and history_complete_at is null;

create table public.activities (
  id                     bigint generated always as identity primary key,
  strava_id              bigint not null unique,
  rider_id               bigint not null references public.riders (id) on delete cascade,
  name                   text not null default '',
  sport_type             text not null,
  workout_type           integer,
  start_date             timestamptz not null,
  start_date_local       timestamp,
  timezone               text,
  distance_m             double precision not null default 0 check (distance_m >= 0),
  moving_time_s          integer,
  elapsed_time_s         integer,
  total_elevation_gain_m double precision,
  average_speed_mps      double precision,
  max_speed_mps          double precision,
  average_watts          double precision,
  average_heartrate      double precision,
  trainer                boolean not null default false,
  commute                boolean not null default false,
  manual                 boolean not null default false,
  private                boolean not null default false,
  visibility             text,
  gear_id                text,
  upload_id              text,               -- can exceed 64 bits
  external_id            text,
  summary_polyline       text,

  is_race                     boolean not null default false,
  enrichment_status           text check (enrichment_status in ('pending', 'done', 'failed')),
  enrichment_attempts         integer not null default 0 check (enrichment_attempts >= 0),
  enrichment_next_attempt_at  timestamptz,
  enrichment_error            text,
  enrichment_lease_token      uuid,
  enrichment_lease_expires_at timestamptz,
  enriched_at                 timestamptz,
  description                 text,
  polyline                    text,
  details                     jsonb,        -- what a race page wants from the detailed activity

  -- Last time Strava showed us this row; a completed history walk removes what it did not see.
  seen_at     timestamptz not null default now(),
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),

  check (enrichment_status is null or is_race),
  check ((enrichment_lease_token is null) = (enrichment_lease_expires_at is null))
);

create index activities_rider_start on public.activities (rider_id, start_date desc);
create index activities_enrichment_queue
  on public.activities (start_date desc)
  where enrichment_status in ('pending', 'failed');

create view public.races with (security_invoker = true) as
  select * from public.activities where is_race;

-- Strava's limits belong to the application: one row, shared by every call.
create table public.strava_rate_budget (
  id                smallint primary key default 1 check (id = 1),
  limit_15min       integer not null default 200,
  limit_daily       integer not null default 2000,
  read_limit_15min  integer not null default 100,
  read_limit_daily  integer not null default 1000,
  usage_15min       integer not null default 0,
  usage_daily       integer not null default 0,
  read_usage_15min  integer not null default 0,
  read_usage_daily  integer not null default 0,
  window_start      timestamptz not null default '1970-01-01 00:00:00+00',
  day_start         timestamptz not null default '1970-01-01 00:00:00+00',
  blocked_until     timestamptz,
  blocked_reason    text,
  headers_seen_at   timestamptz,
  updated_at        timestamptz not null default now()
);
insert into public.strava_rate_budget (id) values (1) on conflict do nothing;

-- One row per call of a cron endpoint (or Sync now), written at start and at end, so a
-- call that died shows as never finished.
create table public.cron_runs (
  id            bigint generated always as identity primary key,
  kind          text not null check (kind in ('sync-strava', 'discover', 'enrich', 'sync-now')),
  started_at    timestamptz not null default now(),
  finished_at   timestamptz,
  processed     integer,
  succeeded     integer,
  failed        integer,
  skipped       integer,
  remaining     integer,
  rate_limited  boolean not null default false,
  rate_limit    jsonb,
  items         jsonb,
  error_summary text
);
create index cron_runs_kind_started on public.cron_runs (kind, started_at desc);

-- Row Level Security: riders read their own rows; no client role reads tokens, the
-- budget or the run log. The service connects as the database owner and is not bound.
alter table public.riders             enable row level security;
alter table public.strava_connections enable row level security;
alter table public.activities         enable row level security;
alter table public.strava_rate_budget enable row level security;
alter table public.cron_runs          enable row level security;

create policy riders_read_own on public.riders
  for select to authenticated
  using (auth_user_id = (select auth.uid()));

create policy activities_read_own on public.activities
  for select to authenticated
  using (rider_id in (select id from public.riders where auth_user_id = (select auth.uid())));

revoke all on public.strava_connections, public.strava_rate_budget, public.cron_runs
  from anon, authenticated;
revoke all on public.riders, public.activities, public.races from anon, authenticated;
grant select on public.riders, public.activities, public.races to authenticated;
grant all on public.riders, public.strava_connections, public.activities, public.races,
  public.strava_rate_budget, public.cron_runs to service_role;
