/* The wallboard, live: draws the board again from each document /api/queues/stream sends (the same ids and
   classes as templates/wallboard.html, which shows the figures as of the page load without this script).
   When no stream can be had (the server refuses: too many open), it polls /api/queues and tries the stream
   again a minute later. Waits and times in a state count up every second between documents. */
(function () {
  "use strict";
  var root = document.getElementById("wallboard");
  if (!root) { return; }
  var words = JSON.parse(root.getAttribute("data-words") || "{}");
  var tickets = root.getAttribute("data-tickets");
  var status = document.getElementById("live-status");
  var asOf = document.getElementById("as-of");
  var POLL_MS = 10000, STREAM_AGAIN_MS = 60000, OFFLINE_AFTER_MS = 5000;
  var docAt = 0, offset = 0, poller = null, offlineTimer = null;
  var clockFormat = new Intl.DateTimeFormat("en-GB", {timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit",
                                                      second: "2-digit", hour12: false});

  // --- words and numbers, as the server writes them (web/pages.py) ---
  function w(key, values) {
    var text = words[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(values[name]));
    });
    return text;
  }
  function none() { return words["value.none"] || "—"; }
  function dur(seconds) {
    if (seconds === null || seconds === undefined) { return none(); }
    var s = Math.max(0, Math.round(seconds)), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    var ss = ("0" + (s % 60)).slice(-2);
    return h ? h + ":" + ("0" + m).slice(-2) + ":" + ss : m + ":" + ss;
  }
  function pct(ratio) { return ratio === null || ratio === undefined ? none() : (ratio * 100).toFixed(1) + "%"; }
  function clock(iso) { return iso ? clockFormat.format(new Date(iso)) : none(); }
  function caller(masked) { return words["caller_kind." + masked] || masked; }
  function reason(text) { return words["reason." + text] || text; }
  function low(rate, doc) { return rate !== null && rate < doc.connection_target; }
  function since(iso, doc) { return iso ? Math.max(0, (Date.parse(doc.at) - Date.parse(iso)) / 1000) : null; }

  // --- elements ---
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value !== null && value !== undefined && value !== false) { node.setAttribute(name, value); }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    });
    return node;
  }
  function td(content, cls) { return el("td", cls ? {"class": cls} : {}, [].concat(content)); }
  function num(content, extra) { return td(content, "num" + (extra ? " " + extra : "")); }
  function chip(state, content) { return el("span", {"class": "chip st-" + state}, content); }
  // A duration that counts up from `seconds` (as of the document's time) while the page is open.
  function ticking(seconds, tag, cls) {
    return el(tag, {"class": cls, "data-from": seconds}, [dur(seconds)]);
  }
  function table(headers, rows) {
    var head = el("tr", {}, headers.map(function (h) { return el("th", h[1] ? {"class": h[1]} : {}, [h[0]]); }));
    return el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]);
  }
  function card(id, title, body) { return el("section", {"class": "card", id: id}, [el("h2", {}, [title]), body]); }
  function nothing(key) { return el("p", {"class": "muted"}, [w(key)]); }

  // --- the board ---
  function tile(id, label, value, note, late) {
    return el("div", {"class": "tile" + (late ? " late" : ""), id: id}, [
      el("div", {"class": "tile-label"}, [label]),
      typeof value === "object" ? value : el("div", {"class": "tile-value"}, [value]),
      note ? el("div", {"class": "tile-note"}, [note]) : null]);
  }

  function tiles(doc) {
    var f = doc.hotline.figures;
    var longest = f.waiting ? ticking(f.longest_wait_seconds, "div", "tile-value")
                            : el("div", {"class": "tile-value"}, [dur(f.longest_wait_seconds)]);
    return el("section", {"class": "tiles", id: "hotline", "aria-label": w("wall.hotline")}, [
      tile("t-waiting", w("wall.waiting"), f.waiting),
      tile("t-longest", w("wall.longest_wait"), longest),
      tile("t-offered", w("wall.offered"), f.offered),
      tile("t-answered", w("wall.answered"), f.answered),
      tile("t-abandoned", w("wall.abandoned"), f.abandoned, w("wall.short_abandoned", {count: f.short_abandoned})),
      tile("t-service", w("wall.service_level", {seconds: doc.service_seconds}), pct(f.service_level)),
      tile("t-asa", w("wall.asa"), dur(f.average_speed_of_answer)),
      tile("t-aht", w("wall.aht"), dur(f.average_handle_time)),
      tile("t-connection", w("wall.connection_rate"), pct(f.connection_rate_24h),
           w("wall.connection_target", {target: pct(doc.connection_target)}), low(f.connection_rate_24h, doc))]);
  }

  function counts(doc) {
    var a = doc.hotline.agents;
    var parts = [el("span", {"class": "count"}, [el("b", {}, [a.logged_in]), " " + w("wall.logged_in")])];
    ["available", "ringing", "on_call", "wrap_up", "paused"].forEach(function (state) {
      parts.push(chip(state, [el("b", {}, [a[state]]), " " + w("agent_state." + state)]));
    });
    return el("section", {"class": "card agent-counts", id: "agent-counts"}, parts);
  }

  function staffing(doc) {
    var s = doc.hotline.staffing, minutes = s.interval_seconds / 60, text;
    if (s.agents_needed === null) {
      text = w("wall.staffing_unknown", {minutes: minutes, calls: s.calls});
    } else {
      text = w("wall.staffing_line", {minutes: minutes, calls: s.calls, handle: dur(s.handle_seconds),
                                      seconds: s.target_seconds, goal: Math.round(s.goal * 100) + "%",
                                      needed: s.agents_needed, staffed: s.agents_staffed});
    }
    return el("p", {"class": "staffing", id: "staffing"}, [el("b", {}, [w("wall.staffing")]), " " + text]);
  }

  function queueRow(q, doc) {
    var f = q.figures, short = f.short_abandoned;
    var agents = ["available", "on_call", "paused"].map(function (state) {
      return el("span", {"class": "chip st-" + state, title: w("agent_state." + state)}, [q.agents[state]]);
    });
    agents.push(el("span", {"class": "muted small"}, [" / " + q.agents.logged_in]));
    return el("tr", {"class": q.queue === null ? "total" : null, "data-queue": q.queue || ""}, [
      td(q.queue || w("wall.hotline")),
      num(f.waiting),
      f.waiting ? ticking(f.longest_wait_seconds, "td", "num") : num(dur(f.longest_wait_seconds)),
      num(f.offered), num(f.answered),
      num([f.abandoned, short ? el("span", {"class": "muted small"},
                                   [" (" + w("wall.short_abandoned", {count: short}) + ")"]) : null]),
      num(pct(f.service_level)), num(dur(f.average_speed_of_answer)), num(dur(f.average_handle_time)),
      num(pct(f.connection_rate_24h), low(f.connection_rate_24h, doc) ? "late" : ""),
      td(agents, "nowrap"),
      num(q.staffing.agents_needed === null ? none() : q.staffing.agents_needed)]);
  }

  function queues(doc) {
    var rows = [doc.hotline].concat(doc.queues).map(function (q) { return queueRow(q, doc); });
    return card("queues", w("wall.queues"), table([
      [w("wall.queue")], [w("wall.waiting"), "num"], [w("wall.longest_wait"), "num"], [w("wall.offered"), "num"],
      [w("wall.answered"), "num"], [w("wall.abandoned"), "num"],
      [w("wall.service_level", {seconds: doc.service_seconds}), "num"], [w("wall.asa"), "num"],
      [w("wall.aht"), "num"], [w("wall.connection_rate"), "num"], [w("wall.agents")], [w("wall.needed"), "num"]],
      rows));
  }

  function agents(doc) {
    if (!doc.agents.length) { return card("agents", w("wall.agents_title"), nothing("wall.no_agents")); }
    return card("agents", w("wall.agents_title"), table(
      [[w("wall.agent")], [w("wall.state")], [w("wall.in_state"), "num"], [w("wall.reason")]],
      doc.agents.map(function (a) {
        var paused = a.state === "paused";
        return el("tr", {"data-agent": a.code}, [
          td([a.code, a.name ? el("span", {"class": "muted"}, [" " + a.name]) : null]),
          td(chip(a.state, [w("agent_state." + a.state)])),
          ticking(since(paused ? a.paused_since : a.since, doc), "td", "num"),
          td(paused && a.reason ? reason(a.reason) : "")]);
      })));
  }

  function callBacks(doc) {
    var title = w("wall.call_backs_title");
    if (!doc.call_backs.length) { return card("call-backs", title, nothing("wall.call_backs_none")); }
    return card("call-backs", title, table(
      [[w("wall.queue")], [w("wall.caller")], [w("wall.abandoned_at")], [w("wall.due")], [w("wall.state")],
       [w("wall.attempts"), "num"]],
      doc.call_backs.map(function (c) {
        return el("tr", {}, [
          td(c.queue), td(caller(c.caller), "nowrap"), td(clock(c.abandoned_at), "nowrap"),
          td(clock(c.due_at) + (c.late ? " · " + w("wall.late") : ""), "nowrap" + (c.late ? " late" : "")),
          td(w("call_back." + c.state) + (c.agent ? " · " + c.agent : "")), num(c.attempts)]);
      })));
  }

  function abandoned(doc) {
    var title = w("wall.abandoned_title");
    if (!doc.abandoned.length) { return card("abandoned", title, nothing("wall.abandoned_none")); }
    return card("abandoned", title, table(
      [[w("wall.at")], [w("wall.queue")], [w("wall.caller")], [w("wall.waited"), "num"], [w("wall.ticket")]],
      doc.abandoned.map(function (a) {
        var ticket = a.ticket ? el("a", {href: tickets + "/" + encodeURIComponent(a.ticket)}, [a.ticket]) : none();
        return el("tr", {}, [
          td(clock(a.at), "nowrap"), td(a.queue), td(caller(a.caller), "nowrap"),
          num([dur(a.wait_seconds), a.short ? el("span", {"class": "badge"}, [w("wall.short")]) : null]),
          td(ticket)]);
      })));
  }

  function draw(doc) {
    docAt = Date.parse(doc.at);
    offset = docAt - Date.now();
    root.replaceChildren(tiles(doc), counts(doc), staffing(doc), queues(doc),
                         el("div", {"class": "cols even"}, [agents(doc), callBacks(doc)]), abandoned(doc));
    asOf.textContent = w("wall.as_of", {time: clock(doc.at)});
  }

  function tick() {
    var elapsed = (Date.now() + offset - docAt) / 1000;
    var nodes = root.querySelectorAll("[data-from]");
    for (var i = 0; i < nodes.length; i++) {
      var from = parseFloat(nodes[i].getAttribute("data-from"));
      if (!isNaN(from)) { nodes[i].textContent = dur(from + elapsed); }
    }
  }

  // --- keeping it live ---
  function showStatus(state) {
    status.setAttribute("data-state", state);
    status.textContent = w("wall." + state);
  }

  function poll() {
    fetch(root.getAttribute("data-poll"), {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (doc) { draw(doc); showStatus("polling"); })
      .catch(function () { showStatus("offline"); });
  }

  function connect() {
    var source = new EventSource(root.getAttribute("data-stream"));
    source.addEventListener("queues", function (e) {
      window.clearTimeout(offlineTimer);
      draw(JSON.parse(e.data));
      showStatus("live");
    });
    source.addEventListener("unavailable", function () { showStatus("offline"); });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {  // refused: poll, and ask for a stream again later
        source.close();
        poll();
        poller = window.setInterval(poll, POLL_MS);
        window.setTimeout(function () { window.clearInterval(poller); connect(); }, STREAM_AGAIN_MS);
      } else {  // the stream ended or dropped: EventSource connects again by itself
        window.clearTimeout(offlineTimer);
        offlineTimer = window.setTimeout(function () { showStatus("offline"); }, OFFLINE_AFTER_MS);
      }
    };
  }

  window.setInterval(tick, 1000);
  if (window.EventSource) { connect(); } else { poll(); poller = window.setInterval(poll, POLL_MS); }
})();
