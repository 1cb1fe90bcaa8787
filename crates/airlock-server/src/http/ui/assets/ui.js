// Airlock's web UI script: progressive enhancement only. Every page works
// without it; with it, a sign-in link fills the form, grants count down
// live and the inbox gets "select all".
"use strict";
(function () {
  // A sign-in link carries the token in the fragment, which the browser
  // never sends: put it in the form and drop it from the address bar.
  var field = document.getElementById("token");
  if (field && location.hash.indexOf("#token=") === 0) {
    field.value = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname);
  }

  function human(seconds) {
    if (seconds <= 0) return "0s";
    var out = "";
    [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]].forEach(function (u) {
      if (seconds >= u[1]) {
        out += Math.floor(seconds / u[1]) + u[0];
        seconds %= u[1];
      }
    });
    return out;
  }

  var clocks = document.querySelectorAll("time[data-countdown]");
  function tick() {
    clocks.forEach(function (t) {
      var left = Math.floor((Date.parse(t.getAttribute("datetime")) - Date.now()) / 1000);
      t.textContent = human(left);
    });
  }
  if (clocks.length) {
    tick();
    setInterval(tick, 1000);
  }

  var all = document.getElementById("select-all");
  if (all) {
    document.getElementById("select-all-box").hidden = false;
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="id"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
})();
