-- An incremental listing that one call could not finish (its time budget ran out, or a
-- page failed) resumes at its next page with the same `after`, instead of starting over:
-- a rider with more new activities than one call can list still makes progress.
alter table public.strava_connections
  add column sync_listing_after  timestamptz,   -- the `after` of the listing in progress
  add column sync_listing_page   integer check (sync_listing_page >= 1),  -- its next page
  add column sync_listing_newest timestamptz;   -- the newest start_date it has stored
