// The performance-engine dashboard: three pages drawn from the worker's JSON and its live
// stream. Every value that comes from events (ids, learning modes) is written as text
// (textContent), never parsed as HTML.
"use strict";

const main = document.getElementById("main");
const DIFFICULTIES = ["easy", "medium", "hard"];

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en")),
  pct: (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`),
  num: (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits)),
  ms: (s) => (s === null || s === undefined ? "–" : `${Math.round(s * 1000)} ms`),
};

function learnerUrl(id) { return `/dashboard/learner?user_id=${encodeURIComponent(id)}`; }
function cohortUrl(sub, mode) {
  return `/dashboard/cohort?sub_topic_id=${encodeURIComponent(sub)}&learning_mode=${encodeURIComponent(mode)}`;
}

function signIn() {
  const here = window.location.pathname + window.location.search;
  window.location.assign(`/dashboard/sign-in?next=${encodeURIComponent(here)}`);
}

async function getJson(url) {
  const reply = await fetch(url, { headers: { Accept: "application/json" } });
  if (reply.status === 401) signIn(); // the session ended (expired, or its token revoked)
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || `HTTP ${reply.status}`);
  return body;
}

function fail(error) {
  main.replaceChildren(el("p", { class: "error", text: String(error.message || error) }));
}

function live(path, handlers) {
  const badge = document.getElementById("live");
  const source = new EventSource(path);
  source.onopen = () => { badge.textContent = "live"; badge.classList.add("on"); };
  source.onerror = () => { badge.textContent = "reconnecting"; badge.classList.remove("on"); };
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
  }
  return source;
}

function chart(target, series, height = 220, share = false) {
  // Over time (the overview), or, with share, shares 0-100% over a scope's versions.
  const y = share
    ? { scale: "share", values: (u, ticks) => ticks.map((t) => `${Math.round(t * 100)}%`) }
    : {};
  const x = share ? { label: "attempts applied (version)" } : {};
  const opts = {
    width: Math.max(target.clientWidth, 300),
    height,
    series: [share ? { label: "version" } : {}, ...series.map((s) => (share ? { ...s, scale: "share" } : s))],
    axes: [x, y],
    scales: share ? { x: { time: false }, share: { range: [0, 1] } } : { x: { time: true } },
  };
  const data = [[], ...series.map(() => [])];
  return { plot: new uPlot(opts, data, target), data };
}

// -- overview ---------------------------------------------------------------------------

function overviewPage() {
  const tiles = [
    ["attempts-rate", "attempts / s"],
    ["attempts-total", "attempts applied"],
    ["duplicates", "duplicates ignored"],
    ["published", "stats published"],
    ["updates-rate", "stats updates / s"],
    ["batch-p50", "batch time p50"],
    ["batch-p99", "batch time p99"],
    ["recoveries", "state recoveries"],
  ];
  const values = {};
  const grid = el("div", { class: "tiles" }, ...tiles.map(([id, label]) => {
    values[id] = el("div", { class: "value", id, text: "–" });
    return el("div", { class: "tile" }, el("div", { class: "label", text: label }), values[id]);
  }));
  const rateChart = el("div", { id: "rate-chart" });
  const lag = el("tbody");
  const rejected = el("tbody");
  const feed = el("ul", { class: "feed", id: "recent" });
  const refusal = el("p", { class: "error", id: "refusal" });
  main.replaceChildren(
    el("h1", { text: "Overview" }), refusal, grid,
    el("h2", { text: "Attempts per second" }), rateChart,
    el("div", { class: "columns" },
      el("section", {}, el("h2", { text: "Consumer lag per partition" }),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "partition" }), el("th", { text: "records behind" }))), lag)),
      el("section", {}, el("h2", { text: "Dead-lettered records by reason" }),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "reason" }), el("th", { text: "records" }))), rejected))),
    el("h2", { text: "Newest stats updates" }), feed,
  );
  const { plot, data } = chart(rateChart, [{ label: "attempts/s", stroke: "#0969da" }], 180);

  function addUpdate(u) {
    const item = el("li", { "data-user": String(u.user_id) },
      el("a", { href: learnerUrl(u.user_id), text: `learner ${u.user_id}` }),
      ` · sub-topic ${u.sub_topic_id} · `, el("span", { text: u.learning_mode }),
      ` · v${u.version} · mastery ${fmt.pct(u.mastery)} · accuracy ${fmt.pct(u.accuracy)} · `,
      el("span", { class: "muted attempt", text: `attempt ${u.attempt_id}` }));
    feed.prepend(item);
    while (feed.children.length > 40) feed.lastChild.remove();
  }

  function dropLearner(e) { // erased: their rows go from the newest updates
    for (const item of [...feed.children]) if (item.dataset.user === String(e.user_id)) item.remove();
  }

  function show(o) {
    values["attempts-rate"].textContent = fmt.num(o.attempts_per_second);
    values["attempts-total"].textContent = fmt.int(o.totals.attempts_applied);
    values["duplicates"].textContent = fmt.int(o.totals.duplicates);
    values["published"].textContent = fmt.int(o.totals.stats_published);
    values["updates-rate"].textContent = fmt.num(o.stats_updates_per_second);
    values["batch-p50"].textContent = fmt.ms(o.batch_seconds.p50);
    values["batch-p99"].textContent = fmt.ms(o.batch_seconds.p99);
    values["recoveries"].textContent = fmt.int(o.totals.state_recoveries);
    refusal.textContent = o.refusal ? `The worker refuses to go on: ${o.refusal}` : "";
    lag.replaceChildren(...Object.entries(o.lag).map(([p, n]) => el("tr", {}, el("td", { text: p }), el("td", { text: fmt.int(n) }))));
    const reasons = Object.entries(o.rejected);
    rejected.replaceChildren(...(reasons.length ? reasons.map(([r, n]) => el("tr", {}, el("td", { text: r }), el("td", { text: fmt.int(n) })))
      : [el("tr", {}, el("td", { class: "muted", text: "none" }), el("td", {}))]));
    data[0].push(Date.now() / 1000);
    data[1].push(o.attempts_per_second);
    if (data[0].length > 300) { data[0].shift(); data[1].shift(); }
    plot.setData(data);
  }

  getJson("/dashboard/api/overview").then((o) => {
    show(o);
    for (const u of o.recent.slice().reverse()) addUpdate(u);
    live("/dashboard/api/stream", { overview: show, update: addUpdate, erased: dropLearner });
  }).catch(fail);
}

// -- cohorts ----------------------------------------------------------------------------

async function cohortsPage() {
  const { cohorts } = await getJson("/dashboard/api/cohorts");
  const rows = cohorts.map((c) => el("tr", {},
    el("td", {}, el("a", { href: cohortUrl(c.sub_topic_id, c.learning_mode), text: `sub-topic ${c.sub_topic_id}` })),
    el("td", { text: c.learning_mode }),
    el("td", { text: fmt.int(c.learners) })));
  main.replaceChildren(el("h1", { text: "Cohorts" }),
    el("table", { id: "cohorts" },
      el("thead", {}, el("tr", {}, el("th", { text: "sub-topic" }), el("th", { text: "learning mode" }), el("th", { text: "learners" }))),
      el("tbody", {}, ...rows)));
}

async function cohortPage(params) {
  const sub = params.get("sub_topic_id");
  const mode = params.get("learning_mode");
  const state = {
    order: params.get("order") || "stuck",
    dir: params.get("dir") || "",
    page: Number(params.get("page") || 1),
    user: params.get("user_id") || "",
  };
  const heading = el("h1", { text: `Sub-topic ${sub} · ` }, el("span", { text: mode }));
  const summary = el("p", { class: "muted" });
  const body = el("tbody");
  const columns = [
    ["learner", null], ["easy", null], ["medium", null], ["hard", null],
    ["mastery", "mastery"], ["next", null], ["attempts", "attempts"], ["not completed", "stuck"],
  ];
  const headRow = el("tr");
  const search = el("input", { name: "user_id", size: 10, placeholder: "user id", value: state.user });
  const pager = el("div", { class: "pager" });
  main.replaceChildren(heading, summary,
    el("form", { id: "cohort-search", onsubmit: (e) => { e.preventDefault(); state.user = search.value.trim(); state.page = 1; load(); } },
      el("label", {}, "find a learner ", search), el("button", { type: "submit", text: "Find" })),
    el("table", { id: "cohort" }, el("thead", {}, headRow), body), pager);

  function cell(d) {
    if (!d.attempted) return el("td", { class: "untried", text: "–" });
    return el("td", { class: d.completion, title: `${d.attempts} attempts, accuracy ${fmt.pct(d.accuracy)}`, text: `${d.score} ${d.completion}` });
  }
  function masteryCell(m) {
    const td = el("td", { class: "mastery", text: fmt.pct(m) });
    if (m !== null && m !== undefined) td.style.background = `hsl(${Math.round(120 * m)}, 70%, 88%)`;
    return td;
  }

  async function load() {
    const query = new URLSearchParams({ order: state.order, page: String(state.page) });
    if (state.dir) query.set("dir", state.dir);
    if (state.user) query.set("user_id", state.user);
    let page;
    try {
      page = await getJson(`/dashboard/api/cohorts/${encodeURIComponent(sub)}/${encodeURIComponent(mode)}?${query}`);
    } catch (error) { summary.textContent = error.message; summary.className = "error"; return; }
    summary.className = "muted";
    summary.textContent = `${fmt.int(page.learners)} learners · ordered by ${page.order} (${page.dir}) · page ${page.page}`;
    headRow.replaceChildren(...columns.map(([label, order]) => {
      if (!order) return el("th", { text: label });
      const sorted = order === page.order;
      return el("th", {
        class: `sortable${sorted ? " sorted" : ""}${sorted && page.dir === "asc" ? " asc" : ""}`,
        text: label,
        onclick: () => {
          state.dir = sorted ? (page.dir === "desc" ? "asc" : "desc") : "";
          state.order = order; state.page = 1; load();
        },
      });
    }));
    body.replaceChildren(...page.rows.map((r) => r.missing
      ? el("tr", { "data-user": String(r.user_id) }, el("td", { text: String(r.user_id) }), el("td", { class: "muted", text: "no stats" }))
      : el("tr", { "data-user": String(r.user_id) },
        el("td", {}, el("a", { href: learnerUrl(r.user_id), text: String(r.user_id) })),
        ...DIFFICULTIES.map((d) => cell(r.difficulties[d])),
        masteryCell(r.mastery),
        el("td", { text: r.recommended_difficulty || "–" }),
        el("td", { text: fmt.int(r.total_attempts) }),
        el("td", { text: fmt.int(r.attempts_not_completed) }))));
    const pages = Math.max(1, Math.ceil(page.learners / page.per_page));
    pager.replaceChildren(
      el("button", { text: "previous", disabled: page.page <= 1, onclick: () => { state.page -= 1; load(); } }),
      el("span", { text: `page ${page.page} of ${pages}` }),
      el("button", { text: "next", disabled: page.page >= pages || state.user !== "", onclick: () => { state.page += 1; load(); } }));
  }
  await load();
}

// -- learner ----------------------------------------------------------------------------

async function learnerPage(params) {
  const id = params.get("user_id");
  if (!id) { main.replaceChildren(el("p", { class: "muted", text: "Give a learner id above." })); return; }
  const cards = el("div", { class: "cards", id: "scopes" });
  const actor = el("p", { class: "muted", id: "xapi-actor" });
  const erasedNote = el("p", { class: "error", id: "erased" });
  main.replaceChildren(el("h1", { text: `Learner ${id}` }), erasedNote, actor, cards);
  const charts = new Map();

  function card(scope) {
    const s = scope.stats;
    const key = `${s.sub_topic_id}:${s.learning_mode}`;
    const l = s.learning;
    const facts = [
      ["version", s.version, "version"],
      ["attempts", `${fmt.int(s.total_attempts)} (${fmt.int(s.total_correct_attempts)} correct)`, "attempts"],
      ["passed", s.passed_difficulties.join(", ") || "none", "passed"],
      ["failed", s.failed_difficulties.join(", ") || "none", "failed"],
      ["scores", DIFFICULTIES.map((d) => `${d} ${s.difficulty_scores[d]}`).join(" · "), "scores"],
      ["ranking", s.difficulty_ranking.join(", ") || "–", "ranking"],
      ["mastery", l ? `${fmt.pct(l.mastery_probability)}${l.mastered ? " (mastered)" : ""}` : "unknown", "mastery"],
      ["next answer right", l ? DIFFICULTIES.map((d) => `${d} ${fmt.pct(l.predicted_correct[d])}`).join(" · ") : "–", "predicted"],
      ["next difficulty", l ? l.recommended_difficulty : "–", "recommended"],
      ["parameters", l ? l.params_version : "–", "params-version"],
      ["recent accuracy", l ? fmt.pct(l.recent_accuracy) : "–", "recent-accuracy"],
      ["streak", l ? `${l.current_streak} now, ${l.longest_streak} longest` : "–", "streak"],
      ["last attempt", s.last_attempt_at || "–", "last"],
    ];
    const box = el("div", { class: "chart" });
    const node = el("section", { class: "card", "data-scope": key },
      el("h2", { text: `Sub-topic ${s.sub_topic_id} · ` }, el("a", { href: cohortUrl(s.sub_topic_id, s.learning_mode), text: s.learning_mode })),
      el("dl", {}, ...facts.flatMap(([label, value, cls]) => [el("dt", { text: label }), el("dd", { class: cls, text: String(value) })])),
      box);
    return { key, node, box, history: scope.history };
  }

  let generation = 0; // a load's answer is dropped if an erasure (or a newer load) came meanwhile
  async function load() {
    const mine = ++generation;
    let learner;
    try { learner = await getJson(`/dashboard/api/learners/${encodeURIComponent(id)}`); } catch (error) { if (mine === generation) fail(error); return false; }
    if (mine !== generation) return false;
    actor.textContent = learner.xapi_actor ? `xAPI actor: ${learner.xapi_actor}` : "";
    erasedNote.textContent = "";
    const built = learner.scopes.map(card);
    cards.replaceChildren(...built.map((b) => b.node));
    for (const b of built) {
      const c = chart(b.box, [
        { label: "mastery", stroke: "#8250df" },
        { label: "accuracy", stroke: "#1a7f37" },
      ], 160, true);
      for (const [, mastery, accuracy, version] of b.history) { c.data[0].push(version); c.data[1].push(mastery); c.data[2].push(accuracy); }
      c.plot.setData(c.data);
      charts.set(b.key, c);
    }
    return true;
  }

  if (!(await load())) return;
  let pending = null;
  live(`/dashboard/api/stream?user_id=${encodeURIComponent(id)}`, {
    update: () => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 300); },
    erased: () => { // their data is gone; new attempts after this start them again
      generation++;
      clearTimeout(pending);
      pending = null;
      charts.clear();
      cards.replaceChildren();
      actor.textContent = "";
      erasedNote.textContent = "This learner was erased: the engine no longer holds their stats.";
    },
  });
}

// -- routing ----------------------------------------------------------------------------

document.getElementById("find-learner").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(event.target).get("user_id").trim();
  if (id) window.location.assign(learnerUrl(id));
});

const params = new URLSearchParams(window.location.search);
const path = window.location.pathname.replace(/\/$/, "");
if (path === "/dashboard/learner") learnerPage(params).catch(fail);
else if (path === "/dashboard/cohort" && params.get("sub_topic_id")) cohortPage(params).catch(fail);
else if (path === "/dashboard/cohort") cohortsPage().catch(fail);
else overviewPage();
