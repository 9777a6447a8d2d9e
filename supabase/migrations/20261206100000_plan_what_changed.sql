-- A call costs what is due, not what the club is (services/planning.py).

-- The polling fleet's size and its planned polls a day: riders with an active connection
-- and auto sync on, and the sum of their polls_per_day (an unplanned rider counts one).
-- Kept by the triggers below as riders connect, leave, pause and are re-planned, so the
-- rate plan reads two numbers instead of every rider. If the row is missing (a table
-- emptied by hand), the service counts once and puts it back.
create table public.poll_fleet (
  id            smallint primary key default 1 check (id = 1),
  riders        integer not null default 0,
  polls_per_day bigint not null default 0
);

create function public.poll_fleet_connection_changed() returns trigger
language plpgsql set search_path = public as $$
declare
  riders_delta integer := 0;
  polls_delta bigint := 0;
begin
  if tg_op in ('UPDATE', 'DELETE') and old.status = 'active'
     and exists (select 1 from riders r where r.id = old.rider_id and r.auto_sync) then
    riders_delta := riders_delta - 1;
    polls_delta := polls_delta - coalesce(old.polls_per_day, 1);
  end if;
  if tg_op in ('INSERT', 'UPDATE') and new.status = 'active'
     and exists (select 1 from riders r where r.id = new.rider_id and r.auto_sync) then
    riders_delta := riders_delta + 1;
    polls_delta := polls_delta + coalesce(new.polls_per_day, 1);
  end if;
  if riders_delta <> 0 or polls_delta <> 0 then
    update poll_fleet set riders = riders + riders_delta,
                          polls_per_day = polls_per_day + polls_delta
     where id = 1;
  end if;
  return null;
end $$;

create trigger strava_connections_poll_fleet_added_or_removed
  after insert or delete on public.strava_connections
  for each row execute function public.poll_fleet_connection_changed();
create trigger strava_connections_poll_fleet_changed
  after update of status, polls_per_day on public.strava_connections
  for each row
  when (old.status is distinct from new.status
        or old.polls_per_day is distinct from new.polls_per_day)
  execute function public.poll_fleet_connection_changed();

-- Pausing or resuming a rider; deleting one (before the row goes: the connection's own
-- trigger, run by the cascade, no longer finds the rider and counts nothing).
create function public.poll_fleet_rider_changed() returns trigger
language plpgsql set search_path = public as $$
declare
  sign integer;
  polls integer;
begin
  if tg_op = 'DELETE' then
    if not old.auto_sync then
      return old;
    end if;
    sign := -1;
  elsif new.auto_sync then
    sign := 1;
  else
    sign := -1;
  end if;
  select coalesce(c.polls_per_day, 1) into polls
    from strava_connections c where c.rider_id = old.id and c.status = 'active';
  if found then
    update poll_fleet set riders = riders + sign, polls_per_day = polls_per_day + sign * polls
     where id = 1;
  end if;
  if tg_op = 'DELETE' then
    return old;
  end if;
  return null;
end $$;

create trigger riders_poll_fleet_paused_or_resumed
  after update of auto_sync on public.riders
  for each row when (old.auto_sync is distinct from new.auto_sync)
  execute function public.poll_fleet_rider_changed();
create trigger riders_poll_fleet_deleted
  before delete on public.riders
  for each row execute function public.poll_fleet_rider_changed();

insert into public.poll_fleet (id, riders, polls_per_day)
select 1, count(*), coalesce(sum(coalesce(c.polls_per_day, 1)), 0)
  from public.strava_connections c join public.riders r on r.id = c.rider_id
 where c.status = 'active' and r.auto_sync;

-- The plan the riders' next polls follow, and a whole-club re-plan under way. A call
-- plans the riders it synced; the whole club is re-planned only when the plan itself
-- changes (its kind, or, by need, the incremental share), at most once a window, a slice
-- of riders at a time inside the calls' time budgets: first a survey of the riders'
-- uploads (which sets the fleet's level), then each rider's plan, written only where it
-- changed.
create table public.poll_plan (
  id               smallint primary key default 1 check (id = 1),
  kind             text check (kind in ('by_need', 'safety_net')),
  share_per_day    integer,
  level            double precision,  -- polls above one a day per unit of weight
  typical_rate     double precision,  -- uploads a day a newcomer is assumed to make
  expected_per_day double precision,
  fits             boolean,
  note             text,
  planned_at       timestamptz,       -- when the last whole-club plan was complete
  replan_kind      text check (replan_kind in ('by_need', 'safety_net')),
  replan_share     integer,
  replan_started_at timestamptz,      -- null: no re-plan under way
  replan_phase     text check (replan_phase in ('survey', 'plan')),
  replan_after     bigint not null default 0,  -- riders with a greater id are still to do
  replan_survey    jsonb,             -- the uploads surveyed so far (services/schedule.FleetSurvey)
  replan_riders    integer not null default 0  -- riders planned (or surveyed) so far
);

-- What is due, found without reading every rider: listings to resume. The riders whose
-- poll has come (or who were never planned) and the riders held by a call are found
-- through the indexes of planned polls and of leases made with the idle reasons
-- (strava_connections_next_poll, strava_connections_leased).
create index strava_connections_listing_unfinished
  on public.strava_connections (rider_id) where sync_listing_page is not null;

alter table public.poll_fleet enable row level security;
alter table public.poll_plan enable row level security;
revoke all on public.poll_fleet, public.poll_plan from anon, authenticated;
grant all on public.poll_fleet, public.poll_plan to service_role;
