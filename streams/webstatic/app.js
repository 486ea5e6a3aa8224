/* mmc-stream live leaderboard: data from the JSON API, live updates from /api/stream (SSE).
 *
 * Pages: "/" (leaderboard for the rolling window or one round, crowding trend, alerts) and
 * "/models/<id>" (a model's history and charts). Live events (scores, leaderboard, crowding,
 * alerts) are applied in place; after a broken connection the page reloads its data.
 * window.mmcLive counts what arrived (tests and curious people read it).
 */
"use strict";

(function () {
  const live = (window.mmcLive = {connected: false, events: 0, byTopic: {}, lastEventAt: null});

  // ------------------------------------------------------------------ helpers
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "dataset") Object.assign(e.dataset, v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  async function api(path) {
    const response = await fetch(path, {headers: {Accept: "application/json"}});
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.error ? body.error.message : `${response.status} ${path}`);
      error.status = response.status;
      error.code = body.error ? body.error.code : null;
      throw error;
    }
    return body;
  }

  const isNum = v => typeof v === "number" && isFinite(v);
  const signed = (v, digits) => (isNum(v) ? (v > 0 ? "+" : v < 0 ? "−" : "") + Math.abs(v).toFixed(digits) : "–");
  const FORMAT = {
    score: v => signed(v, 4),
    cwmm: v => (isNum(v) ? v.toFixed(3) : "–"),
    stake: v => (isNum(v) ? v.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2}) : "–"),
    int: v => (isNum(v) ? String(v) : "–"),
    ratio: v => signed(v, 2),
    drawdown: v => (isNum(v) ? v.toFixed(4) : "–"),
    nmr: v => (isNum(v) ? (v > 0 ? "+" : v < 0 ? "−" : "") + Math.abs(v).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2}) : "–"),
  };
  const asOf = a => (a ? `r${a.round} · day ${a.day}${a.final ? " · final" : ""}` : "–");

  function touch() {
    live.lastEventAt = new Date();
    document.getElementById("updated").textContent = "updated " + live.lastEventAt.toLocaleTimeString();
  }

  function flash(row) {
    row.classList.remove("flash");
    void row.offsetWidth; // restart the animation
    row.classList.add("flash");
    row.addEventListener("animationend", () => row.classList.remove("flash"), {once: true});
  }

  // Several events of one update arrive together: redraw once per frame.
  function batched(fn) {
    let queued = false;
    return () => {
      if (queued) return;
      queued = true;
      requestAnimationFrame(() => { queued = false; fn(); });
    };
  }

  // ------------------------------------------------------------------ alerts
  function alertItem(a) {
    const where = a.model ? el("a", {href: `/models/${encodeURIComponent(a.model)}`}, a.model) : `round ${a.round}`;
    return el("li", {class: `alert ${a.severity}`, dataset: {kind: a.kind}},
      el("div", {class: "alert-head"},
        el("span", {class: `badge ${a.severity}`}, a.kind.replace(/_/g, " ")),
        el("span", {class: "alert-where"}, where),
        el("span", {class: "alert-when"}, `round ${a.round}${a.day !== null && a.day !== undefined ? " · day " + a.day : ""}${a.stage === "live" ? " · live" : ""}`)),
      el("div", {class: "alert-text"}, a.message));
  }

  function renderAlerts(list, alerts, emptyId) {
    list.replaceChildren(...alerts.map(alertItem));
    document.getElementById(emptyId).hidden = alerts.length > 0;
  }

  // ------------------------------------------------------------------ the leaderboard page
  const WINDOW_COLUMNS = [
    {key: "rank", label: "#", fmt: FORMAT.int, num: true},
    {key: "model", label: "Model"},
    {key: "corr_mean", label: "CORR", fmt: FORMAT.score, num: true, title: "mean CORR over the window"},
    {key: "contribution_mean", label: "MMC", fmt: FORMAT.score, num: true, title: "mean MMC over the window: today's definition (correlation contribution), the one in the payout"},
    {key: "mmc_mean", label: "MMC 2020", fmt: FORMAT.score, num: true, title: "mean MMC over the window: the 2020 bootstrap definition"},
    {key: "corr_w_mm_mean", label: "CWMM", fmt: FORMAT.cwmm, num: true, title: "mean correlation with the stake-weighted meta model"},
    {key: "payout_mean", label: "Payout", fmt: FORMAT.score, num: true, title: "mean payout score: clip(0.5·CORR + 2·contribution, ±0.05)"},
    {key: "payout_std", label: "Std", fmt: FORMAT.drawdown, num: true, title: "standard deviation of the payout score over the window"},
    {key: "payout_sharpe", label: "Sharpe", fmt: FORMAT.ratio, num: true, title: "mean payout / its standard deviation, per round"},
    {key: "payout_max_drawdown", label: "Max DD", fmt: FORMAT.drawdown, num: true, title: "largest fall of the cumulative payout score from its peak"},
    {key: "positive_rounds", label: "Positive", fmt: FORMAT.int, num: true, title: "rounds with a payout score above 0"},
    {key: "stake_payout", label: "Paid (NMR)", fmt: FORMAT.nmr, num: true, title: "Σ stake at close × payout score over the window"},
    {key: "stake", label: "Stake", fmt: FORMAT.stake, num: true, title: "stake of the latest round (NMR)"},
    {key: "rounds", label: "Rounds", fmt: FORMAT.int, num: true},
    {key: "as_of", label: "As of", fmt: asOf, sortable: false},
  ];
  const ROUND_COLUMNS = [
    {key: "rank", label: "#", fmt: FORMAT.int, num: true, sortable: false},
    {key: "model", label: "Model"},
    {key: "corr", label: "CORR", fmt: FORMAT.score, num: true},
    {key: "contribution", label: "MMC", fmt: FORMAT.score, num: true, title: "MMC: today's definition (correlation contribution), the one in the payout"},
    {key: "mmc", label: "MMC 2020", fmt: FORMAT.score, num: true, title: "MMC: the 2020 bootstrap definition"},
    {key: "corr_w_mm", label: "CWMM", fmt: FORMAT.cwmm, num: true, title: "correlation with the stake-weighted meta model"},
    {key: "payout", label: "Payout", fmt: FORMAT.score, num: true},
    {key: "stake", label: "Stake", fmt: FORMAT.stake, num: true},
    {key: "pct_payout", label: "Pctl", fmt: v => (isNum(v) ? Math.round(v * 100) + "%" : "–"), num: true, title: "payout percentile in the round"},
  ];

  const board = {
    view: "window",          // "window" or a round number
    rows: new Map(),          // model -> row
    sort: {key: "rank", desc: false},  // the leaderboard's order: rolling mean payout
    rounds: new Map(),        // round -> {round, scored, day, final}
    hideZeroStake: false,     // the "hide zero-stake models" toggle
    trend: new Map(),         // round -> crowding figures
    alerts: [],
    window: null,
    nModels: null,
    changed: new Set(),
  };

  function columns() { return board.view === "window" ? WINDOW_COLUMNS : ROUND_COLUMNS; }

  // Sort by one column; models without a value always come last. The secondary key, for ties
  // and among the models without a value, is the model id ascending (code-point order).
  const byModel = (a, b) => (a.model < b.model ? -1 : a.model > b.model ? 1 : 0);
  function compare(key, desc) {
    return (a, b) => {
      const va = a[key], vb = b[key];
      const na = va === null || va === undefined, nb = vb === null || vb === undefined;
      if (na || nb) return na === nb ? byModel(a, b) : na ? 1 : -1;
      const c = typeof va === "string" ? (va < vb ? -1 : va > vb ? 1 : 0) : va - vb;
      return (desc ? -c : c) || byModel(a, b);
    };
  }

  function renderHead(table, cols, sort, onSort) {
    const tr = table.tHead.rows[0];
    tr.replaceChildren(...cols.map(c => {
      const sortable = c.sortable !== false;
      const th = el("th", {class: (c.num ? "num" : "") + (sortable ? " sortable" : ""), title: c.title, dataset: {key: c.key}, scope: "col"}, c.label);
      if (sort && sort.key === c.key) {
        th.setAttribute("aria-sort", sort.desc ? "descending" : "ascending");
        th.append(el("span", {class: "arrow"}, sort.desc ? " ▼" : " ▲"));
      }
      if (sortable && onSort) th.addEventListener("click", () => onSort(c.key));
      return th;
    }));
  }

  function cell(c, row) {
    const v = row[c.key];
    if (c.key === "model") {
      return el("td", {class: "model", dataset: {key: "model", value: row.model}},
        el("a", {href: `/models/${encodeURIComponent(row.model)}`}, row.model));
    }
    const text = c.fmt ? c.fmt(v) : v === null || v === undefined ? "–" : String(v);
    const cls = [c.num ? "num" : "", isNum(v) && v < 0 && c.fmt === FORMAT.score ? "neg" : ""].join(" ").trim();
    return el("td", {class: cls, dataset: {key: c.key, value: isNum(v) ? String(v) : typeof v === "object" ? "" : v}}, text);
  }

  function renderBoard() {
    const table = document.getElementById("board");
    const cols = columns();
    renderHead(table, cols, board.sort, key => {
      board.sort = {key, desc: board.sort.key === key ? !board.sort.desc : !["model", "rank"].includes(key)};
      renderBoard();
    });
    const all = [...board.rows.values()];
    const rows = all.filter(r => !board.hideZeroStake || (isNum(r.stake) && r.stake > 0)).sort(compare(board.sort.key, board.sort.desc));
    const body = table.tBodies[0];
    body.replaceChildren(...rows.map((row, i) => {
      const shown = board.view === "window" ? row : {...row, rank: i + 1};
      const tr = el("tr", {dataset: {model: row.model}}, ...cols.map(c => cell(c, shown)));
      if (board.changed.has(row.model)) flash(tr);
      return tr;
    }));
    board.changed.clear();
    document.getElementById("board-empty").hidden = all.length > 0;
    const hidden = all.length - rows.length;
    const meta = document.getElementById("board-meta");
    const title = document.getElementById("board-title");
    const note = document.getElementById("board-note");
    if (board.view === "window") {
      title.textContent = "Leaderboard";
      meta.textContent = `${board.nModels ?? rows.length} models${hidden ? ` · ${hidden} zero-stake hidden` : ""}`;
      note.textContent = `Rolling means over each model's latest ${board.window ?? "–"} scored rounds (each round's latest update). Click a column to sort.`;
    } else {
      const info = board.rounds.get(board.view) || {};
      title.textContent = `Round ${board.view}`;
      meta.textContent = `${all.length} models${hidden ? ` · ${hidden} zero-stake hidden` : ""}${info.day !== undefined && info.day !== null ? ` · day ${info.day}${info.final ? " · final" : ""}` : ""}`;
      note.textContent = "Each model's scores at the round's latest target update. Click a column to sort.";
    }
  }
  const renderBoardSoon = batched(renderBoard);

  function renderViewPicker() {
    const select = document.getElementById("view");
    const options = [el("option", {value: "window"}, `Rolling window${board.window ? ` (${board.window} rounds)` : ""}`)];
    const rounds = [...board.rounds.values()].filter(r => r.scored).sort((a, b) => b.round - a.round);
    for (const r of rounds) {
      options.push(el("option", {value: String(r.round)}, `Round ${r.round} · day ${r.day}${r.final ? " · final" : ""}`));
    }
    select.replaceChildren(...options);
    select.value = String(board.view);
  }
  const renderViewPickerSoon = batched(renderViewPicker);

  function renderTrend() {
    const points = [...board.trend.values()].sort((a, b) => a.round - b.round);
    mmcCharts.lineChart(document.getElementById("trend-chart"), {
      x: points.map(p => p.round),
      series: [
        {label: "stake-weighted mean CWMM", values: points.map(p => p.stake_weighted_cwmm), cls: "s0"},
        {label: "median CWMM", values: points.map(p => p.median_cwmm), cls: "s1"},
      ],
      format: v => v.toFixed(2),
      empty: "no scored round yet",
    });
    const last = points[points.length - 1];
    document.getElementById("trend-meta").textContent =
      last && isNum(last.gap) ? `gap ${signed(last.gap, 3)} in round ${last.round}` : "";
  }
  const renderTrendSoon = batched(() => {
    renderTrend();
    renderDeciles();
  });

  /* MMC by CWMM decile in the round shown (the latest scored one on the window view). */
  function renderDeciles() {
    const rounds = [...board.trend.keys()].sort((a, b) => a - b);
    const round = board.view === "window" ? rounds[rounds.length - 1] : board.view;
    const f = board.trend.get(round) || {};
    const deciles = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    mmcCharts.lineChart(document.getElementById("deciles-chart"), {
      x: deciles,
      series: [
        {label: "MMC (today's)", values: (f.mmc_mean_by_cwmm_decile || []).slice(0, 10), cls: "s0"},
        {label: "MMC 2020", values: (f.mmc_2020_mean_by_cwmm_decile || []).slice(0, 10), cls: "s1"},
      ],
      format: v => v.toFixed(4),
      zero: true,
      xLabel: "CWMM decile",
      empty: "no scored round yet",
    });
    document.getElementById("deciles-meta").textContent =
      round === undefined ? "" : `round ${round}${f.day !== undefined ? ` · day ${f.day}${f.final ? " · final" : ""}` : ""}`;
  }

  async function loadBoardRows() {
    if (board.view === "window") {
      const data = await api("/api/leaderboard?limit=10000");
      board.window = data.window;
      board.nModels = data.n_models;
      board.rows = new Map(data.rows.map(r => [r.model, r]));
    } else {
      const data = await api(`/api/rounds/${board.view}/scores`);
      board.rows = new Map(data.scores.map(s => [s.model, roundRow(s)]));
    }
  }

  function roundRow(score) {
    return {...score, pct_payout: score.percentiles ? score.percentiles.payout : null};
  }

  async function loadBoard() {
    const [rounds, trend, alerts] = await Promise.all([api("/api/rounds"), api("/api/trend"), api("/api/alerts?limit=50")]);
    board.rounds = new Map(rounds.rounds.map(r => [r.round, r]));
    board.trend = new Map(trend.trend.map(f => [f.round, f]));
    board.alerts = alerts.alerts;
    await loadBoardRows();
    renderViewPicker();
    renderBoard();
    renderTrend();
    renderDeciles();
    renderAlerts(document.getElementById("alerts"), board.alerts, "alerts-empty");
  }

  async function switchView(value) {
    board.view = value === "window" ? "window" : Number(value);
    board.sort = board.view === "window" ? {key: "rank", desc: false} : {key: "payout", desc: true};
    const url = board.view === "window" ? "/" : `/?round=${board.view}`;
    history.replaceState(null, "", url);
    await loadBoardRows();
    renderBoard();
    renderDeciles();
  }

  const boardHandlers = {
    leaderboard(row) {
      if (board.view !== "window") return;
      board.rows.set(row.model, row);
      board.nModels = row.n_models;
      board.changed.add(row.model);
      renderBoardSoon();
    },
    scores(score) {
      const info = board.rounds.get(score.round);
      if (!info || !info.scored || score.final > info.final || (score.final === info.final && score.day > info.day)) {
        board.rounds.set(score.round, {...(info || {}), round: score.round, scored: true, day: score.day, final: score.final});
        renderViewPickerSoon();
      }
      if (board.view !== score.round) return;
      board.rows.set(score.model, roundRow(score));
      board.changed.add(score.model);
      renderBoardSoon();
    },
    crowding(figures) {
      const {trend, ...point} = figures;
      board.trend.set(point.round, point);
      renderTrendSoon();
    },
    alerts(a) {
      board.alerts = [a, ...board.alerts].slice(0, 50);
      renderAlerts(document.getElementById("alerts"), board.alerts, "alerts-empty");
    },
  };

  async function boardView() {
    document.getElementById("board-view").hidden = false;
    const requested = new URLSearchParams(location.search).get("round");
    if (requested !== null && /^[0-9]+$/.test(requested)) {
      board.view = Number(requested);
      board.sort = {key: "payout", desc: true};
    }
    document.getElementById("view").addEventListener("change", e => switchView(e.target.value).catch(showError));
    const hide = document.getElementById("hide-zero-stake");
    board.hideZeroStake = hide.checked;
    hide.addEventListener("change", () => { board.hideZeroStake = hide.checked; renderBoard(); });
    await loadBoard();
    return {handlers: boardHandlers, reload: loadBoard};
  }

  // ------------------------------------------------------------------ the model page
  const HISTORY_COLUMNS = [
    {key: "round", label: "Round", fmt: FORMAT.int, num: true},
    {key: "day", label: "Day", fmt: FORMAT.int, num: true},
    {key: "final", label: "Final", fmt: v => (v ? "yes" : "no")},
    {key: "corr", label: "CORR", fmt: FORMAT.score, num: true},
    {key: "contribution", label: "MMC", fmt: FORMAT.score, num: true, title: "MMC: today's definition (correlation contribution)"},
    {key: "mmc", label: "MMC 2020", fmt: FORMAT.score, num: true, title: "MMC: the 2020 bootstrap definition"},
    {key: "corr_w_mm", label: "CWMM", fmt: FORMAT.cwmm, num: true},
    {key: "payout", label: "Payout", fmt: FORMAT.score, num: true},
    {key: "stake", label: "Stake", fmt: FORMAT.stake, num: true},
  ];

  const modelState = {model: null, history: new Map(), data: null, trend: new Map(), alerts: [], crowdRound: null, crowding: null, found: true};

  function stat(label, value, title) {
    return el("div", {class: "stat", title},
      el("div", {class: "stat-label"}, label),
      el("div", {class: "stat-value"}, value));
  }

  function renderModel() {
    const {data} = modelState;
    const s = data.standing;
    document.getElementById("model-title").textContent = modelState.model;
    document.getElementById("model-meta").textContent =
      data.rank ? `rank ${data.rank} of ${data.n_models}` : "not on the leaderboard yet";
    document.getElementById("model-stats").replaceChildren(...(s ? [
      stat("Payout (mean)", FORMAT.score(s.payout_mean), "mean payout score over the window"),
      stat("CORR (mean)", FORMAT.score(s.corr_mean)),
      stat("MMC (mean)", FORMAT.score(s.contribution_mean), "today's MMC (correlation contribution), mean over the window"),
      stat("MMC 2020 (mean)", FORMAT.score(s.mmc_mean), "the 2020 bootstrap MMC, mean over the window"),
      stat("CWMM (mean)", FORMAT.cwmm(s.corr_w_mm_mean)),
      stat("Sharpe", FORMAT.ratio(s.payout_sharpe), "mean payout score / its standard deviation, per round"),
      stat("Std", FORMAT.drawdown(s.payout_std), "standard deviation of the payout score"),
      stat("Max drawdown", FORMAT.drawdown(s.payout_max_drawdown), "largest fall of the cumulative payout score from its peak"),
      stat("Positive rounds", `${s.positive_rounds ?? "–"} of ${s.rounds}`, "rounds with a payout score above 0"),
      stat("Paid (NMR)", FORMAT.nmr(s.stake_payout), "Σ stake at close × payout score over the window"),
      stat("Stake", FORMAT.stake(s.stake)),
      stat("Rounds", `${s.rounds} of ${s.window}`),
    ] : []));
    const rows = [...modelState.history.values()].sort((a, b) => a.round - b.round);
    document.getElementById("model-empty").hidden = rows.length > 0;
    const xs = rows.map(r => r.round);
    mmcCharts.lineChart(document.getElementById("cwmm-chart"), {
      x: xs,
      series: [
        {label: `${modelState.model} CWMM`, values: rows.map(r => r.corr_w_mm), cls: "s0"},
        {label: "round median CWMM", values: xs.map(x => (modelState.trend.get(x) || {}).median_cwmm ?? null), cls: "s1"},
      ],
      format: v => v.toFixed(2),
      empty: "no scored round yet",
    });
    mmcCharts.lineChart(document.getElementById("stake-chart"), {
      x: xs,
      series: [{label: "stake at close (NMR)", values: rows.map(r => r.stake), cls: "s3"}],
      format: v => v.toLocaleString("en-US", {maximumFractionDigits: 1}),
      zero: true,
      empty: "no scored round yet",
    });
    mmcCharts.lineChart(document.getElementById("score-chart"), {
      x: xs,
      series: [
        {label: "CORR", values: rows.map(r => r.corr), cls: "s0"},
        {label: "MMC (today's)", values: rows.map(r => r.contribution), cls: "s2"},
        {label: "MMC 2020", values: rows.map(r => r.mmc), cls: "s1"},
        {label: "payout", values: rows.map(r => r.payout), cls: "s3"},
      ],
      format: v => v.toFixed(3),
      zero: true,
      empty: "no scored round yet",
    });
    const table = document.getElementById("history");
    renderHead(table, HISTORY_COLUMNS, null, null);
    table.tBodies[0].replaceChildren(...rows.slice().reverse().map(r =>
      el("tr", {dataset: {round: r.round}}, ...HISTORY_COLUMNS.map(c => cell(c, r)))));
    renderAlerts(document.getElementById("model-alerts"), modelState.alerts, "model-alerts-empty");
    renderCrowdPicker(rows);
  }
  const renderModelSoon = batched(renderModel);

  /* The crowding panels of one round: CWMM by stake decile, MMC by CWMM decile, concentration. */
  function renderCrowdPicker(rows) {
    const select = document.getElementById("crowd-round");
    const rounds = [...new Set([...rows.map(r => r.round), ...modelState.trend.keys()])].sort((a, b) => b - a);
    if (modelState.crowdRound === null && rounds.length) modelState.crowdRound = rows.length ? rows[rows.length - 1].round : rounds[0];
    const current = select.value;
    const options = rounds.map(r => el("option", {value: String(r)}, `Round ${r}${modelState.history.has(r) ? "" : " (not entered)"}`));
    if (options.length !== select.options.length || current !== String(modelState.crowdRound)) {
      select.replaceChildren(...options);
      if (modelState.crowdRound !== null) select.value = String(modelState.crowdRound);
    }
  }

  function cwmmDecile(edges, value) {
    if (!Array.isArray(edges) || !isNum(value)) return null;
    return 1 + edges.filter(e => isNum(e) && value >= e).length;
  }

  function renderCrowding() {
    const f = modelState.crowding;
    const round = modelState.crowdRound;
    const deciles = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const empty = round === null ? "no scored round yet" : `round ${round} has no crowding figures yet`;
    document.getElementById("crowd-meta").textContent =
      f ? `round ${f.round} · day ${f.day}${f.final ? " · final" : ""} · ${f.n_models} models, ${f.n_stakers} stakers` : "";
    document.getElementById("crowd-stats").replaceChildren(...(f ? [
      stat("HHI", isNum(f.hhi) ? f.hhi.toFixed(4) : "–", "Herfindahl index of stakes: Σ share²"),
      stat("Effective models", isNum(f.effective_models) ? f.effective_models.toFixed(1) : "–", "1 / HHI"),
      stat("Top-10 share", isNum(f.top10_share) ? (f.top10_share * 100).toFixed(1) + "%" : "–", "stake held by the 10 largest stakers"),
      stat("Stake-weighted CWMM", FORMAT.cwmm(f.stake_weighted_cwmm)),
      stat("Median CWMM", FORMAT.cwmm(f.median_cwmm)),
    ] : []));
    const own = modelState.history.get(round);
    const decile = own && f ? cwmmDecile(f.cwmm_decile_edges, own.corr_w_mm) : null;
    document.getElementById("crowd-model").textContent = !f ? "" : own
      ? `${modelState.model} in round ${round}: CWMM ${FORMAT.cwmm(own.corr_w_mm)}${decile ? ` (CWMM decile ${decile} of 10)` : ""}, MMC ${FORMAT.score(own.contribution)}, stake at close ${FORMAT.stake(own.stake)} NMR.`
      : `${modelState.model} has no score in round ${round}.`;
    mmcCharts.lineChart(document.getElementById("crowd-stake-chart"), {
      x: deciles,
      series: [{label: "median CWMM", values: f ? (f.cwmm_median_by_stake_decile || []).slice(0, 10) : [], cls: "s0"}],
      format: v => v.toFixed(2),
      xLabel: "stake decile",
      empty,
    });
    mmcCharts.lineChart(document.getElementById("crowd-mmc-chart"), {
      x: deciles,
      series: [
        {label: "MMC (today's)", values: f ? (f.mmc_mean_by_cwmm_decile || []).slice(0, 10) : [], cls: "s0"},
        {label: "MMC 2020", values: f ? (f.mmc_2020_mean_by_cwmm_decile || []).slice(0, 10) : [], cls: "s1"},
      ],
      format: v => v.toFixed(4),
      zero: true,
      xLabel: "CWMM decile",
      empty,
    });
  }

  async function loadCrowding() {
    const round = modelState.crowdRound;
    if (round === null) { modelState.crowding = null; renderCrowding(); return; }
    try {
      modelState.crowding = await api(`/api/rounds/${round}/crowding`);
    } catch (error) {
      if (error.status !== 404) throw error;
      modelState.crowding = null;
    }
    if (round === modelState.crowdRound) renderCrowding();
  }

  function showNotFound(message) {
    modelState.found = false;
    document.getElementById("model-not-found").hidden = false;
    document.getElementById("model-not-found-text").textContent = message;
    for (const part of document.querySelectorAll("#model-view [data-found]")) part.hidden = true;
    document.title = `not found · mmc-stream`;
  }

  async function loadModel() {
    let data;
    try {
      data = await api(`/api/models/${encodeURIComponent(modelState.model)}`);
    } catch (error) {
      if (error.status === 404 || error.status === 400) {
        showNotFound(error.status === 404
          ? `No model named “${modelState.model}” has submitted to this tournament.`
          : `“${modelState.model}” is not a model id: ${error.message}.`);
        return;
      }
      throw error;
    }
    const [trend, alerts] = await Promise.all([api("/api/trend"), api("/api/alerts?limit=1000")]);
    modelState.data = data;
    modelState.history = new Map(data.history.map(h => [h.round, h]));
    modelState.trend = new Map(trend.trend.map(f => [f.round, f]));
    modelState.alerts = alerts.alerts.filter(a => a.model === modelState.model).slice(0, 20);
    renderModel();
    await loadCrowding();
  }

  const modelHandlers = {
    scores(score) {
      if (score.model !== modelState.model) return;
      const old = modelState.history.get(score.round);
      if (old && (old.final > score.final || (old.final === score.final && old.day > score.day))) return;
      modelState.history.set(score.round, score);
      renderModelSoon();
    },
    leaderboard(row) {
      if (row.model !== modelState.model) return;
      const {rank, n_models, ...standing} = row;
      modelState.data = {...modelState.data, rank, n_models, standing};
      renderModelSoon();
    },
    crowding(figures) {
      const {trend, ...point} = figures;
      modelState.trend.set(point.round, point);
      if (point.round === modelState.crowdRound) { modelState.crowding = figures; renderCrowding(); }
      renderModelSoon();
    },
    alerts(a) {
      if (a.model !== modelState.model) return;
      modelState.alerts = [a, ...modelState.alerts].slice(0, 20);
      renderModelSoon();
    },
  };

  async function modelView(model) {
    document.getElementById("model-view").hidden = false;
    document.title = `${model} · mmc-stream`;
    modelState.model = model;
    document.getElementById("crowd-round").addEventListener("change", e => {
      modelState.crowdRound = Number(e.target.value);
      loadCrowding().catch(showError);
    });
    await loadModel();
    return {handlers: modelHandlers, reload: loadModel, found: () => modelState.found};
  }

  // ------------------------------------------------------------------ search
  // The header's search box: suggestions from the leaderboard's model names (loaded once, on
  // first use); names starting with the text first, then names containing it, each A→Z.
  const search = {names: null, loading: null, active: -1};
  const SUGGESTIONS = 8;

  function modelNames() {
    if (search.names) return Promise.resolve(search.names);
    if (!search.loading) {
      search.loading = api("/api/leaderboard?limit=10000")
        .then(data => (search.names = data.rows.map(r => r.model).sort()))
        .catch(() => { search.loading = null; return []; });
    }
    return search.loading;
  }

  function suggest(names, text) {
    const q = text.trim().toLowerCase();
    if (!q) return [];
    const starts = [], contains = [];
    for (const name of names) {
      const i = name.toLowerCase().indexOf(q);
      if (i === 0) starts.push(name);
      else if (i > 0) contains.push(name);
    }
    return [...starts, ...contains].slice(0, SUGGESTIONS);
  }

  const modelUrl = name => `/models/${encodeURIComponent(name)}`;

  function setupSearch() {
    const form = document.getElementById("search");
    const input = document.getElementById("search-input");
    const list = document.getElementById("search-suggestions");
    const items = () => [...list.querySelectorAll("a")];
    const close = () => { list.hidden = true; search.active = -1; input.setAttribute("aria-expanded", "false"); };
    const highlight = i => {
      const links = items();
      search.active = links.length ? (i + links.length) % links.length : -1;
      links.forEach((a, j) => a.setAttribute("aria-selected", String(j === search.active)));
    };
    async function update() {
      const text = input.value;
      const found = suggest(await modelNames(), text);
      if (input.value !== text) return; // typed on meanwhile
      list.replaceChildren(...(found.length ? found.map(name =>
        el("li", {role: "option"}, el("a", {href: modelUrl(name), dataset: {model: name}}, name)))
        : text.trim() ? [el("li", {class: "none"}, "no model matches")] : []));
      list.hidden = !text.trim();
      input.setAttribute("aria-expanded", String(!list.hidden));
      search.active = -1;
    }
    input.addEventListener("focus", () => { modelNames(); });
    input.addEventListener("input", () => { update().catch(showError); });
    input.addEventListener("keydown", e => {
      if (e.key === "ArrowDown") { e.preventDefault(); highlight(search.active + 1); }
      else if (e.key === "ArrowUp") { e.preventDefault(); highlight(search.active - 1); }
      else if (e.key === "Escape") close();
    });
    input.addEventListener("blur", () => setTimeout(close, 200));
    form.addEventListener("submit", e => {
      e.preventDefault();
      const links = items();
      const chosen = links[search.active] || links.find(a => a.dataset.model === input.value.trim()) || links[0];
      const name = chosen ? chosen.dataset.model : input.value.trim();
      if (name) location.assign(modelUrl(name));
    });
  }

  // ------------------------------------------------------------------ live updates
  function setLive(connected, text) {
    live.connected = connected;
    const badge = document.getElementById("live");
    badge.classList.toggle("off", !connected);
    badge.textContent = text;
  }

  function connect(page, missed = false) {
    let broken = missed; // true: events were missed before this stream opened

    const source = new EventSource("/api/stream");
    source.addEventListener("hello", () => {
      setLive(true, "live");
      if (broken) { broken = false; page.reload().catch(showError); } // missed events: reload
    });
    source.onerror = () => {
      broken = true;
      setLive(false, "reconnecting…");
      // EventSource reconnects by itself after a dropped stream, but gives up for good on an
      // answer that is not a stream (503 when the server has as many live clients as it takes):
      // then open a new one after a while, and reload what was missed once it is live.
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(() => { connect(page, true); }, 30000 * (0.5 + Math.random()));
      }
    };
    // the server's own feed was cut off from the broker and is back: reload what it missed
    source.addEventListener("resync", () => page.reload().catch(showError));
    for (const topic of ["scores", "leaderboard", "crowding", "alerts"]) {
      source.addEventListener(topic, event => {
        live.events += 1;
        live.byTopic[topic] = (live.byTopic[topic] || 0) + 1;
        touch();
        page.handlers[topic](JSON.parse(event.data));
      });
    }
    live.source = source;
  }

  function showError(error) {
    const main = document.querySelector("main:not([hidden])") || document.body;
    main.prepend(el("p", {class: "error"}, `Could not load data: ${error.message}`));
  }

  async function boot() {
    const match = location.pathname.match(/^\/models\/([^/]+)$/);
    setupSearch();
    try {
      const page = match ? await modelView(decodeURIComponent(match[1])) : await boardView();
      // a model that does not exist has nothing to follow: no stream, and the badge says so
      if (page.found && !page.found()) setLive(false, "no such model");
      else {
        connect(page);
        // A page left for another keeps no stream open: browsers allow few connections per host,
        // and a page kept for the back button would hold one. Coming back reopens it and reloads.
        window.addEventListener("pagehide", () => { if (live.source) live.source.close(); });
        window.addEventListener("pageshow", event => { if (event.persisted) connect(page, true); });
      }
    } catch (error) {
      setLive(false, "offline");
      showError(error);
    }
  }

  document.addEventListener("DOMContentLoaded", boot);
})();
