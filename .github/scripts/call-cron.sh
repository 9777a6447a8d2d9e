#!/usr/bin/env bash
#
# call-cron.sh: drive one of the service's cron endpoints until its backlog is
# done, Strava's rate limit stops it, or it has made MAX_CALLS calls.
#
# Each POST /api/cron/<endpoint> does a bounded amount of work (the service
# stops at its own time budget) and reports what is left, so this loops:
# call, read the counts, call again while `done` is false.
#
# Inputs, all from the environment (the workflow passes them with `env:`; they
# are never pasted into the script text, so no input can inject shell code):
#   SERVICE_URL   base URL of the deployed service: https://..., or
#                 http://localhost / http://127.0.0.1 / http://[::1] for local runs
#   CRON_SECRET   the bearer secret (the service's CRON_SECRET)
#   ENDPOINT      sync-strava | discover | enrich | events | weather
#   LIMIT         optional: riders (sync-strava, discover) or races (enrich)
#                 per call, an integer from 1 to 500; empty = the service's default
#   MAX_CALLS     optional: most calls in this run, 1 to 100 (default 20)
#   ALL           optional, sync-strava only: "true" for "everyone now" (every
#                 rider not synced within SYNC_MIN_INTERVAL_S, whatever their
#                 planned poll); empty or "false": the riders whose poll is due
#   GITHUB_STEP_SUMMARY  file for the markdown job summary (default /dev/null)
#   GITHUB_ACTIONS       "true" on GitHub's runners (set by Actions itself)
# Knobs with safe defaults (the tests turn them down to run fast):
#   CRON_RETRIES (3), CRON_RETRY_DELAY_S (5), CRON_MAX_TIME_S (60), CRON_PAUSE_S (1)
#
# Exit status:
#   0  done, rate limited (the window resets by itself), stalled, or MAX_CALLS reached
#   1  a call failed (transport error, non-200, answer not the expected JSON),
#      or every rider/race taken in this run failed
#   2  bad input or a missing tool; nothing was sent
#
# Where it runs: under GitHub Actions (GITHUB_ACTIONS=true) errors, warnings
# and notes are workflow commands (::error etc., shown as annotations) and the
# hints speak of repository secrets. Anywhere else (a crontab, a shell) every
# line starts with an ISO 8601 UTC timestamp, errors and warnings are plain
# "error: ..." / "warning: ..." lines, and the hints speak of the environment.
# The output helpers below are the only place that knows the difference.
#
# What it prints: COUNTS ONLY. Actions logs of a public repository are public,
# so neither the logs nor the summary ever show the secret, the URL, rider or
# activity ids, error texts or the response body. On a non-200 it shows the
# status code and the service's short error `code` token, nothing else.
# Do not add `set -x`: the trace would print the Authorization header.

{ set +x; } 2>/dev/null # even under `bash -x`, never trace the secret
set -euo pipefail
umask 077 # the header file below holds the secret

readonly DEFAULT_MAX_CALLS=20
summary_file=${GITHUB_STEP_SUMMARY:-/dev/null}

# --- output helpers: the one place that differs inside and outside Actions --

if [[ ${GITHUB_ACTIONS:-} == true ]]; then
  readonly in_actions=true
  readonly user_agent='club-cron-caller (GitHub Actions)'
  readonly our_secret='the CRON_SECRET repository secret'
else
  readonly in_actions=false
  readonly user_agent='club-cron-caller'
  readonly our_secret='the CRON_SECRET in this environment'
fi

# log LINE...: one line of the run's log. Actions stamps each line itself;
# anywhere else (a crontab appending to a file) the line carries the time.
log() {
  if [[ $in_actions == true ]]; then
    printf '%s\n' "$*"
  else
    printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"
  fi
}

