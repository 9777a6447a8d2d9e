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
  var ACTIONS = [
    ["full-refresh", "Full refresh", "Walk rider {id}'s whole history again?"],
    ["reset", "Reset", "Clear rider {id}'s backoff and failures and release its lease?"],
    ["pause", "Pause", "Pause rider {id}'s scheduled sync?"],
    ["resume", "Resume", "Resume rider {id}'s scheduled sync?"],
  ];
  var WINDOW_MS = 15 * 60 * 1000;
  var $ = function (id) { return document.getElementById(id); };
  var status = null;
  var sortKey = "rider_id";
  var sortDir = 1;
  var riderOffset = 0; // the rider list's page (riders.list.offset)

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

  function bearer() { return window.sessionStorage.getItem(KEY); }

  function notice(text) {
    $("notice").textContent = text || "";
    $("notice").hidden = !text;
  }

  function api(method, path) {
    return fetch(path, {
      method: method,
      headers: { Authorization: "Bearer " + bearer() },
      credentials: "omit",
      cache: "no-store",
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { status: response.status, body: body };
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

  // The Strava application's athlete capacity: "8 of 10 athletes".
  function athletes(a) {
    if (!a) return "—";
    if (a.capacity === null) return a.connected + " athletes (capacity not set)";
    return a.connected + " of " + a.capacity + " athletes" + (a.full ? " (full)" : "");
  }

  function draw(s) {
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
    var h = s.backlog.history;
    var est = s.backlog.estimate;
    numbers("backlog-numbers", [
      ["Histories incomplete", h.riders_incomplete, "riders_incomplete"],
      ["Walking", h.riders_walking, "riders_walking"],
      ["Not started", h.riders_not_started, "riders_not_started"],
      ["Waiting on reconnect", h.waiting_on_reconnect, "waiting_on_reconnect"],
      ["Activities found", h.activities_found, "activities_found"],
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
    chart(s.requests.windows, s.generated_at);
    table(s);
    runs(s.runs);
    stuck(s.stuck);
  }

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
    box.appendChild(el("div", "gauge-text", used + " of " + limit + " requests" + (note ? " · " + note : "")));
    return box;
  }

  function gauges(rate) {
    var box = $("gauges");
    box.textContent = "";
    box.appendChild(gauge("This 15-minute window (read)", "gauge-window", rate.read_usage_15min,
      rate.read_limit_15min, "resets " + time(rate.window_resets_at) + ", " +
      rate.sync_now_reserve + " kept for Sync now"));
    box.appendChild(gauge("Today, UTC (read)", "gauge-day", rate.read_usage_daily,
      rate.read_limit_daily, "resets " + time(rate.daily_resets_at)));
    if (rate.blocked) {
      box.appendChild(el("p", "notice", "Strava calls are paused until " + time(rate.blocked_until) +
        " (" + (rate.blocked_reason || "rate limit") + ")."));
    }
  }

  function chart(windows, generated) {
    var box = $("chart");
    box.textContent = "";
    var W = 960, H = 160, top = 8, bottom = 20, left = 34;
    var end = Math.floor(new Date(generated).getTime() / WINDOW_MS) * WINDOW_MS + WINDOW_MS;
    var start = end - 96 * WINDOW_MS;
    var slot = (W - left) / 96;
    var points = windows.filter(function (w) {
      var t = new Date(w.window_start).getTime();
      return t >= start && t < end;
    });
    var max = 1;
    points.forEach(function (w) {
      var total = CLASSES.reduce(function (n, c) { return n + (w[c] || 0); }, 0);
      if (total > max) max = total;
    });
    var root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Strava requests per 15-minute window over the last 24 hours, by kind of work; " +
        points.length + " windows with requests, at most " + max + " in one window" });
    root.appendChild(svg("line", { x1: left, y1: H - bottom, x2: W, y2: H - bottom, "class": "axis" }));
    var scale = (H - top - bottom) / max;
    [0, max].forEach(function (v) {
      var t = svg("text", { x: 0, y: H - bottom - v * scale + 3 });
      t.textContent = String(v);
      root.appendChild(t);
    });
    for (var hour = 0; hour <= 24; hour += 6) {
      var tick = svg("text", { x: left + hour * 4 * slot - 10, y: H - 5 });
      tick.textContent = new Date(start + hour * 4 * WINDOW_MS).toLocaleTimeString(undefined,
        { hour: "2-digit", minute: "2-digit" });
      root.appendChild(tick);
    }
    points.forEach(function (w) {
      var t = new Date(w.window_start).getTime();
      var x = left + ((t - start) / WINDOW_MS) * slot;
      var group = svg("g", { "class": "window", "data-window": w.window_start });
      var y = H - bottom;
      var total = 0;
      CLASSES.forEach(function (c) {
        var n = w[c] || 0;
        if (!n) return;
        total += n;
        y -= n * scale;
        group.appendChild(svg("rect", { x: x + 1, y: y, width: Math.max(slot - 2, 1),
          height: n * scale, "class": c }));
      });
      group.setAttribute("data-total", String(total));
      var title = svg("title");
      title.textContent = time(w.window_start) + ": " + CLASSES.map(function (c) {
        return CLASS_NAMES[c] + " " + (w[c] || 0);
      }).join(", ");
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
  }

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
        stuck: stuckBy[r.rider_id] || [],
      };
    });
  }

  function words(text) { return String(text).replace(/_/g, " "); }

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
      var who = el("td");
      who.appendChild(el("strong", null, r.rider_id));
      if (r.name) who.appendChild(el("span", "name", " " + r.name));
      tr.appendChild(who);
      var state = el("td", "status " + r.status, words(r.status) +
        (r.auto_sync || r.status === "paused" ? "" : " (paused)"));
      if (r.stuck.length) state.appendChild(el("span", "stuck-tag", " stuck: " + r.stuck.map(words).join(", ")));
      if (r.last_error) state.title = r.last_error;
      tr.appendChild(state);
      var cell = el("td", "history");
      var bar = el("progress");
      bar.max = 100;
      bar.value = r.percent;
      bar.setAttribute("aria-label", "Rider " + r.rider_id + " history discovered");
      bar.textContent = r.percent + "%";
      cell.appendChild(bar);
      cell.appendChild(el("span", "percent", " " + (r.complete ? "complete" : r.percent + "%")));
      tr.appendChild(cell);
      tr.appendChild(el("td", "num", r.activities));
      tr.appendChild(el("td", "num races-waiting", r.races_waiting));
      tr.appendChild(el("td", "num races-failed", r.races_failed));
      var synced = el("td", "synced", time(r.last_synced_at) +
        (r.last_sync_added ? " · +" + r.last_sync_added : ""));
      tr.appendChild(synced);
      var poll = el("td", "poll", time(r.next_poll_at));
      if (r.poll_reason) poll.title = r.poll_reason;
      tr.appendChild(poll);
      var actions = el("td");
      var wrap = el("div", "actions");
      ACTIONS.forEach(function (a) {
        var b = el("button", null, a[1]);
        b.type = "button";
        b.setAttribute("data-action", a[0]);
        b.setAttribute("aria-label", a[1] + " rider " + r.rider_id);
        b.addEventListener("click", function () { act(r.rider_id, a); });
        wrap.appendChild(b);
      });
      actions.appendChild(wrap);
      tr.appendChild(actions);
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

  function act(id, action) {
    if (!window.confirm(action[2].replace("{id}", id))) return;
    api("POST", "/api/admin/riders/" + id + "/" + action[0]).then(function (answer) {
      var error = answer.body && answer.body.error;
      $("action-result").textContent = error
        ? action[1] + " rider " + id + " failed: " + error.message
        : action[1] + " rider " + id + ": done (" + answer.status + ").";
      if (answer.status === 401) signedOut("The bearer is no longer accepted (401).");
      else load();
    });
  }

  function runs(all) {
    var box = $("runs");
    box.textContent = "";
    Object.keys(all).forEach(function (kind) {
      var row = el("div", "runs-kind");
      row.setAttribute("data-kind", kind);
      var day = all[kind].last_24h;
      var label = el("div");
      label.appendChild(el("strong", null, kind));
      label.appendChild(el("div", "gauge-text", day.runs + " runs in 24 h" +
        (day.success_rate === null ? "" : ", " + Math.round(day.success_rate * 100) + "% items ok")));
      row.appendChild(label);
      var list = el("ol", "timeline");
      list.setAttribute("aria-label", kind + " runs, newest first");
      all[kind].last.forEach(function (run) {
        var outcome = !run.finished ? "unfinished" : run.failed ? "failed" :
          run.rate_limited ? "rate_limited" : "ok";
        var item = el("li", outcome, time(run.started_at) + " " + outcome.replace("_", " ") +
          " · " + run.processed + " taken" + (run.duration_ms === null ? "" : " · " +
          (run.duration_ms / 1000).toFixed(1) + " s"));
        item.setAttribute("data-outcome", outcome);
        list.appendChild(item);
      });
      if (!all[kind].last.length) list.appendChild(el("li", "unfinished", "no runs yet"));
      row.appendChild(list);
      box.appendChild(row);
    });
  }

  function stuck(s) {
    var list = $("stuck");
    list.textContent = "";
    if (!s.items.length) {
      list.appendChild(el("li", null, "Nothing is stuck."));
      return;
    }
    s.items.forEach(function (item) {
      var li = el("li", null, item.warning);
      li.setAttribute("data-kind", item.kind);
      li.appendChild(el("span", "action", item.action));
      list.appendChild(li);
    });
  }

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
    if (bearer()) load(); else $("bearer").focus();
  });
})();
