/* The operator's dashboard: draws GET /api/admin/status. No build step, no library.
   The cron bearer is kept in sessionStorage only (never in the URL, never in a cookie)
   and sent only to this page's own origin (the CSP's connect-src 'self' enforces it). */
(function () {
  "use strict";

  var KEY = "clubsync.bearer";
  var CLASSES = ["sync_now", "incremental", "enrich_recent", "discover", "enrich_old"];
  var CLASS_NAMES = {
    sync_now: "Sync now", incremental: "Incremental sync", enrich_recent: "Recent races",
    discover: "History discovery", enrich_old: "Older races",
  };
  // Why a call took nothing (the service's idle_reason), in plain words.
  var IDLE_WORDS = {
    none_due: "nothing was due",
    held_by_another_call: "what is due is held by another call",
    backing_off: "what is due is backing off after failures",
    budget_share: "its share of the Strava budget is used for now",
    rate_limited: "Strava's rate limit is reached",
    source_down: "the weather source is failing",
  };
  var WEBHOOK_STATES = {
    none: "no subscription", missing: "gone at Strava", unconfirmed: "not confirmed",
    waiting_for_first_event: "waiting for its first event", silent: "silent", healthy: "healthy",
  };
  var EVERYONE_MAX_CALLS = 20;
  var WINDOW_MS = 15 * 60 * 1000;
  var $ = function (id) { return document.getElementById(id); };
  var status = null;
  var sortKey = "rider_id";
  var sortDir = 1;
  var riderOffset = 0; // the rider list's page (riders.list.offset)
  var names = {}; // rider id -> name, from what the status lists

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function time(iso) {
    return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" }) : "—";
  }
  function clock(iso) {
    return iso ? new Date(iso).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" }) : "—";
  }
  function day(iso) {
    return iso ? new Date(iso + (iso.length === 10 ? "T12:00:00Z" : "")).toLocaleDateString(
      undefined, { dateStyle: "medium" }) : "—";
  }
  function words(text) { return String(text).replace(/_/g, " "); }
  function who(id) {
    var name = names[id];
    return name ? name + " (rider " + id + ")" : "Rider " + id;
  }
  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  function bearer() { return window.sessionStorage.getItem(KEY); }

  function notice(text) {
    $("notice").textContent = text || "";
    $("notice").hidden = !text;
  }
  function say(text) { $("action-result").textContent = text; }

  function api(method, path, body) {
    var headers = { Authorization: "Bearer " + bearer() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (json) {
        return { status: response.status, body: json };
      });
    });
  }

  function signedOut(message) {
    window.sessionStorage.removeItem(KEY);
    $("dashboard").hidden = true;
    $("session").hidden = true;
    $("signin").hidden = false;
    notice(message);
    $("bearer").focus();
  }

  function load() {
    var path = "/api/admin/status" + (riderOffset ? "?riders_offset=" + riderOffset : "");
    return api("GET", path).then(function (answer) {
      if (answer.status === 401) {
        signedOut("The service refused that bearer (401 unauthorized). Enter exactly the " +
          "CRON_SECRET set on the server.");
        return;
      }
      if (answer.status === 503) {
        signedOut((answer.body.error && answer.body.error.message) || "The service is unavailable (503).");
        return;
      }
      if (answer.status !== 200) {
        notice("The status could not be read (" + answer.status + ").");
        return;
      }
      notice("");
      status = answer.body;
      $("signin").hidden = true;
      $("session").hidden = false;
      $("dashboard").hidden = false;
      draw(status);
    }, function () {
      notice("The service cannot be reached.");
    });
  }

  function numbers(target, pairs) {
    var dl = $(target);
    dl.textContent = "";
    pairs.forEach(function (pair) {
      var box = el("div");
      box.setAttribute("data-key", pair[2]);
      box.appendChild(el("dt", null, pair[0]));
      box.appendChild(el("dd", null, pair[1]));
      dl.appendChild(box);
    });
  }

  function learnNames(s) {
    names = {};
    s.riders.list.items.forEach(function (r) { if (r.name) names[r.rider_id] = r.name; });
    s.stuck.items.forEach(function (i) { if (i.rider_name) names[i.rider_id] = i.rider_name; });
  }

  // The Strava application's athlete capacity: "8 of 10 athletes".
  function athletes(a) {
    if (!a) return "—";
    if (a.capacity === null) return a.connected + " athletes (capacity not set)";
    return a.connected + " of " + a.capacity + " athletes" + (a.full ? " (full)" : "");
  }

  function draw(s) {
    learnNames(s);
    $("generated").textContent = "as of " + time(s.generated_at);
    var r = s.riders;
    numbers("rider-numbers", [
      ["Strava athletes", athletes(s.athletes), "athletes"],
      ["Riders", r.total, "total"],
      ["Due now", r.due_now, "due_now"],
      ["Never synced", r.never_synced, "never_synced"],
    ].concat(Object.keys(r.by_connection_status).map(function (k) {
      return [k.replace(/_/g, " "), r.by_connection_status[k], "connection." + k];
    })).concat(Object.keys(r.by_sync_state).map(function (k) {
      return ["sync: " + k.replace(/_/g, " "), r.by_sync_state[k], "sync." + k];
    })));
    everyoneCost(s);
    var h = s.backlog.history;
    var est = s.backlog.estimate;
    var plan = s.plan.backlog;
    numbers("backlog-numbers", [
      ["Histories incomplete", h.riders_incomplete, "riders_incomplete"],
      ["Walking", h.riders_walking, "riders_walking"],
      ["Not started", h.riders_not_started, "riders_not_started"],
      ["Waiting on reconnect", h.waiting_on_reconnect, "waiting_on_reconnect"],
      ["Activities found", h.activities_found, "activities_found"],
      ["Requests still needed", plan.requests, "backlog_requests"],
      ["Expected completion", plan.requests === 0 ? "complete" : plan.completes_on ? day(plan.completes_on) : "—",
        "completes_on"],
      ["Estimate", est.hours === null ? "—" : est.hours + " h", "hours"],
    ]);
    var races = s.backlog.races;
    numbers("race-numbers", [
      ["Races", races.total, "races.total"],
      ["Waiting", races.waiting, "races.waiting"],
      ["Pending", races.pending, "races.pending"],
      ["Failed, retrying", races.failed_retrying, "races.failed_retrying"],
      ["Failed", races.failed, "races.failed"],
      ["Detailed", races.done, "races.done"],
    ]);
    gauges(s.rate_limit);
    chart(s.requests.windows, s.generated_at, s.rate_limit);
    table(s);
    webhooks(s.webhooks);
    weather(s.weather);
    alerts(s.alerts);
    runs(s.runs);
    stuck(s.stuck);
    attention(s);
  }

  // --- everyone now ------------------------------------------------------------------

  function budgetLeft(rate) {
    return {
      window: Math.max(0, Math.min(rate.limit_15min - rate.usage_15min,
        rate.read_limit_15min - rate.read_usage_15min)),
      day: Math.max(0, Math.min(rate.limit_daily - rate.usage_daily,
        rate.read_limit_daily - rate.read_usage_daily)),
    };
  }

  function everyoneCost(s) {
    var e = s.riders.everyone_now;
    var left = budgetLeft(s.rate_limit);
    $("everyone-cost").textContent = e.riders
      ? plural(e.riders, "rider is", "riders are") + " not synced within SYNC_MIN_INTERVAL_S: " +
        "syncing them now costs about " + plural(e.requests, "Strava request", "Strava requests") +
        " (" + left.window + " left in this window, " + left.day + " today)."
      : "Every rider was synced within SYNC_MIN_INTERVAL_S (or is paused, held or backing off): " +
        "nothing for everyone now to do.";
    $("everyone").disabled = !e.riders;
  }

  function everyoneNow() {
    if (!status) return;
    var e = status.riders.everyone_now;
    var left = budgetLeft(status.rate_limit);
    var text = "Sync everyone now?\n\n" + plural(e.riders, "rider", "riders") +
      " not synced within SYNC_MIN_INTERVAL_S will be synced whatever their plan: about " +
      plural(e.requests, "Strava request", "Strava requests") +
      " (a listing each, more for a rider with over 200 new activities).\n\n" +
      left.window + " requests are left in this 15-minute window and " + left.day +
      " today; what does not fit waits for the next window, within the budget's shares.";
    if (!window.confirm(text)) return;
    $("everyone").disabled = true;
    everyoneCall(1, { succeeded: 0, failed: 0 });
  }

  function everyoneCall(n, totals) {
    api("POST", "/api/cron/sync-strava?all=true").then(function (answer) {
      var b = answer.body || {};
      if (answer.status === 401) { signedOut("The bearer is no longer accepted (401)."); return; }
      if (answer.status !== 200) {
        say("Everyone now: call " + n + " failed (" + answer.status + "): " +
          ((b.error && b.error.message) || "no answer") + ".");
        $("everyone").disabled = false;
        return;
      }
      totals.succeeded += b.succeeded;
      totals.failed += b.failed;
      var sofar = "Everyone now: " + plural(totals.succeeded, "rider", "riders") + " synced" +
        (totals.failed ? ", " + totals.failed + " failed" : "");
      if (!b.done && !b.rate_limited && b.processed > 0 && n < EVERYONE_MAX_CALLS) {
        say(sofar + ", " + b.remaining + " still due (call " + n + ")…");
        everyoneCall(n + 1, totals);
        return;
      }
      var end = b.done ? "done." : b.rate_limited ? "stopped by Strava's rate limit until " +
        clock(b.rate_limit && b.rate_limit.resets_at) + "." : b.remaining + " still due.";
      if (b.idle_reason) {
        end += " The last call took nothing: " + (IDLE_WORDS[b.idle_reason] || words(b.idle_reason)) +
          (b.next_due_at ? " (next due " + clock(b.next_due_at) + ")." : ".");
      }
      say(sofar + "; " + end);
      load();
    }, function () {
      say("Everyone now: the service cannot be reached.");
      $("everyone").disabled = false;
    });
  }

  // --- the budget --------------------------------------------------------------------

  function gauge(label, id, used, limit, note) {
    var box = el("div", "gauge");
    var l = el("label", null, label);
    l.htmlFor = id;
    var meter = el("meter");
    meter.id = id;
    meter.min = 0;
    meter.max = limit;
    meter.value = used;
    meter.high = limit * 0.9;
    meter.low = limit * 0.6;
    meter.optimum = 0;
    meter.textContent = used + " of " + limit;
    box.appendChild(l);
    box.appendChild(meter);
    var text = el("div", "gauge-text");
    text.appendChild(el("strong", null, used + " used"));
    text.appendChild(document.createTextNode(", "));
    text.appendChild(el("strong", null, Math.max(0, limit - used) + " left"));
    text.appendChild(document.createTextNode(" of " + limit + (note ? " · " + note : "")));
    box.appendChild(text);
    return box;
  }

  function gauges(rate) {
    var box = $("gauges");
    box.textContent = "";
    box.appendChild(gauge("This 15-minute window (read)", "gauge-window", rate.read_usage_15min,
      rate.read_limit_15min, "resets " + clock(rate.window_resets_at) + ", " +
      rate.sync_now_reserve + " kept for Sync now"));
    box.appendChild(gauge("Today, UTC (read)", "gauge-day", rate.read_usage_daily,
      rate.read_limit_daily, "resets " + time(rate.daily_resets_at)));
    if (rate.blocked) {
      box.appendChild(el("p", "notice", "Strava calls are paused until " + time(rate.blocked_until) +
        " (" + (rate.blocked_reason || "rate limit") + ")."));
    }
  }

  // Drawn at the size it is shown (one SVG unit a CSS pixel), so its text is body size;
  // the y axis runs to the window's limit, with the limit and the Sync-now reserve drawn.
  function chart(windows, generated, rate) {
    var box = $("chart");
    box.textContent = "";
    var font = parseFloat(window.getComputedStyle(box).fontSize) || 16;
    drawnWidth = Math.floor(box.clientWidth);
    var W = Math.max(280, drawnWidth || 600);
    var H = Math.round(font * 13);
    var left = Math.round(font * 3.2), right = Math.round(font * 0.6);
    var top = Math.round(font * 1.4), bottom = Math.round(font * 2.2);
    var end = Math.floor(new Date(generated).getTime() / WINDOW_MS) * WINDOW_MS + WINDOW_MS;
    var start = end - 96 * WINDOW_MS;
    var slot = (W - left - right) / 96;
    var limit = Math.min(rate.limit_15min, rate.read_limit_15min);
    var reserveAt = Math.max(0, limit - rate.sync_now_reserve);
    var points = windows.filter(function (w) {
      var t = new Date(w.window_start).getTime();
      return t >= start && t < end;
    });
    var most = 0;
    points.forEach(function (w) {
      var total = CLASSES.reduce(function (n, c) { return n + (w[c] || 0); }, 0);
      if (total > most) most = total;
    });
    var max = Math.max(limit, most, 1);
    var y = function (v) { return top + (H - top - bottom) * (1 - v / max); };
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
      "aria-label": "Strava requests per 15-minute window over the last 24 hours, by kind of work, " +
        "against the window's limit of " + limit + " (" + rate.sync_now_reserve +
        " of it kept for Sync now); " + points.length + " windows with requests, at most " + most +
        " in one window" });
    [0, Math.round(limit / 2), limit].forEach(function (v, i) {
      root.appendChild(svg("line", { x1: left, x2: W - right, y1: y(v), y2: y(v),
        "class": i === 0 ? "axis" : "grid" }));
      var t = svg("text", { x: left - 6, y: y(v), "text-anchor": "end", "dominant-baseline": "middle",
        "font-size": font });
      t.textContent = String(v);
      root.appendChild(t);
    });
    var limitLine = svg("line", { x1: left, x2: W - right, y1: y(limit), y2: y(limit), "class": "limit" });
    root.appendChild(limitLine);
    var limitText = svg("text", { x: W - right, y: y(limit) - 5, "text-anchor": "end", "font-size": font,
      "class": "line-label" });
    limitText.textContent = "limit " + limit;
    root.appendChild(limitText);
    if (rate.sync_now_reserve > 0) {
      root.appendChild(svg("line", { x1: left, x2: W - right, y1: y(reserveAt), y2: y(reserveAt),
        "class": "reserve" }));
      // Below its line, so it never runs into the limit's label above the limit line.
      var reserveText = svg("text", { x: left + 6, y: y(reserveAt) + font * 1.1, "font-size": font,
        "class": "line-label" });
      reserveText.textContent = "Sync-now reserve above " + reserveAt;
      root.appendChild(reserveText);
    }
    // As many time labels as fit side by side: every 6, 12 or 24 hours.
    var step = [6, 12, 24].filter(function (h) {
      return (W - left - right) / (24 / h) >= font * 6;
    })[0] || 24;
    for (var hour = 0; hour <= 24; hour += step) {
      var anchor = hour === 0 ? "start" : hour === 24 ? "end" : "middle";
      var tick = svg("text", { x: left + hour * 4 * slot, y: H - font * 0.5, "text-anchor": anchor,
        "font-size": font });
      tick.textContent = new Date(start + hour * 4 * WINDOW_MS).toLocaleTimeString(undefined,
        { hour: "2-digit", minute: "2-digit" });
      root.appendChild(tick);
    }
    points.forEach(function (w) {
      var t = new Date(w.window_start).getTime();
      var x = left + ((t - start) / WINDOW_MS) * slot;
      var group = svg("g", { "class": "window", "data-window": w.window_start });
      var total = 0;
      CLASSES.forEach(function (c) {
        var n = w[c] || 0;
        if (!n) return;
        group.appendChild(svg("rect", { x: x + 0.5, y: y(total + n), width: Math.max(slot - 1, 1),
          height: y(total) - y(total + n), "class": c }));
        total += n;
      });
      group.setAttribute("data-total", String(total));
      var title = svg("title");
      title.textContent = time(w.window_start) + ": " + total + " used, " + Math.max(0, limit - total) +
        " left; " + CLASSES.map(function (c) { return CLASS_NAMES[c] + " " + (w[c] || 0); }).join(", ");
      group.appendChild(title);
      root.appendChild(group);
    });
    box.appendChild(root);
    var legend = $("legend");
    legend.textContent = "";
    CLASSES.forEach(function (c) {
      var item = el("li");
      item.appendChild(el("span", "swatch " + c));
      item.appendChild(document.createTextNode(CLASS_NAMES[c]));
      legend.appendChild(item);
    });
    var line = el("li");
    line.appendChild(el("span", "swatch line-limit"));
    line.appendChild(document.createTextNode("Window limit"));
    legend.appendChild(line);
    var reserve = el("li");
    reserve.appendChild(el("span", "swatch line-reserve"));
    reserve.appendChild(document.createTextNode("Sync-now reserve"));
    legend.appendChild(reserve);
  }

  // --- riders --------------------------------------------------------------------------

  // One row per rider of the status's list (riders.list): every rider, a page at a time.
  function rows(s) {
    var stuckBy = {};
    s.stuck.items.forEach(function (item) {
      if (item.rider_id === undefined || item.rider_id === null) return;
      (stuckBy[item.rider_id] = stuckBy[item.rider_id] || []).push(item.kind);
    });
    return s.riders.list.items.map(function (r) {
      return {
        rider_id: r.rider_id,
        name: r.name || "",
        connection: r.connection,
        // One status a rider: its connection when not active, else its sync state.
        status: r.connection === "active" ? r.sync_state : r.connection,
        auto_sync: r.auto_sync,
        percent: r.history.percent,
        complete: r.history.complete,
        activities: r.activities,
        races_waiting: r.races.waiting,
        races_failed: r.races.failed,
        last_synced_at: r.last_synced_at,
        last_sync_added: r.last_sync_added,
        next_poll_at: r.poll.next_at,
        poll_reason: r.poll.reason,
        last_error: r.last_error,
        failure_count: r.failure_count,
        next_attempt_at: r.next_attempt_at,
        stuck: stuckBy[r.rider_id] || [],
      };
    });
  }

  // Why a rider is in its state, in words, when it needs saying.
  function reason(r) {
    if (r.status === "needs_reauth") {
      return "Strava no longer accepts this service's access: ask them to press Reconnect Strava" +
        " on the club's page.";
    }
    if (r.status === "revoked") return "They removed this service at Strava; their Strava data is deleted.";
    if (r.status === "not_connected") return "Has not connected Strava yet.";
    if (r.last_error) {
      return "Last error: " + r.last_error + (r.failure_count ? " (" + plural(r.failure_count,
        "failure", "failures") + (r.next_attempt_at ? ", retried after " + time(r.next_attempt_at) : "") +
        ")" : "");
    }
    return "";
  }

  // What an operator can do for this rider, and only what can help.
  function actions(r) {
    var list = [];
    var connected = r.connection !== "not_connected";
    var live = r.connection === "active" || r.connection === "needs_reauth";
    if (r.connection === "active") {
      list.push(["full-refresh", "Full refresh", "Walk {who}'s whole history again?"]);
    }
    if (live && (r.failure_count > 0 || r.next_attempt_at || r.stuck.length)) {
      list.push(["reset", "Reset", "Clear {who}'s backoff and failures and release its lease?"]);
    }
    if (connected && r.connection !== "revoked") {
      list.push(r.auto_sync
        ? ["pause", "Pause", "Pause {who}'s scheduled sync?"]
        : ["resume", "Resume", "Resume {who}'s scheduled sync?"]);
    }
    list.push(["name", "Rename", null]);
    return list;
  }

  function pager(list) {
    var first = list.count ? list.offset + 1 : 0;
    var last = list.offset + list.items.length;
    $("rider-count").textContent = list.count > list.items.length
      ? "Riders " + first + "–" + last + " of " + list.count
      : list.count + " riders";
    $("rider-count").setAttribute("data-count", String(list.count));
    $("prev-riders").hidden = $("next-riders").hidden = list.count <= list.limit;
    $("prev-riders").disabled = list.offset <= 0;
    $("next-riders").disabled = last >= list.count;
  }

  function cell(label, className, text) {
    var td = el("td", className, text);
    td.setAttribute("data-label", label);
    return td;
  }

  function table(s) {
    var all = rows(s);
    pager(s.riders.list);
    var select = $("filter");
    var chosen = select.value;
    var statuses = {};
    all.forEach(function (r) { statuses[r.status] = (statuses[r.status] || 0) + 1; });
    select.textContent = "";
    select.appendChild(el("option", null, "all (" + all.length + ")")).value = "";
    Object.keys(statuses).sort().forEach(function (st) {
      var option = el("option", null, words(st) + " (" + statuses[st] + ")");
      option.value = st;
      select.appendChild(option);
    });
    select.value = statuses[chosen] ? chosen : "";
    var shown = all.filter(function (r) { return !select.value || r.status === select.value; });
    shown.sort(function (a, b) {
      var x = a[sortKey], y = b[sortKey];
      if (typeof x === "string") x = x.toLowerCase();
      if (typeof y === "string") y = y.toLowerCase();
      if (x === y) return a.rider_id - b.rider_id;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    document.querySelectorAll("#riders th").forEach(function (th) {
      var b = th.querySelector("button");
      if (!b) return;
      if (b.getAttribute("data-sort") === sortKey) {
        th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      } else {
        th.removeAttribute("aria-sort");
      }
    });
    var body = document.querySelector("#riders tbody");
    body.textContent = "";
    shown.forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-rider", String(r.rider_id));
      tr.setAttribute("data-status", r.status);
      var whoCell = el("th");
      whoCell.scope = "row";
      whoCell.appendChild(el("span", "rider-name", r.name || "Rider " + r.rider_id));
      whoCell.appendChild(el("span", "rider-id", " #" + r.rider_id));
      tr.appendChild(whoCell);
      var state = cell("Status", "status " + r.status, null);
      state.appendChild(el("span", "state-word", words(r.status) +
        (r.auto_sync || r.status === "paused" ? "" : " (paused)")));
      if (r.stuck.length) state.appendChild(el("span", "stuck-tag", "stuck: " + r.stuck.map(words).join(", ")));
      var why = reason(r);
      if (why) state.appendChild(el("span", "reason", why));
      tr.appendChild(state);
      var history = cell("History", "history", null);
      var bar = el("progress");
      bar.max = 100;
      bar.value = r.percent;
      bar.setAttribute("aria-label", (r.name || "Rider " + r.rider_id) + ": history discovered");
      bar.textContent = r.percent + "%";
      history.appendChild(bar);
      history.appendChild(el("span", "percent", " " + (r.complete ? "complete" : r.percent + "%")));
      tr.appendChild(history);
      tr.appendChild(cell("Activities", "num", r.activities));
      tr.appendChild(cell("Races waiting", "num races-waiting", r.races_waiting));
      tr.appendChild(cell("Races failed", "num races-failed", r.races_failed));
      tr.appendChild(cell("Last sync", "synced", time(r.last_synced_at) +
        (r.last_sync_added ? " · +" + r.last_sync_added : "")));
      var poll = cell("Next poll", "poll", time(r.next_poll_at));
      if (r.poll_reason) poll.title = r.poll_reason;
      tr.appendChild(poll);
      var acts = cell("Actions", "acts", null);
      var wrap = el("div", "actions");
      actions(r).forEach(function (a) {
        var b = el("button", null, a[1]);
        b.type = "button";
        b.setAttribute("data-action", a[0]);
        b.setAttribute("aria-label", a[1] + " rider " + r.rider_id + (r.name ? " (" + r.name + ")" : ""));
        b.addEventListener("click", function () {
          if (a[0] === "name") rename(r); else act(r, a);
        });
        wrap.appendChild(b);
      });
      acts.appendChild(wrap);
      tr.appendChild(acts);
      body.appendChild(tr);
    });
    if (!shown.length) {
      var empty = el("tr");
      var td = el("td", null, all.length ? "No rider has that status." : "No rider yet.");
      td.colSpan = 9;
      empty.appendChild(td);
      body.appendChild(empty);
    }
  }

  function act(r, action) {
    var label = r.name || "rider " + r.rider_id;
    if (!window.confirm(action[2].replace("{who}", label))) return;
    api("POST", "/api/admin/riders/" + r.rider_id + "/" + action[0]).then(function (answer) {
      var error = answer.body && answer.body.error;
      say(error
        ? action[1] + " rider " + r.rider_id + " failed: " + error.message
        : action[1] + " rider " + r.rider_id + ": done (" + answer.status + ")." +
          (r.name ? " " + r.name + "." : ""));
      if (answer.status === 401) signedOut("The bearer is no longer accepted (401).");
      else load();
    });
  }

  function rename(r) {
    var given = window.prompt("A name for rider " + r.rider_id + " (kept over the name from Strava):",
      r.name || "");
    if (given === null) return;
    api("PUT", "/api/admin/riders/" + r.rider_id + "/name", { name: given }).then(function (answer) {
      var error = answer.body && answer.body.error;
      say(error ? "Rename rider " + r.rider_id + " failed: " + error.message
        : "Rider " + r.rider_id + " is now " + answer.body.name + ".");
      if (answer.status === 401) signedOut("The bearer is no longer accepted (401).");
      else load();
    });
  }

  // --- webhooks, weather, alerts -------------------------------------------------------

  function webhooks(w) {
    var sub = w.subscription;
    numbers("webhook-numbers", [
      ["State", WEBHOOK_STATES[w.state] || words(w.state), "webhooks.state"],
      ["Subscription", sub ? sub.id : "none", "webhooks.subscription"],
      ["Last event", w.last_event_at ? time(w.last_event_at) : "never", "webhooks.last_event_at"],
      ["Events, 24 h", w.events_24h.received, "webhooks.received"],
      ["Processed, 24 h", w.events_24h.processed, "webhooks.processed"],
      ["Pending", w.pending, "webhooks.pending"],
    ]);
    $("webhook-reason").textContent = w.reason + (w.warning ? ". " + w.warning : "") + ".";
  }

  function weather(w) {
    var src = w.source, a = w.activities;
    var state = src.state === "open" ? "paused until " + clock(src.open_until)
      : src.state === "half_open" ? "trying again" : "working";
    numbers("weather-numbers", [
      ["Source", state, "weather.source"],
      ["Requests today", src.requests_today, "weather.requests_today"],
      ["Filled", a.done, "weather.done"],
      ["To look up", a.pending, "weather.pending"],
      ["Too recent", a.waiting, "weather.waiting"],
      ["Failed", a.failed + a.backing_off, "weather.failed"],
    ]);
    $("weather-note").textContent = src.last_error && src.state !== "closed"
      ? "Last error: " + src.last_error + " (" + plural(src.consecutive_failures, "failure", "failures") + " in a row)."
      : "Weather comes from Open-Meteo's archive once an activity's day has reached it.";
  }

  function alerts(a) {
    $("alerts-note").textContent = a.configured
      ? "Alerts go to ALERT_WEBHOOK_URL (" + a.format + "): each once when it starts, once when it " +
        "clears, and a daily digest while any stays open."
      : "ALERT_WEBHOOK_URL is not set: no alert is sent, but everything is on this page.";
    var list = $("alerts");
    list.textContent = "";
    a.open.forEach(function (item) {
      var li = el("li", "alert");
      li.setAttribute("data-kind", item.kind);
      li.appendChild(el("strong", null, item.title));
      li.appendChild(el("span", "detail", item.detail + " Open since " + time(item.opened_at) +
        (item.sent ? "." : "; not delivered yet.")));
      list.appendChild(li);
    });
    if (!a.open.length && a.configured) list.appendChild(el("li", "quiet", "No alert is open."));
  }

  // --- runs, stuck, and what needs attention ---------------------------------------------

  function outcomeOf(run) {
    if (!run.finished) return "unfinished";
    if (run.processed === null) return "failed";
    if (run.failed) return "failed";
    if (run.rate_limited) return "rate_limited";
    if (run.idle_reason) return "idle";
    return "ok";
  }

  function runText(run, outcome) {
    var when = clock(run.started_at) + " ";
    if (outcome === "unfinished") return when + "unfinished";
    if (run.processed === null) return when + "failed: " + (run.error_summary || "error");
    var text = when + words(outcome);
    if (outcome === "failed") {
      text += ": " + run.failed + " of " + run.processed + " · " + (run.error_summary || "");
    } else if (outcome === "idle") {
      text += ": " + (IDLE_WORDS[run.idle_reason] || words(run.idle_reason)) +
        (run.next_due_at ? " · next " + clock(run.next_due_at) : "");
    } else {
      text += " · " + run.processed + " taken";
    }
    if (run.duration_ms !== null && outcome !== "idle") text += " · " + (run.duration_ms / 1000).toFixed(1) + " s";
    return text;
  }

  function runs(all) {
    var box = $("runs");
    box.textContent = "";
    Object.keys(all).forEach(function (kind) {
      var row = el("div", "runs-kind");
      row.setAttribute("data-kind", kind);
      var dayStats = all[kind].last_24h;
      var label = el("div");
      label.appendChild(el("strong", null, kind));
      label.appendChild(el("div", "gauge-text", dayStats.runs + " runs in 24 h" +
        (dayStats.success_rate === null ? "" : ", " + Math.round(dayStats.success_rate * 100) + "% items ok")));
      row.appendChild(label);
      var list = el("ol", "timeline");
      list.setAttribute("aria-label", kind + " runs, newest first");
      all[kind].last.forEach(function (run) {
        var outcome = outcomeOf(run);
        var item = el("li", outcome, runText(run, outcome));
        item.setAttribute("data-outcome", outcome);
        list.appendChild(item);
      });
      if (!all[kind].last.length) list.appendChild(el("li", "none", "no runs yet"));
      row.appendChild(list);
      box.appendChild(row);
    });
  }

  function stuck(s) {
    var list = $("stuck");
    list.textContent = "";
    if (!s.items.length) {
      list.appendChild(el("li", "quiet", "Nothing is stuck."));
      return;
    }
    s.items.forEach(function (item) {
      var text = item.rider_id !== undefined && item.rider_id !== null
        ? who(item.rider_id) + ": " + item.warning : item.warning;
      var li = el("li", null, text);
      li.setAttribute("data-kind", item.kind);
      li.appendChild(el("span", "action", item.action));
      list.appendChild(li);
    });
  }

  // Everything that wants the operator, first: the last run of a kind that failed, riders
  // who must reconnect or keep failing, stuck work, a silent subscription, open alerts.
  function attention(s) {
    var list = $("attention");
    list.textContent = "";
    function add(kind, title, detail) {
      var li = el("li", "problem");
      li.setAttribute("data-kind", kind);
      li.appendChild(el("strong", null, title));
      if (detail) li.appendChild(el("span", "detail", detail));
      list.appendChild(li);
    }
    Object.keys(s.runs).forEach(function (kind) {
      var last = s.runs[kind].last[0];
      if (!last || outcomeOf(last) !== "failed") return;
      add("run_failed", "The last " + kind + " call failed (" + clock(last.started_at) + ")",
        last.processed === null ? "It stopped with an error: " + (last.error_summary || "unknown") +
          ". The service's log has the details."
          : last.failed + " of " + last.processed + " failed: " + (last.error_summary || "unknown") + ".");
    });
    rows(s).forEach(function (r) {
      if (r.status === "needs_reauth") add("needs_reauth", who(r.rider_id) + " must reconnect Strava", reason(r));
      else if (r.connection === "active" && r.last_error) add("rider_failing", who(r.rider_id) + " is failing", reason(r));
    });
    if (["silent", "missing", "unconfirmed"].indexOf(s.webhooks.state) >= 0) {
      add("webhooks", "Strava's push events: " + WEBHOOK_STATES[s.webhooks.state], s.webhooks.reason + ".");
    }
    if (s.stuck.count) {
      add("stuck", plural(s.stuck.count, "thing is", "things are") + " stuck", "See Stuck below for each, and what happens next.");
    }
    if (!list.children.length) {
      list.appendChild(el("li", "quiet", "Nothing needs attention: the last runs succeeded, no rider is " +
        "failing and nothing is stuck."));
    }
  }

  var drawnWidth = 0; // the chart's width when last drawn
  document.addEventListener("DOMContentLoaded", function () {
    $("signin").addEventListener("submit", function (event) {
      event.preventDefault();
      var value = $("bearer").value.trim();
      $("bearer").value = "";
      if (!value) return;
      window.sessionStorage.setItem(KEY, value);
      load();
    });
    $("signout").addEventListener("click", function () { signedOut("The bearer is forgotten."); });
    $("reload").addEventListener("click", load);
    $("everyone").addEventListener("click", everyoneNow);
    $("filter").addEventListener("change", function () { if (status) table(status); });
    $("prev-riders").addEventListener("click", function () {
      if (!status) return;
      riderOffset = Math.max(0, riderOffset - status.riders.list.limit);
      load();
    });
    $("next-riders").addEventListener("click", function () {
      if (!status) return;
      riderOffset += status.riders.list.limit;
      load();
    });
    document.querySelectorAll("#riders th button").forEach(function (b) {
      b.addEventListener("click", function () {
        var key = b.getAttribute("data-sort");
        sortDir = key === sortKey ? -sortDir : 1;
        sortKey = key;
        if (status) table(status);
      });
    });
    // The chart is drawn at its shown size: again, before the next paint, when that changes.
    if (window.ResizeObserver) {
      new window.ResizeObserver(function () {
        var width = Math.floor($("chart").clientWidth);
        if (status && width && width !== drawnWidth) {
          chart(status.requests.windows, status.generated_at, status.rate_limit);
        }
      }).observe($("chart"));
    }
    if (bearer()) load(); else $("bearer").focus();
  });
})();
