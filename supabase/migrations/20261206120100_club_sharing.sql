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

-- Routes as the club may see them: the stored route with the ends cut off
-- (services/routes.py: CLUB_ROUTE_TRIM_M metres along the route from each end, more
-- where the route lingers near its ends), computed by the service whenever the route is
-- written, with the trim it was cut with. Cut when written, not when read: a view that
-- computes a column computes it for every row under a sort or an aggregate (security
-- barrier views cannot be flattened into the query), so a page asking for the latest 20
-- would cut every shared route of the club each time.
alter table public.activities
  add column club_summary_polyline text,
  add column club_summary_trim_m   integer,
  add column club_polyline         text,
  add column club_polyline_trim_m  integer;

-- What the club's view needs of the service's settings (a view cannot read the
-- service's environment), written by the service at each start; and how far the
-- stored routes have been cut again after the trim changed (or for rows stored before
-- this migration): every row is known to be cut with `routes_trim_m`; a pass resumes
-- after `retrim_after_id`.
create table public.club_settings (
  id               smallint primary key default 1 check (id = 1),
  route_trim_m     integer not null default 500 check (route_trim_m between 0 and 20000),
  routes_trim_m    integer,
  retrim_after_id  bigint
);
insert into public.club_settings (id) values (1) on conflict do nothing;

alter table public.club_settings enable row level security;
revoke all on public.club_settings from public, anon, authenticated;
grant all on public.club_settings to service_role;

-- What the club's own pages read (supabase-js as a signed-in member): the activities of
-- riders who share, that Strava shows to everyone, not a copy of another ride, with the
-- routes' ends removed, and nothing else (no start or end coordinates, places, weather,
-- heart rate or power, which Strava lets riders hide separately). A route is shown only
-- if it was cut with at least today's trim: after the trim grows, routes cut with the
-- old one stay hidden until cut again.
--
-- It runs with its owner's rights, as a view does unless made security_invoker: the
-- activities table's Row Level Security keeps every rider to their own rows, and this
-- view's WHERE is what lets members see one another's shared rows. security_barrier
-- keeps a caller's own conditions (and any leaky function in them) from being applied
-- before the view's. A missing settings row means the default trim, never none.
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
         case when a.club_summary_trim_m >= coalesce(s.route_trim_m, 500)
              then a.club_summary_polyline end as summary_polyline,
         case when a.club_polyline_trim_m >= coalesce(s.route_trim_m, 500)
              then a.club_polyline end as polyline
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

-- The club's pages list shared activities newest first: only sharing riders are read.
create index riders_sharing on public.riders (id) where share_with_club_at is not null;
