/*
 * Club Strava sync: the rider's widget for the club's own web site.
 *
 *   <div id="strava-sync"></div>
 *   <script src="https://<service>/widget.js"></script>
 *   <script src="/your-page.js"></script>
 *     // ClubSync.mount(element, { getAccessToken, supabase })
 *
 * `getAccessToken` gives the signed-in rider's Supabase access token. `supabase` (a
 * supabase-js client, optional) lets the widget hear the rider's live progress on
 * Supabase Realtime (a private Broadcast channel, `rider:<user id>`); without it the
 * widget polls. Broadcasts can be missed, so the state is read once on mount and again
 * when a run finishes.
 *
 * No build step, no framework, no inline styles or scripts (it runs under a strict
 * Content Security Policy). The markup is plain HTML (real buttons, a switch, <progress>
 * bars with names, an aria-live status) with `clubsync-` classes the club's CSS can
 * style; the service's widget.css gives a neutral default look (pass { styles: false } to
 * leave it out).
 *
 * One rule keeps it from contradicting itself: every sentence is made from one state at
 * a time (the service's answer, or a live message that supersedes it), and what has not
 * happened yet is said in words, never as a zero.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var SERVICE = script && script.src ? new URL(script.src).origin : window.location.origin;
  var BUSY_POLL_MS = 2000; // while a sync runs and nothing is heard live
  var LIVE_CHECK_MS = 15000; // while a run is heard live: in case its last message is lost
  var IDLE_POLL_MS = 60000; // otherwise, without Realtime
  var RETRY_MS = 60000; // after the service could not be reached

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
  }

  function activities(n) {
    return plural(n, "activity", "activities");
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.ceil(seconds));
    var h = Math.floor(seconds / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    var mm = (h && m < 10 ? "0" : "") + m;
    return (h ? h + ":" : "") + mm + ":" + (s < 10 ? "0" : "") + s;
  }

  function when(iso) {
    return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function day(isoDate) {
    // A calendar day (YYYY-MM-DD, UTC): shown as that day wherever the rider is.
    return new Date(isoDate + "T12:00:00Z").toLocaleDateString(undefined, {
      dateStyle: "long", timeZone: "UTC",
    });
  }

  function month(iso) {
    return new Date(iso).toLocaleDateString(undefined, { month: "long", year: "numeric" });
  }

  // Reasons the OAuth callback gives back in ?strava=error&reason=..., in plain words.
  var CONNECT_REASONS = {
    access_denied: "You did not approve the connection on Strava, so nothing was connected.",
    missing_scope: "Strava was connected without permission to read your activities: " +
      "press Connect Strava again and keep “View data about your activities” ticked.",
    athlete_linked: "That Strava account is already linked to another rider of the club.",
    athlete_capacity: "Strava refused the connection: this club's Strava application has " +
      "reached the number of athletes its Strava tier allows. The club's operator can ask " +
      "Strava to raise it.",
    state_expired: "The connection took too long: press Connect Strava to try again.",
    state_used: "That connection link was already used: press Connect Strava to try again.",
  };

  function Widget(root, options) {
    if (!root || typeof options.getAccessToken !== "function") {
      throw new TypeError("ClubSync.mount(element, { getAccessToken }) needs both");
    }
    this.root = root;
    this.options = options;
    this.state = null; // the service's last answer
    this.live = null; // the last live message of a run still going
    this.heardLive = false; // the Realtime channel is joined
    this.channel = null;
    this.lastAt = 0; // the newest live message's time (ms), to drop late ones
    this.busy = false; // our own request (Sync now, Connect) is out
    this.rateLimited = null; // {until}: the club's Strava allowance is spent
    this.countdownTimer = null;
    this.pollTimer = null;
    this.build();
  }

  // --- the markup ---------------------------------------------------------------------

  Widget.prototype.build = function () {
    var root = this.root;
    var self = this;
    var id = "clubsync-" + Math.random().toString(36).slice(2, 8);
    root.classList.add("clubsync");
    root.textContent = "";
    var heading = el("h2", "clubsync-title", this.options.title || "Your Strava activities");
    heading.id = id + "-title";
    var card = el("section", "clubsync-card");
    card.setAttribute("aria-labelledby", heading.id);
    card.appendChild(heading);

    this.message = el("p", "clubsync-message");

    this.liveBox = el("div", "clubsync-live");
    this.liveText = el("p", "clubsync-live-text");
    this.liveText.id = id + "-live";
    this.liveBar = el("progress", "clubsync-progress clubsync-live-bar");
    this.liveBar.setAttribute("aria-labelledby", this.liveText.id);
    this.liveBox.appendChild(this.liveText);
    this.liveBox.appendChild(this.liveBar);

    this.connectButton = el("button", "clubsync-button clubsync-connect", "Connect Strava");
    this.connectButton.type = "button";
    this.syncButton = el("button", "clubsync-button clubsync-sync", "Sync now");
    this.syncButton.type = "button";
    var actions = el("div", "clubsync-actions");
    actions.appendChild(this.connectButton);
    actions.appendChild(this.syncButton);
    this.countdown = el("p", "clubsync-countdown");

    this.status = el("p", "clubsync-status");
    this.status.setAttribute("role", "status");
    this.status.setAttribute("aria-live", "polite");
    this.status.setAttribute("aria-atomic", "true");

    this.history = el("div", "clubsync-history");
    this.historyLabel = el("p", "clubsync-history-label");
    this.historyLabel.id = id + "-history";
    this.historyBar = el("progress", "clubsync-progress clubsync-history-bar");
    this.historyBar.max = 100;
    this.historyBar.setAttribute("aria-labelledby", this.historyLabel.id);
    this.history.appendChild(this.historyLabel);
    this.history.appendChild(this.historyBar);

    this.details = el("dl", "clubsync-details");

    this.sharing = el("div", "clubsync-sharing");
    this.shareSwitch = el("input", "clubsync-switch");
    this.shareSwitch.type = "checkbox";
    this.shareSwitch.id = id + "-share";
    this.shareSwitch.setAttribute("role", "switch");
    var shareLabel = el("label", "clubsync-switch-label", "Share my activities with the club");
    shareLabel.htmlFor = this.shareSwitch.id;
    this.shareText = el("p", "clubsync-share-text");
    this.shareText.id = id + "-share-text";
    this.shareSwitch.setAttribute("aria-describedby", this.shareText.id);
    var switchRow = el("div", "clubsync-switch-row");
    switchRow.appendChild(this.shareSwitch);
    switchRow.appendChild(shareLabel);
    this.sharing.appendChild(switchRow);
    this.sharing.appendChild(this.shareText);

    this.disconnect = el("div", "clubsync-disconnect");
    this.disconnectButton = el(
      "button", "clubsync-button clubsync-secondary clubsync-disconnect-start",
      "Disconnect Strava");
    this.disconnectButton.type = "button";
    this.confirm = el("div", "clubsync-confirm");
    this.confirm.setAttribute("role", "group");
    var confirmText = el("p", "clubsync-confirm-text",
      "Disconnect Strava? The club's service stops syncing and deletes every activity " +
      "it holds of yours, and what was worked out from them. Your activities on Strava " +
      "stay as they are.");
    confirmText.id = id + "-confirm";
    this.confirm.setAttribute("aria-labelledby", confirmText.id);
    this.confirmYes = el("button", "clubsync-button clubsync-danger", "Yes, disconnect");
    this.confirmYes.type = "button";
    this.confirmNo = el("button", "clubsync-button clubsync-secondary", "Keep it connected");
    this.confirmNo.type = "button";
    var confirmActions = el("div", "clubsync-actions");
    confirmActions.appendChild(this.confirmYes);
    confirmActions.appendChild(this.confirmNo);
    this.confirm.appendChild(confirmText);
    this.confirm.appendChild(confirmActions);
    this.disconnect.appendChild(this.disconnectButton);
    this.disconnect.appendChild(this.confirm);

    var footer = el("p", "clubsync-attribution", "Powered by Strava");

    [this.message, this.liveBox, actions, this.countdown, this.status, this.history,
      this.details, this.sharing, this.disconnect, footer].forEach(function (node) {
      card.appendChild(node);
    });
    root.appendChild(card);

    this.connectButton.addEventListener("click", function () { self.connect(); });
    this.syncButton.addEventListener("click", function () { self.syncNow(); });
    this.shareSwitch.addEventListener("change", function () { self.share(self.shareSwitch.checked); });
    this.disconnectButton.addEventListener("click", function () { self.askDisconnect(); });
    this.confirmNo.addEventListener("click", function () { self.keepConnected(); });
    this.confirmYes.addEventListener("click", function () { self.doDisconnect(); });

    this.show({ message: "Loading your Strava connection…", state: "loading" });
    this.announceReturn();
  };

  // What is visible: everything hidden unless the state shows it.
  Widget.prototype.show = function (view) {
    this.root.setAttribute("data-state", view.state);
    this.message.textContent = view.message;
    this.connectButton.hidden = !view.connect;
    this.connectButton.textContent = view.connect || "Connect Strava";
    this.syncButton.hidden = !view.sync;
    this.liveBox.hidden = !view.live;
    this.history.hidden = !view.history;
    this.details.hidden = !view.details;
    this.sharing.hidden = !view.sharing;
    this.disconnect.hidden = !view.disconnect;
    if (!view.disconnect) this.confirm.hidden = true;
    if (!view.sync) this.stopCountdown();
  };

  Widget.prototype.announceReturn = function () {
    var params = new URLSearchParams(window.location.search);
    var result = params.get("strava");
    if (result === "connected") {
      this.say("Strava is connected. Your activities are coming in.");
    } else if (result === "error") {
      var reason = params.get("reason") || "";
      this.say(CONNECT_REASONS[reason] || "Connecting Strava did not work (" + reason + ").");
    }
  };

  Widget.prototype.say = function (text) {
    this.status.textContent = text || "";
  };

  // --- talking to the service ------------------------------------------------------------

  Widget.prototype.request = function (method, path, body) {
    var self = this;
    return Promise.resolve(self.options.getAccessToken()).then(function (token) {
      if (!token) {
        return { status: 401, body: { error: { code: "missing_token",
          message: "Sign in to the club's site first." } } };
      }
      var headers = { Authorization: "Bearer " + token };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      return fetch(SERVICE + path, {
        method: method,
        headers: headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (json) {
          return { status: response.status, body: json, headers: response.headers };
        });
      });
    });
  };

  Widget.prototype.refresh = function (polled) {
    var self = this;
    return this.request("GET", "/api/riders/me/sync").then(function (answer) {
      if (answer.status !== 200) {
        self.showError(answer);
        return null;
      }
      // A poll finding nothing running: a run we heard live has ended (its last
      // message was lost on the way).
      if (polled && !answer.body.in_progress && !self.busy) self.live = null;
      self.render(answer.body);
      return answer.body;
    }, function () {
      return self.unreachable();
    });
  };

  // A request that failed in the browser: a CORS refusal and an outage look the same
  // from here, so ask the service, from a URL any site may read, which it is.
  Widget.prototype.unreachable = function () {
    var self = this;
    this.stopPolling();
    return fetch(SERVICE + "/api/widget/origin", {
      mode: "cors", credentials: "omit", cache: "no-store",
    }).then(function (response) { return response.json(); }).then(function (origin) {
      if (origin && origin.allowed === false) {
        self.show({
          state: "origin_not_allowed",
          message: "This site (" + window.location.origin + ") is not in the service's " +
            "ALLOWED_ORIGINS, so the widget may not call it. The club's operator must add " +
            "it to ALLOWED_ORIGINS on the Strava sync service.",
        });
        self.say("");
        return null;
      }
      self.offline();
      return null;
    }, function () {
      self.offline();
      return null;
    });
  };

  Widget.prototype.offline = function () {
    var self = this;
    this.show({
      state: "unreachable",
      message: "The Strava sync service cannot be reached right now. " +
        "The widget tries again in a minute.",
    });
    this.say("");
    this.setBusy(false);
    this.pollTimer = window.setTimeout(function () {
      self.pollTimer = null;
      self.refresh();
    }, RETRY_MS);
  };

  Widget.prototype.showError = function (answer) {
    var error = (answer.body && answer.body.error) || {};
    if (answer.status === 401) {
      this.show({ state: "signed_out", message: "Sign in to the club's site to connect Strava." });
      return;
    }
    if (answer.status >= 500) {
      this.show({
        state: "unavailable",
        message: "The Strava sync service is having trouble right now: " +
          (error.message || "error " + answer.status) + ".",
      });
      return;
    }
    this.say(error.message || "Something went wrong (" + answer.status + ").");
  };

  // --- the state, in words -----------------------------------------------------------------

  Widget.prototype.render = function (state) {
    this.state = state;
    this.details.textContent = "";
    if (!state.connected) {
      this.live = null;
      this.show({
        state: "not_connected",
        message: "Your Strava account is not connected yet. Connect it to bring your " +
          "activities into the club's site.",
        connect: "Connect Strava",
      });
      this.listen(null);
      return;
    }
    this.listen(state.realtime);
    if (state.status === "revoked") {
      this.live = null;
      this.show({
        state: "revoked",
        message: (state.last_error && state.last_error.message) ||
          "You withdrew this club's access on Strava. Press Reconnect Strava to connect again.",
        connect: "Reconnect Strava",
      });
      return;
    }
    if (state.status === "needs_reauth") {
      this.live = null;
      this.show({
        state: "needs_reauth",
        message: (state.last_error && state.last_error.message) ||
          "Strava access has expired or was withdrawn: press Reconnect Strava to continue.",
        connect: "Reconnect Strava",
        details: true, sharing: true, disconnect: true,
      });
      this.fillDetails(state, false);
      this.fillSharing(state.sharing);
      return;
    }
    var running = state.in_progress || this.live !== null;
    var history = state.history || {};
    var view = {
      sync: true, details: true, sharing: true, disconnect: true,
      history: !history.complete && !running,
      live: running,
    };
    var limited = this.rateLimited && Date.now() < this.rateLimited.until;
    if (running) {
      view.state = "syncing";
      view.message = "Working with Strava now; this shows how it goes.";
    } else if (limited) {
      view.state = "rate_limited";
      view.message = "Sync now waits for the club's Strava allowance; the scheduled " +
        "syncs go on by themselves when it resets.";
    } else if (!state.last_synced_at) {
      view.state = "first_sync";
      view.message = "Connected. Your first sync is on its way: your recent activities " +
        "come in within minutes.";
    } else if (!history.complete) {
      view.state = "history";
      view.message = "Your recent activities are in; your older ones are still coming in.";
    } else {
      view.state = "up_to_date";
      view.message = "Up to date: last synced " + when(state.last_synced_at) + ".";
    }
    if (state.last_error && state.last_error.message && !running) {
      view.message += " " + state.last_error.message;
    }
    this.show(view);
    this.fillLive();
    this.fillHistory(history);
    this.fillDetails(state, running);
    this.fillSharing(state.sharing);
    if (running) {
      this.setBusy(true);
    } else if (!this.busy) {
      this.setBusy(false);
      if (limited) {
        this.startCountdown((this.rateLimited.until - Date.now()) / 1000,
          "The club has used its Strava allowance for now. Sync now works again in ",
          "rate_limited");
      } else if (state.sync_now_available_at) {
        this.startCountdown(
          (new Date(state.sync_now_available_at) - Date.now()) / 1000,
          "You synced a moment ago. Sync now is available again in ", "cooldown");
      } else {
        this.stopCountdown();
      }
    }
    this.schedulePoll();
  };

  Widget.prototype.fillLive = function () {
    var live = this.live;
    if (live && typeof live.total === "number" && live.total > 0) {
      this.liveBar.max = live.total;
      this.liveBar.value = Math.min(live.done || 0, live.total);
    } else {
      this.liveBar.removeAttribute("value"); // indeterminate: the end is not known
    }
    this.liveText.textContent = live ? live.message : "Syncing with Strava…";
  };

  Widget.prototype.fillHistory = function (history) {
    if (history.complete) return;
    if (!history.started) {
      this.historyLabel.textContent = "Older activities: not started yet. The service " +
        "walks back through your Strava history in the background, a batch at a time.";
      this.historyBar.hidden = true;
      return;
    }
    var text = "Older activities: back to " +
      (history.oldest_reached ? month(history.oldest_reached) : "the start") +
      " (" + history.percent + "%). ";
    text += history.estimated_complete_on
      ? "Expected complete around " + day(history.estimated_complete_on) + "."
      : "An estimate of when it completes follows the next batch.";
    this.historyLabel.textContent = text;
    this.historyBar.hidden = false;
    this.historyBar.value = history.percent || 0;
    this.historyBar.textContent = (history.percent || 0) + "%";
  };

  Widget.prototype.term = function (label, key) {
    var dt = el("dt", "clubsync-term", label);
    var dd = el("dd", "clubsync-value clubsync-" + key);
    this.details.appendChild(dt);
    this.details.appendChild(dd);
    return dd;
  };

  Widget.prototype.fillDetails = function (state, running) {
    var history = state.history || {};
    // While a run is heard live, what it has stored so far counts too.
    var stored = (state.activities || 0) + (running && this.live ? this.live.added || 0 : 0);
    this.term("Activities here", "activities").textContent = stored
      ? activities(stored)
      : "none yet";
    var latest = state.latest_activity;
    if (latest) {
      var dd = this.term("Latest activity", "latest");
      dd.appendChild(document.createTextNode(
        (latest.name || "Untitled") + ", " + when(latest.start_date) + " · "));
      var link = el("a", "clubsync-strava-link", "View on Strava");
      link.href = latest.strava_url;
      link.target = "_blank";
      link.rel = "noopener";
      dd.appendChild(link);
    }
    // While a sync runs, its live message says what it finds: no older count beside it.
    if (state.last_sync && !running) {
      var last = state.last_sync;
      var found = last.added
        ? plural(last.added, "new activity", "new activities") +
          (last.updated ? ", " + last.updated + " updated" : "")
        : (last.updated ? plural(last.updated, "activity", "activities") + " updated"
          : "nothing new");
      this.term("Last sync", "last-sync").textContent =
        found + " (" + when(state.last_synced_at) + ")";
    }
    if (history.complete) {
      this.term("Older activities", "history").textContent = "all in";
    }
    var races = state.races || {};
    var waiting = races.waiting_for_details || 0;
    this.term("Races", "races").textContent = !races.total
      ? "none found yet"
      : plural(races.total, "race", "races") + (waiting
        ? "; the details of " + waiting + " (description and full route) are still " +
          "being fetched from Strava"
        : ", each with its details (description and full route)");
    var e = state.eddington || {};
    this.term("Eddington number", "eddington").textContent =
      e.km === null || e.km === undefined
        ? "not known yet: it is worked out from your rides once they are in"
        : e.km + " km: you have ridden at least " + e.km + " km on " + e.km +
          " different days (in miles: " + e.miles + ")";
  };

  Widget.prototype.fillSharing = function (sharing) {
    sharing = sharing || { shared: false, what_the_club_sees: "" };
    this.shareSwitch.checked = !!sharing.shared;
    this.shareSwitch.setAttribute("aria-checked", sharing.shared ? "true" : "false");
    this.shareText.textContent = sharing.what_the_club_sees +
      (sharing.shared ? " On since " + when(sharing.since) + "." : " Off: only you see them.");
  };

  // --- live progress (Supabase Realtime), and polling otherwise --------------------------

  Widget.prototype.listen = function (realtime) {
    var supabase = this.options.supabase;
    var self = this;
    var topic = realtime && realtime.topic;
    if (this.channel && (!topic || this.channel.topicName !== topic)) {
      if (supabase && typeof supabase.removeChannel === "function") {
        supabase.removeChannel(this.channel);
      }
      this.channel = null;
      this.heardLive = false;
    }
    if (!supabase || typeof supabase.channel !== "function" || !topic || this.channel) return;
    var channel = supabase.channel(topic, { config: { private: true } });
    channel.topicName = topic;
    this.channel = channel;
    Promise.resolve(this.options.getAccessToken()).then(function (token) {
      // Private channels are authorized with the rider's own token (supabase-js 2.44+).
      if (supabase.realtime && typeof supabase.realtime.setAuth === "function") {
        return supabase.realtime.setAuth(token);
      }
      return null;
    }).then(function () {
      channel.on("broadcast", { event: realtime.event || "progress" }, function (message) {
        self.progress((message && message.payload) || {});
      }).subscribe(function (status) {
        self.heardLive = status === "SUBSCRIBED";
        self.root.setAttribute("data-live", self.heardLive ? "on" : "off");
        if (!self.heardLive) self.schedulePoll(); // refused, timed out or closed: poll
        else self.stopPolling();
      });
    });
  };

  Widget.prototype.progress = function (payload) {
    var state = this.state;
    if (!state || !state.connected) return;
    var at = payload.at ? Date.parse(payload.at) : NaN;
    if (at < this.lastAt) return; // an older message, late
    // A run's message from before the last sync ended: that run is over.
    if (!payload.finished && state.last_synced_at && at <= Date.parse(state.last_synced_at)) {
      return;
    }
    if (!isNaN(at)) this.lastAt = at;
    if (payload.finished) {
      this.live = null;
      this.say(payload.message);
      this.setBusy(false);
      this.refresh(); // the run's result, read once
      return;
    }
    this.live = payload;
    this.render(this.state);
  };

  Widget.prototype.schedulePoll = function () {
    var self = this;
    if (this.pollTimer !== null) return;
    var running = !!(this.state && (this.state.in_progress || this.live));
    if (this.heardLive && !running) return; // Realtime says when something happens
    var wait = this.heardLive ? LIVE_CHECK_MS : (running ? BUSY_POLL_MS : IDLE_POLL_MS);
    this.pollTimer = window.setTimeout(function () {
      self.pollTimer = null;
      if (document.hidden && !running) {
        self.schedulePoll();
        return;
      }
      if (self.busy) {
        self.schedulePoll(); // our own request answers first
        return;
      }
      self.refresh(true);
    }, wait);
  };

  Widget.prototype.stopPolling = function () {
    if (this.pollTimer !== null) window.clearTimeout(this.pollTimer);
    this.pollTimer = null;
  };

  // --- actions ---------------------------------------------------------------------------

  Widget.prototype.setBusy = function (busy) {
    this.busy = busy;
    this.syncButton.disabled = busy || this.countdownTimer !== null;
    this.syncButton.setAttribute("aria-busy", busy ? "true" : "false");
    this.syncButton.textContent = busy ? "Syncing…" : "Sync now";
    this.root.classList.toggle("clubsync-busy", busy);
  };

  Widget.prototype.connect = function () {
    var self = this;
    this.connectButton.disabled = true;
    this.connectButton.setAttribute("aria-busy", "true");
    this.root.setAttribute("data-state", "connecting");
    this.message.textContent = "Taking you to Strava to approve the connection…";
    this.say("");
    this.request("POST", "/api/strava/connect").then(function (answer) {
      if (answer.status === 200 && answer.body.authorize_url) {
        window.location.assign(answer.body.authorize_url);
        return;
      }
      self.connectButton.disabled = false;
      self.connectButton.setAttribute("aria-busy", "false");
      if (answer.status === 409 && answer.body.error) {
        var code = answer.body.error.code;
        self.root.setAttribute("data-state", code === "athlete_capacity" ? "club_full" : "not_connected");
        self.message.textContent = answer.body.error.message;
        return;
      }
      self.refresh();
      self.showError(answer);
    }, function () {
      self.connectButton.disabled = false;
      self.connectButton.setAttribute("aria-busy", "false");
      self.unreachable();
    });
  };

  Widget.prototype.syncNow = function () {
    var self = this;
    if (this.busy) return;
    this.setBusy(true);
    this.live = { phase: "sync", done: 0, total: null, added: 0,
      message: "Syncing your activities with Strava…" };
    this.render(this.state);
    this.say("Syncing your activities with Strava…");
    this.request("POST", "/api/riders/me/sync").then(function (answer) {
      var body = answer.body || {};
      var error = body.error || {};
      self.live = null;
      if (answer.status === 200) {
        self.setBusy(false);
        self.render(body.sync);
        self.announceAdded(body);
      } else if (answer.status === 202) {
        self.live = { phase: "sync", done: 0, total: null, added: 0,
          message: "A sync is already running; waiting for it to finish…" };
        self.render(body.sync);
        self.say(self.live.message);
      } else if (answer.status === 429) {
        var seconds = error.retry_after_s || Number(answer.headers.get("Retry-After")) || 60;
        self.setBusy(false);
        if (error.code === "rate_limited") {
          self.rateLimited = { until: Date.now() + seconds * 1000 };
        }
        self.say(error.message);
        self.refresh();
      } else if (answer.status === 409) {
        self.setBusy(false);
        self.say(error.message);
        self.refresh();
      } else {
        self.setBusy(false);
        self.render(self.state);
        self.showError(answer);
      }
    }, function () {
      self.live = null;
      self.setBusy(false);
      self.unreachable();
    });
  };

  Widget.prototype.announceAdded = function (body) {
    var added = body.added || 0;
    var text = added
      ? "Done: " + plural(added, "new activity", "new activities") + " added"
      : "Done: no new activities";
    if (body.updated) text += ", " + body.updated + " updated";
    if (body.races_enriched) {
      text += ", " + plural(body.races_enriched, "race", "races") + " detailed";
    }
    text += ".";
    if (body.status === "incomplete") text += " " + body.message;
    this.say(text);
  };

  Widget.prototype.share = function (on) {
    var self = this;
    this.shareSwitch.disabled = true;
    this.request("PUT", "/api/riders/me/sharing", { share: on }).then(function (answer) {
      self.shareSwitch.disabled = false;
      if (answer.status === 200) {
        if (self.state) self.state.sharing = answer.body;
        self.fillSharing(answer.body);
        self.say(answer.body.shared
          ? "Sharing is on: club members can see your public activities."
          : "Sharing is off: only you see your activities.");
      } else {
        self.fillSharing(self.state && self.state.sharing);
        self.showError(answer);
      }
    }, function () {
      self.shareSwitch.disabled = false;
      self.fillSharing(self.state && self.state.sharing);
      self.unreachable();
    });
  };

  Widget.prototype.askDisconnect = function () {
    this.confirm.hidden = false;
    this.disconnectButton.hidden = true;
    this.confirmNo.focus();
  };

  Widget.prototype.keepConnected = function () {
    this.confirm.hidden = true;
    this.disconnectButton.hidden = false;
    this.disconnectButton.focus();
  };

  Widget.prototype.doDisconnect = function () {
    var self = this;
    this.confirmYes.disabled = true;
    this.request("POST", "/api/strava/disconnect").then(function (answer) {
      self.confirmYes.disabled = false;
      self.confirm.hidden = true;
      self.disconnectButton.hidden = false;
      if (answer.status === 200) {
        var body = answer.body || {};
        self.say("Strava is disconnected; " + activities(body.activities_deleted || 0) +
          " deleted here." + (body.note ? " " + body.note : ""));
        self.live = null;
        self.refresh();
      } else {
        self.showError(answer);
      }
    }, function () {
      self.confirmYes.disabled = false;
      self.unreachable();
    });
  };

  Widget.prototype.startCountdown = function (seconds, prefix, kind) {
    var self = this;
    var until = Date.now() + seconds * 1000;
    this.stopCountdown();
    this.countdown.hidden = false;
    this.root.setAttribute("data-countdown", kind);
    function tick() {
      var left = (until - Date.now()) / 1000;
      if (left <= 0) {
        if (kind === "rate_limited") self.rateLimited = null;
        self.stopCountdown();
        self.refresh();
        return;
      }
      self.countdown.textContent = prefix + clock(left) + ".";
    }
    this.countdownTimer = window.setInterval(tick, 1000);
    tick();
    this.syncButton.disabled = true;
  };

  Widget.prototype.stopCountdown = function () {
    if (this.countdownTimer !== null) window.clearInterval(this.countdownTimer);
    this.countdownTimer = null;
    this.countdown.hidden = true;
    this.countdown.textContent = "";
    this.root.removeAttribute("data-countdown");
    if (!this.busy) this.syncButton.disabled = false;
  };

  Widget.prototype.destroy = function () {
    this.stopCountdown();
    this.stopPolling();
    this.listen(null);
    this.root.textContent = "";
    this.root.classList.remove("clubsync");
  };

  function addStyles() {
    if (document.querySelector("link[data-clubsync]")) return;
    var link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = SERVICE + "/widget.css";
    link.setAttribute("data-clubsync", "");
    // First in <head>, so the club's own stylesheets come later and win.
    document.head.insertBefore(link, document.head.firstChild);
  }

  window.ClubSync = {
    service: SERVICE,
    mount: function (element, options) {
      options = options || {};
      if (typeof element === "string") element = document.querySelector(element);
      if (options.styles !== false) addStyles();
      var widget = new Widget(element, options);
      widget.refresh();
      return {
        refresh: function () { return widget.refresh(); },
        destroy: function () { widget.destroy(); },
      };
    },
  };
})();
