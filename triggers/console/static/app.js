/* The Journeys console: one page per path under /ui/, each drawn from the API's JSON. */
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const TEMPORAL_UI = document.querySelector('meta[name="temporal-ui"]').content;
const CURRENCY = document.querySelector('meta[name="currency"]').content;
const SHOP_TZ = (document.querySelector('meta[name="shop-timezone"]') || {}).content || "Asia/Shanghai";
const app = document.getElementById("app");
const params = new URLSearchParams(location.search);

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const L = (en, zh) => `${en} ${zh}`;
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const money = (n) => (n === null || n === undefined ? "–" : `${CURRENCY} ${Number(n).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2})}`);
const pct = (r) => (r === null || r === undefined ? "–" : `${(r * 100).toFixed(1)}%`);
/* A moment as "2026-12-06 14:05" in `zone` (the shop's by default). */
function clock(t, zone) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {timeZone: zone || SHOP_TZ, year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23"}).formatToParts(new Date(t)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}`;
}
/* Every time the console shows is in the shop's zone, and says so. */
const when = (t) => (t ? `${clock(t)} (${SHOP_TZ})` : "–");
const roi = (r) => (r === null || r === undefined ? "–" : `${r}×`);
/* Delivery: null from the API means no receipt can come (the outbox), not that nothing arrived. */
const delivery = (f) => (f && f.delivery_rate === null && f.sent > 0 ? L("n/a (no receipts)", "无回执") : pct(f ? f.delivery_rate : null));
function title(...parts) { document.title = ["旅程 Journeys", ...parts.filter(Boolean)].join(" · "); }
const enc = encodeURIComponent;

async function api(path) {
  const answer = await fetch(path, {credentials: "same-origin", headers: {Accept: "application/json"}});
  if (answer.status === 401) { location.href = `/ui/login?next=${enc(location.pathname + location.search)}`; throw new Error("signed out"); }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.detail || `${answer.status} ${answer.statusText}`);
  return body;
}

async function act(path, body) {
  const answer = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF, Accept: "application/json"},
    body: JSON.stringify(body || {}),
  });
  const found = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(found.detail || `${answer.status} ${answer.statusText}`);
  return found;
}

function problem(err) { return h("p", {class: "error", role: "alert"}, String(err.message || err)); }
function table(headers, rows, caption) {
  return h("div", {class: "table-wrap"}, h("table", {}, caption ? h("caption", {class: "sr"}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", {class: cls || null, scope: "col"}, label)))),
    h("tbody", {}, rows)));
}
const td = (value, cls) => h("td", {class: cls || null}, value);
const kpi = (label, value) => h("div", {class: "kpi"}, h("b", {}, value), h("span", {}, label));
function show(...nodes) { app.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false)); }
function reasons(byReason) {
  const parts = Object.entries(byReason || {}).map(([r, n]) => `${r} ${n}`);
  return parts.length ? parts.join(", ") : "–";
}