# annotate LEVEL TITLE MESSAGE: LEVEL is error, warning or notice. An
# annotation on the run page under Actions; a plain log line elsewhere.
annotate() {
  if [[ $in_actions == true ]]; then
    printf '::%s title=%s::%s\n' "$1" "$2" "$3"
  else
    local level=$1
    [[ $level != notice ]] || level=note
    log "$level: $3"
  fi
}
fail() { annotate error "$1" "$2"; }
warn() { annotate warning "$1" "$2"; }
note() { annotate notice "$1" "$2"; }

# where_to_set NAME: how to provide the setting NAME, for hints.
where_to_set() {
  if [[ $in_actions == true ]]; then
    printf 'a repository secret; see README.md, "Deploying"'
  else
    printf 'set %s in the environment, e.g. from a file the crontab sources' "$1"
  fi
}

summary() { printf '%s\n' "$@" >>"$summary_file"; }

# A rejected input: say what is expected (never echo the value: it may be
# hostile, e.g. contain workflow commands), note it in the summary, exit 2.
reject() {
  fail "call-cron: bad input" "$1"
  summary "## Cron call not made" "" "Input rejected: $1"
  exit 2
}

# is_int VALUE MIN MAX: VALUE is a plain decimal integer within [MIN, MAX].
is_int() {
  [[ $1 =~ ^(0|[1-9][0-9]{0,5})$ ]] && (($1 >= $2 && $1 <= $3))
}

trim() {
  local s=$1
  s=${s#"${s%%[![:space:]]*}"}
  s=${s%"${s##*[![:space:]]}"}
  printf '%s' "$s"
}

# --- validate every input before anything is sent -------------------------

for tool in curl jq; do
  command -v "$tool" >/dev/null 2>&1 ||
    reject "$tool is required but not installed (GitHub's ubuntu runners have it; elsewhere install it, e.g. apt-get install $tool)."
done

endpoint=$(trim "${ENDPOINT:-}")
case $endpoint in
sync-strava | discover | enrich | events | weather) ;;
*) reject "ENDPOINT must be one of: sync-strava, discover, enrich, events, weather." ;;
esac
# What one unit of work is, for messages.
if [[ $endpoint == enrich ]]; then
  unit=races
elif [[ $endpoint == weather ]]; then
  unit=activities
elif [[ $endpoint == events ]]; then
  unit=objects
else
  unit=riders
fi

limit=$(trim "${LIMIT:-}")
if [[ -n $limit ]] && ! is_int "$limit" 1 500; then
  reject "LIMIT must be empty (the service's default) or an integer from 1 to 500."
fi

everyone=$(trim "${ALL:-}")
case $everyone in
"" | false) everyone=false ;;
true)
  [[ $endpoint == sync-strava ]] || reject "ALL applies to sync-strava only; leave it empty for $endpoint."
  ;;
*) reject "ALL must be empty, true or false." ;;
esac

max_calls=$(trim "${MAX_CALLS:-}")
[[ -n $max_calls ]] || max_calls=$DEFAULT_MAX_CALLS
is_int "$max_calls" 1 100 || reject "MAX_CALLS must be an integer from 1 to 100."

retries=${CRON_RETRIES:-3}
retry_delay=${CRON_RETRY_DELAY_S:-5}
max_time=${CRON_MAX_TIME_S:-60}
pause=${CRON_PAUSE_S:-1}
is_int "$retries" 0 10 || reject "CRON_RETRIES must be an integer from 0 to 10."
is_int "$retry_delay" 0 120 || reject "CRON_RETRY_DELAY_S must be an integer from 0 to 120."
is_int "$max_time" 1 900 || reject "CRON_MAX_TIME_S must be an integer from 1 to 900."
is_int "$pause" 0 60 || reject "CRON_PAUSE_S must be an integer from 0 to 60."

