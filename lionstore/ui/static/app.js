/* lionstore ui: the pages. Hash routes, JSON from /api, drawing in timeline.js. */
(function () {
  "use strict";
  var T = window.LionstoreTimeline, esc = T.esc, fmtSpan = T.fmtSpan;
  var main = document.getElementById("main");
  var poll = null, current = null;
  window.lionstoreUi = { ready: false };

  function api(path) {
    return fetch("api/" + path, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error || r.statusText);
        return body;
      });
    });
  }
  function when(us) { return new Date(us / 1000).toISOString().replace("T", " ").slice(0, 19); }
  function chips(o, cls) {
    return Object.keys(o || {}).map(function (k) {
      return '<span class="chip s-' + esc((cls || k).split(" ")[0]) + '">' + esc(k) + " " + o[k] + "</span>";
    }).join("") || '<span class="muted">–</span>';
  }
  function runLink(id, label) { return '<a href="#/run/' + esc(id) + '">' + esc(label || id.slice(0, 8)) + "</a>"; }
  function fail(err) { main.innerHTML = '<p class="verdict bad">' + esc(err.message || err) + "</p>"; done(); }
  function done() { window.lionstoreUi.ready = true; window.lionstoreUi.route = location.hash; }
  function stopPolling() { if (poll) clearInterval(poll); poll = null; document.getElementById("live").textContent = ""; }
  function json(v) { return "<pre>" + esc(JSON.stringify(v, null, 2)) + "</pre>"; }

  /* -- runs ------------------------------------------------------------------------ */
  function runsPage() {
    api("runs").then(function (data) {
      document.getElementById("target").textContent = data.target;
      var runs = data.runs, byId = {};
      runs.forEach(function (r) { byId[r.run_id] = r; });
      main.innerHTML = "<h1>Runs</h1>" +
        '<div class="filters"><label>label <input id="f-label" placeholder="filter by label"></label>' +
        '<label>status <select id="f-status"><option value="">any</option><option>completed</option>' +
        "<option>failed</option><option>processing</option><option>queued</option><option>pending</option>" +
        '<option value="dead">dead letters</option></select></label><span id="f-count" class="muted"></span></div>' +
        '<table id="runs"><thead><tr><th>label</th><th>started (UTC)</th><th>duration</th><th>records</th>' +
        "<th>events by status</th><th>mail by state</th><th>forked from</th></tr></thead><tbody></tbody></table>" +
        '<h2>Lineage</h2><div class="tree" id="tree"></div>';
      var body = main.querySelector("tbody");
      function render() {
        var label = document.getElementById("f-label").value.toLowerCase();
        var status = document.getElementById("f-status").value;
        var shown = runs.filter(function (r) {
          if (label && (r.label || r.run_id).toLowerCase().indexOf(label) < 0) return false;
          if (status === "dead") return (r.mail.dead || 0) > 0;
          return !status || (r.events[status] || 0) > 0;
        });
        body.innerHTML = shown.slice().reverse().slice(0, 2000).map(function (r) {
          var parent = r.parent_run_id ? byId[r.parent_run_id] : null;
          return '<tr data-run="' + esc(r.run_id) + '"><td>' + runLink(r.run_id, r.label || r.run_id) + "</td><td>" + when(r.started_us) +
            '</td><td class="num">' + fmtSpan(r.duration_us / 1000) + '</td><td class="num">' + r.records + "</td><td>" + chips(r.events) +
            "</td><td>" + chips(r.mail) + "</td><td>" + (parent ? runLink(parent.run_id, parent.label) + " @ " + r.forked_at_position : "") + "</td></tr>";
        }).join("");
        document.getElementById("f-count").textContent = shown.length + " of " + runs.length + " runs";
      }
      document.getElementById("f-label").oninput = render;
      document.getElementById("f-status").onchange = render;
      render();
      // Live: new runs and records show up without a reload (the server keeps the
      // runs list up to date incrementally, so asking is cheap).
      var known = JSON.stringify(runs);
      poll = setInterval(function () {
        api("runs").then(function (fresh) {
          var text = JSON.stringify(fresh.runs);
          if (text === known) return;
          known = text;
          runs = fresh.runs;
          byId = {};
          runs.forEach(function (r) { byId[r.run_id] = r; });
          render();
        }).catch(function () {});
      }, 2000);
      var kids = {};
      runs.forEach(function (r) { if (r.parent_run_id) (kids[r.parent_run_id] = kids[r.parent_run_id] || []).push(r); });
      function tree(r) {
        var k = kids[r.run_id] || [];
        return "<li>" + runLink(r.run_id, r.label) + (r.forked_at_position != null ? ' <span class="muted">forked at ' + r.forked_at_position + "</span>" : "") +
          (k.length ? "<ul>" + k.map(tree).join("") + "</ul>" : "") + "</li>";
      }
      var roots = runs.filter(function (r) { return !r.parent_run_id && kids[r.run_id]; });
      document.getElementById("tree").innerHTML = roots.length ? "<ul>" + roots.map(tree).join("") + "</ul>" : '<p class="muted">no forks</p>';
      done();
    }).catch(fail);
  }

  /* -- a run ----------------------------------------------------------------------- */
  function tabs(id, summary) {
    return '<nav class="tabs"><a href="#/run/' + esc(id) + '">timeline</a><a href="#/run/' + esc(id) + '/state">state at a position</a>' +
      '<a href="#/run/' + esc(id) + '/verify">verify</a>' + (summary && summary.parent_run_id ? '<a href="#/run/' + esc(id) + '/compare">compare with parent</a>' : "") +
      '<a href="#/">all runs</a></nav>';
  }
  function runPage(id) {
    api("runs/" + encodeURIComponent(id) + "/timeline").then(function (data) {
      var s = data.summary;
      main.innerHTML = '<h1 id="run-title">Run ' + esc(s.title) + "</h1>" + (s.label ? '<div class="muted">' + esc(s.run_id) + "</div>" : "") +
        (s.parent_run_id ? '<div>forked from ' + runLink(s.parent_run_id) + " at position " + s.forked_at_position + "</div>" : "") +
        tabs(id, s) + '<section id="run-head"></section>' + T.legendHtml() +
        '<div id="timeline" class="timeline"></div><p class="muted">Scroll to zoom, drag to pan; click a bar or an arrow to open it, a bucket of counts to zoom in on it.</p>';
      document.getElementById("run-head").innerHTML = T.head(s);
      var tl = new T.Timeline(document.getElementById("timeline"), {
        onOpen: function (href) { location.hash = href.slice(1); },
        onWindow: function (range) { refresh(range); }
      });
      current = { id: id, tl: tl, summary: s };
      window.lionstoreUi.timeline = tl;
      tl.draw(s, data.window);
      window.lionstoreUi.summary = s;
      var pending = false, live = document.getElementById("live");
      function status(summary) {
        live.textContent = summary.complete ? "live · position " + summary.position
          : "reading the log… " + summary.records.toLocaleString() + " records so far";
      }
      var dropped = false;
      function refresh(range) {
        // one request at a time; one asked for meanwhile (a zoom during a live update)
        // is made when the current one is done, for the window shown then
        if (pending) { dropped = true; return; }
        pending = true;
        var q = range ? "?start=" + range[0] + "&end=" + range[1] : "";
        Promise.all([api("runs/" + encodeURIComponent(id) + "/timeline"), range ? api("runs/" + encodeURIComponent(id) + "/window" + q) : null])
          .then(function (r) {
            var summary = r[0].summary;
            if (current.tl !== tl) return;  // the page moved on
            document.getElementById("run-head").innerHTML = T.head(summary);
            tl.draw(summary, r[1] || r[0].window);
            current.summary = window.lionstoreUi.summary = summary;
            status(summary);
            if (!summary.complete) setTimeout(function () { refresh(tl.range); }, 1200);
          }).finally(function () {
            pending = false;
            if (dropped && current.tl === tl) { dropped = false; refresh(tl.range); }
          });
      }
      status(s);
      if (!s.complete) setTimeout(function () { refresh(null); }, 0);
      poll = setInterval(function () {
        if (pending || !current.summary.complete) return;
        api("runs/" + encodeURIComponent(id) + "/head").then(function (h) {
          if (h.position !== current.summary.position) refresh(tl.range);
        }).catch(function () {});
      }, 1000);
      done();
    }).catch(fail);
  }

  function recordsTable(records) {
    return '<table class="records"><thead><tr><th>position</th><th>version</th><th>recorded (UTC)</th><th>kind</th><th>data</th></tr></thead><tbody>' +
      records.map(function (r) {
        return '<tr><td class="num">' + r.position + '</td><td class="num">' + r.stream_version + "</td><td>" + esc(String(r.recorded_at).replace("T", " ").slice(0, 23)) +
          "</td><td>" + esc(r.kind) + '</td><td><code>' + esc(JSON.stringify(r.data)).slice(0, 400) + "</code></td></tr>";
      }).join("") + "</tbody></table>";
  }
  function kv(rows) {
    return '<table class="kv">' + rows.map(function (r) { return "<tr><td>" + esc(r[0]) + "</td><td>" + r[1] + "</td></tr>"; }).join("") + "</table>";
  }

  function eventPage(id, eid) {
    api("runs/" + encodeURIComponent(id) + "/events/" + encodeURIComponent(eid)).then(function (d) {
      var e = d.event;
      main.innerHTML = '<h1 id="event-title">Event ' + esc(e.name) + "</h1>" + tabs(id) +
        '<div class="muted">in run ' + runLink(d.run.run_id, d.run.title) + " · executor " + esc(e.executor) + "</div>" +
        kv([["id", "<code>" + esc(e.id) + "</code>"], ["class", esc(e["class"])],
          ["status", '<span class="chip s-' + esc(e.status) + '">' + esc(e.status) + "</span>"],
          ["response", e.response != null ? "<code>" + esc(e.response) + "</code>" : "–"],
          ["error", e.error ? '<b style="color:#9b1c1c">' + esc(e.error) + "</b>" : "–"]]) +
        "<h2>Request (fields as appended)</h2>" + json(d.fields) +
        "<h2>Attempts</h2>" + (e.attempts.length ? '<table id="attempts"><thead><tr><th>#</th><th>processor</th><th>claimed</th><th>ended</th><th>outcome</th></tr></thead><tbody>' +
          e.attempts.map(function (a) {
            return "<tr><td>" + a.n + "</td><td><code>" + esc(a.owner.slice(0, 8)) + "</code></td><td>+" + fmtSpan((a.claimed_us - e.appended_us) / 1000) +
              "</td><td>" + (a.end_us ? "+" + fmtSpan((a.end_us - e.appended_us) / 1000) : "–") + "</td><td>" + esc(a.outcome) +
              (a.taken_over_us ? " (taken over +" + fmtSpan((a.taken_over_us - e.appended_us) / 1000) + ")" : "") + "</td></tr>";
          }).join("") + "</tbody></table>" : '<p class="muted">never claimed</p>') +
        (e.deferrals.length ? "<h2>Denials</h2>" + kv(e.deferrals.map(function (x) {
          return ["+" + fmtSpan((x.at_us - e.appended_us) / 1000), esc(x.reason) + " · back-off " + fmtSpan((x.retry_at_us - x.at_us) / 1000)];
        })) : "") +
        "<h2>Records of its stream</h2>" + recordsTable(d.records) +
        '<p class="muted">times are from the event\'s append</p>';
      done();
    }).catch(fail);
  }

  function mailPage(id, mid) {
    api("runs/" + encodeURIComponent(id) + "/mails/" + encodeURIComponent(mid)).then(function (d) {
      var m = d.mail;
      main.innerHTML = '<h1 id="mail-title">Mail ' + esc(m.category) + " from " + esc(d.sender_name) + " to " + esc(d.recipient_name) + "</h1>" + tabs(id) +
        kv([["id", "<code>" + esc(m.id) + "</code>"],
          ["sender", sourceLink(id, m.sender, d.sender_name) + " <code>" + esc(m.sender) + "</code>"],
          ["recipient", sourceLink(id, m.recipient, d.recipient_name) + " <code>" + esc(m.recipient) + "</code>"],
          ["sent", esc(when(m.sent_us)) + " UTC, position " + m.position],
          ["outcome", '<span class="chip s-' + esc(m.outcome.split(" ")[0]) + '">' + esc(m.outcome) + "</span>" + (m.reason ? " <b>" + esc(m.reason) + "</b>" : "")]]) +
        "<h2>Package</h2>" + json(d.package) + "<h2>Records of its stream</h2>" + recordsTable(d.records);
      done();
    }).catch(fail);
  }

  function sourceLink(run, sid, name) {
    return '<a class="source-link" href="#/run/' + esc(run) + "/source/" + esc(sid) + '">' + esc(name) + "</a>";
  }

  function sourcePage(id, sid) {
    api("runs/" + encodeURIComponent(id) + "/sources/" + encodeURIComponent(sid)).then(function (d) {
      main.innerHTML = '<h1 id="source-title">Source ' + esc(d.name) + "</h1>" + tabs(id) +
        '<div class="muted">in run ' + runLink(d.run.run_id, d.run.title) + " · <code>" + esc(d.id) + "</code>" +
        (d.joined ? "" : " · <b>never joined the exchange</b>") + "</div><h2>Mail</h2>" +
        '<table id="source-mails"><thead><tr><th>sent (UTC)</th><th>from</th><th>to</th><th>item</th><th>outcome</th></tr></thead><tbody>' +
        d.mails.map(function (m) {
          return "<tr><td>" + esc(when(m.sent_us)) + "</td><td>" + sourceLink(id, m.sender, d.names[m.sender]) + "</td><td>" +
            sourceLink(id, m.recipient, d.names[m.recipient]) + '</td><td><a href="#/run/' + esc(id) + "/mail/" + esc(m.id) + '">' +
            esc(m.category) + " " + esc(m.item) + "</a></td><td>" + esc(m.outcome) + (m.reason ? ": " + esc(m.reason) : "") + "</td></tr>";
        }).join("") + "</tbody></table>";
      done();
    }).catch(fail);
  }

  function statePage(id, at) {
    Promise.all([api("runs/" + encodeURIComponent(id) + "/head"), api("runs/" + encodeURIComponent(id) + "/state" + (at != null ? "?at=" + at : ""))]).then(function (r) {
      var h = r[0], s = r[1], pos = at != null ? at : h.position;
      var rows = [];
      Object.keys(s.executors).forEach(function (name) {
        s.executors[name].events.forEach(function (e) {
          var f = e.fields || {}, given = f.name || f.label || f.title;
          var shown = typeof given === "string" && given ? esc(given) : "<code>" + esc(e.id.slice(0, 8)) + "</code>";
          rows.push("<tr><td>" + esc(name) + '</td><td><a href="#/run/' + esc(id) + "/event/" + esc(e.id) + '">' + shown + "</a></td><td>" + esc((e["class"] || "").split(".").pop()) +
            '</td><td><span class="chip s-' + esc(e.status) + '">' + esc(e.status) + '</span></td><td class="num">' + e.attempts + "</td><td><code>" +
            esc(e.error || (e.response != null ? JSON.stringify(e.response) : "")) + "</code></td></tr>");
        });
      });
      var dead = [], names = s.source_names || {};
      Object.keys(s.routers).forEach(function (name) {
        s.routers[name].dead_letters.forEach(function (d) {
          dead.push('<li><a href="#/run/' + esc(id) + "/mail/" + esc(d.id) + '">' + esc(d.category) + " " + esc(JSON.stringify(d.item)) +
            "</a> from " + sourceLink(id, d.sender, names[d.sender] || d.sender.slice(0, 8)) +
            " to " + sourceLink(id, d.recipient, names[d.recipient] || "unknown recipient " + d.recipient.slice(0, 8)) +
            ": <b>" + esc(d.reason) + "</b> (at the " + esc(d.stage) + ", position " + d.position + ")</li>");
        });
      });
      main.innerHTML = "<h1>State of run " + esc(s.label || s.run_id) + " at position " + s.position + "</h1>" + tabs(id) +
        '<div class="filters"><input type="range" id="at-slider" min="1" max="' + h.position + '" value="' + pos + '" style="flex:1">' +
        '<label>position <input id="at-box" type="number" min="1" max="' + h.position + '" value="' + pos + '"></label>' +
        '<span class="muted">what <code>lionstore show --at P</code> prints</span></div>' +
        "<p>" + s.records + " records folded.</p><h2>Events</h2>" +
        (rows.length ? '<table id="state-events"><thead><tr><th>executor</th><th>event</th><th>class</th><th>status</th><th>attempts</th><th>response / error</th></tr></thead><tbody>' + rows.join("") + "</tbody></table>" : '<p class="muted">none yet</p>') +
        "<h2>Dead letters</h2>" + (dead.length ? "<ul>" + dead.join("") + "</ul>" : '<p class="muted">none</p>') +
        "<h2>Everything (JSON)</h2>" + json(s);
      var go = function (v) { location.hash = "#/run/" + id + "/state/" + v; };
      document.getElementById("at-slider").onchange = function () { go(this.value); };
      document.getElementById("at-box").onchange = function () { go(this.value); };
      done();
    }).catch(fail);
  }

  function side(title, rec, none) {
    return "<div><h2>" + esc(title) + "</h2>" + (rec ? json(rec) : '<p class="muted">' + esc(none || "nothing") + "</p>") + "</div>";
  }
  function verifyPage(id) {
    main.innerHTML = "<h1>Verifying…</h1>" + tabs(id);
    api("runs/" + encodeURIComponent(id) + "/verify").then(function (v) {
      var d = v.divergence;
      main.innerHTML = "<h1>Verify run " + esc(v.label || v.run_id) + "</h1>" + tabs(id) +
        (v.ok ? '<p id="verdict" class="verdict ok">OK: the log is exactly what the code would write</p>' :
          '<p id="verdict" class="verdict bad">DIVERGES at position ' + d.position + "</p><p><b>" + esc(d.reason) + "</b></p>" +
          '<div class="cols">' + side("expected", d.expected, "no record the code would write: this one is not as it was written (see the reason above)") + side("actual (in the file)", d.actual) + "</div>") +
        "<p>" + v.records + " records, " + v.cycles + " processor cycles re-decided.</p>";
      done();
    }).catch(fail);
  }
  function comparePage(id) {
    api("runs/" + encodeURIComponent(id) + "/compare").then(function (c) {
      var f = c.first_difference;
      main.innerHTML = "<h1>Fork " + esc(c.label || c.run_id) + " against its parent " + esc(c.parent_label || c.parent_run_id) + "</h1>" + tabs(id) +
        "<p>forked at position " + c.forked_at_position + "; the fork has " + c.fork_records + " records, the parent " + c.parent_records + ".</p>" +
        (f ? '<p id="first-difference" class="verdict bad">first difference at record ' + (f.index + 1) +
          (f.fork ? "" : ": the fork ends here, the parent goes on") + (f.parent ? "" : ": the parent ends here, the fork goes on") + "</p>" +
          '<div class="cols">' + side("fork", f.fork) + side("parent", f.parent) + "</div>" :
          '<p id="first-difference" class="verdict ok">no difference</p>');
      done();
    }).catch(fail);
  }

  function route() {
    stopPolling();
    window.lionstoreUi.ready = false;
    var parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] !== "run" || !parts[1]) return runsPage();
    var id = parts[1];
    if (parts[2] === "event") return eventPage(id, parts[3]);
    if (parts[2] === "mail") return mailPage(id, parts[3]);
    if (parts[2] === "source") return sourcePage(id, parts[3]);
    if (parts[2] === "state") return statePage(id, parts[3] ? parseInt(parts[3], 10) : null);
    if (parts[2] === "verify") return verifyPage(id);
    if (parts[2] === "compare") return comparePage(id);
    return runPage(id);
  }
  window.addEventListener("hashchange", route);
  route();
})();
