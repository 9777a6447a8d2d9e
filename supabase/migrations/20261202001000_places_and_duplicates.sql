-- Places, offline: the start point (Strava's start_latlng, or the summary polyline's
-- first point) and the town it is in (Strava's location fields where present, else the
-- offline GeoNames table in services/places.py). Filled in when the activity is stored.
alter table public.activities
  add column start_lat     double precision check (start_lat between -90 and 90),
  add column start_lng     double precision check (start_lng between -180 and 180),
  add column start_city    text,
  add column start_region  text,
  add column start_country text,
  -- One ride recorded twice (a bike computer and a phone): the lesser copy points at the
  -- one kept. Both rows stay; the Eddington number and per-day totals skip the copy.
  -- Deleting the kept one unmarks the copy.
  add column duplicate_of  bigint references public.activities (id) on delete set null,
  add constraint activities_not_own_duplicate check (duplicate_of <> id);

create index activities_duplicate_of on public.activities (duplicate_of)
  where duplicate_of is not null;
create index activities_start_country on public.activities (start_country, start_city)
  where start_country is not null;

-- An operator's word on a pair, by Strava ids (stable across re-listings): 'distinct'
-- (never pair them) or 'duplicate' (pair them, keeping keep_strava_id).
create table public.duplicate_overrules (
  first_strava_id  bigint not null,
  second_strava_id bigint not null,
  rider_id         bigint not null references public.riders (id) on delete cascade,
  verdict          text not null check (verdict in ('distinct', 'duplicate')),
  keep_strava_id   bigint,
  created_at       timestamptz not null,
  primary key (first_strava_id, second_strava_id),
  check (first_strava_id < second_strava_id),
  check ((verdict = 'duplicate') = (keep_strava_id is not null)),
  check (keep_strava_id is null or keep_strava_id in (first_strava_id, second_strava_id))
);
create index duplicate_overrules_rider on public.duplicate_overrules (rider_id);

alter table public.duplicate_overrules enable row level security;
revoke all on public.duplicate_overrules from anon, authenticated;
grant all on public.duplicate_overrules to service_role;