base_url=$(trim "${SERVICE_URL:-}")
[[ -n $base_url ]] || reject "SERVICE_URL is not set ($(where_to_set SERVICE_URL))."
while [[ $base_url == */ ]]; do base_url=${base_url%/}; done
# https:// for real deployments; plain http only to this machine. No user:password@
# (the bearer authenticates), no query, no fragment, no spaces.
url_path='(/[A-Za-z0-9._~/-]*)?'
if ! [[ $base_url =~ ^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?${url_path}$ ||
  $base_url =~ ^http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?${url_path}$ ]]; then
  reject "SERVICE_URL must be the service's base URL starting with https:// (http:// only for localhost or 127.0.0.1), without credentials, query or fragment."
fi

[[ -n ${CRON_SECRET:-} ]] || reject "CRON_SECRET is not set ($(where_to_set CRON_SECRET))."
[[ ! $CRON_SECRET =~ [[:cntrl:]] ]] || reject "CRON_SECRET contains control characters (a stray newline?)."

# --- prepare the request --------------------------------------------------

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The bearer goes to curl through a file (-H @file), so it is never on a
# command line (visible in `ps`), and the variable is dropped so that no child
# process inherits it.
printf 'Authorization: Bearer %s\n' "$CRON_SECRET" >"$work/headers"
unset CRON_SECRET

url="$base_url/api/cron/$endpoint"
query=()
[[ -z $limit ]] || query+=("limit=$limit")
[[ $everyone != true ]] || query+=("all=true")
if ((${#query[@]} > 0)); then
  url="$url?$(
    IFS='&'
    printf '%s' "${query[*]}"
  )"
fi

# Short, fixed meanings for curl's exit codes: curl's own message would name
# the host, and the logs are public.
curl_reason() {
  case $1 in
  6) echo "could not resolve the host" ;;
  7) echo "could not connect" ;;
  28) echo "timed out after ${max_time}s" ;;
  35 | 51 | 58 | 59 | 60 | 77 | 83 | 90 | 91) echo "TLS or certificate problem" ;;
  52) echo "empty reply from the server" ;;
  55 | 56) echo "the connection broke while sending or receiving" ;;
  *) echo "curl exit code $1" ;;
  esac
}

# What a status usually means for a newcomer (our own words, not the body).
# http_hint STATUS CODE: CODE is empty when the answer was not the service's
# JSON error, i.e. something in front of it (a proxy, Vercel) answered.
http_hint() {
  case $1:${2:+code} in
  401:code) echo "$our_secret does not match the service's CRON_SECRET" ;;
  401: | 403:) echo "not the service's own answer: Vercel Deployment Protection? Use the production domain as SERVICE_URL" ;;
  400:*) echo "the service rejected the request: is LIMIT within 1..500?" ;;
  404:*) echo "no such endpoint: is SERVICE_URL the service's base URL, and is it deployed?" ;;
  503:code) echo "the service has no CRON_SECRET set, or is not ready" ;;
  5??:*) echo "the service or its host failed; its logs tell more" ;;
  *) echo "" ;;
  esac
}

# jq: the names of the fields the loop relies on that are missing or mistyped.
# shellcheck disable=SC2016  # $k is a jq variable, not a shell expansion
readonly JQ_BAD_FIELDS='
  if type != "object" then "the whole answer (not a JSON object)" else
    [ ("processed", "succeeded", "failed", "skipped", "remaining") as $k
      | select((.[$k] | type) != "number" or .[$k] < 0 or .[$k] != (.[$k] | floor)) | $k ]
    + [ ("done", "rate_limited") as $k | select((.[$k] | type) != "boolean") | $k ]
    | join(", ")
  end'

