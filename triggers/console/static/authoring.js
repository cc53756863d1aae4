/* The console's authoring pages (definitions, drafts, dry runs, review, audit); added to the router
   through window.ConsoleRoutes, drawn with window.Console's helpers (app.js). The HTTP contract is
   docs/publishing.md. The editor (CodeMirror 5, vendored under vendor/codemirror/, no CDN) is
   loaded only on the editor page. */
"use strict";
(() => {
  const {h, L, num, money, when, enc, api, act, problem, table, td, kpi, reasons, diagram, params} = window.Console;
  /* The page's content; the parts a page leaves out (null) are not drawn as text. */
  const show = (...nodes) => window.Console.show(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;
  const CHECK_DELAY_MS = 500;
  const STATES = {draft: L("draft", "草稿"), in_review: L("in review", "审核中"), published: L("published", "已发布"), rejected: L("rejected", "已驳回")};
  const stateLabel = (s) => STATES[s] || s;
  const pill = (s) => h("span", {class: `pill ${s}`}, stateLabel(s));
  const short = (hash) => (hash ? h("code", {}, String(hash).slice(0, 8)) : "–");
  /* The browser's title carries the page's Chinese name, as its heading does. */
  const titled = (en, zh) => { document.title = `${L(en, zh)} · Journeys`; return h("h1", {}, L(en, zh)); };
  /* A change by the start of its id (a UUID), the whole id in its title. */
  const shortId = (id) => `#${String(id).slice(0, 8)}`;
  const changeLink = (id) => h("a", {href: `/ui/changes/${enc(id)}`, title: String(id)}, shortId(id));

  /* A JSON request with any method, with the console's CSRF token (app.js's act() only POSTs). */
  async function send(method, path, body) {
    const answer = await fetch(path, {
      method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF, Accept: "application/json"},
      body: JSON.stringify(body || {}),
    });
    const found = await answer.json().catch(() => ({}));
    if (!answer.ok) {
      const detail = Array.isArray(found.detail) ? found.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ") : found.detail;
      throw Object.assign(new Error(detail || `${answer.status} ${answer.statusText}`), {status: answer.status, detail});
    }
    return found;
  }
  const alertBox = () => h("div", {class: "alerts", role: "status", "aria-live": "polite"});
  const say = (box, err) => box.replaceChildren(problem(err));

  /* The kind and name of a draft's file, as definitions/drafts.py kind_of reads its path. */
  function kindOf(path) {
    const parts = path.split("/"), stem = parts[parts.length - 1].replace(/\.ya?ml$/, "");
    if (parts.length === 1) return path === "policy.yaml" ? ["policy", "policy"] : path === "loyalty.yaml" ? ["loyalty", "loyalty"] : ["journey", stem];
    return [{templates: "template", segments: "segment", broadcasts: "broadcast"}[parts[0]] || "file", stem];
  }
  function pathOf(kind, name) {
    return {template: `templates/${name}.yaml`, segment: `segments/${name}.yaml`, broadcast: `broadcasts/${name}.yaml`,
      policy: "policy.yaml", loyalty: "loyalty.yaml"}[kind] || `${name}.yaml`;
  }
  /* Every step of a journey at any depth (branches, arms, repeats), in order. */
  function walk(steps, out = []) {
    for (const step of steps || []) {
      out.push(step);
      const [kind] = Object.keys(step), spec = step[kind];
      if (!spec || typeof spec !== "object") continue;
      for (const arm of [spec.then, spec.else, spec.on_event, spec.on_timeout, spec.steps]) if (Array.isArray(arm)) walk(arm, out);
      for (const branch of spec.branches || []) walk(branch.steps, out);
    }
    return out;
  }
  const sendsOf = (definition) => walk(definition.steps).filter((s) => s.send).map((s) => s.send);

  /* ---------------------------------------------------------------- what runs, open changes */

  const KINDS = ["journey", "template", "segment", "broadcast", "policy", "loyalty"];
  /* Journeys first, then what they use, each by name. */
  const byKind = (a, b) => (KINDS.indexOf(a.kind) - KINDS.indexOf(b.kind)) || a.name.localeCompare(b.name);

  async function definitionsPage() {
    const heading = titled("Definitions", "定义");
    show(heading, h("p", {}, L("Loading…", "加载中…")));
    const [running, changes] = await Promise.all([api("/definitions").catch((e) => e), api("/definitions/changes").catch((e) => e)]);
    const name = h("input", {id: "new-name", name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,60}", placeholder: "spring_sale",
      "aria-label": "New journey's name 新旅程名称"});
    const create = h("form", {class: "filters", id: "new-journey", onsubmit: (event) => {
      event.preventDefault();
      location.href = `/ui/definitions/edit?new=${enc(name.value.trim())}`;
    }}, h("label", {for: "new-name"}, L("Name", "名称"), name), h("button", {type: "submit"}, L("New journey", "新建旅程")));
    const open = Array.isArray(changes) ? changes.filter((c) => c.state !== "published") : changes;
    show(heading, create,
      h("section", {class: "card", id: "running"}, h("h2", {}, L("What runs", "运行中的定义")),
        running instanceof Error ? problem(running) : table(
          [[L("Kind", "类型")], [L("Name", "名称")], [L("Source", "来源")], [L("Version", "版本")], [L("Published by", "发布人")],
            [L("Published at", "发布时间")], [L("Open changes", "待处理变更"), "num"], [""]],
          [...running].sort(byKind).map((d) => h("tr", {"data-path": d.path}, td(d.kind), td(d.name), td(d.source === "base" ? L("files", "文件") : L("published", "已发布")),
            td(short(d.hash)), td(d.published_by || "–"), td(when(d.published_at)), td(num((d.open_changes || []).length ?? d.open_changes), "num"),
            td(h("a", {href: `/ui/definitions/edit?path=${enc(d.path)}`, "aria-label": `Edit ${d.path} 编辑`}, L("Edit", "编辑"))))), "What runs")),
      h("section", {class: "card", id: "open-changes"}, h("h2", {}, L("Open changes", "待处理变更")),
        open instanceof Error ? problem(open) : open.length ? changesTable(open) : h("p", {class: "muted"}, L("No open changes.", "没有待处理的变更。"))));
  }

  function changesTable(changes) {
    return table([[L("Change", "变更")], [L("Title", "标题")], [L("State", "状态")], [L("Author", "作者")], [L("Files", "文件")], [L("Updated", "更新时间")]],
      changes.map((c) => h("tr", {"data-change": c.id}, td(changeLink(c.id)), td(c.title || "–"), td(pill(c.state)), td(c.author || "–"),
        td((c.files || []).map((f) => f.path).join(", ") || "–"), td(when(c.updated_at || c.created_at)))), "Changes");
  }

  /* ---------------------------------------------------------------- the editor */

  let editorLoaded = null;
  function loadEditor() {
    if (window.CodeMirror && window.CodeMirror.lint) return Promise.resolve();
    const base = "/ui/static/vendor/codemirror/";
    const script = (src) => new Promise((resolve, reject) => {
      document.head.append(h("script", {src: base + src, onload: resolve, onerror: () => reject(new Error(`${src} did not load`))}));
    });
    for (const css of ["codemirror.css", "lint.css"]) document.head.append(h("link", {rel: "stylesheet", href: base + css}));
    editorLoaded = editorLoaded || script("codemirror.js").then(() => Promise.all([script("yaml.js"), script("lint.js")]));
    return editorLoaded;
  }

  function skeleton(name) {
    return {
      [`${name}.yaml`]: `name: ${name}\ntitle: ${name}\ncategory: marketing\nentry:\n  event: order.paid\n  key: order\ngoal: order.paid\nsteps:\n` +
        `  - wait: 1d\n  - send:\n      id: ${name}\n      channel: sms\n      template: ${name}\n`,
      [`templates/${name}.yaml`]: `sms:\n  zh-CN: "亲爱的{{ customer.name or '顾客' }}，感谢您的订单{{ order.order_id }}。"\n` +
        `  en: "Hi {{ customer.name or 'there' }}, thank you for your order {{ order.order_id }}."\n`,
    };
  }

  async function runningText(kind, name) {
    try { return (await api(`/definitions/${enc(kind)}/${enc(name)}`)).text; } catch (err) { return null; }
  }

  async function editorPage() {
    const heading = titled("Edit definitions", "编辑定义");
    show(heading, h("p", {}, L("Loading…", "加载中…")));
    const state = {changeId: params.get("change"), title: "", files: [], active: null, journey: null, lastGood: null, checking: 0, timer: null};
    // The files to start from: a change's, a new journey's skeleton, or what runs.
    if (state.changeId) {
      const change = await api(`/definitions/changes/${enc(state.changeId)}`);
      state.title = change.title || "";
      for (const f of change.files) state.files.push({path: f.path, text: f.text || "", running: null, inChange: true});
    } else if (params.get("new")) {
      const name = params.get("new");
      if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,60}$/.test(name)) throw new Error(`${name}: a journey's name is letters, digits, '_' and '-' 名称只能包含字母、数字、_ 和 -`);
      for (const [path, text] of Object.entries(skeleton(name))) state.files.push({path, text, running: null, inChange: true});
      state.title = `New journey ${name}`;
    } else if (params.get("path")) {
      const path = params.get("path");
      const listed = await api("/definitions").catch(() => []);
      const entry = listed.find((d) => d.path === path);
      const [kind, name] = entry ? [entry.kind, entry.name] : kindOf(path);
      const text = await runningText(kind, name);
      if (text === null) throw new Error(`${path}: no such definition runs 没有该定义`);
      state.files.push({path, text, running: text, inChange: false});
      state.title = `Edit ${path}`;
    } else throw new Error("open the editor from Definitions 请从“定义”页面打开编辑器");

    await loadEditor();
    const tabs = h("div", {class: "tabs", role: "tablist", "aria-label": "Files 文件"});
    const panes = h("div", {class: "panes"});
    const status = h("p", {id: "check-status", role: "status", "aria-live": "polite"}, L("Checking…", "检查中…"));
    const problemList = h("ul", {id: "problems", class: "problems"});
    const drawing = h("div", {id: "draft-diagram"});
    const drawingNote = h("p", {class: "muted"});
    const alerts = alertBox();
    const title = h("input", {id: "change-title", name: "title", value: state.title, maxlength: 200, "aria-label": "Title of the change 变更标题"});
    const addName = h("input", {id: "add-template", name: "template", placeholder: "template_name", "aria-label": "Template to add 要添加的模板"});
    const stepSelect = h("select", {id: "pv-step", "aria-label": "Send step 发送步骤"});
    const customer = h("input", {id: "pv-customer", name: "customer", required: true, value: params.get("customer") || "", "aria-label": "Customer id 客户编号"});
    const order = h("input", {id: "pv-order", name: "order", "aria-label": "Order id 订单编号"});
    const previewOut = h("div", {class: "preview", id: "draft-preview-out", "aria-live": "polite"});
    const changeNote = h("p", {class: "muted", id: "change-id"});

    const filesOf = () => Object.fromEntries(state.files.map((f) => [f.path, f.editor ? f.editor.getValue() : f.text]));
    const changedFiles = () => Object.fromEntries(state.files.filter((f) => f.inChange || f.editor.getValue() !== f.running).map((f) => [f.path, f.editor.getValue()]));
    const journeyFile = () => state.files.find((f) => kindOf(f.path)[0] === "journey");
    const journeyName = () => {
      const f = journeyFile();
      const m = f && f.editor.getValue().match(/^name:\s*["']?([A-Za-z0-9_.-]+)/m);
      return m ? m[1] : null;
    };

    function select(file) {
      state.active = file;
      for (const f of state.files) {
        const on = f === file;
        f.tab.setAttribute("aria-selected", on ? "true" : "false");
        f.pane.hidden = !on;
        f.pane.classList.toggle("active", on);
      }
      file.editor.refresh();
    }

    function addFile(file) {
      file.tab = h("button", {type: "button", role: "tab", class: "tab", "data-path": file.path, onclick: () => select(file)}, file.path);
      file.pane = h("div", {class: "pane", role: "tabpanel", "data-path": file.path, "aria-label": file.path});
      tabs.append(file.tab);
      panes.append(file.pane);
      file.editor = window.CodeMirror(file.pane, {
        value: file.text, mode: "yaml", lineNumbers: true, indentUnit: 2, tabSize: 2, indentWithTabs: false, lineWrapping: true,
        gutters: ["CodeMirror-lint-markers"], extraKeys: {Tab: (cm) => cm.replaceSelection("  ")},
        lint: {getAnnotations: (text, options, cm) => annotations(file, cm), lintOnChange: false},
        screenReaderLabel: `${file.path} YAML`,
      });
      file.editor.getWrapperElement().dataset.path = file.path;
      file.editor.on("change", schedule);
      file.marks = [];
      state.files.includes(file) || state.files.push(file);
    }

    function annotations(file, cm) {
      return (file.problems || []).map((p) => {
        const line = Math.max(0, Math.min(cm.lineCount() - 1, (p.line || 1) - 1));
        return {from: window.CodeMirror.Pos(line, 0), to: window.CodeMirror.Pos(line, cm.getLine(line).length),
          message: `${p.field ? `${p.field}: ` : ""}${p.message}`, severity: p.warning ? "warning" : "error"};
      });
    }

    function schedule() {
      clearTimeout(state.timer);
      status.textContent = L("Checking…", "检查中…");
      delete status.dataset.ok; // until the answer for this text comes
      state.timer = setTimeout(check, CHECK_DELAY_MS);
    }

    async function check() {
      const mine = ++state.checking;
      let found;
      try { found = await send("POST", "/definitions/check", {files: filesOf()}); } catch (err) {
        if (mine === state.checking) { status.replaceChildren(problem(err)); status.dataset.ok = "false"; }
        return;
      }
      if (mine !== state.checking) return; // a later check is on its way
      const byPath = {};
      for (const p of found.problems) (byPath[p.path] = byPath[p.path] || []).push(p);
      for (const f of state.files) {
        f.problems = byPath[f.path] || [];
        for (const line of f.marks) f.editor.removeLineClass(line, "background", "cm-problem-line");
        f.marks = f.problems.filter((p) => !p.warning && p.line).map((p) => f.editor.addLineClass(Math.max(0, p.line - 1), "background", "cm-problem-line"));
        f.editor.performLint();
        f.tab.classList.toggle("has-problems", f.problems.some((p) => !p.warning));
      }
      const errors = found.problems.filter((p) => !p.warning);
      status.dataset.ok = found.ok ? "true" : "false";
      status.textContent = found.ok ? L("No problems", "没有问题") + (found.problems.length ? ` · ${found.problems.length} ${L("warnings", "条警告")}` : "")
        : `${errors.length} ${errors.length === 1 ? L("problem", "个问题") : L("problems", "个问题")}`;
      problemList.replaceChildren(...found.problems.map((p) => h("li", {class: p.warning ? "warning" : "error", "data-path": p.path, "data-line": String(p.line)},
        h("button", {type: "button", class: "link", onclick: () => jump(p), "aria-label": `Go to ${p.path} line ${p.line} 跳到该行`}, `${p.path || "?"}:${p.line}`),
        " ", p.field ? h("code", {}, p.field) : null, " ", p.warning ? `${L("warning", "警告")}: ` : "", p.message)));
      // The draft's journey, or (a draft of templates only) the first journey that sends them.
      const name = journeyName() || state.shown || Object.keys(found.journeys)[0] || null;
      if (name && found.journeys[name]) { state.shown = name; state.lastGood = found.journeys[name]; draw(false); }
      else if (state.lastGood) draw(true);
      else if (!name) drawing.replaceChildren(h("p", {class: "muted"}, L("No journey in this draft.", "此草稿中没有旅程。")));
      else drawing.replaceChildren(h("p", {class: "muted"}, L("The journey does not load yet: fix the problems to see it.", "旅程尚未通过检查：修正问题后显示。")));
    }

    function jump(p) {
      const file = state.files.find((f) => f.path === p.path);
      if (!file) return;
      select(file);
      file.editor.setCursor({line: Math.max(0, p.line - 1), ch: 0});
      file.editor.focus();
    }

    function draw(stale) {
      const definition = state.lastGood;
      drawing.replaceChildren(diagram(definition.steps || [], {}, (id) => { stepSelect.value = id; customer.focus(); }));
      drawingNote.textContent = stale ? L("The draft has problems: this is the last version of it that loaded.", "草稿有问题：显示的是上一次通过检查的版本。") : "";
      drawing.dataset.steps = String(walk(definition.steps).length);
      const chosen = stepSelect.value;
      const ids = sendsOf(definition).map((s) => s.id || s.template);
      stepSelect.replaceChildren(...ids.map((id) => h("option", {value: id}, id)));
      if (ids.includes(chosen)) stepSelect.value = chosen;
      // The templates its sends name that no tab holds yet: offer them.
      const named = new Set(sendsOf(definition).map((s) => s.template));
      for (const t of named) if (!state.files.some((f) => f.path === pathOf("template", t)) && !state.offered.has(t)) {
        state.offered.add(t);
        openTemplate(t, false);
      }
    }

    async function openTemplate(name, announce) {
      const path = pathOf("template", name);
      if (state.files.some((f) => f.path === path)) { select(state.files.find((f) => f.path === path)); return; }
      const text = await runningText("template", name);
      const file = {path, text: text ?? skeleton(name)[`templates/${name}.yaml`], running: text, inChange: text === null};
      addFile(file);
      if (announce) { select(file); schedule(); }
    }
    state.offered = new Set();

    async function previewStep(event) {
      event.preventDefault();
      previewOut.replaceChildren(h("p", {}, L("Rendering…", "生成中…")));
      try {
        const p = await send("POST", "/definitions/preview", {files: filesOf(), journey: journeyName() || state.shown, step: stepSelect.value, customer: customer.value, order: order.value || null});
        previewOut.replaceChildren(h("p", {}, h("b", {}, `${p.step} → ${p.customer_id}`), ` · ${p.policy}`),
          ...p.notes.map((n) => h("p", {class: "muted"}, n)),
          ...p.channels.map((c) => h("div", {class: "card"}, h("h3", {}, c.channel), c.subject ? h("p", {}, h("b", {}, c.subject)) : null,
            c.error ? problem(new Error(c.error)) : h("pre", {}, c.body || ""))));
      } catch (err) { previewOut.replaceChildren(problem(err)); }
    }

    async function save() {
      const files = changedFiles();
      if (!Object.keys(files).length) throw new Error("Nothing changed yet 还没有改动");
      const body = {files, title: title.value || null};
      const change = state.changeId ? await send("PUT", `/definitions/changes/${enc(state.changeId)}`, body) : await send("POST", "/definitions/changes", body);
      state.changeId = String(change.id);
      for (const f of state.files) if (f.path in files) f.inChange = true;
      history.replaceState(null, "", `/ui/definitions/edit?change=${enc(state.changeId)}`);
      changeNote.replaceChildren(L("Saved as change", "已保存为变更"), " ", changeLink(state.changeId), ` · ${stateLabel(change.state)}`);
      return change;
    }
    const saving = (then) => async () => {
      alerts.replaceChildren(h("p", {}, L("Saving…", "保存中…")));
      try { const change = await save(); alerts.replaceChildren(); if (then) await then(change); } catch (err) { say(alerts, err); }
    };

    for (const file of state.files) addFile(file);
    select(state.files[0]);
    if (state.changeId) changeNote.replaceChildren(L("Change", "变更"), " ", changeLink(state.changeId));
    const addForm = h("form", {class: "filters", onsubmit: (event) => { event.preventDefault(); if (addName.value.trim()) openTemplate(addName.value.trim(), true); }},
      h("label", {for: "add-template"}, L("Template", "模板"), addName), h("button", {type: "submit", class: "secondary"}, L("Add template", "添加模板")));
    show(heading,
      h("div", {class: "filters"}, h("label", {for: "change-title"}, L("Title", "标题"), title),
        h("button", {type: "button", id: "save-draft", onclick: saving(null)}, L("Save draft", "保存草稿")),
        h("button", {type: "button", id: "submit-review", onclick: saving(async (change) => {
          await act(`/definitions/changes/${enc(change.id)}/submit`);
          location.href = `/ui/changes/${enc(change.id)}`;
        })}, L("Submit for review", "提交审核"))),
      changeNote, alerts,
      h("div", {class: "authoring"},
        h("section", {class: "card editor"}, tabs, panes, addForm, status, problemList),
        h("section", {class: "card diagram"}, h("h2", {}, L("Diagram of the draft", "草稿流程图")), drawingNote, drawing)),
      h("section", {class: "card", id: "draft-preview"}, h("h2", {}, L("Preview a send step", "预览发送步骤")),
        h("form", {class: "filters", onsubmit: previewStep},
          h("label", {for: "pv-step"}, L("Step", "步骤"), stepSelect), h("label", {for: "pv-customer"}, L("Customer", "客户"), customer),
          h("label", {for: "pv-order"}, L("Order (optional)", "订单（可选）"), order), h("button", {type: "submit"}, L("Preview", "预览"))),
        previewOut));
    for (const f of state.files) f.editor.refresh();
    await check();
  }

  /* ---------------------------------------------------------------- a change: diff, dry runs, review */

  function diffView(text) {
    if (!text) return h("p", {class: "muted"}, L("No difference from what runs.", "与运行中的版本相同。"));
    return h("pre", {class: "diff"}, text.split("\n").map((line) => {
      const cls = line.startsWith("+++") || line.startsWith("---") ? "file" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : null;
      return h("span", {class: cls}, line + "\n");
    }));
  }

  const total = (byReason) => Object.values(byReason || {}).reduce((a, b) => a + b, 0);
  function outcomes(result) {
    const names = [...new Set([...Object.keys(result.current || {}), ...Object.keys(result.draft || {})])];
    const rows = [["sent", L("Sent", "发送"), num], ["skipped", L("Skipped", "跳过"), null], ["deferred", L("Deferred", "延后"), null],
      ["failed", L("Failed", "失败"), num], ["cost", L("Cost", "成本"), money], ["converted", L("Converted", "转化"), num], ["revenue", L("Revenue", "回款"), money]];
    return names.map((name) => {
      const [c, d, x] = [result.current?.[name] || {}, result.draft?.[name] || {}, result.diff?.[name] || {}];
      const cell = (o, key, fmt) => (fmt ? fmt(o[key] ?? 0) : `${num(total(o[key]))}${Object.keys(o[key] || {}).length ? ` (${reasons(o[key])})` : ""}`);
      const signed = (key, fmt) => {
        const v = fmt ? (x[key] ?? 0) : total(d[key]) - total(c[key]);
        const shown = fmt ? fmt(Math.abs(v)) : num(Math.abs(v));
        const better = key === "cost" ? v < 0 : v > 0, worse = key === "cost" ? v > 0 : v < 0; // costing more is worse
        return h("span", {class: better ? "up" : worse ? "down" : null}, `${v > 0 ? "+" : v < 0 ? "−" : "±"}${shown}`);
      };
      return h("div", {class: "outcomes", "data-journey": name}, h("h3", {}, name),
        table([[L("Outcome", "结果")], [L("Current", "当前版本"), "num"], [L("Draft", "草稿"), "num"], [L("Difference", "差异"), "num"]],
          rows.map(([key, label, fmt]) => h("tr", {"data-outcome": key}, td(label), td(cell(c, key, fmt), "num"), td(cell(d, key, fmt), "num"), td(signed(key, fmt), "num"))),
          `Dry run of ${name}`));
    });
  }

  const RUN_STATES = {queued: L("queued", "排队中"), running: L("running", "运行中"), done: L("done", "完成"), failed: L("failed", "失败")};
  function dryRunView(run) {
    const bar = h("progress", {max: "1", value: String(run.progress || 0), "aria-label": "Dry run progress 试运行进度"});
    const parts = [h("p", {}, `${L("Dry run", "试运行")} ${shortId(run.id)} · ${run.days} ${L("days", "天")} · `, h("span", {class: `pill ${run.state}`}, RUN_STATES[run.state] || run.state),
      run.stale ? [" · ", h("span", {class: "pill stale", title: "It ran an earlier version of this change's files 运行的是此变更的旧版本"}, L("stale: an earlier version", "已过期：旧版本"))] : null,
      run.message ? ` · ${run.message}` : "")];
    if (run.state === "queued" || run.state === "running") parts.push(bar, h("span", {class: "muted"}, ` ${Math.round((run.progress || 0) * 100)}%`));
    if (run.state === "failed") parts.push(problem(new Error(run.message || "the dry run failed")));
    if (run.state === "done" && run.result) {
      const r = run.result;
      parts.push(h("p", {class: "muted"}, `${r.window ? `${when(r.window.from)} → ${when(r.window.to)}` : ""} · ${num(r.events)} ${L("events", "个事件")} · ` +
        `${num(r.customers)} ${L("customers", "位客户")} · ${r.seconds ?? "–"} s`), ...outcomes(r));
    }
    return h("div", {class: "dry-run", "data-state": run.state, "data-id": String(run.id)}, ...parts);
  }

  async function changePage(id) {
    titled(`Change ${shortId(id)}`, "变更审核");
    show(h("h1", {}, `${L("Change", "变更")} ${shortId(id)}`), h("p", {}, L("Loading…", "加载中…")));
    const change = await api(`/definitions/changes/${enc(id)}`);
    const alerts = alertBox();
    const runs = h("div", {id: "dry-runs"});
    const days = h("input", {id: "dry-days", type: "number", min: "1", max: "90", value: "7", "aria-label": "Days of events 天数"});
    const comment = h("textarea", {id: "review-comment", rows: "3", "aria-label": "Review comment 审核意见"});

    async function poll(run, node) {
      let current = run;
      while (current.state === "queued" || current.state === "running") {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        try { current = await api(`/definitions/dry-runs/${enc(current.id)}`); } catch (err) { say(alerts, err); return; }
        const next = dryRunView(current);
        node.replaceWith(next);
        node = next;
      }
    }
    /* A dry run of this change, through the change's own route (docs/publishing.md). */
    const startRun = (n) => send("POST", `/definitions/changes/${enc(id)}/dry-runs`, {days: n});
    async function startDryRun(event) {
      event.preventDefault();
      try {
        const run = await startRun(Number(days.value));
        const node = dryRunView(run);
        runs.prepend(node);
        await poll(run, node);
      } catch (err) { say(alerts, err); }
    }
    const review = (action) => async () => {
      if (action === "reject" && !comment.value.trim()) { say(alerts, new Error("A rejection needs a comment 驳回需要填写意见")); comment.focus(); return; }
      try { await act(`/definitions/changes/${enc(id)}/${action}`, {comment: comment.value.trim() || null}); location.reload(); } catch (err) { say(alerts, err); }
    };
    const submit = async () => {
      try { await act(`/definitions/changes/${enc(id)}/submit`); location.reload(); } catch (err) { say(alerts, err); }
    };

    const dryRuns = change.dry_runs || [];
    for (const run of dryRuns) runs.append(dryRunView(run));
    const editable = change.state === "draft" || change.state === "rejected";
    show(h("h1", {title: String(change.id)}, `${L("Change", "变更")} ${shortId(change.id)}${change.title ? ` · ${change.title}` : ""}`),
      h("div", {class: "kpis", id: "change-facts"}, kpi(L("State", "状态"), pill(change.state)), kpi(L("Author", "作者"), change.author || "–"),
        kpi(L("Updated", "更新时间"), when(change.updated_at || change.created_at)), kpi(L("Version", "版本"), short(change.hash)),
        change.reviewed_by ? kpi(L("Reviewed by", "审核人"), `${change.reviewed_by} · ${when(change.reviewed_at)}`) : null),
      change.comment ? h("p", {class: "comment"}, `${L("Comment", "意见")}: ${change.comment}`) : null,
      alerts,
      h("p", {class: "actions"},
        editable ? h("a", {href: `/ui/definitions/edit?change=${enc(change.id)}`, class: "button"}, L("Edit", "编辑")) : null, " ",
        change.state === "draft" ? h("button", {type: "button", id: "submit-review", onclick: submit}, L("Submit for review", "提交审核")) : null),
      h("section", {class: "card", id: "files"}, h("h2", {}, L("Files and their difference from what runs", "文件及与运行版本的差异")),
        ...(change.files || []).map((f) => h("div", {class: "file", "data-path": f.path}, h("h3", {}, `${f.path} `, h("span", {class: "muted"}, `${f.kind} · `, short(f.hash))),
          diffView(f.diff), f.text ? h("details", {class: "definition", open: !f.diff}, h("summary", {}, L("Definition", "定义")), h("pre", {}, f.text)) : null))),
      h("section", {class: "card", id: "change-problems"}, h("h2", {}, L("Problems", "问题")),
        (change.problems || []).length ? h("ul", {class: "problems"}, change.problems.map((p) => h("li", {class: p.warning ? "warning" : "error"},
          `${p.path}:${p.line} `, p.field ? h("code", {}, p.field) : null, ` ${p.message}`))) : h("p", {class: "muted"}, L("No problems.", "没有问题。"))),
      h("section", {class: "card", id: "dry-run"}, h("h2", {}, L("Dry runs", "试运行")),
        h("form", {class: "filters", onsubmit: startDryRun}, h("label", {for: "dry-days"}, L("Last N days", "最近天数"), days),
          h("button", {type: "submit"}, L("Start a dry run", "开始试运行"))), runs),
      change.state === "in_review" ? h("section", {class: "card", id: "review"}, h("h2", {}, L("Review", "活动审核")),
        h("label", {for: "review-comment"}, L("Comment (required to reject)", "意见（驳回时必填）")), comment,
        h("p", {class: "actions"}, h("button", {type: "button", id: "approve", onclick: review("approve")}, L("Approve and publish", "批准并发布")), " ",
          h("button", {type: "button", id: "reject", class: "danger", onclick: review("reject")}, L("Reject", "驳回")))) : null);
    for (const node of runs.querySelectorAll(".dry-run[data-state='queued'], .dry-run[data-state='running']")) {
      const run = dryRuns.find((r) => String(r.id) === node.dataset.id);
      if (run) poll(run, node);
    }
  }

  /* ---------------------------------------------------------------- audit */

  const ACTIONS = {created: L("created", "创建"), edited: L("edited", "编辑"), submitted: L("submitted", "提交"), approved: L("approved", "批准"),
    rejected: L("rejected", "驳回"), dry_run: L("dry run", "试运行")};
  function figures(f) {
    if (!f) return "–";
    if (typeof f !== "object") return String(f);
    return Object.entries(f).map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
  }

  async function auditPage() {
    const heading = titled("Audit", "审计");
    show(heading, h("p", {}, L("Loading…", "加载中…")));
    const [running, actions] = await Promise.all([api("/definitions").catch((e) => e), api("/audit").catch((e) => e)]);
    const journeys = running instanceof Error ? [] : running.filter((d) => d.kind === "journey");
    const versions = await Promise.all(journeys.map((d) => api(`/definitions/journey/${enc(d.name)}/versions`).catch((e) => e)));
    const perJourney = journeys.map((d, i) => {
      const list = versions[i];
      const published = Array.isArray(list) ? list.filter((v) => v.state === "published") : list;
      return h("div", {class: "versions", "data-journey": d.name}, h("h3", {}, d.name, " ", h("span", {class: "muted"}, `${L("runs", "运行中")} `, short(d.hash))),
        published instanceof Error ? problem(published) : published.length ? table(
          [[L("Version", "版本")], [L("Change", "变更")], [L("Author", "作者")], [L("Approved by", "批准人")], [L("Published", "发布时间")], [L("Comment", "意见")]],
          published.map((v) => h("tr", {}, td(short(v.hash)), td(h("a", {href: `/ui/changes/${enc(v.change_id)}`, "aria-label": `Change ${v.change_id}: definition and diff 定义与差异`},
            shortId(v.change_id))), td(v.author || "–"), td(v.reviewed_by || "–"), td(when(v.published_at)), td(v.comment || "–"))), `Versions of ${d.name}`)
          : h("p", {class: "muted"}, L("Only the files it started with: no published change.", "仅有初始文件：没有已发布的变更。")));
    });
    show(heading,
      h("section", {class: "card", id: "published"}, h("h2", {}, L("Published versions per journey", "各旅程的已发布版本")),
        running instanceof Error ? problem(running) : perJourney),
      h("section", {class: "card", id: "actions"}, h("h2", {}, L("Everything done to changes, newest first", "全部操作（最新在前）")),
        actions instanceof Error ? problem(actions) : table(
          [[L("When", "时间")], [L("Action", "操作")], [L("Who", "操作人")], [L("Change", "变更")], [L("Version", "版本")], [L("Comment", "意见")], [L("Figures", "数据")]],
          actions.map((a) => h("tr", {"data-action": a.action, "data-change": a.change_id}, td(when(a.at)), td(ACTIONS[a.action] || a.action), td(a.who || "–"),
            td(a.change_id ? changeLink(a.change_id) : "–"), td(short(a.hash)), td(a.comment || "–"), td(figures(a.figures)))), "Audit")));
  }

  window.ConsoleRoutes = window.ConsoleRoutes || [];
  window.ConsoleRoutes.push(
    [/^\/ui\/definitions\/?$/, definitionsPage],
    [/^\/ui\/definitions\/edit\/?$/, editorPage],
    [/^\/ui\/changes\/([^/]+)$/, changePage],
    [/^\/ui\/audit\/?$/, auditPage],
  );
})();
