// The dashboard's only script: live logs of runs in flight, and the actions (run, cancel, pause).
// Pages read without it; an exported site has none.
(function () {
  "use strict";
  var root = document.body.dataset.root || "";
  var mode = document.body.dataset.mode;
  var KEY = "puppemon-token";

  function token() { try { return sessionStorage.getItem(KEY); } catch (e) { return null; } }
  function headers() {
    var h = {"Content-Type": "application/json"};
    if (token()) { h["Authorization"] = "Bearer " + token(); }
    return h;
  }
  function notice(text) { document.getElementById("notice").textContent = text; }

  if ((mode === "token" || mode === "locked") && token()) {
    document.querySelectorAll("[data-needs-token]").forEach(function (el) { el.hidden = false; });
  }

  // A daemon off loopback: every page is fetched with the token and written in place of this one.
  function load(url, push) {
    fetch(url, {headers: headers()}).then(function (r) {
      if (r.status === 401) { sessionStorage.removeItem(KEY); notice("The token was refused."); return null; }
      return r.text();
    }).then(function (html) {
      if (html === null || html === undefined) { return; }
      if (push) { history.pushState(null, "", url); }
      document.open(); document.write(html); document.close();
    }).catch(function (e) { notice("Failed: " + e); });
  }

  function download(a) {
    fetch(a.href, {headers: headers()}).then(function (r) { return r.blob(); }).then(function (blob) {
      var link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = decodeURIComponent(a.pathname.split("/").pop());
      link.click();
    });
  }

  if (mode === "locked") {
    document.addEventListener("click", function (ev) {
      var a = ev.target.closest ? ev.target.closest("a[href]") : null;
      if (!a || a.origin !== location.origin || a.id === "token-link" || a.hash && a.pathname === location.pathname) { return; }
      ev.preventDefault();
      if (a.hasAttribute("download")) { download(a); } else { load(a.href, true); }
    });
    window.addEventListener("popstate", function () { load(location.href, false); });
    if (document.body.dataset.locked === "1" && token()) { load(location.href, false); }
  }

  var tokenForm = document.getElementById("token-form");
  if (tokenForm) {
    tokenForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(KEY, document.getElementById("token-input").value);
      if (document.body.dataset.locked === "1") { load(location.href, false); return; }
      location.href = root + "index.html";
    });
  }

  function body(form) {
    var action = form.dataset.action, out = {};
    if (action === "run") {
      out.params = {};
      form.querySelectorAll("input[data-key]").forEach(function (input) {
        var value = input.value;
        if (input.dataset.json === "true") { try { value = JSON.parse(value); } catch (e) { /* text */ } }
        out.params[input.dataset.key] = value;
      });
    }
    var reason = form.querySelector("input[name=reason]");
    if (reason && reason.value) { out.reason = reason.value; }
    return out;
  }

  document.querySelectorAll("form.action").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      fetch(root + form.dataset.url, {method: "POST", headers: headers(), body: JSON.stringify(body(form))})
        .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
        .then(function (res) {
          var status = res[0], answer = res[1];
          if (status >= 400) { notice("Refused (" + status + "): " + (answer.error || "")); return; }
          if (answer.id && form.dataset.action === "run") { location.href = root + "runs/" + answer.id + ".html"; return; }
          notice("Done: " + (answer.message || form.dataset.action));
          setTimeout(function () { location.reload(); }, 1500);
        })
        .catch(function (e) { notice("Failed: " + e); });
    });
  });

  var log = document.querySelector("pre[data-live]");
  if (log) {
    var since = parseInt(log.dataset.since || "0", 10);
    var poll = function () {
      fetch(root + "api/runs/" + log.dataset.live + "/live.json?since=" + since, {headers: headers()})
        .then(function (r) { return r.json(); })
        .then(function (j) {
          if (j.state === "finished") { location.reload(); return; }
          if (j.live) {
            if (j.live.start > since) { log.appendChild(document.createTextNode("\n[... output skipped ...]\n")); }
            log.appendChild(document.createTextNode(j.live.log.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "")));  // colours: on the recorded page
            since = j.live.total;
            var none = document.getElementById("no-tail");
            if (none) { none.remove(); }
          }
          var state = document.getElementById("state");
          if (state && j.state && state.textContent !== j.state) { state.textContent = j.state; }
          setTimeout(poll, 1000);
        })
        .catch(function () { setTimeout(poll, 3000); });
    };
    setTimeout(poll, 1000);
  }
})();
