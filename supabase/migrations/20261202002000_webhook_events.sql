-- Strava's push subscription (one per application) and the events it delivers (issue 9).
-- Events are hints: each names an activity or athlete to look at again with Strava; nothing
-- of an event's body is written as data.

create table public.strava_push_subscription (
  id               smallint primary key default 1 check (id = 1),  -- one per application
  subscription_id  bigint not null,
  callback_url     text not null,
  created_at       timestamptz not null,
  -- When Strava last listed it (GET /push_subscriptions), and since when it did not.
  confirmed_at     timestamptz,
  missing_since    timestamptz
);

create table public.strava_webhook_events (
  id               bigint generated always as identity primary key,
  -- The event's identity (subscription, object, aspect, event_time, updates): Strava's
  -- repeated deliveries of one event share it, and store nothing new.
  delivery_key     text not null unique,
  subscription_id  bigint not null,
  object_type      text not null check (object_type in ('activity', 'athlete')),
  object_id        bigint not null,
  aspect_type      text not null check (aspect_type in ('create', 'update', 'delete')),
  owner_id         bigint not null,
  rider_id         bigint not null references public.riders (id) on delete cascade,
  event_time       timestamptz not null,
  updates          jsonb not null default '{}'::jsonb,
  received_at      timestamptz not null,
  status           text not null default 'pending' check (status in ('pending', 'done', 'failed')),
  -- What processing found: stored, removed, unchanged, covered (a listing stored it since),
  -- revoked, still_authorized, ignored_*; or the failure's reason.
  outcome          text,
  attempts         integer not null default 0 check (attempts >= 0),
  attempted_at     timestamptz,     -- the last claim: the per-athlete hourly cap counts these
  next_attempt_at  timestamptz,
  processed_at     timestamptz,
  last_error       text,
  lease_token      uuid,
  lease_expires_at timestamptz
);

create index strava_webhook_events_pending
  on public.strava_webhook_events (rider_id, object_type, object_id)
  where status = 'pending';
create index strava_webhook_events_received on public.strava_webhook_events (received_at);
create index strava_webhook_events_attempted
  on public.strava_webhook_events (rider_id, attempted_at)
  where attempted_at is not null;

-- Deliveries refused without storing anything (malformed, another subscription, an athlete
-- nobody connected, an athlete's flood): counted per hour and reason for the status.
create table public.strava_webhook_ignored (
  hour    timestamptz not null,
  reason  text not null,
  count   integer not null default 0 check (count >= 0),
  primary key (hour, reason)
);

-- A rider who deauthorizes keeps a row saying so ('revoked'), without tokens.
alter table public.strava_connections alter column access_token drop not null;
alter table public.strava_connections alter column refresh_token drop not null;

-- The events cron's runs are logged like the others.
alter table public.cron_runs drop constraint if exists cron_runs_kind_check;
alter table public.cron_runs add constraint cron_runs_kind_check
  check (kind in ('sync-strava', 'discover', 'enrich', 'sync-now', 'weather', 'events'));

alter table public.strava_push_subscription enable row level security;
alter table public.strava_webhook_events enable row level security;
alter table public.strava_webhook_ignored enable row level security;
revoke all on public.strava_push_subscription, public.strava_webhook_events,
              public.strava_webhook_ignored from anon, authenticated;
grant all on public.strava_push_subscription, public.strava_webhook_events,
             public.strava_webhook_ignored to service_role;
