-- A call reserves Strava requests a block at a time (services/budget.py).

-- The budget row's usage is the requests every call reserved (a call reserves a block at
-- a time and gives back what it did not use) plus what other clients of the application
-- used; these columns hold that second part, as Strava's headers show it (their usage
-- beyond what the reservations can account for), so a block given back never takes the
-- count below what Strava has counted.
alter table public.strava_rate_budget
  add column external_usage_15min      integer not null default 0,
  add column external_usage_daily      integer not null default 0,
  add column external_read_usage_15min integer not null default 0,
  add column external_read_usage_daily integer not null default 0;
