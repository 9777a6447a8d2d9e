-- Operator alerts (services/alerts.py): one row per kind and subject while it is open,
-- so each is sent once, and once more when it clears. Evaluated by at most one call in
-- a few minutes (alert_checks), never by a call that has no time left.
create table public.operator_alerts (
  id             bigint generated always as identity primary key,
  kind           text not null,   -- run_failed, needs_reauth, webhooks_silent, ...
  subject        text not null,   -- what it is about: a run kind, a rider, the day
  title          text not null,   -- one line, in plain words
  detail         text not null,   -- what to do about it
  opened_at      timestamptz not null,
  sent_at        timestamptz,     -- delivered to ALERT_WEBHOOK_URL (null: not yet)
  cleared_at     timestamptz,     -- the condition is gone
  clear_sent_at  timestamptz,     -- the "cleared" message delivered
  attempts       integer not null default 0 check (attempts >= 0)
);
create unique index operator_alerts_open on public.operator_alerts (kind, subject)
  where cleared_at is null;
create index operator_alerts_unsent on public.operator_alerts (opened_at)
  where sent_at is null or (cleared_at is not null and clear_sent_at is null);

create table public.alert_checks (
  id              smallint primary key default 1 check (id = 1),
  checked_at      timestamptz,    -- the last evaluation
  digest_sent_at  timestamptz     -- the last daily digest of what is open
);
insert into public.alert_checks (id) values (1) on conflict do nothing;

alter table public.operator_alerts enable row level security;
alter table public.alert_checks enable row level security;
revoke all on public.operator_alerts, public.alert_checks from anon, authenticated;
grant all on public.operator_alerts, public.alert_checks to service_role;

-- The riders who must reconnect, read by the alerts without reading every rider.
create index strava_connections_needs_reauth
  on public.strava_connections (rider_id) where status = 'needs_reauth';
