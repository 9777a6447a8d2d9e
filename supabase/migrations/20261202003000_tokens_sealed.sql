-- Riders' Strava tokens are sealed at rest by the service (AES-256-GCM under
-- TOKEN_ENCRYPTION_KEY, services/sealing.py); even the ciphertext is no client's business.
--
-- The core schema revoked the client roles' table privileges. A table-level revoke leaves
-- column-level grants in place, though, and PUBLIC is a grantee of its own: revoke both
-- here, so that whatever was granted by hand since (in the dashboard, say), neither anon
-- nor authenticated (nor any role through PUBLIC) can read or write the table or a token
-- column. Row Level Security stays on with no policy, so a grant made later by mistake
-- still shows a client role no row. The service connects as the owner; service_role
-- (trusted servers only) keeps its grant.
revoke all on table public.strava_connections from public, anon, authenticated;
revoke all (access_token, refresh_token) on table public.strava_connections
  from public, anon, authenticated;
alter table public.strava_connections enable row level security;

comment on column public.strava_connections.access_token is
  'Sealed by the service: enc1:<key id>:<AES-256-GCM>, see services/sealing.py. A value '
  'without the enc1: prefix predates sealing and is sealed on first use.';
comment on column public.strava_connections.refresh_token is
  'Sealed by the service: enc1:<key id>:<AES-256-GCM>, see services/sealing.py. A value '
  'without the enc1: prefix predates sealing and is sealed on first use.';
