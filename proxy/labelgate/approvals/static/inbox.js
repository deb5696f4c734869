// Counts down the "time left" of pending requests, and keeps the inbox's pending list current
// (it asks /inbox/live every few seconds and swaps the list in when it changed). The page
// works without it: the Refresh button does the same.
(function () {
  function format(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    if (seconds < 600) return Math.floor(seconds / 60) + " min " + String(seconds % 60).padStart(2, "0") + " s";
    return Math.floor(seconds / 60) + " min";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var left = parseFloat(el.dataset.expires) - now;
      el.textContent = left > 0 ? format(left) + " left" : "expired";
      el.classList.toggle("urgent", left < 30);
    });
  }
  // Someone typing a reason keeps their text: the list is swapped only when no reason is
  // being written (the next poll catches up).
  function busy(list) {
    var active = document.activeElement;
    if (active && list.contains(active) && active.name === "reason") return true;
    return Array.prototype.some.call(list.querySelectorAll("input[name=reason]"), function (input) {
      return input.value !== "";
    });
  }
  function follow(list) {
    var every = parseInt(list.dataset.pollMs, 10) || 2000;
    function poll() {
      fetch(list.dataset.live, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (answer) {
          if (answer.status === 401) { window.location.reload(); return null; }
          return answer.ok ? answer.json() : null;
        })
        .then(function (update) {
          if (update && update.signature !== list.dataset.signature && !busy(list)) {
            list.innerHTML = update.html;  // rendered and escaped by the server's templates
            list.dataset.signature = update.signature;
            document.title = "Inbox (" + update.count + ") · labelgate";
            tick();
          }
        })
        .catch(function () { /* offline for a moment: the next poll tries again */ })
        .finally(function () { setTimeout(poll, every); });
    }
    setTimeout(poll, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var list = document.getElementById("pending-list");
    if (list && list.dataset.live) follow(list);
  });
})();