# jq: what is shown, one field a line. Only numbers, booleans and tokens that
# match a strict pattern get through: never names or error texts.
# shellcheck disable=SC2016  # \(...) and $rl are jq syntax, not shell expansions
readonly JQ_FIELDS='
  def n: if type == "number" and . >= 0 then floor | tostring else "?" end;
  def token: if type == "string" and test("^[a-z][a-z0-9_]{0,31}$") then . else "other" end;
  (if (.rate_limit | type) == "object" then .rate_limit else {} end) as $rl
  | [ .processed, .succeeded, .failed, .skipped, .remaining, .done, .rate_limited,
      (.duration_ms | n),
      (if ($rl.resets_at | type) == "string" then $rl.resets_at else "" end),
      (if ($rl.limit_15min | type) == "number" then
         "15 min \($rl.usage_15min | n)/\($rl.limit_15min | n), day \($rl.usage_daily | n)/\($rl.limit_daily | n); "
         + "reads: 15 min \($rl.read_usage_15min | n)/\($rl.read_limit_15min | n), day \($rl.read_usage_daily | n)/\($rl.read_limit_daily | n)"
       else "" end),
      ([ (if (.items | type) == "array" then .items[] else empty end)
         | (if type == "object" then .status else null end) | token ]
       | group_by(.) | map("\(.[0]) \(length)") | join(", ")),
      (if .idle_reason == null then "" else (.idle_reason | token) end),
      (if (.next_due_at | type) == "string" then .next_due_at else "" end)
    ] | map(tostring | gsub("[[:cntrl:]]"; " "))[]'

# --- the loop -------------------------------------------------------------

tot_processed=0 tot_succeeded=0 tot_failed=0 tot_skipped=0
last_remaining=0 rate_limited=false resets_at="" usage=""
calls=0 answered=0 outcome="" failure="" hint=""
rows=()

# One call. Sets the per-call variables, or sets $failure and returns 1.
call_once() {
  local http_code curl_rc code bad
  # curl's own error messages name the host, so they go to a file that is
  # never printed; curl_reason() says what went wrong instead.
  # No --fail: an HTTP error is then no curl error, so --retry-all-errors retries only
  # what cannot be the answer (no connection, a timeout, a broken transfer) and --retry
  # the transient statuses (408, 429, 5xx). A 401 or 403 will not change by asking
  # again: its hint comes at once.
  set +e
  http_code=$(curl -sS \
    --retry "$retries" --retry-all-errors --retry-delay "$retry_delay" \
    --max-time "$max_time" --connect-timeout 20 \
    -H @"$work/headers" -H 'Accept: application/json' \
    -H 'Content-Type: application/json' --data-raw '{}' \
    -A "$user_agent" \
    -o "$work/body" -w '%{http_code}' \
    -- "$url" 2>"$work/curl.err")
  curl_rc=$?
  set -e
  [[ $http_code =~ ^[0-9]{3}$ ]] || http_code=000

  if [[ $http_code == 000 ]]; then
    failure="no answer ($(curl_reason "$curl_rc"), after $retries retries)"
    return 1
  fi
  if [[ $http_code != 200 ]]; then
    code=$(jq -r '.error.code? // empty | strings' "$work/body" 2>/dev/null || true)
    [[ $code =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || code=""
    failure="HTTP $http_code, error code ${code:-(none)}"
    hint=$(http_hint "$http_code" "$code")
    return 1
  fi
  if ((curl_rc != 0)); then
    failure="HTTP 200 but the transfer failed ($(curl_reason "$curl_rc"))"
    return 1
  fi
  if ! jq -e . "$work/body" >/dev/null 2>&1; then
    failure="HTTP 200 but the answer is not valid JSON"
    return 1
  fi
  bad=$(jq -r "$JQ_BAD_FIELDS" "$work/body" 2>/dev/null) || bad="the whole answer"
  if [[ -n $bad ]]; then
    failure="HTTP 200 but the answer lacks valid fields: $bad"
    return 1
  fi
  # One field a line (jq turned any control character into a space).
  local -a f
  mapfile -t f < <(jq -r "$JQ_FIELDS" "$work/body" 2>/dev/null || true)
  if ((${#f[@]} != 13)); then
    failure="HTTP 200 but the answer could not be read"
    return 1
  fi
  c_processed=${f[0]} c_succeeded=${f[1]} c_failed=${f[2]} c_skipped=${f[3]}
  c_remaining=${f[4]} c_done=${f[5]} c_rate_limited=${f[6]} c_duration=${f[7]}
  c_resets=${f[8]} c_usage=${f[9]} c_statuses=${f[10]}
  c_idle=${f[11]} c_next_due=${f[12]}
  # Belt and braces: whatever jq printed, only plain integers go on.
  local v
  for v in "$c_processed" "$c_succeeded" "$c_failed" "$c_skipped" "$c_remaining"; do
    if ! [[ $v =~ ^[0-9]{1,15}$ ]]; then
      failure="HTTP 200 but a count is not a plain integer"
      return 1
    fi
  done
  [[ $c_duration =~ ^[0-9]{1,15}$ ]] || c_duration="?"
  # Only a well-formed ISO 8601 UTC/offset time is shown.
  local iso_re='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:?[0-9]{2})$'
  [[ $c_resets =~ $iso_re ]] || c_resets=""
  [[ $c_next_due =~ $iso_re ]] || c_next_due=""
  [[ $c_idle =~ ^[a-z][a-z0-9_]{0,31}$ ]] || c_idle=""
  local usage_re='^[0-9a-z?/,:; ]*$' statuses_re='^[0-9a-z_, ]*$'
  [[ $c_usage =~ $usage_re ]] || c_usage=""
  [[ $c_statuses =~ $statuses_re ]] || c_statuses=""
  return 0
}

yes_no() { if [[ $1 == true ]]; then echo yes; else echo no; fi; }

# idle_words REASON: why a call took nothing, in words (the service's idle_reason).
idle_words() {
  case $1 in
  none_due) echo "nothing was due" ;;
  held_by_another_call) echo "what is due is held by another call (a manual run, a rider's Sync now)" ;;
  backing_off) echo "what is due is backing off after failures" ;;
  budget_share) echo "this kind of work has used its share of the Strava budget for now" ;;
  rate_limited) echo "Strava's rate limit is reached" ;;
  source_down) echo "the weather source is failing; calls to it are paused" ;;
  *) echo "reason: $1" ;;
  esac
}

