-- Sharing with the club, by consent. Strava lets an application show a rider's data to
-- that rider only, unless the rider has explicitly agreed to more; its API returns
-- routes with the rider's hidden privacy zones included, and activities the rider shows
-- only to followers or to themselves. So: consent per rider (off until turned on), and
-- one view for the club's pages that shows only what consent and visibility allow, with
-- the ends of every route cut off.

-- Null: not shared. Set by the rider (PUT /api/riders/me/sharing), cleared at once when
-- they turn it off, disconnect, or deauthorize at Strava.
alter table public.riders add column share_with_club_at timestamptz;

-- A webhook said this activity's privacy changed (or that it was deleted): the club
-- stops showing it at once, until the service has looked at it again with Strava (any
-- write from Strava clears this). An event can only hide, never show.
alter table public.activities add column privacy_pending_since timestamptz;

-- What the club's pages need of the service's settings, readable by the view (a view
-- cannot read the service's environment). The service writes it at start.
create table public.club_settings (
  id            smallint primary key default 1 check (id = 1),
  route_trim_m  integer not null default 500 check (route_trim_m between 0 and 20000),
  updated_at    timestamptz not null default now()
);
insert into public.club_settings (id) values (1) on conflict do nothing;

alter table public.club_settings enable row level security;
revoke all on public.club_settings from public, anon, authenticated;
grant all on public.club_settings to service_role;

-- A route (Google's encoded polyline, precision 5, as Strava sends it) with at least
-- `trim_m` metres removed from each end, re-encoded; null when nothing would be left
-- (a route shorter than twice the trim, or one that does not decode).
--
-- Each end is cut at whichever comes later along the route: `trim_m` metres along it,
-- or its last exit (before half way) from the circle of radius `trim_m` around that
-- end, so a ride that circles the block at home before leaving does not start next to
-- home. The route resumes at its first recorded point past the cut (no point is made
-- up), so what is shown starts at least `trim_m` from the real start, along the route
-- and in a straight line near it. Distances: the equirectangular approximation of the
-- great circle (mean Earth radius) per segment, well under a metre off at these scales.
--
-- The view computes it as it reads, so the trim holds for every stored route however
-- it was written, and a new CLUB_ROUTE_TRIM_M applies to every row at once; the price
-- is CPU per row read (bench/sharing.py measures it).
create or replace function public.club_route(route text, trim_m integer)
returns text
language plpgsql
immutable strict parallel safe
set search_path = ''
as $$
declare
  -- Metres in 1e-5 degree of latitude (the polyline's unit).
  metres_per_unit constant double precision := 6371008.8 * pi() / 180 / 1e5;
  bytes bytea;
  n integer;
  pos integer := 0;
  b integer;
  shift integer;
  acc bigint;
  is_lat boolean := true;
  lat bigint := 0;
  lng bigint := 0;
  lats bigint[] := '{}';
  lngs bigint[] := '{}';
  along double precision[] := '{0}';
  points integer;
  walked double precision := 0;
  total double precision;
  kx double precision;
  dx double precision;
  dy double precision;
  radius2 double precision;
  first_kept integer;
  last_kept integer;
  k integer;
  prev_lat bigint := 0;
  prev_lng bigint := 0;
  delta bigint;
  pieces text[] := '{}';
  piece text;
begin
  if trim_m <= 0 then
    return route;
  end if;
  bytes := convert_to(route, 'UTF8');
  n := octet_length(bytes);
  -- Decode: each value is 5-bit groups, low first, plus 63, the 0x20 bit meaning "more";
  -- values are zig-zag signed deltas, latitude then longitude.
  while pos < n loop
    acc := 0;
    shift := 0;
    loop
      if pos >= n or shift > 60 then
        return null;  -- cut off mid-value, or not a polyline
      end if;
      b := get_byte(bytes, pos) - 63;
      pos := pos + 1;
      if b < 0 or b > 63 then
        return null;
      end if;
      acc := acc | ((b & 31)::bigint << shift);
      shift := shift + 5;
      exit when b < 32;
    end loop;
    acc := case when acc & 1 = 1 then ~(acc >> 1) else acc >> 1 end;
    if is_lat then
      lat := lat + acc;
    else
      lng := lng + acc;
      lats := lats || lat;
      lngs := lngs || lng;
    end if;
    is_lat := not is_lat;
  end loop;
  points := coalesce(array_length(lats, 1), 0);
  if not is_lat or points < 2 then
    return null;  -- a latitude without its longitude, or no line at all
  end if;

  -- Distance along the route at each point.
  for i in 2..points loop
    kx := cos(radians((lats[i] + lats[i - 1]) / 2e5));
    dx := (lngs[i] - lngs[i - 1]) * kx;
    dy := lats[i] - lats[i - 1];
    walked := walked + sqrt(dx * dx + dy * dy) * metres_per_unit;
    along := along || walked;
  end loop;
  total := walked;
  if total <= 2 * trim_m then
    return null;
  end if;
  radius2 := (trim_m / metres_per_unit) ^ 2;

  -- The start: past trim_m along the route, and past the last point before half way
  -- still within trim_m of the first point.
  first_kept := 1;
  while along[first_kept] < trim_m loop
    first_kept := first_kept + 1;
  end loop;
  kx := cos(radians(lats[1] / 1e5));
  k := 1;
  for i in 2..points loop
    exit when along[i] > total / 2;
    dx := (lngs[i] - lngs[1]) * kx;
    dy := lats[i] - lats[1];
    if dx * dx + dy * dy < radius2 then
      k := i;
    end if;
  end loop;
  first_kept := greatest(first_kept, k + 1);

  -- The end, likewise from the last point.
  last_kept := points;
  while along[last_kept] > total - trim_m loop
    last_kept := last_kept - 1;
  end loop;
  kx := cos(radians(lats[points] / 1e5));
  k := points;
  for i in reverse points - 1..1 loop
    exit when along[i] < total / 2;
    dx := (lngs[i] - lngs[points]) * kx;
    dy := lats[i] - lats[points];
    if dx * dx + dy * dy < radius2 then
      k := i;
    end if;
  end loop;
  last_kept := least(last_kept, k - 1);

  if last_kept - first_kept < 1 then
    return null;  -- fewer than two points left: no route
  end if;

  -- Encode the kept points: deltas from the previous point, zig-zag, 5-bit groups.
  for i in first_kept..last_kept loop
    for part in 1..2 loop
      delta := case when part = 1 then lats[i] - prev_lat else lngs[i] - prev_lng end;
      acc := case when delta < 0 then ~(delta << 1) else delta << 1 end;
      piece := '';
      while acc >= 32 loop
        piece := piece || chr(((acc & 31) | 32)::integer + 63);
        acc := acc >> 5;
      end loop;
      pieces := pieces || (piece || chr(acc::integer + 63));
    end loop;
    prev_lat := lats[i];
    prev_lng := lngs[i];
  end loop;
  return array_to_string(pieces, '');
end
$$;

-- What the club's own pages read (supabase-js as a signed-in member): the activities of
-- riders who share, that Strava shows to everyone, not a copy of another ride, with the
-- routes' ends removed, and nothing else (no start or end coordinates, places, weather,
-- heart rate or power, which Strava lets riders hide separately).
--
-- It runs with its owner's rights, as a view does unless made security_invoker: the
-- activities table's Row Level Security keeps every rider to their own rows, and this
-- view's WHERE is what lets members see one another's shared rows. security_barrier
-- keeps a caller's own conditions (and any leaky function in them) from being applied
-- before the view's. A missing settings row falls back to the default trim, never to
-- no trim.
create view public.club_activities with (security_barrier = true) as
  select a.strava_id,
         'https://www.strava.com/activities/' || a.strava_id as strava_url,
         a.rider_id,
         r.name as rider_name,
         a.name,
         a.sport_type,
         a.workout_type,
         a.is_race,
         a.start_date,
         a.start_date_local,
         a.timezone,
         a.distance_m,
         a.moving_time_s,
         a.elapsed_time_s,
         a.total_elevation_gain_m,
         a.average_speed_mps,
         a.max_speed_mps,
         a.description,
         public.club_route(a.summary_polyline, coalesce(s.route_trim_m, 500)) as summary_polyline,
         public.club_route(a.polyline, coalesce(s.route_trim_m, 500)) as polyline
    from public.activities a
    join public.riders r on r.id = a.rider_id
    left join public.club_settings s on s.id = 1
   where r.share_with_club_at is not null
     and a.visibility = 'everyone'
     and not a.private
     and a.duplicate_of is null
     and a.privacy_pending_since is null;

-- Members read it; anonymous visitors never (Supabase's default privileges grant new
-- relations in public to anon too: revoked here).
revoke all on public.club_activities from public, anon, authenticated;
grant select on public.club_activities to authenticated, service_role;
-- The view's readers call its function (a pure one) with their own rights.
revoke all on function public.club_route(text, integer) from public, anon;
grant execute on function public.club_route(text, integer) to authenticated, service_role;

-- The club's pages list shared activities newest first: only sharing riders are read.
create index riders_sharing on public.riders (id) where share_with_club_at is not null;
