-- Routes are cut for the club's eyes only for riders who share (nobody else's are shown):
-- a sync or a history walk of a rider who does not share stores no club route. A rider who
-- turns sharing on is pending from that moment until a pass has cut every route of theirs
-- (services/sharing.py), found among the few pending riders by this index.
alter table public.riders add column club_routes_pending_since timestamptz;

create index riders_club_routes_pending on public.riders (id)
  where club_routes_pending_since is not null;
