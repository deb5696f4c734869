// Counts down the "time left" of pending requests, and keeps the inbox's pending list current
// (it asks /inbox/live every few seconds). The page works without it: the Refresh button
// shows the same list in the same order.
//
// A click must land on the request the approver saw in that place, so the script never moves
// a card that is shown: a new request is added at the end (the server lists them in the order
// they arrived, so a reload agrees); a request no longer waiting is removed only while the
// pointer is off the list and nothing in it has focus, and until then stays in place with its
// buttons disabled. A card that just appeared or moved ignores clicks for a moment, as
// browsers' layout-shift protections do.
(function () {
  var SETTLE_MS = 1000;

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
  function cards(root) {
    return Array.prototype.slice.call(root.querySelectorAll("li[data-approval-id]"));
  }
  function top(card) {
    return card.getBoundingClientRect().top;
  }
  // Someone typing a reason keeps their text: the list is changed only when no reason is
  // being written (the next poll catches up).
  function busy(list) {
    var active = document.activeElement;
    if (active && list.contains(active) && active.name === "reason") return true;
    return Array.prototype.some.call(list.querySelectorAll("input[name=reason]"), function (input) {
      return input.value !== "";
    });
  }
  // The approver is not pointing at the list nor working in it: cards may be removed.
  function away(list) {
    return !list.matches(":hover") && !list.contains(document.activeElement);
  }
  // A card that just appeared or moved: its buttons take no click until it has stayed put.
  function settle(card) {
    var until = String(Date.now() + SETTLE_MS);
    card.dataset.settling = until;
    card.querySelectorAll("form.vote button").forEach(function (b) { b.disabled = true; });
    setTimeout(function () {
      if (card.dataset.settling !== until || card.dataset.gone) return;  // moved again, or gone
      delete card.dataset.settling;
      card.querySelectorAll("form.vote button").forEach(function (b) { b.disabled = false; });
    }, SETTLE_MS);
  }
  // A request no longer waiting (decided, expired, or on another page now) while the approver
  // points at the list: it stays where it is, greyed, and nothing in it can be sent.
  function markGone(card) {
    card.dataset.gone = "true";
    card.style.opacity = "0.5";  // the CSSOM, not inline style markup: the CSP allows it
    card.querySelectorAll("form.vote button, form.vote input").forEach(function (el) { el.disabled = true; });
    var reason = card.querySelector("input[name=reason]");
    if (reason) reason.placeholder = "No longer waiting for you: decided, expired or on another page";
  }
  function apply(list, update) {
    var fresh = document.createElement("template");
    fresh.innerHTML = update.html;  // rendered and escaped by the server's templates
    var shown = list.querySelector("ul.requests");
    var before = new Map();
    cards(shown).forEach(function (card) { before.set(card, top(card)); });
    var incoming = new Map();
    cards(fresh.content).forEach(function (card) { incoming.set(card.dataset.approvalId, card); });
    var removable = away(list);
    cards(shown).forEach(function (card) {
      var next = incoming.get(card.dataset.approvalId);
      incoming.delete(card.dataset.approvalId);
      if (!next) {
        if (removable) card.remove(); else if (!card.dataset.gone) markGone(card);
      } else if (card.dataset.gone || next.dataset.version !== card.dataset.version) {
        card.replaceWith(next);  // the same request, in the same place
      }
    });
    incoming.forEach(function (card) { shown.appendChild(card); });  // last: nothing shown moves
    cards(shown).forEach(function (card) {
      if (before.get(card) !== top(card)) settle(card);
    });
    list.querySelector(".empty").hidden = cards(shown).length > 0;
    list.querySelector(".count").textContent = update.count;
    document.title = "Inbox (" + update.count + ") · labelgate";
    tick();
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
          var changed = update && (update.signature !== list.dataset.signature || list.querySelector("[data-gone]"));
          if (changed && !busy(list)) {
            apply(list, update);
            list.dataset.signature = update.signature;
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
    if (!list) return;
    cards(list).forEach(settle);  // a page just loaded (say, after a vote): nothing clicks through
    if (list.dataset.live) follow(list);
  });
})();
