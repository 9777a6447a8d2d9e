/*
 * Club Strava sync: the rider's widget for the club's own web site.
 *
 *   <div id="strava-sync"></div>
 *   <script src="https://<service>/widget.js"></script>
 *   <script src="/your-page.js"></script>   // ClubSync.mount(element, { getAccessToken })
 *
 * No build step, no framework, no inline styles or scripts (it runs under a strict
 * Content Security Policy). The markup is plain HTML (real buttons, a <progress>, an
 * aria-live status) with `clubsync-` classes the club's CSS can style; the service's
 * widget.css gives a neutral default look (pass { styles: false } to leave it out).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var SERVICE = script && script.src ? new URL(script.src).origin : window.location.origin;
  var POLL_MS = 1000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
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
    if (!iso) return "never";
    var date = new Date(iso);
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  // Reasons the OAuth callback gives back in ?strava=error&reason=..., in plain words.
  var CONNECT_REASONS = {
    access_denied: "You did not approve the connection on Strava.",
    missing_scope: "Strava was connected without permission to read your activities: " +
      "tick “View data about your activities” and try again.",
    athlete_linked: "That Strava account is already linked to another rider of the club.",
    state_expired: "The connection took too long; please try again.",
    state_used: "That connection link was already used; please try again.",
  };

  function Widget(root, options) {
    if (!root || typeof options.getAccessToken !== "function") {
      throw new TypeError("ClubSync.mount(element, { getAccessToken }) needs both");
    }
    this.root = root;
    this.options = options;
    this.timers = [];
    this.countdownTimer = null;
    this.pollTimer = null;
    this.busy = false;
    this.state = null;
    this.build();
  }

  Widget.prototype.build = function () {
    var root = this.root;
    root.classList.add("clubsync");
    root.textContent = "";
    var heading = el("h2", "clubsync-title", this.options.title || "Strava");
    heading.id = "clubsync-title-" + Math.random().toString(36).slice(2, 8);
    var section = el("section", "clubsync-card");
    section.setAttribute("aria-labelledby", heading.id);
    section.appendChild(heading);

    this.message = el("p", "clubsync-message");
    this.status = el("p", "clubsync-status");
    this.status.setAttribute("role", "status");
    this.status.setAttribute("aria-live", "polite");
    this.status.setAttribute("aria-atomic", "true");

    this.connectButton = el("button", "clubsync-button clubsync-connect", "Connect Strava");
    this.connectButton.type = "button";
    this.syncButton = el("button", "clubsync-button clubsync-sync", "Sync now");
    this.syncButton.type = "button";
    this.countdown = el("p", "clubsync-countdown");
    this.countdown.hidden = true;

    var actions = el("div", "clubsync-actions");
    actions.appendChild(this.connectButton);
    actions.appendChild(this.syncButton);

    this.details = el("dl", "clubsync-details");
    this.progressLabel = el("label", "clubsync-progress-label", "History discovered");
    this.progress = el("progress", "clubsync-progress");
    this.progress.max = 100;
    this.progress.id = heading.id + "-history";
    this.progressLabel.htmlFor = this.progress.id;
    this.progressText = el("span", "clubsync-progress-text");
    var history = el("div", "clubsync-history");
    history.appendChild(this.progressLabel);
    history.appendChild(this.progress);
    history.appendChild(this.progressText);
    this.history = history;

    section.appendChild(this.message);
    section.appendChild(actions);
    section.appendChild(this.countdown);
    section.appendChild(this.status);
    section.appendChild(history);
    section.appendChild(this.details);
    root.appendChild(section);

    var self = this;
    this.connectButton.addEventListener("click", function () { self.connect(); });
    this.syncButton.addEventListener("click", function () { self.syncNow(); });
    this.connectButton.hidden = true;
    this.syncButton.hidden = true;
    history.hidden = true;
    this.message.textContent = "Loading your Strava connection…";
    this.announceReturn();
  };

  Widget.prototype.announceReturn = function () {
    var params = new URLSearchParams(window.location.search);
    var result = params.get("strava");
    if (result === "connected") {
      this.say("Strava is connected. Your history is being discovered in the background.");
    } else if (result === "error") {
      var reason = params.get("reason") || "";
      this.say(CONNECT_REASONS[reason] || "Connecting Strava did not work (" + reason + ").");
    }
  };

  Widget.prototype.say = function (text) {
    this.status.textContent = text || "";
  };

  Widget.prototype.request = function (method, path) {
    var self = this;
    return Promise.resolve(self.options.getAccessToken()).then(function (token) {
      if (!token) {
        return { status: 401, body: { error: { code: "missing_token",
          message: "Sign in to the club's site first." } } };
      }
      return fetch(SERVICE + path, {
        method: method,
        headers: { Authorization: "Bearer " + token },
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
      }).then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          return { status: response.status, body: body, headers: response.headers };
        });
      });
    });
  };

  Widget.prototype.refresh = function () {
    var self = this;
    return this.request("GET", "/api/riders/me/sync").then(function (answer) {
      if (answer.status !== 200) {
        self.showError(answer);
        return null;
      }
      self.render(answer.body);
      return answer.body;
    }, function (error) {
      self.offline(error);
      return null;
    });
  };

  Widget.prototype.offline = function () {
    this.message.textContent = "The Strava sync service cannot be reached right now.";
    this.setBusy(false);
  };

  Widget.prototype.showError = function (answer) {
    var error = (answer.body && answer.body.error) || {};
    if (answer.status === 401) {
      this.message.textContent = "Sign in to the club's site to connect Strava.";
      this.connectButton.hidden = true;
      this.syncButton.hidden = true;
      this.history.hidden = true;
      return;
    }
    this.say(error.message || "Something went wrong (" + answer.status + ").");
  };

  Widget.prototype.render = function (state) {
    this.state = state;
    var details = this.details;
    details.textContent = "";
    if (!state.connected || state.needs_reconnect) {
      this.message.textContent = state.connected
        ? (state.last_error && state.last_error.message) ||
          "Strava access has expired or was withdrawn: press Connect Strava to reconnect."
        : "Your Strava account is not connected yet. Connect it to bring your rides in.";
      this.root.setAttribute("data-state", state.connected ? "needs_reauth" : "not_connected");
      this.connectButton.hidden = false;
      this.connectButton.textContent = state.connected ? "Reconnect Strava" : "Connect Strava";
      this.syncButton.hidden = true;
      this.history.hidden = !state.connected;
      this.stopCountdown();
      if (!state.connected) return;
    } else {
      this.root.setAttribute("data-state", state.in_progress ? "syncing" : "connected");
      this.connectButton.hidden = true;
      this.syncButton.hidden = false;
      this.message.textContent = state.last_synced_at
        ? "Last synced " + when(state.last_synced_at) + "."
        : "Connected. Your first sync is on its way.";
      if (state.last_error && state.last_error.message) {
        this.message.textContent += " " + state.last_error.message;
      }
    }
    var history = state.history || {};
    this.history.hidden = false;
    this.progress.value = history.percent || 0;
    this.progress.textContent = (history.percent || 0) + "%";
    this.progressText.textContent = history.complete
      ? " complete (" + plural(state.activities || 0, "activity", "activities") + ")"
      : " " + (history.percent || 0) + "% (" +
        plural(history.activities_found || 0, "activity", "activities") + " so far)";

    var last = state.last_sync || {};
    var races = state.races || {};
    var eddington = state.eddington || {};
    this.term("Last sync added", last.added === null || last.added === undefined
      ? "nothing yet"
      : plural(last.added, "new activity", "new activities") +
        (last.updated ? ", " + last.updated + " updated" : ""), "last-sync");
    this.term("Races waiting for details", String(races.waiting_for_details || 0), "races-waiting");
    this.term("Eddington number", eddington.km === null || eddington.km === undefined
      ? "not yet known"
      : eddington.km + " km · " + eddington.miles + " mi", "eddington");

    if (state.in_progress) {
      this.setBusy(true);
      this.say("Syncing your activities with Strava…");
      this.poll();
    } else if (!this.busy) {
      this.setBusy(false);
      if (state.sync_now_available_at) {
        this.startCountdown(
          (new Date(state.sync_now_available_at) - Date.now()) / 1000,
          "Sync now is available again in ");
      } else {
        this.stopCountdown();
      }
    }
  };

  Widget.prototype.term = function (label, value, key) {
    var dt = el("dt", "clubsync-term", label);
    var dd = el("dd", "clubsync-value clubsync-" + key, value);
    this.details.appendChild(dt);
    this.details.appendChild(dd);
  };

  Widget.prototype.setBusy = function (busy) {
    this.busy = busy;
    this.syncButton.disabled = busy || (this.countdownTimer !== null);
    this.syncButton.setAttribute("aria-busy", busy ? "true" : "false");
    this.syncButton.textContent = busy ? "Syncing…" : "Sync now";
    this.root.classList.toggle("clubsync-busy", busy);
  };

  Widget.prototype.poll = function () {
    var self = this;
    if (this.pollTimer !== null) return;
    this.pollTimer = window.setTimeout(function () {
      self.pollTimer = null;
      self.request("GET", "/api/riders/me/sync").then(function (answer) {
        if (answer.status !== 200) return;
        if (answer.body.in_progress) {
          self.render(answer.body);
        } else if (self.waitingForOther) {
          self.waitingForOther = false;
          self.setBusy(false);
          self.render(answer.body);
          self.announceAdded(answer.body.last_sync || {});
        } else if (!self.busy) {
          self.render(answer.body);
        }
      }, function () {});
    }, POLL_MS);
  };

  Widget.prototype.announceAdded = function (last, racesEnriched) {
    var added = last.added || 0;
    var text = added
      ? "Done: " + plural(added, "new activity", "new activities") + " added"
      : "Done: no new activities";
    if (last.updated) text += ", " + last.updated + " updated";
    if (racesEnriched) text += ", " + plural(racesEnriched, "race", "races") + " detailed";
    this.say(text + ".");
  };

  Widget.prototype.connect = function () {
    var self = this;
    this.connectButton.disabled = true;
    this.say("Opening Strava…");
    this.request("POST", "/api/strava/connect").then(function (answer) {
      self.connectButton.disabled = false;
      if (answer.status === 200 && answer.body.authorize_url) {
        window.location.assign(answer.body.authorize_url);
      } else {
        self.showError(answer);
      }
    }, function (error) {
      self.connectButton.disabled = false;
      self.offline(error);
    });
  };

  Widget.prototype.syncNow = function () {
    var self = this;
    if (this.busy) return;
    this.setBusy(true);
    this.say("Syncing your activities with Strava…");
    this.poll();
    this.request("POST", "/api/riders/me/sync").then(function (answer) {
      var body = answer.body || {};
      var error = body.error || {};
      if (answer.status === 200) {
        self.setBusy(false);
        self.render(body.sync);
        self.announceAdded({ added: body.added, updated: body.updated }, body.races_enriched);
        if (body.status === "incomplete") self.say(self.status.textContent + " " + body.message);
      } else if (answer.status === 202) {
        self.waitingForOther = true;
        self.say("A sync is already running; waiting for it to finish…");
        self.poll();
      } else if (answer.status === 429) {
        self.setBusy(false);
        var seconds = error.retry_after_s || Number(answer.headers.get("Retry-After")) || 60;
        var prefix = error.code === "rate_limited"
          ? "The club has used its Strava allowance for now. Sync now works again in "
          : "You synced a moment ago. Sync now is available again in ";
        self.say(error.message);
        self.startCountdown(seconds, prefix);
      } else if (answer.status === 409) {
        self.setBusy(false);
        self.say(error.message);
        self.refresh();
      } else {
        self.setBusy(false);
        self.showError(answer);
      }
    }, function (error) {
      self.offline(error);
    });
  };

  Widget.prototype.startCountdown = function (seconds, prefix) {
    var self = this;
    var until = Date.now() + seconds * 1000;
    this.stopCountdown();
    this.countdown.hidden = false;
    this.root.setAttribute("data-countdown", "running");
    function tick() {
      var left = (until - Date.now()) / 1000;
      if (left <= 0) {
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
    if (this.pollTimer !== null) window.clearTimeout(this.pollTimer);
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