function periodForm(extra) {
  const from = params.get("from") || "", to = params.get("to") || "";
  return h("form", {class: "filters", method: "get"},
    h("label", {}, L("From", "开始"), h("input", {type: "date", name: "from", value: from, "aria-label": "From 开始日期"})),
    h("label", {}, L("To", "结束"), h("input", {type: "date", name: "to", value: to, "aria-label": "To 结束日期"})),
    extra || null,
    h("button", {type: "submit"}, L("Show", "查看")));
}
function periodQuery(more) {
  const q = new URLSearchParams();
  for (const name of ["from", "to"]) if (params.get(name)) q.set(name, params.get(name));
  for (const [k, v] of Object.entries(more || {})) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/* ---------------------------------------------------------------- journeys */

async function journeysPage() {
  title();
  const heading = h("h1", {}, L("Journeys", "旅程"));
  show(heading, periodForm(), h("p", {}, L("Loading…", "加载中…")));
  const [report, running] = await Promise.all([api(`/effect${periodQuery()}`), api("/journeys").catch((e) => e)]);
  const versions = Array.isArray(running) ? Object.fromEntries(running.map((j) => [j.name, j])) : {};
  const rows = Object.values(report.journeys).map((j) => {
    const v = versions[j.journey];
    return h("tr", {},
      td(h("a", {href: `/ui/journeys/${enc(j.journey)}${periodQuery()}`}, j.title || j.journey)),
      td(v ? h("code", {}, v.version.slice(0, 8)) : "–"),
      td(v ? `${num(v.running_this_version)} / ${num(v.running_older_versions)}` : "–", "num"),
      td(num(j.sent), "num"), td(reasons(j.skipped_by_reason)), td(num(j.converted), "num"),
      td(pct(j.conversion_rate), "num"), td(money(j.revenue), "num"), td(roi(j.roi), "num"));
  });
  const t = report.totals;
  show(heading, periodForm(),
    h("p", {class: "muted"}, `${report.start.slice(0, 10)} → ${report.end.slice(0, 10)} (${report.timezone})`),
    h("div", {class: "kpis"}, kpi(L("Sent", "发送"), num(t.sent)), kpi(L("Converted orders", "转化订单"), num(t.converted_orders)),
      kpi(L("Revenue", "回款"), money(t.revenue)), kpi(L("Cost", "成本"), money(t.cost)), kpi("ROI", roi(t.roi))),
    Array.isArray(running) ? null : problem(new Error(`running instances unknown: ${running.message}`)),
    h("h2", {}, L("Every journey", "全部旅程")),
    table([[L("Journey", "旅程")], [L("Version", "版本")], [L("Running: this / older", "运行中：当前/旧版本"), "num"],
      [L("Sent", "发送"), "num"], [L("Skipped", "跳过")], [L("Converted", "转化"), "num"], [L("Rate", "转化率"), "num"],
      [L("Revenue", "回款"), "num"], ["ROI", "num"]], rows, "Journeys"));
}

const STEP_KINDS = ["send", "wait", "wait_until", "wait_for", "if", "split", "exit", "repeat"];
/* A step's kind: its one key (an `exit` with no reason is dumped as {}). */
function kindOf(step) { return STEP_KINDS.find((k) => k in step) || Object.keys(step)[0] || "exit"; }

/* Every send step of a definition's steps, at any depth, in document order. */
function sendSteps(steps) {
  const found = [];
  for (const step of steps || []) {
    const kind = kindOf(step), spec = step[kind];
    if (kind === "send") found.push(spec.id || spec.template);
    for (const [, inner] of arms(kind, spec, "")) found.push(...sendSteps(inner));
  }
  return found;
}

/* A step's arms as [label, steps, path suffix]: the paths are definitions.schema `walk_steps`'s,
   the keys of GET /journeys/{name}/waiting. */
function arms(kind, spec, here) {
  if (kind === "wait_for") return [[L("on event", "收到事件"), spec.on_event || [], `${here}.wait_for.on_event`],
    [L("on timeout", "超时"), spec.on_timeout || [], `${here}.wait_for.on_timeout`]];
  if (kind === "if") return [[L("then", "是"), spec.then || [], `${here}.if.then`], [L("else", "否"), spec.else || [], `${here}.if.else`]];
  if (kind === "split") return (spec.branches || []).map((b, i) => [b.name || `branch_${i + 1}`, b.steps || [], `${here}.split.branches[${i}].steps`]);
  return [];
}

/* The step diagram, every kind at any depth. `byStep`: the effect report's figures per send step;
   `extra` (optional): {waiting: {path: n}} (instances waiting at each step now) and
   {variants: {group: figures}} (the effect report by variant: each split arm's instances). */
function diagram(steps, byStep, onPreview, extra, path) {
  const more = extra || {}, waiting = more.waiting || null, variants = more.variants || null;
  const base = path || "steps";
  const waitingAt = (here) => (waiting ? h("span", {class: "counts waiting"}, `${L("waiting now", "当前等待")} ${num(waiting[here] || 0)}`) : null);
  return h("ol", {}, (steps || []).map((step, i) => {
    const kind = kindOf(step), spec = step[kind], here = `${base}[${i}]`;
    let label = "";
    const extras = [], cls = kind.startsWith("wait") ? "wait" : kind;
    if (kind === "send") {
      const id = spec.id || spec.template, f = (byStep || {})[id] || {};
      label = `${id} · ${spec.channel || "sms"}${spec.fallback ? ` → ${spec.fallback}` : ""}`;
      extras.push(h("span", {class: "counts"}, `${L("sent", "发送")} ${num(f.sent || 0)} · ${L("skipped", "跳过")} ${num(f.skipped || 0)} · ` +
        `${L("failed", "失败")} ${num(f.failed || 0)} · ${L("converted", "转化")} ${num(f.converted || 0)}`));
      if (waiting && waiting[here]) extras.push(h("span", {class: "counts waiting"}, `${L("held now", "当前暂缓")} ${num(waiting[here])}`));
      if (onPreview) extras.push(h("button", {type: "button", class: "secondary", onclick: () => onPreview(id), "aria-label": `Preview ${id} 预览`}, L("Preview", "预览")));
    } else if (kind === "wait") { label = `${L("wait", "等待")} ${spec}`; extras.push(waitingAt(here)); }
    else if (kind === "wait_until") { label = `${L("wait until", "等到")} ${spec.at}${spec.offset ? ` ${spec.offset}` : ""}`; extras.push(waitingAt(here)); }
    else if (kind === "wait_for") { label = `${L("wait for", "等待事件")} ${spec.event} (≤ ${spec.timeout})`; extras.push(waitingAt(here)); }
    else if (kind === "if") label = `${L("if", "如果")} ${spec.condition}`;
    else if (kind === "split") label = L("split", "分流");
    else if (kind === "exit") label = `${L("exit", "退出")}${spec ? `: ${spec}` : ""}`;
    else if (kind === "repeat") label = L("start over", "重新开始");
    else label = `${kind} ${typeof spec === "object" ? JSON.stringify(spec) : spec}`;
    const drawn = arms(kind, spec, here).map(([name, inner, at], b) => {
      let head = name;
      if (kind === "split") {
        const branch = spec.branches[b], group = variants ? variants[name] : null;
        head = `${name} · ${L("weight", "权重")} ${branch.weight === undefined ? 1 : branch.weight}` +
          (variants ? ` · ${num(group ? group.entered : 0)} ${L("instances", "实例")}` : "");
      }
      return h("li", {class: "arm-item", "data-arm": name}, h("p", {class: "arm"}, head),
        inner.length ? diagram(inner, byStep, onPreview, extra, at) : h("p", {class: "muted arm-empty"}, L("(nothing: on to the next step)", "（无：继续下一步）")));
    });
    if (kind === "split" && spec.holdout) {
      const held = variants ? variants.holdout : null;
      drawn.push(h("li", {class: "arm-item", "data-arm": "holdout"}, h("p", {class: "arm"},
        `${L("holdout", "对照组")} ${pct(spec.holdout)}${variants ? ` · ${num(held ? held.entered : 0)} ${L("instances", "实例")}` : ""}`),
        h("p", {class: "muted arm-empty"}, L("gets nothing: the run ends", "不发送：实例结束"))));
    }
    return h("li", {"data-path": here}, h("div", {class: `step ${cls}`}, h("span", {class: "kind"}, kind), label, ...extras),
      drawn.length ? h("ul", {class: "arms"}, drawn) : null);
  }));
}

function previewBox(journey, steps) {
  const out = h("div", {class: "preview", "aria-live": "polite"});
  const ids = [...new Set(sendSteps(steps))];
  const step = h("select", {id: "pv-step", name: "step", required: true, "aria-label": "Step 步骤"}, ids.map((id) => h("option", {value: id}, id)));
  const customer = h("input", {id: "pv-customer", name: "customer", required: true, value: params.get("customer") || "", "aria-label": "Customer id 客户编号"});
  const order = h("input", {id: "pv-order", name: "order", value: params.get("order") || "", "aria-label": "Order id 订单编号"});
  async function run(event) {
    if (event) event.preventDefault();
    out.replaceChildren(h("p", {}, L("Rendering…", "生成中…")));
    try {
      const q = new URLSearchParams({step: step.value, customer: customer.value});
      if (order.value) q.set("order", order.value);
      const p = await api(`/journeys/${enc(journey)}/preview?${q}`);
      out.replaceChildren(h("p", {}, h("b", {}, `${p.step} → ${p.customer_id}`), ` · ${p.policy}`),
        ...p.notes.map((n) => h("p", {class: "muted"}, n)),
        ...p.channels.map((c) => h("div", {class: "card"}, h("h3", {}, c.channel), c.subject ? h("p", {}, h("b", {}, c.subject)) : null,
          c.error ? problem(new Error(c.error)) : h("pre", {}, c.body || ""))));
    } catch (err) { out.replaceChildren(problem(err)); }
  }
  const form = h("form", {class: "filters", onsubmit: run},
    h("label", {for: "pv-step"}, L("Step", "步骤"), step), h("label", {for: "pv-customer"}, L("Customer", "客户"), customer),
    h("label", {for: "pv-order"}, L("Order (optional)", "订单（可选）"), order), h("button", {type: "submit"}, L("Preview", "预览")));
  return {node: h("section", {class: "card", id: "preview"}, h("h2", {}, L("Step preview", "步骤预览")), form, out),
    choose(id) { step.value = id; if (customer.value) run(); else customer.focus(); document.getElementById("preview").scrollIntoView(); }};
}

function variantsTable(groups) {
  const names = Object.keys(groups).sort((a, b) => (a === "holdout") - (b === "holdout") || a.localeCompare(b));
  if (!names.length) return h("p", {class: "muted"}, L("This journey has no A/B split.", "此旅程没有 A/B 分流。"));
  return table([[L("Variant", "分组")], [L("Entered", "进入"), "num"], [L("Sent", "发送"), "num"], [L("Converted", "转化"), "num"],
    [L("Rate", "转化率"), "num"], [L("Revenue", "回款"), "num"]],
  names.map((g) => { const f = groups[g]; return h("tr", {"data-variant": g}, td(g || L("(none)", "（无）")), td(num(f.entered), "num"), td(num(f.sent), "num"),
    td(num(f.converted), "num"), td(pct(f.conversion_rate), "num"), td(money(f.revenue), "num")); }), "Variants");
}

async function journeyPage(name) {
  title(name);
  show(h("h1", {}, name), h("p", {}, L("Loading…", "加载中…")));
  const [whole, byDay, byStep, byVariant, definition, waiting] = await Promise.all([
    api(`/journeys/${enc(name)}/effect${periodQuery()}`), api(`/journeys/${enc(name)}/effect${periodQuery({by: "day"})}`),
    api(`/journeys/${enc(name)}/effect${periodQuery({by: "step"})}`), api(`/journeys/${enc(name)}/effect${periodQuery({by: "variant"})}`),
    api(`/journeys/${enc(name)}/definition`).catch(() => null), api(`/journeys/${enc(name)}/waiting`).catch((e) => e)]);
  const j = whole.journeys[name] || {}, days = (byDay.journeys[name] || {}).groups || {}, steps = (byStep.journeys[name] || {}).groups || {};
  const variants = (byVariant.journeys[name] || {}).groups || {};
  const hasSplit = Object.keys(variants).some((g) => g !== "");
  title(j.title || name, j.title ? name : null);
  const canvas = h("canvas", {id: "daily-chart", role: "img", "aria-label": "Sent, converted and revenue per day 每日发送、转化与回款"});
  const preview = previewBox(name, definition ? definition.definition.steps : []);
  const uplift = j.uplift;
  const waits = waiting instanceof Error ? null : waiting;
  show(
    h("h1", {}, j.title || name), periodForm(),
    h("p", {class: "muted"}, `${name} · ${L("version", "版本")} ${definition ? definition.version.slice(0, 8) : "–"} · ${L("goal", "目标")} ${j.goal || "–"} ${j.within ? `(${j.within})` : ""}`),
    h("div", {class: "kpis"}, kpi(L("Entered", "进入"), num(j.entered)), kpi(L("Sent", "发送"), num(j.sent)), kpi(L("Skipped", "跳过"), num(j.skipped)),
      kpi(L("Delivery", "送达率"), delivery(j)),
      kpi(L("Converted", "转化"), num(j.converted)), kpi(L("Conversion rate", "转化率"), pct(j.conversion_rate)),
      kpi(L("Revenue", "回款"), money(j.revenue)), kpi(L("Cost", "成本"), money(j.cost)), kpi("ROI", roi(j.roi))),
    h("p", {class: "muted"}, `${L("Skipped by reason", "跳过原因")}: ${reasons(j.skipped_by_reason)} · ${L("deferred", "延后")}: ${reasons(j.deferred_by_reason)} · ${L("failed", "失败")}: ${reasons(j.failed_by_reason)}`),
    h("div", {class: "grid"},
      h("section", {class: "card"}, h("h2", {}, L("Per day", "每日")), h("div", {class: "chart-box"}, canvas)),
      h("section", {class: "card funnel"}, h("h2", {}, L("Funnel per step", "步骤漏斗")), funnel(steps))),
    h("section", {class: "card", id: "variants"}, h("h2", {}, L("Per variant (A/B)", "分组对比 (A/B)")), hasSplit ? variantsTable(variants) :
      h("p", {class: "muted"}, L("This journey has no A/B split.", "此旅程没有 A/B 分流。"))),
    h("section", {class: "card", id: "uplift"}, h("h2", {}, L("Holdout uplift", "对照组提升")), uplift ? h("p", {},
      `${L("treated", "实验组")} ${pct(uplift.treated.rate)} (${uplift.treated.converted}/${uplift.treated.instances}) · ` +
      `${L("holdout", "对照组")} ${pct(uplift.holdout.rate)} (${uplift.holdout.converted}/${uplift.holdout.instances}) · ` +
      `${L("uplift", "提升")} ${uplift.absolute === null ? "–" : `${(uplift.absolute * 100).toFixed(1)} pt`}` +
      (uplift.interval ? ` [95%: ${(uplift.interval[0] * 100).toFixed(1)}, ${(uplift.interval[1] * 100).toFixed(1)}]` : "")) :
      h("p", {class: "muted"}, L("This journey has no holdout.", "此旅程没有对照组。"))),
    h("section", {class: "card diagram"}, h("h2", {}, L("Steps", "步骤图")),
      waiting instanceof Error ? h("p", {class: "muted"}, `${L("Waiting counts unknown", "等待人数未知")}: ${waiting.message}`) :
        waits.note ? h("p", {class: "muted"}, waits.note) : null,
      definition ? diagram(definition.definition.steps, steps, (id) => preview.choose(id), {waiting: waits ? waits.steps : null, variants: hasSplit ? variants : null})
        : problem(new Error("no definition loaded"))),
    preview.node);
  const labels = Object.keys(days).sort();
  new Chart(canvas, {
    data: {labels, datasets: [
      {type: "bar", label: "Sent 发送", data: labels.map((d) => days[d].sent), yAxisID: "y", backgroundColor: "#9db4e8"},
      {type: "bar", label: "Converted 转化", data: labels.map((d) => days[d].converted), yAxisID: "y", backgroundColor: "#2457c5"},
      {type: "line", label: `Revenue 回款 (${CURRENCY})`, data: labels.map((d) => days[d].revenue), yAxisID: "money", borderColor: "#197a43", backgroundColor: "#197a43"}]},
    options: {responsive: true, maintainAspectRatio: false, animation: false,
      scales: {y: {beginAtZero: true, position: "left"}, money: {beginAtZero: true, position: "right", grid: {drawOnChartArea: false}}}},
  });
  canvas.dataset.days = String(labels.length);
}

function funnel(steps) {
  const names = Object.keys(steps);
  if (!names.length) return h("p", {class: "muted"}, L("No messages in this period.", "此期间没有消息。"));
  const top = Math.max(1, ...names.map((s) => steps[s].sent + steps[s].skipped + steps[s].failed));
  const bar = (n, label) => h("div", {class: "bar", style: `width:${Math.max(2, (100 * n) / top)}%`, title: label}, `${label} ${num(n)}`);
  return table([[L("Step", "步骤")], [L("Sent → delivered → clicked → converted", "发送→送达→点击→转化")]],
    names.map((s) => h("tr", {}, td(s), td(h("div", {}, bar(steps[s].sent, "sent"),
      steps[s].delivery_rate === null && steps[s].sent > 0 ? h("div", {class: "muted"}, `delivered ${L("n/a (no receipts)", "无回执")}`) : bar(steps[s].delivered, "delivered"),
      bar(steps[s].clicked, "clicked"), bar(steps[s].converted, "converted"))))), "Funnel");
}

/* ---------------------------------------------------------------- customers and orders */

async function customersPage() {
  title("客户 Customers");
  const q = params.get("q") || "";
  show(h("h1", {}, L("Customers", "客户")), h("p", {}, q ? L("Searching…", "查找中…") : L("Search by id, phone or email above.", "请在上方按编号、手机或邮箱查找。")));
  if (!q) return;
  const found = await api(`/customers?q=${enc(q)}`);
  if (found.length === 1) { location.replace(`/ui/customers/${enc(found[0].customer_id)}`); return; }
  show(h("h1", {}, L("Customers", "客户")), found.length ? table([[L("Customer", "客户")], [L("Name", "姓名")], [L("Phone", "手机")], ["Email"]],
    found.map((c) => h("tr", {}, td(h("a", {href: `/ui/customers/${enc(c.customer_id)}`}, c.customer_id)), td(c.name || "–"), td(c.phone || "–"), td(c.email || "–"))), "Customers")
    : h("p", {}, `${L("No customer matches", "没有匹配的客户")} “${q}”.`));
}

const KIND_LABELS = {event: L("event", "事件"), instance_started: L("journey started", "旅程开始"), instance_ended: L("journey ended", "旅程结束"),
  message: L("message", "消息"), delivery: L("delivery", "送达回执"), click: L("click", "点击"), reply: L("reply", "回复"),
  points: L("points", "积分"), tier: L("tier", "等级")};

const RANK = {event: 0, instance_started: 1, points: 1, tier: 2, message: 3, delivery: 4, click: 5, reply: 6, instance_ended: 7};

/* One timeline, newest first: entries {at, kind, summary, status, detail, order_id, customer_time, customer_zone}. */
function timelineTable(entries) {
  if (!entries.length) return h("p", {class: "muted"}, L("Nothing yet.", "暂无记录。"));
  const local = entries.some((e) => e.customer_time);  // a message's moment on the customer's clock (quiet hours)
  return table([[`${L("When", "时间")} (${SHOP_TZ})`], [L("Kind", "类型")], [L("What", "内容")], [L("Status", "状态")], [L("Detail", "详情")],
    local ? [L("Customer's local time", "客户当地时间")] : null].filter(Boolean),
  entries.map((e) => h("tr", {class: "entry", "data-kind": e.kind}, td(clock(e.at)), td(h("span", {class: `pill kind-${e.kind}`}, KIND_LABELS[e.kind] || e.kind)),
    td(e.order_id ? [e.summary, " · ", h("a", {href: `/ui/orders/${enc(e.order_id)}`}, e.order_id)] : e.summary),
    td(e.status ? h("span", {class: `pill ${e.status}`}, e.status) : "–"), td(e.detail || "–"),
    local ? td(e.customer_time ? `${e.customer_time} (${e.customer_zone})` : "") : null)), "Timeline");
}

function runningNow(history) {
  const running = history.instances.filter((i) => i.status === "running");
  if (!running.length) return h("p", {class: "muted"}, L("No journey is running for them now.", "当前没有运行中的旅程。"));
  return table([[L("Journey", "旅程")], [L("Step", "步骤")], [L("Next wake-up", "下次唤醒")], [L("Started", "开始")], ["Temporal"]],
    running.map((i) => h("tr", {}, td(i.journey), td(i.step || i.note || "–"), td(when(i.next_wake_up)), td(when(i.started_at)),
      td(h("a", {href: i.temporal_ui, target: "_blank", rel: "noopener"}, L("history", "历史"))))), "Running");
}

async function customerPage(id) {
  title("客户 Customer", id);
  show(h("h1", {}, id), h("p", {}, L("Loading…", "加载中…")));
  const [profile, line, history] = await Promise.all([api(`/customers/${enc(id)}`).catch((e) => e),
    api(`/customers/${enc(id)}/timeline`).catch((e) => e), api(`/customers/${enc(id)}/history`).catch((e) => e)]);
  const parts = [h("h1", {}, `${L("Customer", "客户")} ${id}`)];
  if (profile instanceof Error) parts.push(problem(profile));
  else {
    const r = profile.rfm;
    parts.push(h("section", {class: "card", id: "profile"}, h("h2", {}, L("Profile", "档案")),
      h("div", {class: "kpis"}, kpi("RFM", `${r.tier || "–"} · ${L("score", "分")} ${r.score}`), kpi("R / F / M", `${r.r} / ${r.f} / ${r.m}`),
        kpi(L("Purchases (year)", "年内购买"), `${num(r.purchases)} · ${money(r.amount)}`),
        kpi(L("Lifecycle", "生命周期"), profile.lifecycle || "–"), kpi(L("Tier", "会员等级"), profile.tier ? (profile.tier.title || profile.tier.name) : "–"),
        kpi(L("Points", "积分"), num(profile.points)), kpi(L("Segments", "分群"), profile.segments.join(", ") || "–"),
        kpi(L("Tags", "标签"), profile.tags.join(", ") || "–"), kpi(L("Unsubscribed", "退订"), profile.unsubscribed.join(", ") || "–"),
        kpi(L("Blacklisted", "黑名单"), profile.blacklisted ? "yes 是" : "no 否")),
      table([[L("Field", "字段")], [L("Value", "值")]], [...Object.entries(profile.record), ...Object.entries(profile.traits)].map(([k, v]) =>
        h("tr", {}, td(k), td(v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v)))), "Profile"),
      profile.suppressions.length ? h("p", {}, `${L("Suppressed", "已屏蔽")}: ${profile.suppressions.map((s) => `${s.channel} ${s.address} (${s.reason})`).join("; ")}`) : null),
    h("section", {class: "card", id: "purchases"}, h("h2", {}, L("Purchases", "购买记录")), (profile.purchases || []).length ?
      table([[L("Order", "订单")], [L("Amount", "金额"), "num"], [L("Paid", "付款")], [L("Refunded", "退款")]],
        profile.purchases.map((p) => h("tr", {}, td(h("a", {href: `/ui/orders/${enc(p.order_id)}`}, p.order_id)), td(money(p.amount), "num"),
          td(when(p.paid_at)), td(p.refunded_at ? when(p.refunded_at) : "–"))), "Purchases")
      : h("p", {class: "muted"}, L("No paid order.", "没有已付款订单。"))));
  }
  parts.push(h("section", {class: "card", id: "running"}, h("h2", {}, L("Running now", "运行中")),
    history instanceof Error ? problem(history) : runningNow(history)));
  parts.push(h("section", {class: "card", id: "timeline"}, h("h2", {}, L("Timeline", "时间线")),
    line instanceof Error ? problem(line) : [line.timezone ? h("p", {class: "muted"}, `${L("Customer's zone", "客户时区")}: ${line.timezone}`) : null,
      timelineTable(line.entries)]));
  show(...parts);
}

