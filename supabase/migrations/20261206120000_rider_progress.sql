-- Live progress for the rider's widget, through Supabase Realtime Broadcast sent from the
-- database (realtime.send), and the history walk's estimated completion day.

-- When a progress message was last sent for a rider: at most one a second per rider,
-- whichever process sends it (the last message of a run is always sent).
alter table public.strava_connections
  add column progress_sent_at timestamptz,
  -- The day the rider's history walk should complete on, from the backfill plan at the
  -- walk's last page (null until its first page, and once it is complete).
  add column history_estimated_complete_on date;

-- Send one progress message for a rider, if one is due: on the private channel
-- `rider:<auth_user_id>`, event `progress`. Returns whether it was due (and so sent where
-- Realtime exists). On a Postgres without Supabase's `realtime` schema the gate still
-- runs and nothing is sent: the widget then polls. realtime.send never raises (it turns
-- its own errors into warnings), so a broadcast can never fail the work it reports on.
create or replace function public.send_rider_progress(
  p_rider bigint,
  p_payload jsonb,
  p_finished boolean,
  p_at timestamptz,
  p_min_interval_ms integer
) returns boolean
language plpgsql
set search_path = ''
as $$
declare
  recipient uuid;
begin
  update public.strava_connections c
     set progress_sent_at = p_at
    from public.riders r
   where c.rider_id = p_rider
     and r.id = c.rider_id
     and r.auth_user_id is not null
     and (p_finished
          or c.progress_sent_at is null
          or c.progress_sent_at > p_at  -- a clock set back must not silence a rider
          or c.progress_sent_at <= p_at - make_interval(secs => p_min_interval_ms / 1000.0))
  returning r.auth_user_id into recipient;
  if recipient is null then
    return false;
  end if;
  if to_regprocedure('realtime.send(jsonb, text, text, boolean)') is not null then
    execute 'select realtime.send($1, $2, $3, true)'
      using p_payload, 'progress', 'rider:' || recipient::text;
  end if;
  return true;
end
$$;

-- The service alone sends progress: no client role may (Supabase's default privileges
-- would otherwise let anon and authenticated call any new function in public by RPC).
revoke all on function public.send_rider_progress(bigint, jsonb, boolean, timestamptz, integer)
  from public, anon, authenticated;
grant execute on function public.send_rider_progress(bigint, jsonb, boolean, timestamptz, integer)
  to service_role;

-- Private channels: a signed-in rider may join (receive broadcasts on) their own
-- `rider:<auth_user_id>` topic only, and send on none (no insert policy). Supabase's
-- documented pattern: Realtime checks a join by reading realtime.messages as the user,
-- with realtime.topic() set to the topic asked for. A plain Postgres has no `realtime`
-- schema: nothing to do there.
do $$
begin
  if to_regclass('realtime.messages') is null
     or to_regprocedure('realtime.topic()') is null then
    return;
  end if;
  execute 'drop policy if exists "riders receive their own progress" on realtime.messages';
  execute $policy$
    create policy "riders receive their own progress" on realtime.messages
      for select to authenticated
      using (
        realtime.messages.extension = 'broadcast'
        and (select realtime.topic()) = 'rider:' || (select auth.uid())::text
      )
  $policy$;
end
$$;
