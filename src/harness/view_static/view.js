// harness view: renders the runs embedded in #harness-data. No network, no libraries.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("harness-data").textContent);
  const app = document.getElementById("app");
  const PAGE = 200;  // matrix rows rendered at a time: a 10k-turn run stays quick to open
  const COLORS = ["#3b6fd8", "#e08a1e", "#2e9e5b", "#c4453c", "#8a5cc2", "#1ba3b0", "#b5579c", "#7a7a7a"];
  const REASON_COLORS = {stop: "#2e9e5b", length: "#e08a1e", tool_calls: "#3b6fd8", content_filter: "#8a5cc2",
    error: "#c4453c", other: "#7a7a7a", skipped: "#b9b9b9"};
  let run, state;

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined && kid !== false)
      node.append(kid instanceof Node ? kid : String(kid));
    return node;
  }
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...kids) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const kid of kids) node.append(kid);
    return node;
  }
  const ms = (v) => v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en");
  const fmt = (v) => v === null || v === undefined ? "—" :
    typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(v < 1 ? 4 : 1)) : String(v);

  function useRun(i) {
    run = DATA.runs[i];
    const r = run.rows, n = r.conversation_id.length;
    run.n = n;
    run.groups = [];  // one per (conversation, turn), in the results' order
    const at = new Map();
    for (let i = 0; i < n; i++) {
      const key = r.conversation_id[i] + "\u0000" + r.turn[i];
      let g = at.get(key);
      if (!g) { g = {cid: r.conversation_id[i], turn: r.turn[i], prompt: r.prompt[i], cells: {}, pos: run.groups.length};
        at.set(key, g); run.groups.push(g); }
      g.cells[r.provider[i]] = i;
    }
    run.reasons = [...new Set(r.finish_reason.map((v, i) => v || r.status[i]))];
    run.statuses = [...new Set(r.status)];
    state = {tab: state ? state.tab : "matrix", search: "", providers: new Set(run.providers), reason: "",
      status: "", changedOnly: false, erroredOnly: false, sort: null, desc: false, shown: PAGE,
      thread: run.groups.length ? run.groups[0].cid : null, threadProvider: run.providers[0], runIndex: i,
      sigMetric: state ? state.sigMetric : null};
  }

  // -- word-level diff: LCS over words (each with its trailing space); a changed stretch
  // shows as all its removed words, then all its added words, which reads better than
  // alternating single words
  function words(text) { return (text || "").match(/\s+|\S+\s*/g) || []; }
  function wordDiff(before, after) {
    const a = words(before), b = words(after);
    if (a.length * b.length > 4e6) return [el("del", {}, before || ""), el("ins", {}, after || "")];
    const m = a.length, n = b.length, dp = new Array(m + 1);
    for (let i = 0; i <= m; i++) dp[i] = new Uint32Array(n + 1);
    for (let i = m - 1; i >= 0; i--) for (let j = n - 1; j >= 0; j--)
      dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
    const out = []; let del = "", ins = "", i = 0, j = 0;
    const flush = () => { if (del) out.push(el("del", {}, del)); if (ins) out.push(el("ins", {}, ins)); del = ins = ""; };
    while (i < m || j < n) {
      if (i < m && j < n && a[i] === b[j]) { flush(); out.push(a[i]); i++; j++; }
      else if (j >= n || (i < m && dp[i + 1][j] >= dp[i][j + 1])) del += a[i++];
      else ins += b[j++];
    }
    flush();
    return out;
  }

  function changeView(entry, i) {
    const r = run.rows, parts = [];
    const before = entry.before;
    if (i !== null && (before.response || "") !== (r.response[i] || ""))
      parts.push(el("div", {class: "diff"}, wordDiff(before.response, r.response[i])));
    for (const c of Object.keys(before)) {
      if (c === "response" || i === null) continue;
      if (before[c] !== r[c][i]) parts.push(el("div", {class: "facts"}, `${c}: ${fmt(before[c])} → ${fmt(r[c][i])}`));
    }
    return parts;
  }

  // -- header, tabs --
  function header() {
    const m = run.meta || {};
    const provs = (m.providers || run.providers.map((p) => ({name: p})))
      .map((p) => p.model ? `${p.name} (${p.model})` : p.name).join(", ");
    const items = [["dataset", m.dataset], ["providers", provs], ["history", m.history],
      ["record mode", m.record_mode], ["params", m.params && Object.keys(m.params).length ? JSON.stringify(m.params) : null],
      ["recorded", m.recorded_at], ["rows", run.n]];
    const switcher = DATA.runs.length > 1 ? el("label", {}, "run ",
      el("select", {id: "run-switch", onchange: (e) => { useRun(+e.target.value); render(); }},
        DATA.runs.map((rr, i) => el("option", {value: i, selected: i === state.runIndex}, rr.name)))) : null;
    return el("header", {}, el("h1", {}, DATA.title + " — " + run.name), switcher,
      el("p", {class: "meta"}, items.filter(([, v]) => v !== undefined && v !== null && v !== "")
        .map(([k, v]) => el("span", {}, k + ": ", el("b", {}, String(v))))));
  }
  function tabs() {
    const n = Object.keys(run.changes || {}).length + (run.removed || []).length;
    const list = [["matrix", "Matrix"], ["thread", "Thread"], ...(run.baseline !== undefined ? [["changes", `Changes (${n})`]] : []),
      ["usage", "Usage"], ["significance", "Significance"], ["charts", "Charts"]];
    return el("nav", {}, list.map(([id, label]) => el("button", {id: "tab-" + id, class: state.tab === id ? "active" : null,
      onclick: () => { state.tab = id; render(); }}, label)));
  }

  // -- matrix --
  function visibleGroups() {
    const r = run.rows, q = state.search.toLowerCase(), provs = run.providers.filter((p) => state.providers.has(p));
    const keep = run.groups.filter((g) => {
      const idx = provs.map((p) => g.cells[p]).filter((i) => i !== undefined);
      if (!idx.length) return false;
      if (state.reason && !idx.some((i) => (r.finish_reason[i] || r.status[i]) === state.reason)) return false;
      if (state.status && !idx.some((i) => r.status[i] === state.status)) return false;
      if (state.changedOnly && !idx.some((i) => run.changes[i])) return false;
      if (state.erroredOnly && !idx.some((i) => r.status[i] !== "ok")) return false;
      if (q) {
        const hay = [g.cid, g.prompt, ...idx.map((i) => r.response[i] || ""), ...idx.map((i) => r.error[i] || "")];
        if (!hay.some((t) => (t || "").toLowerCase().includes(q))) return false;
      }
      return true;
    });
    if (state.sort) {
      const key = state.sort, sign = state.desc ? -1 : 1;
      const val = (g) => key === "cid" ? g.cid : key === "turn" ? g.turn : key === "prompt" ? g.prompt :
        (g.cells[key] === undefined ? null : r.output_tokens[g.cells[key]]);
      keep.sort((x, y) => { const a = val(x), b = val(y);
        if (a === b) return x.pos - y.pos; if (a === null) return 1; if (b === null) return -1;
        return (a < b ? -1 : 1) * sign; });
    }
    return keep;
  }
  function sortHeader(key, label, cls) {
    const sorted = state.sort === key ? (state.desc ? "sorted-desc" : "sorted-asc") : "";
    return el("th", {class: [cls, sorted].filter(Boolean).join(" ") || null, "data-sort": key, title: "sort",
      onclick: () => { if (state.sort === key) state.desc = !state.desc; else { state.sort = key; state.desc = false; }
        state.shown = PAGE; renderMain(); }}, label);
  }
  function cell(i) {
    const r = run.rows;
    if (i === undefined) return el("td", {class: "note"}, "—");
    const text = r.status[i] === "ok" ? (r.response[i] || "") : (r.error[i] || r.status[i]);
    const reason = r.finish_reason[i] || r.status[i];
    const change = run.changes[i];
    const reply = el("div", {class: "reply" + (text.length > 300 || text.split("\n").length > 4 ? " long" : ""),
      onclick: (e) => e.currentTarget.classList.toggle("open")}, text);
    const facts = el("div", {class: "facts"}, el("span", {class: "badge " + reason}, reason),
      r.output_tokens[i] !== null ? el("span", {}, `${fmt(r.output_tokens[i])} out`) : null,
      r.latency_ms[i] !== null ? el("span", {}, `${ms(r.latency_ms[i])} ms`) : null,
      ...run.extra.filter((c) => typeof r[c][i] === "number" && !c.endsWith("_tokens"))  // costs, scores
        .map((c) => el("span", {}, `${c} ${fmt(r[c][i])}`)));
    const td = el("td", {class: change ? "changed" : r.status[i] !== "ok" ? "errored" : null, "data-row": i}, reply, facts);
    if (change) {
      const box = el("div", {hidden: true}, changeView(change, i));
      facts.append(el("button", {class: "link", onclick: () => { box.hidden = !box.hidden; }}, "changed: " + change.change));
      td.append(box);
    }
    return td;
  }
  function matrix() {
    const provs = run.providers.filter((p) => state.providers.has(p));
    const groups = visibleGroups();
    const table = el("table", {class: "matrix", id: "matrix"},
      el("colgroup", {}, el("col", {class: "c-id"}), el("col", {class: "c-turn"}), el("col", {class: "c-prompt"}),
        provs.map(() => el("col", {class: "c-prov"}))),
      el("thead", {}, el("tr", {}, sortHeader("cid", "conversation"), sortHeader("turn", "turn", "num"),
        sortHeader("prompt", "prompt"), provs.map((p) => sortHeader(p, p)))),
      el("tbody", {}, groups.slice(0, state.shown).map((g) => el("tr", {},
        el("td", {}, el("button", {class: "link thread-link", title: "read this conversation turn by turn",
          onclick: () => { state.tab = "thread"; state.thread = g.cid; render(); }}, g.cid)),
        el("td", {class: "num"}, g.turn), el("td", {class: "text"}, g.prompt),
        provs.map((p) => cell(g.cells[p]))))));
    const total = run.groups.length;
    return [el("p", {class: "count", id: "count"}, `${groups.length} of ${total} turns` +
      (groups.length > state.shown ? `, first ${state.shown} shown` : "")),
      el("div", {class: "scroll"}, table),
      groups.length > state.shown ? el("button", {class: "more", onclick: () => { state.shown += PAGE * 5; renderMain(); }},
        "show more") : null];
  }
  function toolbar() {
    const opt = (v, label, sel) => el("option", {value: v, selected: v === sel}, label);
    return el("div", {class: "toolbar"},
      el("input", {type: "search", id: "search", placeholder: "search replies, prompts, ids", value: state.search,
        oninput: (e) => { state.search = e.target.value; state.shown = PAGE; renderMain(); }}),
      el("span", {}, run.providers.map((p) => el("label", {}, el("input", {type: "checkbox", class: "provider-filter",
        value: p, checked: state.providers.has(p), onchange: (e) => {
          if (e.target.checked) state.providers.add(p); else state.providers.delete(p); renderMain(); }}), " " + p, " "))),
      el("label", {}, "finish reason ", el("select", {id: "reason-filter", onchange: (e) => { state.reason = e.target.value; renderMain(); }},
        opt("", "any", state.reason), run.reasons.map((v) => opt(v, v, state.reason)))),
      el("label", {}, "status ", el("select", {id: "status-filter", onchange: (e) => { state.status = e.target.value; renderMain(); }},
        opt("", "any", state.status), run.statuses.map((v) => opt(v, v, state.status)))),
      run.baseline !== undefined ? el("label", {}, el("input", {type: "checkbox", id: "changed-only", checked: state.changedOnly,
        onchange: (e) => { state.changedOnly = e.target.checked; renderMain(); }}), " changed only") : null,
      el("label", {}, el("input", {type: "checkbox", id: "errored-only", checked: state.erroredOnly,
        onchange: (e) => { state.erroredOnly = e.target.checked; renderMain(); }}), " errors only"));
  }

  // -- thread --
  function message(role, content, source) {
    const label = role !== "assistant" ? role : source === "own" ? "assistant · its own earlier reply" : "assistant · the dataset's reply";
    return el("div", {class: "msg " + role}, el("span", {class: "role"}, label), content);
  }
  function thread() {
    const r = run.rows, cid = state.thread, p = state.threadProvider;
    const cids = [...new Set(run.groups.map((g) => g.cid))];
    const sent = (run.threads[cid] || {})["*"] || (run.threads[cid] || {})[p];
    const turns = run.groups.filter((g) => g.cid === cid);
    const controls = el("div", {class: "toolbar"},
      el("label", {}, "conversation ", el("select", {id: "thread-conv", onchange: (e) => { state.thread = e.target.value; renderMain(); }},
        cids.map((c) => el("option", {value: c, selected: c === cid}, c)))),
      el("label", {}, "provider ", el("select", {id: "thread-provider", onchange: (e) => { state.threadProvider = e.target.value; renderMain(); }},
        run.providers.map((q) => el("option", {value: q, selected: q === p}, q)))),
      sent ? el("span", {class: "note"}, `messages exactly as sent (${(run.meta || {}).history || "?"} history)`) :
        el("span", {class: "note"}, "the dataset file is not at hand: showing each turn's last user message only"));
    let seen = 0;
    const body = turns.map((g, k) => {
      const i = g.cells[p];
      const parts = [el("h3", {}, `Turn ${g.turn}`)];
      const cut = sent ? sent.cuts[k] : null;
      if (sent && cut !== null && cut !== undefined) {
        const msgs = sent.messages;
        if (seen > 0) parts.push(el("details", {class: "earlier"}, el("summary", {}, `${seen} earlier messages sent again`),
          msgs.slice(0, seen).map(([role, text, source]) => message(role, text, source))));
        parts.push(msgs.slice(seen, cut).map(([role, text, source]) => message(role, text, source)));
        seen = cut;
      } else parts.push(message("user", g.prompt));
      if (i !== undefined) {
        const text = r.status[i] === "ok" ? (r.response[i] || "") : `[${r.status[i]}] ${r.error[i] || ""}`;
        parts.push(el("div", {class: "msg answer", "data-row": i}, el("span", {class: "role"}, `${p} replied`), text));
        parts.push(el("div", {class: "facts"}, el("span", {class: "badge " + (r.finish_reason[i] || r.status[i])}, r.finish_reason[i] || r.status[i]),
          `${fmt(r.input_tokens[i])} in · ${fmt(r.output_tokens[i])} out · ${ms(r.latency_ms[i])} ms`));
        if (run.changes[i]) parts.push(el("div", {class: "facts"}, "changed against the baseline: " + run.changes[i].change),
          changeView(run.changes[i], i));
      }
      return el("div", {class: "turn"}, parts);
    });
    return [controls, el("div", {id: "thread"}, body)];
  }

  // -- changes --
  function changes() {
    const r = run.rows, ids = Object.keys(run.changes).map(Number).sort((a, b) => a - b);
    const items = ids.map((i) => el("div", {class: "change"},
      el("h3", {}, `${r.conversation_id[i]} turn ${r.turn[i]} ${r.provider[i]}: ${run.changes[i].change}`),
      changeView(run.changes[i], i)));
    for (const gone of run.removed || []) items.push(el("div", {class: "change"},
      el("h3", {}, `${gone.conversation_id} turn ${gone.turn} ${gone.provider}: removed`),
      el("div", {class: "diff"}, el("del", {}, gone.before.response || ""))));
    return [el("p", {class: "count"}, `${items.length} rows changed against ${run.baseline}`), ...items];
  }

  // -- usage --
  function sortableTable(data, id, format = fmt) {
    const tbl = {sort: null, desc: false};
    const wrap = el("div", {class: "scroll"});
    const draw = () => {
      const rows = data.rows.slice();
      if (tbl.sort !== null) rows.sort((a, b) => { const x = a[tbl.sort], y = b[tbl.sort];
        if (x === y) return 0; if (x === null) return 1; if (y === null) return -1; return (x < y ? -1 : 1) * (tbl.desc ? -1 : 1); });
      const numeric = data.columns.map((_, c) => data.rows.every((row) => row[c] === null || typeof row[c] === "number"));
      wrap.replaceChildren(el("table", {id}, el("thead", {}, el("tr", {}, data.columns.map((c, k) => el("th", {
        class: [numeric[k] ? "num" : "", tbl.sort === k ? (tbl.desc ? "sorted-desc" : "sorted-asc") : ""].join(" ").trim() || null,
        onclick: () => { if (tbl.sort === k) tbl.desc = !tbl.desc; else { tbl.sort = k; tbl.desc = false; } draw(); }}, c)))),
      el("tbody", {}, rows.map((row) => el("tr", {}, row.map((v, k) => el("td", {class: numeric[k] ? "num" : null}, format(v))))))));
    };
    draw();
    return wrap;
  }
  function usage() {
    const out = [el("h2", {}, "Token usage, latency and errors per provider"), sortableTable(run.usage, "usage"),
      el("h2", {}, "Finish reasons"), sortableTable(run.finish, "finish")];
    const numeric = run.extra.filter((c) => run.rows[c].some((v) => typeof v === "number"));
    if (numeric.length) {
      const rows = run.providers.map((p) => [p, ...numeric.flatMap((c) => {
        const vals = run.rows[c].filter((v, i) => run.rows.provider[i] === p && typeof v === "number");
        return [vals.length ? vals.reduce((a, b) => a + b, 0) : null, vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : null];
      })]);
      out.push(el("h2", {}, "Further columns (sum, mean)"),
        sortableTable({columns: ["provider", ...numeric.flatMap((c) => [c + " sum", c + " mean"])], rows}, "extra"));
    }
    return out;
  }

  // -- significance: computed at build time (harness.view.significance_data), shown here --
  const sig3 = (v) => v === null || v === undefined ? "—" : typeof v !== "number" ? String(v) :
    Number.isInteger(v) ? v.toLocaleString("en") : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en") :
    String(Number(v.toPrecision(3)));
  const DIRECTION = {higher: "higher is better", lower: "lower is better", neutral: "neither more nor less is better"};
  function sentences(list) {  // [text, detected]: what differs first, the rest folded away when long
    const found = list.filter(([, d]) => d), rest = list.filter(([, d]) => !d);
    const items = (xs, cls) => el("ul", {class: "sentences " + cls}, xs.map(([t]) => el("li", {class: "sig-sentence"}, t)));
    return [found.length ? items(found, "detected") : null,
      rest.length > 5 && found.length ? el("details", {}, el("summary", {}, `${rest.length} with no detectable difference`),
        items(rest, "undetected")) : rest.length ? items(rest, "undetected") : null];
  }
  function metricView(m) {
    const test = m.pairs.columns.includes("mcnemar_p") ? "; McNemar's exact test on the turns only one passed" : "";
    const out = [el("h2", {}, `${m.metric} (${DIRECTION[m.better]})`), sentences(m.sentences),
      el("p", {class: "note"}, `95% intervals from ${run.significance.resamples} bootstrap resamples of whole ` +
        "conversations (the turns of one conversation are correlated), seed 0: the same results give the same page."),
      el("h3", {}, "Mean per provider, 95% interval"), sortableTable(m.providers, "sig-providers", sig3),
      el("h3", {}, `Paired difference b − a on the turns both answered, 95% interval${test}`),
      sortableTable(m.pairs, "sig-pairs", sig3)];
    if (m.strengths) out.push(el("h3", {}, "Bradley-Terry strengths from per-turn wins (sum to 1; " +
      (m.better === "lower" ? "the lower value wins a turn)" : "the higher value wins a turn)")),
      sortableTable(m.strengths, "sig-strengths", sig3));
    return out;
  }
  function winRates(list) {
    return list.flatMap((v, k) => [el("h2", {}, (v.judge ? `judge ${v.judge}: ` : "") + v.file), sentences(v.sentences),
      el("p", {class: "note"}, "a_win_rate: a's share of the decisive turns (one side won in both orders), 95% Wilson " +
        "interval; inconsistent: the two orders disagreed; errors: a verdict that could not be parsed"),
      sortableTable(v.table, "sig-wins-" + k, sig3)]);
  }
  function significance() {
    const sig = run.significance || {metrics: [], verdicts: []};
    const options = sig.metrics.map((m) => [m.metric, m.metric]);
    if (sig.verdicts.length) options.push(["winner", "winner (judge verdicts)"]);
    if (!options.length) return [el("p", {class: "note", id: "significance"}, "Nothing to test: the run needs two " +
      "providers and a column that varies (scores from harness score, latency, tokens, cost).")];
    if (!options.some(([v]) => v === state.sigMetric)) state.sigMetric = options[0][0];
    const chosen = sig.metrics.find((m) => m.metric === state.sigMetric);
    return [el("div", {class: "toolbar"}, el("label", {}, "metric ", el("select", {id: "sig-metric",
        onchange: (e) => { state.sigMetric = e.target.value; renderMain(); }},
        options.map(([v, label]) => el("option", {value: v, selected: v === state.sigMetric}, label))))),
      el("div", {id: "significance"}, chosen ? metricView(chosen) : winRates(sig.verdicts))];
  }

  // -- charts (inline SVG) --
  function legend(names, colorOf) {
    return el("div", {class: "legend"}, names.map((n) => el("span", {}, el("i", {style: `background:${colorOf(n)}`}), n)));
  }
  function finishChart() {
    const {columns, rows} = run.finish, reasons = columns.slice(1);
    const W = 560, left = 150, bar = 22, H = rows.length * (bar + 8) + 24;
    const max = Math.max(1, ...rows.map((row) => row.slice(1).reduce((a, b) => a + (b || 0), 0)));
    const g = svg("svg", {width: W, height: H, role: "img", "aria-label": "finish reasons per provider"});
    rows.forEach((row, k) => {
      let x = left; const y = 4 + k * (bar + 8);
      g.append(svg("text", {x: left - 6, y: y + bar * 0.7, "text-anchor": "end"}, row[0]));
      row.slice(1).forEach((v, j) => { if (!v) return; const w = (W - left - 10) * v / max;
        const rect = svg("rect", {x, y, width: w, height: bar, fill: REASON_COLORS[reasons[j]] || "#999"});
        rect.append(svg("title", {}, `${row[0]}: ${v} ${reasons[j]}`)); g.append(rect); x += w; });
    });
    g.append(svg("text", {x: left, y: H - 4}, "0"), svg("text", {x: W - 10, y: H - 4, "text-anchor": "end"}, `${max} turns`));
    return el("div", {class: "chart", id: "chart-finish"}, el("h3", {}, "Finish reasons"), g, legend(reasons, (n) => REASON_COLORS[n] || "#999"));
  }
  function ecdf(column, title, unit, id) {
    const W = 560, H = 260, L = 48, B = 30;
    const series = run.providers.map((p) => run.rows[column].filter((v, i) => run.rows.provider[i] === p && typeof v === "number")
      .sort((a, b) => a - b));
    const all = series.flat();
    const box = el("div", {class: "chart", id});
    if (!all.length) { box.append(el("h3", {}, title), el("p", {class: "note"}, "no values")); return box; }
    const lo = all.reduce((a, b) => Math.min(a, b)), hi = Math.max(lo + 1, all.reduce((a, b) => Math.max(a, b)));
    const log = lo > 0 && hi / lo > 20;  // e.g. a stub at 50 ms next to a model at 5 s
    const scale = log ? Math.log : (v) => v;
    const X = (v) => L + (W - L - 10) * (scale(v) - scale(lo)) / (scale(hi) - scale(lo));
    const Y = (f) => 8 + (H - B - 8) * (1 - f);
    if (log) title += " (log scale)";
    const g = svg("svg", {width: W, height: H, role: "img", "aria-label": title});
    g.append(svg("line", {x1: L, y1: Y(0), x2: W - 10, y2: Y(0), stroke: "#999"}), svg("line", {x1: L, y1: Y(0), x2: L, y2: Y(1), stroke: "#999"}));
    for (const f of [0, 0.5, 1]) g.append(svg("text", {x: L - 4, y: Y(f) + 4, "text-anchor": "end"}, f.toFixed(1)));
    const mid = log ? Math.sqrt(lo * hi) : (lo + hi) / 2;
    g.append(svg("text", {x: L, y: H - 8}, fmt(lo)), svg("text", {x: X(mid), y: H - 8, "text-anchor": "middle"}, fmt(Math.round(mid))),
      svg("text", {x: W - 10, y: H - 8, "text-anchor": "end"}, `${fmt(hi)} ${unit}`));
    box.append(el("h3", {}, title));
    series.forEach((vals, k) => { if (!vals.length) return;
      const step = Math.max(1, Math.floor(vals.length / 400));  // at most ~400 points a line
      let d = `M${X(vals[0])},${Y(0)}`;
      for (let i = 0; i < vals.length; i += step) d += `L${X(vals[i])},${Y(i / vals.length)}L${X(vals[i])},${Y((i + 1) / vals.length)}`;
      d += `L${X(vals[vals.length - 1])},${Y(1)}`;
      g.append(svg("path", {d, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 1.6}));
    });
    box.append(g, legend(run.providers, (n) => COLORS[run.providers.indexOf(n) % COLORS.length]),
      el("p", {class: "note"}, `share of turns (y) at or below each value (x), per provider`));
    return box;
  }
  function charts() {
    return el("div", {class: "charts"}, finishChart(), ecdf("latency_ms", "Latency (ECDF)", "ms", "chart-latency"),
      ecdf("output_tokens", "Output tokens per turn (ECDF)", "tokens", "chart-tokens"));
  }

  function renderMain() {
    const main = document.querySelector("main");
    const active = document.activeElement && document.activeElement.id;
    const views = {matrix: () => [toolbar(), matrix()], thread, changes, usage, significance, charts};
    main.replaceChildren(...[views[state.tab]()].flat(2));
    if (active === "search") { const s = document.getElementById("search"); s.focus(); s.setSelectionRange(s.value.length, s.value.length); }
  }
  function render() {
    app.replaceChildren(header(), tabs(), el("main", {}));
    renderMain();
    document.title = DATA.title + " — " + run.name;
  }
  useRun(0);
  render();
  document.body.dataset.ready = "1";
  performance.mark("harness-rendered");
})();
