/* lionstore timeline: a run drawn with Apache ECharts (shipped beside this file).
 * Lanes top to bottom: each executor (its processors' sessions, crash and resume
 * marks), its events (every wait, denial back-off and attempt), then one lane per
 * source with an arrow per mail. Used by the lionstore ui pages and by
 * `lionstore timeline --format html` (LionstoreTimeline.standalone). */
(function () {
  "use strict";

  var C = {
    wait: "#b7c0cc", backoff: "#f0b429", completed: "#3a9d5d", failed: "#d64545",
    running: "#3d7fd9", expired: "#e8702a", gap: "#d64545", session: "#5b6b82",
    dead: "#d64545", mail: "#3f66a8", inflight: "#8a94a6", crash: "#c62828", resume: "#2e7d32",
    queued: "#f0b429", pending: "#b7c0cc", processing: "#3d7fd9", deferred: "#f0b429",
    delivered: "#3f66a8", "dead letter": "#d64545", "in flight": "#8a94a6"
  };

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function fmtSpan(ms) {
    var a = Math.abs(ms);
    if (a < 1) return (ms).toFixed(3) + " ms";
    if (a < 1000) return ms.toFixed(a < 10 ? 1 : 0) + " ms";
    if (a < 60000) return (ms / 1000).toFixed(a < 10000 ? 2 : 1) + " s";
    var m = Math.floor(a / 60000), s = Math.round((a % 60000) / 1000);
    return (ms < 0 ? "-" : "") + m + " min " + (s < 10 ? "0" : "") + s + " s";
  }

  /* Idle stretches longer than a tenth of the run are drawn short (together a
   * fifth of the width) so the activity around them stays readable; labels keep real times. */
  function makeScale(gapsMs, endMs) {
    var big = gapsMs.filter(function (g) { return g[1] - g[0] > endMs * 0.1; }).slice(0, 20);
    var idle = 0;
    big.forEach(function (g) { idle += g[1] - g[0]; });
    var comp = Math.max((endMs - idle) * 0.25 / Math.max(big.length, 1), endMs * 0.0005), pts = [[0, 0]], d = 0, prev = 0;
    big.forEach(function (g) {
      d += g[0] - prev; pts.push([g[0], d]);
      d += Math.min(comp, g[1] - g[0]); pts.push([g[1], d]);
      prev = g[1];
    });
    d += Math.max(endMs - prev, 0); pts.push([Math.max(endMs, prev), d]);
    function interp(x, from, to) {
      if (x <= pts[0][from]) return x - pts[0][from] + pts[0][to];
      for (var i = 1; i < pts.length; i++) {
        if (x <= pts[i][from]) {
          var a = pts[i - 1], b = pts[i], span = b[from] - a[from];
          return span > 0 ? a[to] + (x - a[from]) * (b[to] - a[to]) / span : b[to];
        }
      }
      var l = pts[pts.length - 1];
      return x - l[from] + l[to];
    }
    return { fwd: function (x) { return interp(x, 0, 1); }, inv: function (y) { return interp(y, 1, 0); },
      gaps: big, end: d };
  }

  function legendHtml() {
    var keys = [
      ["waiting in the queue", C.wait], ["denied, back-off", C.backoff],
      ["attempt completed", C.completed], ["attempt failed", C.failed],
      ["attempt running", C.running], ["lost: process died (lease expired or process gone)", C.expired],
      ["processor session", C.session], ["mail", C.mail], ["dead letter", C.dead],
      ["killed → resumed", "#f6d5d5"]
    ];
    return '<div class="legend">' + keys.map(function (k) {
      return '<span><i style="background:' + k[1] + '"></i>' + esc(k[0]) + "</span>";
    }).join("") + "</div>";
  }

  /* What happened, in words: crashes and resumes, dead letters, failures. */
  function story(summary) {
    var t0 = summary.started_us, out = [];
    summary.marks.forEach(function (m) { out.push([m.at_us, m.text]); });
    (summary.failed || []).forEach(function (e) { out.push([e.at_us, "event " + e.name + " failed: " + (e.error || "")]); });
    (summary.dead_letters || []).forEach(function (m) {
      out.push([m.at_us, "mail from " + m.sender + " to " + m.recipient + " dead-lettered: " + m.reason]);
    });
    out.sort(function (a, b) { return a[0] - b[0]; });
    return out.map(function (o) { return "+" + fmtSpan((o[0] - t0) / 1000) + ": " + o[1]; });
  }

  function Timeline(el, opts) {
    this.el = el;
    this.opts = opts || {};
    this.chart = echarts.init(el, null, { renderer: "svg" });
    this.range = null; // [lo_us, hi_us] when zoomed
    var self = this, timer = null;
    this.chart.on("datazoom", function () {
      var dz = self.chart.getOption().dataZoom[0];
      var s = self.summary, sc = self.scale;
      var lo = s.started_us + 1000 * sc.inv(sc.end * dz.start / 100);
      var hi = s.started_us + 1000 * sc.inv(sc.end * dz.end / 100);
      self.range = dz.start <= 0 && dz.end >= 100 ? null : [Math.floor(lo), Math.ceil(hi)];
      if (timer) clearTimeout(timer);
      timer = setTimeout(function () {
        if (self.opts.onWindow) self.opts.onWindow(self.range);
      }, 180);
    });
    this.chart.on("click", function (p) {
      var item = self.items[p.seriesIndex] && self.items[p.seriesIndex][p.dataIndex];
      if (item && item.zoom) {  // a bucket of counts: zoom in on it
        self.chart.dispatchAction({ type: "dataZoom", dataZoomIndex: 0,
          startValue: item.zoom[0], endValue: item.zoom[1] });
      } else if (item && item.href && self.opts.onOpen) self.opts.onOpen(item.href);
    });
    window.addEventListener("resize", function () { self.chart.resize(); });
  }

  Timeline.prototype.draw = function (summary, win) {
    this.summary = summary;
    this.win = win;
    var t0 = summary.started_us;
    var realEnd = Math.max((summary.end_us - t0) / 1000, 0.001);
    var sc = this.scale = makeScale((summary.gaps || []).map(function (g) {
      return [(g[0] - t0) / 1000, (g[1] - t0) / 1000];
    }), realEnd);
    var ms = function (us) { return sc.fwd((us - t0) / 1000); };  // drawn x (tooltips show real times)
    var endMs = sc.end;
    var cats = [], catKind = [], index = {};
    var aggLanes = {};
    (win.aggregates || []).forEach(function (a) { aggLanes[a.lane] = a; });
    summary.lanes.forEach(function (lane) {
      var rows = (win.rows && win.rows[lane.key]) || 1;
      if (aggLanes[lane.key]) rows = 1;
      for (var r = 0; r < rows; r++) {
        index[lane.key + "#" + r] = cats.length;
        var title = r === 0 ? lane.title : "";
        if (lane.kind === "executor") title = "⚙ " + title;
        else if (lane.kind === "source") title = "✉ " + title;
        else if (lane.kind === "events" && r === 0) title = title + (aggLanes[lane.key] ? " (counts)" : "");
        cats.push(title);
        catKind.push(lane.kind);
      }
    });
    var bars = [], arrows = [], aggs = [];
    var seg = function (lane, row, a, b, kind, text, tip, href) {
      var c = index[lane + "#" + (row || 0)];
      if (c === undefined) return;
      bars.push({ value: [c, ms(a), ms(Math.max(b, a))], kind: kind, text: text, tip: tip, href: href });
    };
    summary.sessions.forEach(function (s) {
      var tip = "processor " + s.owner + " of executor " + s.executor + "<br>started +" +
        fmtSpan((s.started_us - t0) / 1000) + ", last record +" + fmtSpan((s.last_us - t0) / 1000) +
        (s.died ? "<br><b>stopped: its claims expired and were taken over</b>" : "");
      seg("x:" + s.executor, 0, s.started_us, Math.max(s.last_us, s.started_us),
        s.died ? "session-died" : "session",
        "processor " + s.owner.slice(0, 8) + (s.died ? " ✝ killed" : ""), tip, null);
    });
    (win.events || []).forEach(function (e) {
      var href = "#/run/" + summary.run_id + "/event/" + e.id;
      var head = "<b>" + esc(e.name) + "</b> (" + esc(e["class"]) + ")<br>status " + esc(e.status) +
        ", " + e.attempts.length + " attempt(s)";
      var firstClaim = e.attempts.length ? e.attempts[0].claimed_us : (e.end_us || summary.end_us);
      head += "<br>waited from +" + fmtSpan((e.appended_us - t0) / 1000) + " to +" + fmtSpan((firstClaim - t0) / 1000);
      // (a packed lane of many events leaves the wait before the first claim out)
      if (e.lane.charAt(0) === "e" || !e.attempts.length) seg(e.lane, e.row, e.appended_us, firstClaim, "wait", "", head, href);
      e.deferrals.forEach(function (d) {
        seg(e.lane, e.row, d.at_us, d.retry_at_us, "backoff", "denied",
          head + "<br><b>denied</b>: " + esc(d.reason) + "<br>back-off until +" + fmtSpan((d.retry_at_us - t0) / 1000), href);
      });
      e.attempts.forEach(function (a, i) {
        var end = a.end_us || summary.end_us;
        var kind = a.outcome === "completed" ? "completed" : a.outcome === "failed" ? "failed" :
          a.outcome === "running" ? "running" : "expired";
        var text = "attempt " + a.n + (kind === "completed" ? " ✓" : kind === "failed" ? " ✗" :
          kind === "expired" ? " " + a.outcome.split(",")[0] : " …");
        seg(e.lane, e.row, a.claimed_us, end, kind, text,
          head + "<br>attempt " + a.n + " by processor " + esc(a.owner.slice(0, 8)) + ": <b>" +
          esc(a.outcome) + "</b><br>claimed +" + fmtSpan((a.claimed_us - t0) / 1000) + ", ended +" + fmtSpan((end - t0) / 1000) +
          (kind === "failed" && e.error ? "<br>error: " + esc(e.error) : ""), href);
        if (a.taken_over_us && a.taken_over_us > end) {
          seg(e.lane, e.row, end, a.taken_over_us, "gap", "",
            head + "<br>lease expired +" + fmtSpan((end - t0) / 1000) + "; taken over +" + fmtSpan((a.taken_over_us - t0) / 1000), href);
        }
        var next = e.attempts[i + 1];
        if (next && a.taken_over_us && next.claimed_us > a.taken_over_us) {
          seg(e.lane, e.row, a.taken_over_us, next.claimed_us, "wait", "", head + "<br>re-queued, waiting", href);
        }
      });
    });
    (win.mails || []).forEach(function (m) {
      var a = index["s:" + m.sender + "#0"], b = index["s:" + m.recipient + "#0"];
      if (a === undefined || b === undefined) return;
      var end = m.end_us || summary.end_us;
      var dead = m.outcome === "dead letter";
      var tip = "<b>" + esc(m.category) + "</b> " + esc(m.item) + "<br>" + esc(summary.sources[m.sender] || m.sender) +
        " → " + esc(summary.sources[m.recipient] || m.recipient) + "<br>" + esc(m.outcome) +
        (m.reason ? ": <b>" + esc(m.reason) + "</b>" : "");
      arrows.push({ value: [ms(m.sent_us), a, ms(end), b], dead: dead, inflight: m.outcome === "in flight",
        text: dead ? "✗ dead letter: " + m.reason : m.category + " " + m.item, tip: tip,
        href: "#/run/" + summary.run_id + "/mail/" + m.id });
    });
    (win.aggregates || []).forEach(function (g) {
      var c = index[g.lane + "#0"];
      if (c === undefined) return;
      var statuses = Object.keys(g.counts), n = g.counts[statuses[0]].length, max = 1;
      for (var i = 0; i < n; i++) {
        var total = 0;
        statuses.forEach(function (s) { total += g.counts[s][i]; });
        max = Math.max(max, total);
      }
      for (var j = 0; j < n; j++) {
        var parts = statuses.map(function (s) { return [s, g.counts[s][j]]; }).filter(function (p) { return p[1] > 0; });
        if (!parts.length) continue;
        var x0 = g.start_us + g.width_us * j;
        aggs.push({ value: [c, ms(x0), ms(x0 + g.width_us)], parts: parts, max: max,
          zoom: [ms(x0 - g.width_us * 2), ms(x0 + g.width_us * 3)],
          tip: "+" + fmtSpan((x0 - t0) / 1000) + ": " + parts.map(function (p) { return p[1] + " " + esc(p[0]); }).join(", ") +
            "<br>(click or zoom in to see each one)" });
      }
    });
    this.items = [bars, arrows, aggs, []];

    var marks = [], areas = [];
    summary.marks.forEach(function (m) {
      marks.push({ xAxis: ms(m.at_us), lineStyle: { color: C[m.kind], type: m.kind === "crash" ? "solid" : "dashed", width: 2 },
        label: { formatter: m.kind === "crash" ? "killed" : "resumed", color: C[m.kind], fontWeight: "bold" } });
      if (m.kind === "crash") {
        var next = summary.marks.filter(function (n) { return n.kind === "resume" && n.lane === m.lane && n.at_us > m.at_us; })[0];
        areas.push([{ xAxis: ms(m.at_us), name: "killed: no processor running" }, { xAxis: next ? ms(next.at_us) : endMs }]);
      }
    });
    var idle = sc.gaps.map(function (g) {
      return [{ xAxis: sc.fwd(g[0]), name: "⋯ " + fmtSpan(g[1] - g[0]) + " idle ⋯",
        itemStyle: { color: "rgba(120,130,150,0.16)" }, label: { color: "#4b5565", position: "insideBottom" } },
        { xAxis: sc.fwd(g[1]) }];
    });
    areas = areas.concat(idle);

    var rowH = 26, height = Math.max(260, cats.length * rowH + 110);
    this.el.style.height = Math.min(height, 1200) + "px";
    this.chart.resize();
    var zoom = { type: "slider", xAxisIndex: 0, filterMode: "none", height: 18, bottom: 8,
      labelFormatter: function (v) { return "+" + fmtSpan(sc.inv(v)); } };
    var inside = { type: "inside", xAxisIndex: 0, filterMode: "none" };
    if (this.range) {
      zoom.startValue = inside.startValue = ms(this.range[0]);
      zoom.endValue = inside.endValue = ms(this.range[1]);
    }
    var clip = function (params, api, x0, x1, c, frac) {
      var p0 = api.coord([x0, c]), p1 = api.coord([x1, c]);
      var h = api.size([0, 1])[1] * frac;
      return echarts.graphic.clipRectByRect(
        { x: p0[0], y: p0[1] - h / 2, width: Math.max(p1[0] - p0[0], 2), height: h },
        { x: params.coordSys.x, y: params.coordSys.y, width: params.coordSys.width, height: params.coordSys.height });
    };
    var option = {
      animation: false,
      grid: { left: 210, right: 40, top: 34, bottom: 58 },
      tooltip: { trigger: "item", confine: true, formatter: function (p) {
        var it = (p.seriesIndex !== undefined && this.items[p.seriesIndex]) ? this.items[p.seriesIndex][p.dataIndex] : null;
        return it ? it.tip : (p.name || "");
      }.bind(this) },
      xAxis: { type: "value", min: 0, max: endMs, position: "top",
        name: "time since the run started" + (sc.gaps.length ? " (idle stretches drawn short)" : ""),
        nameLocation: "middle", nameGap: 22, nameTextStyle: { color: "#6b7587" },
        axisLabel: { formatter: function (v) { return "+" + fmtSpan(sc.inv(v)); } },
        splitLine: { lineStyle: { color: "#eef0f3" } } },
      yAxis: { type: "category", data: cats, inverse: true,
        axisLabel: { width: 190, overflow: "truncate", fontSize: 12,
          formatter: function (v, i) { return catKind[i] === "event" || catKind[i] === "events" ? "   " + v : v; } },
        axisTick: { show: false },
        splitLine: { show: true, lineStyle: { color: "#f1f3f6" } } },
      dataZoom: [inside, zoom],
      series: [
        { type: "custom", name: "bars", encode: { x: [1, 2], y: 0 }, data: bars.map(function (b) { return b.value; }),
          renderItem: function (params, api) {
            var b = bars[params.dataIndex];
            var frac = { wait: 0.12, gap: 0.12, backoff: 0.55, session: 0.6, "session-died": 0.6 }[b.kind] || 0.7;
            var r = clip(params, api, api.value(1), api.value(2), api.value(0), frac);
            if (!r) return null;
            var fill = { "session-died": C.session }[b.kind] || C[b.kind] || C.wait;
            var el = { type: "rect", shape: r, style: { fill: fill } };
            if (b.kind === "expired") el.style = { fill: fill, stroke: C.crash, lineWidth: 1, lineDash: [3, 2] };
            if (b.kind === "session-died") el.style = { fill: fill, stroke: C.crash, lineWidth: 2 };
            if (b.kind === "gap") el.style = { fill: "#f3b3b3" };
            if (b.text && r.width > b.text.length * 6.2 + 6) {
              el.textContent = { style: { text: b.text, fill: b.kind === "backoff" ? "#3d2c00" : "#fff", fontSize: 11 } };
              el.textConfig = { position: "inside" };
            }
            return el;
          } },
        { type: "custom", name: "mail", encode: { x: [0, 2], y: [1, 3] }, data: arrows.map(function (a) { return a.value; }),
          renderItem: function (params, api) {
            var m = arrows[params.dataIndex];
            var p0 = api.coord([api.value(0), api.value(1)]), p1 = api.coord([api.value(2), api.value(3)]);
            var col = m.dead ? C.dead : m.inflight ? C.inflight : C.mail;
            var ang = Math.atan2(p1[1] - p0[1], p1[0] - p0[0]), L = 9;
            var kids = [{ type: "line", shape: { x1: p0[0], y1: p0[1], x2: p1[0], y2: p1[1] },
              style: { stroke: col, lineWidth: 2, lineDash: m.inflight ? [4, 3] : null } },
              { type: "circle", shape: { cx: p0[0], cy: p0[1], r: 3 }, style: { fill: col } }];
            if (m.dead) {
              kids.push({ type: "path", shape: { pathData: "M" + (p1[0] - 6) + " " + (p1[1] - 6) + "L" + (p1[0] + 6) + " " + (p1[1] + 6) +
                "M" + (p1[0] + 6) + " " + (p1[1] - 6) + "L" + (p1[0] - 6) + " " + (p1[1] + 6) }, style: { stroke: col, lineWidth: 3 } });
            } else {
              kids.push({ type: "polygon", shape: { points: [[p1[0], p1[1]],
                [p1[0] - L * Math.cos(ang - 0.4), p1[1] - L * Math.sin(ang - 0.4)],
                [p1[0] - L * Math.cos(ang + 0.4), p1[1] - L * Math.sin(ang + 0.4)]] }, style: { fill: col } });
            }
            if (m.dead) {
              kids.push({ type: "text", x: p1[0] + 9, y: p1[1] - 7, style: { text: m.text, fill: col, fontSize: 11, fontWeight: "bold" } });
            }
            return { type: "group", children: kids };
          } },
        { type: "custom", name: "counts", encode: { x: [1, 2], y: 0 }, data: aggs.map(function (a) { return a.value; }),
          renderItem: function (params, api) {
            var g = aggs[params.dataIndex];
            var r = clip(params, api, api.value(1), api.value(2), api.value(0), 0.8);
            if (!r) return null;
            var kids = [], y = r.y + r.height, total = 0;
            g.parts.forEach(function (p) { total += p[1]; });
            var h = r.height * total / g.max;
            g.parts.forEach(function (p) {
              var ph = h * p[1] / total;
              y -= ph;
              kids.push({ type: "rect", shape: { x: r.x, y: y, width: r.width, height: ph }, style: { fill: C[p[0]] || C.wait } });
            });
            return { type: "group", children: kids };
          } },
        { type: "line", name: "marks", data: [], markLine: { symbol: "none", silent: true, data: marks },
          markArea: { silent: true, itemStyle: { color: "rgba(214,69,69,0.10)" },
            label: { color: C.crash, position: "insideTop", fontSize: 11 }, data: areas } }
      ]
    };
    this.chart.setOption(option, { notMerge: true });
  };

  function head(summary) {
    var dur = (summary.end_us - summary.started_us) / 1000;
    var counts = function (o) {
      return Object.keys(o).map(function (k) {
        return '<span class="chip s-' + esc(k.split(" ")[0]) + '">' + esc(k) + " " + o[k] + "</span>";
      }).join("") || '<span class="muted">none</span>';
    };
    var lines = story(summary);
    return "<div>started " + esc(new Date(summary.started_us / 1000).toISOString().replace("T", " ").slice(0, 23)) +
      " UTC · lasted " + fmtSpan(dur) + " · " + summary.records + " records (last position " + summary.position + ")</div>" +
      "<div>events: " + counts(summary.events) + " · mail: " + counts(summary.mail) + "</div>" +
      (lines.length ? '<div class="story">' + lines.map(esc).join("<br>") + "</div>" : "");
  }

  window.LionstoreTimeline = {
    Timeline: Timeline,
    fmtSpan: fmtSpan,
    esc: esc,
    head: head,
    legendHtml: legendHtml,
    standalone: function (data) {
      document.getElementById("run-head").innerHTML = head(data.summary);
      document.getElementById("legend").innerHTML = legendHtml();
      var tl = new Timeline(document.getElementById("timeline"), {});
      tl.draw(data.summary, data.window);
    }
  };
})();
