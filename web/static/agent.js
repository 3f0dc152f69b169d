/* The agent's panel, live, and the screen pop: when a call connects to this agent, the page opens the call's
   ticket by itself. Listens to /api/agents/me/stream ("state" and "call" events); when no stream can be had,
   polls /api/agents and tries the stream again a minute later. A call pops once: the call the agent was on
   when the page loaded, and every call popped in this tab (sessionStorage), never pop again. */
(function () {
  "use strict";
  var panel = document.getElementById("agent-panel");
  if (!panel) { return; }
  var words = JSON.parse(panel.getAttribute("data-words") || "{}");
  var chip = document.getElementById("agent-state");
  var detail = document.getElementById("agent-detail");
  var tickets = panel.getAttribute("data-tickets");
  var POLL_MS = 5000, STREAM_AGAIN_MS = 60000, KEPT = 20, KEY = "hotline.popped";
  var loadedOn = panel.getAttribute("data-call");
  var clockFormat = new Intl.DateTimeFormat("en-GB", {timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit",
                                                      second: "2-digit", hour12: false});

  function w(key, values) {
    var text = words[key] || key;
    Object.keys(values || {}).forEach(function (name) {
      text = text.split("{" + name + "}").join(String(values[name]));
    });
    return text;
  }

  function popped() {
    try { return JSON.parse(window.sessionStorage.getItem(KEY) || "[]"); } catch (e) { return []; }
  }
  function remember(callId) {
    var list = popped().concat([callId]).slice(-KEPT);
    try { window.sessionStorage.setItem(KEY, JSON.stringify(list)); } catch (e) { /* private mode: pop anyway */ }
  }

  function pop(callId, ticket, url) {
    if (!callId || !ticket || callId === loadedOn || popped().indexOf(callId) >= 0) { return; }
    remember(callId);
    if (window.location.pathname === url) { return; }
    detail.textContent = w("pop", {ticket: ticket});
    window.location.assign(url);
  }

  function show(agent) {
    chip.className = "chip st-" + agent.state;
    chip.setAttribute("data-state", agent.state);
    chip.textContent = w("state." + agent.state);
    var parts = [];
    if (agent.state === "paused" && agent.reason) { parts.push(words["reason." + agent.reason] || agent.reason); }
    if (agent.call && agent.call.ticket) { parts.push(w("on_call", {ticket: agent.call.ticket})); }
    if (agent.since) { parts.push(w("since", {time: clockFormat.format(new Date(agent.since))})); }
    detail.textContent = parts.join(" · ");
    var forms = panel.querySelectorAll("form[data-states]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].hidden = forms[i].getAttribute("data-states").split(" ").indexOf(agent.state) < 0;
    }
    if (agent.state === "on_call" && agent.call && agent.call.ticket) {  // a call missed between two streams
      pop(agent.call.call_id, agent.call.ticket, tickets + "/" + agent.call.ticket);
    }
  }

  function poll() {
    fetch(panel.getAttribute("data-poll"), {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (answer) { if (answer.items && answer.items.length) { show(answer.items[0]); } })
      .catch(function () { /* the next poll tries again */ });
  }

  function connect() {
    var source = new EventSource(panel.getAttribute("data-stream"));
    source.addEventListener("state", function (e) { show(JSON.parse(e.data)); });
    source.addEventListener("call", function (e) {
      var call = JSON.parse(e.data);
      pop(call.call_id, call.ticket, call.url);
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {  // refused: poll, and ask for a stream again later
        source.close();
        var poller = window.setInterval(poll, POLL_MS);
        poll();
        window.setTimeout(function () { window.clearInterval(poller); connect(); }, STREAM_AGAIN_MS);
      }
    };
  }

  if (window.EventSource) { connect(); } else { window.setInterval(poll, POLL_MS); }
})();
