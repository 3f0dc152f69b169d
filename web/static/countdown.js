/* Counts every [data-due] element down to its deadline, once a second.
   The server wrote whole minutes already (the page works without this script); the words come from the
   body's data-left / data-late ("{m}", "{s}"), its clock from data-now, so a browser's wrong clock does
   not move a deadline. */
(function () {
  "use strict";
  var body = document.body;
  var nodes = document.querySelectorAll("[data-due]");
  var serverNow = Date.parse(body.getAttribute("data-now"));
  var offset = isNaN(serverNow) ? 0 : serverNow - Date.now();
  var left = body.getAttribute("data-left") || "{m}:{s}";
  var late = body.getAttribute("data-late") || "-{m}:{s}";
  if (!nodes.length) { return; }

  function words(pattern, seconds) {
    return pattern.replace("{m}", String(Math.floor(seconds / 60))).replace("{s}", String(seconds % 60));
  }

  function tick() {
    var now = Date.now() + offset;
    for (var i = 0; i < nodes.length; i++) {
      var due = Date.parse(nodes[i].getAttribute("data-due"));
      if (isNaN(due)) { continue; }
      var ms = due - now;
      var seconds = Math.floor(Math.abs(ms) / 1000);
      nodes[i].textContent = words(ms > 0 ? left : late, seconds);
      nodes[i].classList.toggle("late", ms <= 0);
    }
  }

  tick();
  window.setInterval(tick, 1000);
})();
