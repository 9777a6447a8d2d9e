-- Strava requests per 15-minute window and kind of work (the scheduler's classes): what
-- each class used in this window and today, for the rate plan and the operator's chart.
-- One row per window and class, counted in the transaction that reserves the request.
create table public.strava_request_windows (
  window_start  timestamptz not null,
  work_class    text not null check (work_class in
                  ('sync_now', 'incremental', 'enrich_recent', 'discover', 'enrich_old')),
  requests      integer not null default 0 check (requests >= 0),
  primary key (window_start, work_class)
);

alter table public.strava_request_windows enable row level security;
revoke all on public.strava_request_windows from anon, authenticated;
grant all on public.strava_request_windows to service_role;