/* An order's history as one timeline, newest first, like a customer's. */
function orderEntries(history) {
  const entries = [];
  for (const e of history.events || []) entries.push({at: e.occurred_at, kind: "event", summary: e.type,
    status: e.dispatched_at ? "applied" : e.failed_at ? "failed" : "pending", detail: e.note || e.last_error});
  for (const i of history.instances) {
    entries.push({at: i.started_at, kind: "instance_started", summary: `${i.journey} started`, status: i.status, detail: i.step});
    if (i.ended_at) entries.push({at: i.ended_at, kind: "instance_ended", summary: `${i.journey} ended`, status: i.status});
  }
  for (const m of history.messages) {
    entries.push({at: m.at, kind: "message", summary: `${m.journey} · ${m.step}`, status: m.status, detail: m.reason || m.error || (m.body || "").slice(0, 120) || null});
    if (m.delivered_at) entries.push({at: m.delivered_at, kind: "delivery", summary: `${m.journey} · ${m.step}: delivered`, status: "delivered"});
  }
  // Newest first; at one moment what followed from a thing above it, as the customer's timeline does.
  return entries.sort((a, b) => new Date(b.at) - new Date(a.at) || RANK[b.kind] - RANK[a.kind]);
}

async function orderPage(id) {
  title("订单 Order", id);
  show(h("h1", {}, id), h("p", {}, L("Loading…", "加载中…")));
  const history = await api(`/orders/${enc(id)}/history`);
  const o = history.order;
  const customers = o ? o.customers : [...new Set([...history.messages, ...(history.events || [])].map((m) => m.customer_id))];
  const links = customers.flatMap((c, i) => [i ? ", " : null, h("a", {href: `/ui/customers/${enc(c)}`}, c)]);
  const items = o && o.items.length ? table([[L("Item", "商品")], [L("Quantity", "数量"), "num"], [L("Price", "单价"), "num"]],
    o.items.map((it) => h("tr", {}, td(it.title || it.name || it.sku || JSON.stringify(it)), td(num(it.quantity ?? it.qty ?? null), "num"),
      td(money(it.price ?? null), "num"))), "Items") : h("p", {class: "muted"}, L("No items listed.", "没有商品明细。"));
  show(h("h1", {}, `${L("Order", "订单")} ${id}`),
    h("p", {class: "customers"}, L("Customer", "客户"), " ", links),
    h("section", {class: "card", id: "order"}, h("h2", {}, L("Order", "订单")), o ? [
      h("div", {class: "kpis"}, kpi(L("Amount", "金额"), money(o.amount)), kpi(L("Status", "状态"), o.status),
        kpi(L("Created", "下单"), when(o.created_at)), kpi(L("Paid", "付款"), when(o.paid_at)), o.refunded_at ? kpi(L("Refunded", "退款"), when(o.refunded_at)) : null),
      h("h3", {}, L("Items", "商品")), items] : h("p", {class: "muted"}, L("No event of this order is logged.", "没有此订单的事件。"))),
    h("section", {class: "card", id: "timeline"}, h("h2", {}, L("Timeline", "时间线")), timelineTable(orderEntries(history))));
}

