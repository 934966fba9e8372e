// The pubpresence web feed page (docs/protocol.md, "Web feed"): follows
// /events (Server-Sent Events), keeps the state of "JSON events" and
// redraws it in place. Passes on the token it was opened with (?token=...).
// Reconnects with the last id it saw, so that a short cut costs only the
// events missed ("Resuming a stream"). Nothing from any other host.
(function () {
  "use strict";
  var STATUSES = ["online", "chat", "away", "xa", "dnd", "unknown"];
  var token = new URLSearchParams(location.search).get("token");
  var query = token ? "?token=" + encodeURIComponent(token) : "";
  var users = new Map();     // fulljid -> item
  var service = null;        // "init" | "online" | "offline"
  var synced = false;
  var feed = "connecting";   // "connecting" | "live" | "lost"
  var source = null;
  var retry = 1000;
  var pending = false;
  var lastEvent = null;
  var lastId = "";           // the SSE id of the last message taken
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function resource(jid) {
    var i = jid.indexOf("/");
    return i < 0 ? "" : jid.slice(i + 1);
  }

  function ago(iso) {
    var t = Date.parse(iso);
    if (isNaN(t)) return iso || "";
    var s = Math.max(0, Math.round((Date.now() - t) / 1000));
    var rel = s < 60 ? s + "s" : s < 3600 ? Math.floor(s / 60) + "m" :
      s < 86400 ? Math.floor(s / 3600) + "h " + Math.floor(s % 3600 / 60) + "m" :
      Math.floor(s / 86400) + "d";
    var d = new Date(t);
    var hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return hm + " (" + rel + " ago)";
  }

  function schedule() {
    if (pending) return;
    pending = true;
    setTimeout(function () { pending = false; render(); }, 50);
  }

  function render() {
    var svc = $("service");
    svc.textContent = "service: " + (service || "?");
    svc.className = "badge svc-" + (service || "unknown");
    var f = $("feed");
    f.textContent = feed === "live" ? (synced ? "live" : "waiting for the service") :
      feed === "lost" ? "feed lost" : "connecting…";
    f.className = "badge feed-" + feed;
    $("lost").hidden = feed !== "lost";
    document.body.classList.toggle("stale", feed !== "live" || !synced);

    var filter = $("filter").value.trim().toLowerCase();
    var list = Array.from(users.values()).filter(function (u) {
      if (!filter) return true;
      return [u.name, resource(u.fulljid), u.status, u.ip].some(function (x) {
        return (x || "").toLowerCase().indexOf(filter) >= 0;
      });
    });
    list.sort(function (a, b) {
      return a.name < b.name ? -1 : a.name > b.name ? 1 :
        a.fulljid < b.fulljid ? -1 : a.fulljid > b.fulljid ? 1 : 0;
    });

    // Counts: of everything, not just what the filter shows.
    var per = {}, names = new Set();
    users.forEach(function (u) { per[u.status] = (per[u.status] || 0) + 1; names.add(u.name); });
    var counts = $("counts");
    counts.textContent = "";
    function count(n, label, cls) {
      var c = el("div", "count");
      var b = el("b", null, String(n));
      var s = el("span");
      if (cls) s.appendChild(el("i", "dot " + cls));
      s.appendChild(document.createTextNode(label));
      c.appendChild(b); c.appendChild(s); counts.appendChild(c);
    }
    count(names.size, "users");
    count(users.size, "connections");
    STATUSES.forEach(function (st) { count(per[st] || 0, st, "st-" + st); });
    if (filter) count(list.length, "shown");

    var rows = $("rows");
    var body = document.createDocumentFragment();
    var prev = null;
    list.forEach(function (u) {
      var tr = el("tr", u.name !== prev ? "first" : "");
      tr.dataset.jid = u.fulljid;
      tr.appendChild(el("td", "user", u.name));
      tr.appendChild(el("td", "res", resource(u.fulljid)));
      var st = el("td", "status");
      st.appendChild(el("i", "dot st-" + u.status));
      st.appendChild(document.createTextNode(u.status));
      tr.appendChild(st);
      tr.appendChild(el("td", "ip", u.ip || "—"));
      var since = el("td", "since", ago(u.since));
      since.title = u.since || "";
      tr.appendChild(since);
      body.appendChild(tr);
      prev = u.name;
    });
    rows.textContent = "";
    rows.appendChild(body);
    $("empty").hidden = list.length > 0;
    $("empty").textContent = !synced ? "not in sync yet" : filter ? "no match" : "nobody online";
    $("updated").textContent = lastEvent ? "last event " + new Date(lastEvent).toLocaleTimeString() : "";
  }

  function on(kind, fn) {
    source.addEventListener(kind, function (e) {
      var d;
      try { d = JSON.parse(e.data); } catch (err) { return; }
      lastEvent = d.at || new Date().toISOString();
      if (e.lastEventId) lastId = e.lastEventId;
      fn(d);
      schedule();
    });
  }

  function connect() {
    feed = feed === "lost" ? "lost" : "connecting";
    schedule();
    // A new EventSource sends no Last-Event-ID header: the query says it.
    var q = query;
    if (lastId) q += (q ? "&" : "?") + "last_event_id=" + encodeURIComponent(lastId);
    source = new EventSource("events" + q);
    source.onopen = function () { feed = "live"; retry = 1000; schedule(); };
    source.onerror = function () {
      // Reconnect ourselves (EventSource gives up on some errors): the new
      // stream resumes after lastId, or starts with the state (`reset`).
      // The table stays as it was meanwhile, shown as "feed lost".
      source.close();
      feed = "lost";
      schedule();
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
    on("service", function (d) {
      service = d.status;
      // A stream that starts over: the snapshot that follows replaces all.
      if (d.status !== "online" || d.reset) synced = false;
    });
    on("snapshot", function (d) {
      users = new Map();
      (d.users || []).forEach(function (u) { users.set(u.fulljid, u); });
      synced = true;
    });
    on("set", function (d) {
      users.set(d.fulljid, { fulljid: d.fulljid, name: d.name, status: d.status, ip: d.ip, since: d.since });
    });
    on("remove", function (d) { users.delete(d.fulljid); });
  }

  $("filter").addEventListener("input", render);
  setInterval(render, 15000); // "since" stays current
  render();
  connect();
})();
