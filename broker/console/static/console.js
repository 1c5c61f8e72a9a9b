// Strata console: refreshes the live part of a page in place, and asks before a change.
// No library, no build step.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  var every = live ? parseInt(live.getAttribute("data-refresh") || "0", 10) : 0;
  var busy = false;

  function stamp(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.className = bad ? "status bad" : "status";
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(window.location.href, { headers: { "X-Console-Fragment": "1" }, cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        stamp("updated " + new Date().toLocaleTimeString(), false);
        document.body.setAttribute("data-refreshes",
          String(parseInt(document.body.getAttribute("data-refreshes") || "0", 10) + 1));
      })
      .catch(function (err) { stamp("not updated: " + err.message, true); })
      .then(function () { busy = false; });
  }

  if (live && every > 0) {
    stamp("live, every " + every / 1000 + " s", false);
    window.setInterval(refresh, every);
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });
})();