/* ---------------------------------------------------------------- segments, broadcasts, events */

async function segmentsPage() {
  title("分群 Segments");
  const segments = await api("/segments");
  show(h("h1", {}, L("Segments", "分群")), table([[L("Segment", "分群")], [L("Members", "人数"), "num"]],
    segments.map((s) => h("tr", {}, td(s.title ? `${s.title} (${s.name})` : s.name), td(num(s.members ?? s.count), "num"))), "Segments"));
}

async function broadcastsPage() {
  title("群发 Broadcasts");
  const list = await api("/broadcasts");
  const status = h("p", {role: "status", "aria-live": "polite"});
  const run = (name, action) => async () => {
    status.textContent = `${action} ${name}…`;
    try { const s = await act(`/broadcasts/${enc(name)}/${action}`); status.textContent = `${name}: ${s.state}`; setTimeout(broadcastsPage, 800); }
    catch (err) { status.replaceChildren(problem(err)); }
  };
  show(h("h1", {}, L("Broadcasts", "群发")), status,
    table([[L("Broadcast", "群发")], [L("Segment", "分群")], [L("State", "状态")], [L("Path", "方式")], [L("Members", "人数"), "num"],
      [L("Reached", "已触达"), "num"], [L("Held out", "对照组"), "num"], [L("Deferred", "已推迟"), "num"], [L("Waiting", "等待中"), "num"],
      [L("Next send", "下次发送")], [L("Outcomes", "结果")], [L("Actions", "操作")]],
    list.map((b) => h("tr", {"data-broadcast": b.name}, td(b.title || b.name), td(b.segment), td(h("span", {class: `pill state ${b.state.replace(/ /g, "-")}`}, b.state)),
      td(b.path === "batched" ? L("batched", "批量") : L("instances", "逐个实例"), "path"),
      td(num(b.members), "num"), td(num(b.started), "num"), td(num(b.held_out), "num"), td(num(b.deferred), "num"), td(num(b.waiting), "num"),
      td(b.next_at ? when(b.next_at) : "", "next"), td(reasons(b.outcomes)),
      td(h("span", {class: "actions"},
        h("button", {type: "button", onclick: run(b.name, "start"), "aria-label": `Start ${b.name} 启动`}, L("Start", "启动")), " ",
        h("button", {type: "button", class: "danger", onclick: run(b.name, "cancel"), "aria-label": `Cancel ${b.name} 取消`}, L("Cancel", "取消")))))), "Broadcasts"));
}

