-- The status counts riders by state without reading every rider (models/status.py):
-- riders and connections by status are kept here by triggers; the states that change
-- with the clock (held by a call, paused, backing off, due) are counted from indexes of
-- the few riders in them, and "up to date" is what is left. If the row is missing (a
-- table emptied by hand), the service counts once and puts it back.
create table public.rider_counts (
  id           smallint primary key default 1 check (id = 1),
  riders       integer not null default 0,
  active       integer not null default 0,
  needs_reauth integer not null default 0,
  revoked      integer not null default 0
);

create function public.rider_counts_rider_changed() returns trigger
language plpgsql set search_path = public as $$
begin
  update rider_counts set riders = riders + case tg_op when 'INSERT' then 1 else -1 end
   where id = 1;
  return null;
end $$;

create trigger riders_counted
  after insert or delete on public.riders
  for each row execute function public.rider_counts_rider_changed();

create function public.rider_counts_connection_changed() returns trigger
language plpgsql set search_path = public as $$
declare
  gone text := case when tg_op in ('UPDATE', 'DELETE') then old.status end;
  came text := case when tg_op in ('INSERT', 'UPDATE') then new.status end;
begin
  update rider_counts set
    active = active + (came is not distinct from 'active')::int
                    - (gone is not distinct from 'active')::int,
    needs_reauth = needs_reauth + (came is not distinct from 'needs_reauth')::int
                                - (gone is not distinct from 'needs_reauth')::int,
    revoked = revoked + (came is not distinct from 'revoked')::int
                      - (gone is not distinct from 'revoked')::int
   where id = 1;
  return null;
end $$;

create trigger strava_connections_counted
  after insert or delete on public.strava_connections
  for each row execute function public.rider_counts_connection_changed();
create trigger strava_connections_counted_by_status
  after update of status on public.strava_connections
  for each row when (old.status is distinct from new.status)
  execute function public.rider_counts_connection_changed();

insert into public.rider_counts (id, riders, active, needs_reauth, revoked)
select 1, (select count(*) from public.riders),
       count(*) filter (where status = 'active'),
       count(*) filter (where status = 'needs_reauth'),
       count(*) filter (where status = 'revoked')
  from public.strava_connections;

-- The few riders in each state the clock decides (those backing off are found through
-- strava_connections_backing_off, made with the idle reasons).
create index riders_paused on public.riders (id) where not auto_sync;
create index strava_connections_never_synced
  on public.strava_connections (rider_id) where last_synced_at is null;

alter table public.rider_counts enable row level security;
revoke all on public.rider_counts from anon, authenticated;
grant all on public.rider_counts to service_role;