# The last idle call's reason and next due time, for the verdict.
last_idle="" last_next_due=""

who=""
[[ $everyone != true ]] || who=", everyone now"
log "Calling /api/cron/$endpoint (limit: ${limit:-service default}$who, at most $max_calls calls)"
while ((calls < max_calls)); do
  if ((calls > 0)) && ((pause > 0)); then sleep "$pause"; fi
  calls=$((calls + 1))
  if ! call_once; then
    outcome=failed
    log "call $calls: FAILED: $failure"
    [[ -z $hint ]] || log "  hint: $hint"
    break
  fi

  answered=$((answered + 1))
  tot_processed=$((tot_processed + c_processed))
  tot_succeeded=$((tot_succeeded + c_succeeded))
  tot_failed=$((tot_failed + c_failed))
  tot_skipped=$((tot_skipped + c_skipped))
  last_remaining=$c_remaining
  [[ -z $c_resets ]] || resets_at=$c_resets
  [[ -z $c_usage ]] || usage=$c_usage

  log "call $calls: processed=$c_processed succeeded=$c_succeeded failed=$c_failed" \
    "skipped=$c_skipped remaining=$c_remaining done=$c_done rate_limited=$c_rate_limited" \
    "duration_ms=$c_duration statuses=[${c_statuses}]" \
    ${c_idle:+"idle_reason=$c_idle next_due_at=${c_next_due:-none}"}
  if [[ -n $c_idle ]]; then
    last_idle=$c_idle last_next_due=$c_next_due
    log "  took nothing: $(idle_words "$c_idle"); next due: ${c_next_due:-nothing planned}"
  else
    last_idle="" last_next_due=""
  fi
  rows+=("| $calls | $c_processed | $c_succeeded | $c_failed | $c_skipped | $c_remaining | $(yes_no "$c_rate_limited") | $c_duration | ${c_statuses:--} |")

  if [[ $c_done == true ]]; then
    outcome="done"
    break
  fi
  if [[ $c_rate_limited == true ]]; then
    rate_limited=true
    outcome=rate_limited
    break
  fi
  # Nothing taken although work is due: the rest is leased by another call
  # (a manual run, a rider's Sync now) or backing off. Calling again now
  # would only repeat that; the next scheduled run picks it up.
  if ((c_processed == 0)); then
    outcome=stalled
    break
  fi
