-- Weather, degrading gracefully: a phase of its own (POST /api/cron/weather), leased per
-- activity like enrichment, with its own backoff, and a circuit breaker on the source.
--
-- weather_status: null = due (never tried, or its start point or times changed);
-- 'done'; 'waiting' (too recent for the archive, or the archive had no values yet: due
-- again at weather_next_attempt_at); 'failed' (backing off while attempts are left, for
-- good after that); 'skipped' (nothing to look up: no start point), with the reason.
alter table public.activities
  add column weather_status           text check (weather_status in
                                        ('done', 'waiting', 'failed', 'skipped')),
  add column weather_attempts         integer not null default 0 check (weather_attempts >= 0),
  add column weather_next_attempt_at  timestamptz,
  add column weather_error            text,
  add column weather_lease_token      uuid,
  add column weather_lease_expires_at timestamptz,
  add column weather_fetched_at       timestamptz,
  -- The weather at the start, hourly values of the hour nearest the start time.
  add column weather_temperature_c     double precision,
  add column weather_feels_like_c      double precision,
  add column weather_humidity_pct      double precision,
  add column weather_precipitation_mm  double precision,
  add column weather_wind_speed_kmh    double precision,
  add column weather_wind_direction_deg double precision,
  add column weather_code              integer,
  add column weather_summary           text,          -- the weather code in plain words
  -- Along a race's route (sampled every 25 km at the time the rider passed): min/max
  -- temperature, strongest wind, head- or tailwind on average, total precipitation.
  add column weather_route             jsonb,
  add constraint activities_weather_lease
    check ((weather_lease_token is null) = (weather_lease_expires_at is null));

create index activities_weather_queue on public.activities (start_date desc)
  where weather_status is null or weather_status in ('waiting', 'failed');

-- The weather source's circuit breaker and request counts: one row, since every
-- serverless call is a new process.
create table public.weather_source (
  id                   smallint primary key default 1 check (id = 1),
  consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
  opened_count         integer not null default 0 check (opened_count >= 0),
  open_until           timestamptz,
  last_error           text,
  last_failure_at      timestamptz,
  last_success_at      timestamptz,
  day_start            timestamptz not null default '1970-01-01 00:00:00+00',
  requests_today       integer not null default 0 check (requests_today >= 0),
  locations_today      integer not null default 0 check (locations_today >= 0),
  requests_total       bigint not null default 0 check (requests_total >= 0)
);
insert into public.weather_source (id) values (1) on conflict do nothing;

alter table public.weather_source enable row level security;
revoke all on public.weather_source from anon, authenticated;
grant all on public.weather_source to service_role;

alter table public.cron_runs drop constraint if exists cron_runs_kind_check;
alter table public.cron_runs add constraint cron_runs_kind_check
  check (kind in ('sync-strava', 'discover', 'enrich', 'sync-now', 'weather'));