async function eventsPage() {
  title("事件日志 Event log");
  const [failed, pending] = await Promise.all([api("/events/failed"), api("/events/pending")]);
  const status = h("p", {role: "status", "aria-live": "polite"});
  const replay = (ids) => async () => {
    try { const r = await act("/events/replay", ids ? {event_ids: ids} : {all_failed: true}); status.textContent = `${L("Replayed", "已重放")}: ${r.replayed.length}`; setTimeout(eventsPage, 800); }
    catch (err) { status.replaceChildren(problem(err)); }
  };
  show(h("h1", {}, L("Event log", "事件日志")), status, h("h2", {}, L("Failed events", "失败事件")),
    failed.length ? h("p", {}, h("button", {type: "button", onclick: replay(null)}, L("Replay all", "全部重放"))) : h("p", {class: "muted"}, L("No failed events.", "没有失败的事件。")),
    table([[L("Event", "事件")], [L("Type", "类型")], [L("Customer", "客户")], [L("Order", "订单")], [L("Failed", "失败时间")], [L("Attempts", "次数"), "num"], [L("Why", "原因")], [""]],
      failed.map((e) => h("tr", {}, td(e.event_id), td(e.type), td(h("a", {href: `/ui/customers/${enc(e.customer_id)}`}, e.customer_id)),
        td(e.order_id ? h("a", {href: `/ui/orders/${enc(e.order_id)}`}, e.order_id) : "–"), td(when(e.failed_at)), td(num(e.attempts), "num"), td(e.last_error || "–"),
        td(h("button", {type: "button", class: "secondary", onclick: replay([e.event_id]), "aria-label": `Replay ${e.event_id} 重放`}, L("Replay", "重放"))))), "Failed events"),
    h("h2", {}, L("Waiting for dispatch", "待分发")),
    pending.length ? table([[L("Event", "事件")], [L("Type", "类型")], [L("Customer", "客户")], [L("Received", "接收时间")], [L("Attempts", "次数"), "num"], [L("Next try", "下次重试")], [L("Last error", "最近错误")]],
      pending.map((e) => h("tr", {}, td(e.event_id), td(e.type), td(h("a", {href: `/ui/customers/${enc(e.customer_id)}`}, e.customer_id)),
        td(when(e.received_at)), td(num(e.attempts), "num"), td(when(e.retry_at)), td(e.last_error || "–"))), "Pending events")
      : h("p", {class: "muted"}, L("Nothing is waiting.", "没有待分发的事件。")));
}

