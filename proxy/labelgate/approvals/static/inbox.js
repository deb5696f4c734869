// Counts down the "time left" of pending requests; the page works without it.
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
  document.addEventListener("DOMContentLoaded", function () { tick(); setInterval(tick, 1000); });
})();
