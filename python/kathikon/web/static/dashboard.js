// Live refresh: every few seconds (the server says how often, at least one second), fetch
// this page again and swap in its [data-live] region. The HTML comes from the dashboard's
// own server, already escaped; DOMParser runs no script. No refresh while the tab is hidden
// or a field in the region has focus, and one request at a time.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region) { return; }
  var every = Number(region.getAttribute("data-live")) * 1000;
  if (!(every >= 1000)) { return; }
  var status = document.getElementById("live-status");
  var busy = false;

  function show(text, stale) {
    if (!status) { return; }
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    var focused = document.activeElement;
    if (focused && focused !== document.body && region.contains(focused)) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Kathikon-Live": "1" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        if (fresh) { region.innerHTML = fresh.innerHTML; }
        show("live · " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (error) { show("not updating: " + error.message, true); })
      .then(function () { busy = false; });
  }

  setInterval(refresh, every);
}());