/* ---------------------------------------------------------------- routing */

const routes = [
  [/^\/ui\/?$/, journeysPage], [/^\/ui\/journeys\/?$/, journeysPage], [/^\/ui\/journeys\/([^/]+)$/, journeyPage],
  [/^\/ui\/customers\/?$/, customersPage], [/^\/ui\/customers\/([^/]+)$/, customerPage], [/^\/ui\/orders\/([^/]+)$/, orderPage],
  [/^\/ui\/segments\/?$/, segmentsPage], [/^\/ui\/broadcasts\/?$/, broadcastsPage], [/^\/ui\/events\/?$/, eventsPage],
];
for (const link of document.querySelectorAll("header nav a")) {
  const path = new URL(link.href).pathname;
  if (path === location.pathname || (path !== "/ui/" && location.pathname.startsWith(path))) link.setAttribute("aria-current", "page");
}
/* Other scripts (authoring.js) add their pages to window.ConsoleRoutes and use window.Console's helpers. */
window.Console = {h, L, num, money, pct, when, clock, enc, api, act, problem, table, td, kpi, show, reasons, diagram, sendSteps, title, params};
window.ConsoleRoutes = window.ConsoleRoutes || [];
document.addEventListener("DOMContentLoaded", async () => {
  for (const [pattern, page] of [...routes, ...window.ConsoleRoutes]) {
    const match = location.pathname.match(pattern);
    if (match) {
      try { await page(...match.slice(1).map(decodeURIComponent)); } catch (err) { app.append(problem(err)); }
      document.body.dataset.ready = "true";
      return;
    }
  }
  title("页面不存在 Not found");
  show(h("h1", {}, L("Not found", "页面不存在")), h("p", {}, h("a", {href: "/ui/"}, L("Journeys", "旅程"))));
  document.body.dataset.ready = "true";
});
