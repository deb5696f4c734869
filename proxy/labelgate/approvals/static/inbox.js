// Counts down the "time left" of pending requests, and keeps the inbox's pending list current
// (it asks /inbox/live every few seconds). The page works without it: the Refresh button
// shows the same list in the same order.
//
// A click must land on the request the approver meant. The script never moves a card that is
// shown: a new request is added at the end (the server lists them in the order they arrived,
// so a reload agrees); a request no longer waiting is removed only while the pointer is off
// the list and nothing in it has focus, and until then stays in place with its buttons
// disabled. Yet content still moves under a pointer that rests: a card added at the end
// pushes down what follows the list, a reload after a vote puts the next card where the last
// one was, a line wraps. So a card's vote buttons take no click until the approver has come
// onto that card since it last appeared or moved: the pointer moved into it from outside (a
// change of the page moves content, never the pointer), keyboard focus entered it, or a
// finger touched it (for the next tap). And none for a moment after it appeared or moved, as
// browsers' layout-shift protections do.
(function () {
  var SETTLE_MS = 1000;
  var MOVE_MS = 100;  // a card this old when the pointer came into it was there before the move began
  var USER_SCROLL_MS = 1000;  // a scroll this soon after a wheel, key or touch is the approver's
  var CARD = "li[data-approval-id]";
  var VOTES = "form.vote .buttons button";
  var list = null;

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
    if (list) recheck(list);  // a shorter text may have unwrapped a line and moved cards
  }
  function cards(root) {
    return Array.prototype.slice.call(root.querySelectorAll(CARD));
  }
  function cardAt(node) {
    var card = node && node.closest ? node.closest(CARD) : null;
    return card && list && list.contains(card) ? card : null;
  }

  // -- where each card is, and whether the approver has come onto it --------------------------
  // Per card: when it last appeared or moved (placedAt), when the approver came onto it since
  // (armedAt, null until then), and where the card and its buttons were in the page then.
  var placement = new WeakMap();

  function layoutOf(card) {
    var sx = window.scrollX, sy = window.scrollY;  // in the page's coordinates: a scroll moves nothing
    return [card].concat(Array.prototype.slice.call(card.querySelectorAll(VOTES))).map(function (el) {
      var r = el.getBoundingClientRect();
      return [r.left + sx, r.top + sy, r.width, r.height];
    });
  }
  function sameLayout(a, b) {
    return !!a && !!b && a.length === b.length && a.every(function (box, i) {
      return box.every(function (v, j) { return Math.abs(v - b[i][j]) < 0.5; });
    });
  }
  function inside(box, p) {
    return p.x >= box.left && p.x < box.right && p.y >= box.top && p.y < box.bottom;
  }
  function votable(card) {
    var p = placement.get(card);
    return !!p && p.armedAt !== null && !card.dataset.gone && performance.now() - p.placedAt >= SETTLE_MS;
  }
  function show(card) {
    var off = !votable(card), p = placement.get(card);
    var waiting = !card.dataset.gone && !(p && p.armedAt !== null);  // for the approver to come onto it
    card.querySelectorAll(VOTES).forEach(function (b) {
      b.disabled = off;
      b.style.opacity = off && !card.dataset.gone ? "0.55" : "";  // the CSSOM: the CSP allows it
      b.title = waiting ? "Move the pointer onto this request to decide on it" : "";
    });
  }
  // The card appeared or moved: the approver has not come onto it where it is now.
  function place(card) {
    placement.set(card, { placedAt: performance.now(), armedAt: null, layout: layoutOf(card) });
    delete card.dataset.armed;
    show(card);
    setTimeout(function () { show(card); }, SETTLE_MS + 20);
  }
  function arm(card, at) {
    var p = placement.get(card);
    if (!p || p.armedAt !== null) return;
    if (!sameLayout(layoutOf(card), p.layout)) { place(card); return; }  // it moved: placed now
    p.armedAt = at;
    p.layout = layoutOf(card);
    card.dataset.armed = "true";
    show(card);
  }
  // Whatever moved a card (the list changing, a wrapped line, a resized window) places it again.
  function recheck(root) {
    cards(root).forEach(function (card) {
      var p = placement.get(card);
      if (p && !sameLayout(layoutOf(card), p.layout)) place(card);
    });
  }

  // -- what the approver does ------------------------------------------------------------------
  var pointer = null;  // where a mouse or pen last was in the viewport, and when
  var scrolledTo = { x: window.scrollX, y: window.scrollY };
  var gesture = { at: -Infinity, pointer: false };  // the last pointerdown or keydown
  var keyboardLast = false;
  var userScrollUntil = -Infinity;

  // The pointer went from `last` to `now` (viewport positions). It came onto a card when
  // `last` is outside the card where the card is now and `now` is in it: content that moved
  // under a resting pointer has `last` in it too. A scroll the approver made (wheel, keys,
  // touch) carries the pointer over the page by `scrolled`; a scroll the page made does not.
  function moved(last, now, scrolled) {
    if (!last || !list) return;
    var card = cardAt(document.elementFromPoint(now.x, now.y));
    var p = card && placement.get(card);
    if (!p) return;
    if (!sameLayout(layoutOf(card), p.layout)) { place(card); return; }  // it moved: placed now
    if (p.armedAt !== null) return;
    // The card was there before this move began: placed before the pointer was last seen, or
    // while it rested there (a move is reported within a frame of starting). Not a card that
    // appeared where a moving pointer was heading.
    if (!(p.placedAt < last.at || now.at - p.placedAt >= MOVE_MS)) return;
    var from = { x: last.x - scrolled.x, y: last.y - scrolled.y };
    if (from.x === now.x && from.y === now.y) return;
    var box = card.getBoundingClientRect();
    if (!inside(box, from) && inside(box, now)) arm(card, now.at);
  }
  function watch() {
    var capture = { capture: true, passive: true };
    window.addEventListener("pointermove", function (event) {
      if (event.pointerType === "touch") return;  // a finger only moves while it drags
      var last = pointer;
      pointer = { x: event.clientX, y: event.clientY, at: event.timeStamp };
      moved(last, pointer, { x: 0, y: 0 });
    }, capture);
    window.addEventListener("pointerover", function (event) {
      // The first thing the page learns of a resting pointer (no move yet): where it is.
      if (!pointer && event.pointerType !== "touch") pointer = { x: event.clientX, y: event.clientY, at: event.timeStamp };
    }, capture);
    window.addEventListener("scroll", function (event) {
      var dx = window.scrollX - scrolledTo.x, dy = window.scrollY - scrolledTo.y;
      scrolledTo = { x: window.scrollX, y: window.scrollY };
      if (event.timeStamp > userScrollUntil || !pointer) return;  // the page scrolled itself
      var last = pointer;
      pointer = { x: last.x, y: last.y, at: event.timeStamp };
      moved(last, pointer, { x: dx, y: dy });
    }, { passive: true });
    window.addEventListener("pointerdown", function (event) {
      gesture = { at: event.timeStamp, pointer: true };
      keyboardLast = false;
      if (event.pointerType === "mouse") return;
      // A finger or a pen without hover has no resting place: touching a card (once it has
      // stayed put a moment) is coming onto it, for the next tap; this one votes on nothing.
      var card = cardAt(event.target);
      var p = card && placement.get(card);
      if (p && event.timeStamp - p.placedAt >= SETTLE_MS) arm(card, event.timeStamp);
    }, capture);
    window.addEventListener("keydown", function (event) {
      gesture = { at: event.timeStamp, pointer: false };
      keyboardLast = true;
      userScrollUntil = event.timeStamp + USER_SCROLL_MS;
    }, capture);
    ["wheel", "touchstart", "touchmove"].forEach(function (name) {
      window.addEventListener(name, function (event) { userScrollUntil = event.timeStamp + USER_SCROLL_MS; }, capture);
    });
    document.addEventListener("focusin", function (event) {
      var card = cardAt(event.target);
      if (card && keyboardLast) arm(card, event.timeStamp);  // tabbed into it
    });
    window.addEventListener("resize", function () { recheck(list); });
    // Every way a vote form is sent comes here: a vote counts only from a card the approver
    // came onto before the click or key that sends it, still where it was then.
    document.addEventListener("submit", function (event) {
      var card = cardAt(event.target);
      if (!card) return;
      var p = placement.get(card);
      var stayed = !!p && sameLayout(layoutOf(card), p.layout);
      if (votable(card) && p.armedAt < gesture.at && (stayed || !gesture.pointer)) return;
      event.preventDefault();
      if (p && !stayed) place(card);
    }, true);
  }

  // -- following the list ----------------------------------------------------------------------
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
  // A request no longer waiting (decided, expired, or on another page now) while the approver
  // points at the list: it stays where it is, greyed, and nothing in it can be sent.
  function markGone(card) {
    card.dataset.gone = "true";
    card.style.opacity = "0.5";  // the CSSOM, not inline style markup: the CSP allows it
    card.querySelectorAll("form.vote button, form.vote input").forEach(function (el) { el.disabled = true; });
    var reason = card.querySelector("input[name=reason]");
    if (reason) reason.placeholder = "No longer waiting for you: decided, expired or on another page";
    show(card);
  }
  function apply(list, update) {
    var fresh = document.createElement("template");
    fresh.innerHTML = update.html;  // rendered and escaped by the server's templates
    var shown = list.querySelector("ul.requests");
    var scrolled = [window.scrollX, window.scrollY];
    var incoming = new Map();
    cards(fresh.content).forEach(function (card) { incoming.set(card.dataset.approvalId, card); });
    var removable = away(list);
    var added = [];
    cards(shown).forEach(function (card) {
      var next = incoming.get(card.dataset.approvalId);
      incoming.delete(card.dataset.approvalId);
      if (!next) {
        if (removable) card.remove(); else if (!card.dataset.gone) markGone(card);
      } else if (card.dataset.gone || next.dataset.version !== card.dataset.version) {
        card.replaceWith(next);  // the same request, in the same place
        added.push(next);
      }
    });
    incoming.forEach(function (card) { shown.appendChild(card); added.push(card); });  // last: nothing shown moves
    list.querySelector(".empty").hidden = cards(shown).length > 0;
    list.querySelector(".count").textContent = update.count;
    document.title = "Inbox (" + update.count + ") · labelgate";
    tick();
    added.forEach(place);
    recheck(shown);
    if (window.scrollX !== scrolled[0] || window.scrollY !== scrolled[1]) cards(shown).forEach(place);  // the page scrolled itself
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
    list = document.getElementById("pending-list");
    if (!list) return;
    cards(list).forEach(place);  // a page just loaded (say, after a vote): nobody has come onto anything
    watch();
    if (list.dataset.live) follow(list);
  });
})();
