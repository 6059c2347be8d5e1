// Live refresh: every few seconds (the server says how often, at least one second), fetch
// this page again and swap in its [data-live] region. The HTML comes from the dashboard's
// own server, already escaped; DOMParser runs no script. No refresh while the tab is hidden,
// a field in the region has focus, or a job row is ticked (a refresh would untick it), and
// one request at a time.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  var status = document.getElementById("live-status");
  var busy = false;

  function ticked() {
    return region !== null && region.querySelector("input.select-job:checked") !== null;
  }

  function show(text, stale) {
    if (!status) { return; }
    status.textContent = text;
    status.classList.toggle("stale", stale);
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    if (ticked()) { show("paused while jobs are selected", false); return; }
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
        // A row ticked while the request was out keeps its tick: skip this answer.
        if (fresh && !ticked()) { region.innerHTML = fresh.innerHTML; }
        show("live · " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (error) { show("not updating: " + error.message, true); })
      .then(function () { busy = false; });
  }

  // The job list's "select all" box ticks or unticks every row of the page.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box || box.id !== "select-all") { return; }
    var rows = document.querySelectorAll("input.select-job");
    for (var i = 0; i < rows.length; i++) { rows[i].checked = box.checked; }
  });

  // Acting on every job matching a filter asks first.
  var bulk = document.getElementById("bulk-form");
  if (bulk) {
    bulk.addEventListener("submit", function (event) {
      var button = event.submitter;
      var everyMatching = document.getElementById("bulk-scope-filter");
      if (everyMatching && everyMatching.checked && button) {
        var count = bulk.querySelector("[data-count='matching']");
        var what = button.value + " all " + (count ? count.textContent : "") + " jobs matching this filter?";
        if (!window.confirm(what)) { event.preventDefault(); }
      }
    });
  }

  if (!region) { return; }
  var every = Number(region.getAttribute("data-live")) * 1000;
  if (!(every >= 1000)) { return; }
  setInterval(refresh, every);
}());