done
[[ -n $outcome ]] || outcome=max_calls

# --- verdict, logs and job summary ----------------------------------------

idle_note=""
if [[ -n $last_idle ]]; then
  idle_note=" The last call took nothing: $(idle_words "$last_idle") (next due: ${last_next_due:-nothing planned})."
fi
exit_code=0
case $outcome in
done) verdict="done: nothing due is left.$idle_note" ;;
rate_limited) verdict="stopped by Strava's rate limit; a later run continues once the window resets." ;;
stalled)
  if [[ -n $idle_note ]]; then
    verdict="stopped: $last_remaining $unit are due but the last call took none.$idle_note"
  else
    verdict="stopped: the last call took no work although $last_remaining $unit are due (held by another call, or backing off)."
  fi
  ;;
max_calls) verdict="stopped after $max_calls calls with $last_remaining $unit still due; the next run continues." ;;
failed)
  verdict="failed at call $calls: $failure${hint:+ ($hint)}."
  exit_code=1
  ;;
esac

log "Totals: calls=$calls processed=$tot_processed succeeded=$tot_succeeded failed=$tot_failed" \
  "skipped=$tot_skipped remaining=$last_remaining outcome=$outcome"

if [[ $outcome == failed ]]; then
  fail "Cron $endpoint failed" "Call $calls to /api/cron/$endpoint failed: $failure${hint:+ ($hint)}"
elif ((tot_failed > 0 && tot_succeeded == 0)) && [[ $rate_limited != true ]]; then
  # Everything taken failed: something is broken (tokens, database, Strava
  # access), not a passing hiccup. Rate-limited runs are spared: the budget,
  # not the service, stopped them.
  exit_code=1
  verdict="$verdict Every one of the $tot_failed $unit taken failed."
  fail "Cron $endpoint: all failed" "All $tot_failed $unit taken in this run failed; see /api/admin/status."
elif ((tot_failed > 0)); then
  warn "Cron $endpoint: some failed" "$tot_failed of $tot_processed $unit taken failed ($tot_succeeded succeeded); see /api/admin/status."
fi
if [[ $rate_limited == true ]]; then
  warn "Strava rate limit" "Strava's rate limit stopped /api/cron/$endpoint; the window resets at ${resets_at:-an unknown time}. Not a failure: a later run continues."
elif [[ $outcome == stalled || $outcome == max_calls ]]; then
  note "Cron $endpoint" "$verdict"
fi

summary "## Cron \`$endpoint\`" ""
if ((${#rows[@]} > 0)); then
  summary "| call | processed | succeeded | failed | skipped | remaining | rate limited | duration ms | items by status |" \
    "| ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | --- |" \
    "${rows[@]}" ""
fi
if ((answered > 0)); then
  still_due="$last_remaining $unit still due after the last answer"
else
  still_due="no answer, so what is still due is unknown"
fi
summary "**Totals:** $calls call(s), processed $tot_processed, succeeded $tot_succeeded, failed $tot_failed, skipped $tot_skipped; $still_due." "" \
  "**Outcome:** $verdict" ""
[[ -z $resets_at ]] || summary "**Strava rate-limit window resets at:** $resets_at (UTC)" ""
[[ -z $usage ]] || summary "**Strava usage (last answer):** $usage" ""
[[ $exit_code == 0 ]] || summary "See \`/api/admin/status\` (with the cron bearer) for per-rider details; they are kept out of this public log."

exit "$exit_code"
