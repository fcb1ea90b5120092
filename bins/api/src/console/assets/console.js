// Progressive enhancement only: every page works without this file.
// 1. Relative times ("5 min ago") stay current.
// 2. The inbox reloads itself every 30 s unless you are typing in it.
(function () {
  "use strict";
  function relative(ms) {
    var future = ms > 0, s = Math.round(Math.abs(ms) / 1000), text;
    if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min";
    else if (s < 86400) text = Math.floor(s / 3600) + " h";
    else text = Math.floor(s / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(at)) el.textContent = relative(at - now);
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 15000);
    var inbox = document.querySelector("[data-refresh]");
    if (inbox) {
      var every = parseInt(inbox.getAttribute("data-refresh"), 10) * 1000;
      setInterval(function () {
        var active = document.activeElement;
        var typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA") && active.value;
        if (!typing && !document.hidden) window.location.reload();
      }, every);
    }
  });
})();
