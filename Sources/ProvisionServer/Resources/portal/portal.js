// The Provision portal: a client of the public API and nothing else. The token lives in
// session storage; every request sends it. Pages are built with DOM calls (never HTML
// strings), so no value from the server is ever interpreted as markup.
"use strict";

const state = { token: sessionStorage.getItem("provision.token"), me: null, timers: [], rates: {} };

// MARK: Helpers

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function show(...children) {
  stopTimers();
  const main = document.getElementById("main");
  main.replaceChildren(...children);
  main.focus({ preventScroll: true });
}

function toast(text) {
  const box = document.getElementById("toast");
  const message = h("div", { class: "message" }, text);
  box.append(message);
  setTimeout(() => message.remove(), 5000);
}

function every(milliseconds, action) {
  action();
  state.timers.push(setInterval(action, milliseconds));
}

function stopTimers() {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
}

class APIError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.details = body?.error?.details || [];
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (response.status === 401 && path !== "/v1/whoami") { signOut("Your token is no longer accepted: it was revoked or expired."); }
  if (!response.ok) throw new APIError(response.status, parsed);
  return parsed;
}

function formatCount(value) { return value === undefined || value === null ? "–" : Number(value).toLocaleString("en-US"); }

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes || 0), unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return "now";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function freshness(product) {
  const newest = product.status?.newestDeliveredTime;
  return newest ? formatAge((Date.now() - Date.parse(newest)) / 1000) : "–";
}

function cellText(value) {
  if (value === null || value === undefined) return "null";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function table(columns, rows, attributes = {}) {
  return h("div", { class: "scroll" },
    h("table", attributes,
      h("thead", {}, h("tr", {}, columns.map(column => h("th", { scope: "col" }, column)))),
      h("tbody", {}, rows)));
}

// MARK: Sign-in

async function signIn(token) {
  state.token = token;
  try {
    state.me = await api("GET", "/v1/whoami");
  } catch (error) {
    state.token = null;
    throw error.status === 401 ? new Error("This token is unknown, expired or revoked.") : error;
  }
  sessionStorage.setItem("provision.token", token);
  renderHeader();
}

function signOut(message) {
  sessionStorage.removeItem("provision.token");
  state.token = null;
  state.me = null;
  renderHeader();
  location.hash = "#/signin";
  renderSignIn(message);
}

function renderHeader() {
  document.getElementById("nav").hidden = !state.me;
  document.getElementById("sign-out").hidden = !state.me;
  document.getElementById("who").textContent = state.me ? `${state.me.token} · team ${state.me.team} · ${state.me.role}` : "";
  const page = (location.hash.split("/")[1] || "").split("?")[0];
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
}

function renderSignIn(message) {
  const error = h("p", { class: "error", id: "signin-error", role: "alert" }, message || "");
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "pvn_…", "aria-describedby": "signin-error" });
  const form = h("form", {
    class: "card", id: "signin-form",
    onsubmit: async event => {
      event.preventDefault();
      error.textContent = "";
      try {
        await signIn(input.value.trim());
        location.hash = "#/catalog";
      } catch (failure) {
        error.textContent = failure.message;
      }
    },
  },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "hint" }, "Paste the token an admin gave you (provisionctl token create). It is kept for this tab only."),
    error,
    h("button", { type: "submit", id: "signin-submit" }, "Sign in"));
  show(form);
  input.focus();
}

// MARK: Catalog

async function renderCatalog(query) {
  const search = h("input", { id: "catalog-search", type: "search", value: query, placeholder: "Search names, owners, descriptions, fields",
    "aria-label": "Search the catalog" });
  const results = h("div", { id: "catalog-results" }, h("p", { class: "hint" }, "Loading…"));
  const form = h("form", { class: "row", role: "search", onsubmit: event => {
    event.preventDefault();
    location.hash = `#/catalog?q=${encodeURIComponent(search.value)}`;
  } }, search, h("button", { type: "submit", id: "catalog-submit" }, "Search"));
  show(h("h1", {}, "Catalog"), h("div", { class: "card" }, form), results);
  const datasets = await api("GET", `/v1/datasets?stats=true${query ? `&q=${encodeURIComponent(query)}` : ""}`);
  if (datasets.length === 0) {
    results.replaceChildren(h("p", {}, query ? `No dataset matches “${query}”.` : "The catalog is empty."));
    return;
  }
  results.replaceChildren(table(["Dataset", "Owner", "Description", "Records", "Rate", "Time range"], datasets.map(dataset => h("tr", { dataset: { dataset: dataset.metadata.name } },
    h("td", {}, h("a", { href: `#/datasets/${encodeURIComponent(dataset.metadata.name)}` }, dataset.metadata.name)),
    h("td", {}, dataset.metadata.owner || dataset.metadata.team || "–"),
    h("td", {}, dataset.metadata.description || ""),
    h("td", {}, formatCount(dataset.status.records)),
    h("td", {}, dataset.status.recentRecordsPerSecond === undefined ? "–" : `${dataset.status.recentRecordsPerSecond}/s`),
    h("td", { class: "hide-narrow" }, dataset.status.oldestRecordTime ? `${dataset.status.oldestRecordTime} – ${dataset.status.newestRecordTime}` : "–"))),
  { id: "catalog-table" }));
}

function schemaRows(fields, prefix = "") {
  return fields.flatMap(field => [
    h("tr", { dataset: { field: prefix + field.name } },
      h("td", {}, h("code", {}, prefix + field.name)),
      h("td", {}, field.type),
      h("td", {}, field.pii ? h("span", { class: "badge pii", title: "personal data: masked for other teams" }, "pii") : "")),
    ...(field.type === "object" && field.fields ? schemaRows(field.fields, `${prefix}${field.name}.`) : []),
  ]);
}

async function renderDataset(name) {
  show(h("p", { class: "hint" }, "Loading…"));
  const dataset = await api("GET", `/v1/datasets/${encodeURIComponent(name)}?sample=10`);
  const sample = dataset.sample || [];
  const columns = [...new Set(sample.flatMap(record => Object.keys(record)))];
  const lineage = dataset.lineage || { products: [], otherTeams: 0 };
  show(
    h("h1", {}, dataset.metadata.name),
    h("div", { class: "card" },
      h("p", {}, dataset.metadata.description || "No description."),
      h("p", { class: "hint" }, `Owner ${dataset.metadata.owner || "–"} · team ${dataset.metadata.team || "–"} · topic ${dataset.spec.topic} · key ${dataset.spec.key || "–"} · time ${dataset.spec.time || "log time"}`),
      h("p", {}, `${formatCount(dataset.status.records)} records`,
        dataset.status.oldestRecordTime ? `, ${dataset.status.oldestRecordTime} to ${dataset.status.newestRecordTime}` : "",
        dataset.status.recentRecordsPerSecond === undefined ? "" : `, ${dataset.status.recentRecordsPerSecond} records/s lately`),
      h("button", { type: "button", id: "create-from-dataset", onclick: () => { location.hash = `#/new?from=${encodeURIComponent(name)}`; } },
        "Create a product from this dataset")),
    h("h2", {}, "Schema"),
    table(["Field", "Type", ""], schemaRows(dataset.spec.schema), { id: "schema-table" }),
    h("h2", {}, "Latest records"),
    sample.length === 0 ? h("p", { class: "hint" }, "No records yet.")
      : table(columns, sample.map(record => h("tr", {}, columns.map(column => h("td", {}, cellText(record[column]))))), { id: "sample-table" }),
    h("h2", {}, "Read by"),
    h("ul", { id: "lineage" },
      lineage.products.length === 0 && lineage.otherTeams === 0 ? h("li", {}, "No product reads it yet.") : null,
      lineage.products.map(reader => h("li", {},
        h("a", { href: `#/products/${encodeURIComponent(reader.product)}` }, reader.product),
        ` (${reader.reads}) → ${reader.output || "not started"}`,
        managerLink(reader.managedBy, " · from git source "))),
      lineage.otherTeams > 0 ? h("li", {}, `and ${lineage.otherTeams} product(s) of other teams`) : null));
}

// MARK: A new product: form, YAML, preview, apply

function yamlScalar(value) { return JSON.stringify(String(value)); }

function specYAML(form) {
  const lines = ["apiVersion: provision/v1", "kind: DataProduct",
    `metadata: {name: ${yamlScalar(form.name)}, team: ${yamlScalar(form.team)}}`, "spec:", `  from: ${yamlScalar(form.from)}`];
  if (form.backfill === "since") lines.push(`  backfill: {since: ${yamlScalar(form.since)}}`);
  else lines.push(`  backfill: ${form.backfill}`);
  if (form.joinDataset) {
    lines.push("  join:", `    - {dataset: ${yamlScalar(form.joinDataset)}, on: ${yamlScalar(form.joinOn)}, as: ${yamlScalar(form.joinAs)}}`);
  }
  if (form.where.trim()) lines.push(`  where: ${yamlScalar(form.where.trim())}`);
  const select = [...form.fields.map(field => [field.output, field.expression]), ...form.computed];
  if (select.length > 0) {
    lines.push("  select:");
    for (const [output, expression] of select) lines.push(`    ${yamlScalar(output)}: ${yamlScalar(expression)}`);
  }
  if (form.key) lines.push(`  key: ${yamlScalar(form.key)}`);
  lines.push("  sink:");
  switch (form.sink) {
    case "file": lines.push(`    file: {path: ${yamlScalar(form.path)}, format: ${form.format}}`); break;
    case "postgres": lines.push(`    postgres: {url: ${yamlScalar(form.url)}, table: ${yamlScalar(form.table)}}`); break;
    case "elasticsearch": lines.push(`    elasticsearch: {url: ${yamlScalar(form.url)}, index: ${yamlScalar(form.index)}}`); break;
    case "webhook": lines.push(`    webhook: {url: ${yamlScalar(form.url)}}`); break;
  }
  lines.push(`  deletionPolicy: ${form.policy}`);
  return lines.join("\n") + "\n";
}

async function renderNewProduct(params) {
  show(h("p", { class: "hint" }, "Loading…"));
  const datasets = await api("GET", "/v1/datasets?limit=5000");
  const byName = Object.fromEntries(datasets.map(dataset => [dataset.metadata.name, dataset]));
  const from = params.get("from") || datasets[0]?.metadata.name || "";
  const control = {};
  const errors = {};
  function field(path, labelText, input, hint) {
    const id = input.id;
    errors[path] = h("div", { class: "error", id: `${id}-error`, role: "alert" });
    input.setAttribute("aria-describedby", `${id}-error`);
    return h("div", { dataset: { path } }, h("label", { for: id }, labelText), input, hint ? h("p", { class: "hint" }, hint) : null, errors[path]);
  }
  control.name = h("input", { id: "product-name", value: params.get("name") || "", placeholder: "eu-large-orders", required: true });
  control.from = h("select", { id: "product-from" }, datasets.map(dataset => h("option", { value: dataset.metadata.name, selected: dataset.metadata.name === from }, dataset.metadata.name)));
  control.backfill = h("select", { id: "product-backfill" },
    h("option", { value: "all" }, "All history"), h("option", { value: "since" }, "Since…"), h("option", { value: "none" }, "None: new records only"));
  control.since = h("input", { id: "product-since", value: "90d", "aria-label": "Backfill window" });
  control.where = h("input", { id: "product-where", placeholder: "amount > 1000 and region == \"EU\"" });
  control.joinDataset = h("select", { id: "product-join" }, h("option", { value: "" }, "No join"),
    datasets.filter(dataset => dataset.spec.key).map(dataset => h("option", { value: dataset.metadata.name }, dataset.metadata.name)));
  control.joinOn = h("select", { id: "product-join-on" });
  control.joinAs = h("input", { id: "product-join-as", value: "" });
  control.fields = h("div", { class: "fields", id: "product-fields", role: "group", "aria-label": "Fields to keep" });
  control.computed = h("textarea", { id: "product-computed", rows: 3, placeholder: "customer_name: customer.name" });
  control.key = h("select", { id: "product-key" });
  control.sink = h("select", { id: "product-sink" }, ["file", "postgres", "elasticsearch", "webhook"].map(kind => h("option", { value: kind }, kind)));
  control.path = h("input", { id: "sink-path", value: "" });
  control.format = h("select", { id: "sink-format" }, h("option", { value: "jsonl" }, "JSON Lines"), h("option", { value: "csv" }, "CSV"));
  control.url = h("input", { id: "sink-url", placeholder: "${secret:NAME} or https://…" });
  control.table = h("input", { id: "sink-table" });
  control.index = h("input", { id: "sink-index" });
  control.policy = h("select", { id: "product-policy" }, h("option", { value: "Retain" }, "Retain the output"), h("option", { value: "Delete" }, "Delete the output"));
  const yaml = h("textarea", { id: "product-yaml", class: "yaml", spellcheck: "false", "aria-label": "The spec as YAML" });
  const yamlErrors = h("div", { id: "yaml-errors", class: "error", role: "alert" });
  const previewBox = h("div", { id: "preview" });
  const applyButton = h("button", { type: "button", id: "apply", disabled: true }, "Apply");
  const sinkSettings = h("div", { id: "sink-settings" });

  function fieldsOf(datasetName) { return byName[datasetName]?.spec.schema || []; }

  function refreshChoices() {
    const source = fieldsOf(control.from.value);
    const checked = new Set([...control.fields.querySelectorAll("input:checked")].map(box => box.value));
    const joined = control.joinDataset.value;
    const alias = control.joinAs.value || joined.replace(/s$/, "");
    const candidates = [...source.map(field => ({ expression: field.name, output: field.name, pii: field.pii })),
      ...(joined ? fieldsOf(joined).map(field => ({ expression: `${alias}.${field.name}`, output: `${alias}_${field.name}`, pii: field.pii })) : [])];
    control.fields.replaceChildren(...candidates.map(candidate => h("label", {},
      h("input", { type: "checkbox", value: candidate.expression, dataset: { output: candidate.output },
        checked: checked.size === 0 ? !candidate.expression.includes(".") : checked.has(candidate.expression), onchange: sync }),
      h("code", {}, candidate.expression), candidate.pii ? h("span", { class: "badge pii" }, "pii") : null)));
    const onValue = control.joinOn.value;
    control.joinOn.replaceChildren(...source.map(field => h("option", { value: field.name, selected: field.name === onValue }, field.name)));
    if (joined && !control.joinAs.value) control.joinAs.value = alias;
  }

  function refreshSinkSettings() {
    const kind = control.sink.value;
    const parts = {
      file: [field("spec.sink.file.path", "File path (under the server's file root)", control.path), field("spec.sink.file.format", "Format", control.format)],
      postgres: [field("spec.sink.postgres.url", "PostgreSQL URL", control.url, "A reference such as ${secret:NAME}, never a password"), field("spec.sink.postgres.table", "Table", control.table)],
      elasticsearch: [field("spec.sink.elasticsearch.url", "Elasticsearch URL", control.url), field("spec.sink.elasticsearch.index", "Index (alias)", control.index)],
      webhook: [field("spec.sink.webhook.url", "Endpoint URL", control.url)],
    };
    sinkSettings.replaceChildren(...parts[kind]);
  }

  function formState() {
    const boxes = [...control.fields.querySelectorAll("input:checked")];
    const computed = control.computed.value.split("\n").map(line => line.trim()).filter(Boolean).map(line => {
      const colon = line.indexOf(":");
      return colon < 0 ? [line, line] : [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
    });
    return {
      name: control.name.value.trim(), team: state.me.team, from: control.from.value, backfill: control.backfill.value,
      since: control.since.value.trim(), where: control.where.value, joinDataset: control.joinDataset.value,
      joinOn: control.joinOn.value, joinAs: control.joinAs.value.trim(),
      fields: boxes.map(box => ({ output: box.dataset.output, expression: box.value })), computed,
      key: control.key.value, sink: control.sink.value, path: control.path.value.trim(), format: control.format.value,
      url: control.url.value.trim(), table: control.table.value.trim(), index: control.index.value.trim(), policy: control.policy.value,
    };
  }

  function refreshKeys() {
    const form = formState();
    const outputs = [...form.fields.map(field => field.output), ...form.computed.map(([output]) => output)];
    const current = control.key.value || byName[form.from]?.spec.key || "";
    control.key.replaceChildren(h("option", { value: "" }, "No key"), ...outputs.map(output => h("option", { value: output, selected: output === current }, output)));
  }

  function clearErrors() {
    for (const box of Object.values(errors)) box.textContent = "";
    for (const holder of document.querySelectorAll(".field-error")) holder.classList.remove("field-error");
    yamlErrors.textContent = "";
  }

  // Each error goes next to the form field its path names, and with its line under the YAML.
  function showErrors(error) {
    clearErrors();
    const details = error.details.length > 0 ? error.details : [{ path: "", message: error.message }];
    const lines = [];
    for (const detail of details) {
      const path = detail.path || "";
      const target = Object.keys(errors).filter(prefix => path === prefix || path.startsWith(prefix + ".") || path.startsWith(prefix + "["))
        .sort((a, b) => b.length - a.length)[0];
      if (target) {
        errors[target].textContent = detail.message;
        errors[target].parentElement.classList.add("field-error");
      }
      lines.push(detail.line ? `line ${detail.line}, column ${detail.column}: ${path ? path + ": " : ""}${detail.message}` : detail.message);
    }
    yamlErrors.replaceChildren(...lines.map(line => h("div", {}, line)));
  }

  function sync() {
    refreshKeys();
    // Derived from the name until the person edits them.
    const form = formState();
    if (control.path.dataset.edited !== "1") control.path.value = form.name ? `${form.team}/${form.name}.${form.format}` : "";
    if (control.table.dataset.edited !== "1") control.table.value = form.name.replaceAll("-", "_");
    if (control.index.dataset.edited !== "1") control.index.value = form.name;
    yaml.value = specYAML(formState());
    applyButton.disabled = true;
    previewBox.replaceChildren();
  }

  // The YAML, read by the server, fills the form: the two never disagree.
  function fillForm(name, spec) {
    control.name.value = name;
    control.from.value = spec.from;
    const backfill = spec.backfill;
    if (backfill?.since) { control.backfill.value = "since"; control.since.value = backfill.since; }
    else control.backfill.value = backfill?.mode === "none" ? "none" : "all";
    control.where.value = spec.where || "";
    const join = (spec.join || [])[0];
    control.joinDataset.value = join?.dataset || "";
    control.joinAs.value = join?.as || "";
    refreshChoices();
    if (join) control.joinOn.value = join.on;
    const select = spec.select || [];
    const byExpression = new Map(select.map(item => [item.expression, item.name]));
    const computed = [];
    for (const box of control.fields.querySelectorAll("input")) {
      box.checked = byExpression.has(box.value) && byExpression.get(box.value) === box.dataset.output;
    }
    for (const item of select) {
      const plain = [...control.fields.querySelectorAll("input")].some(box => box.value === item.expression && box.dataset.output === item.name);
      if (!plain) computed.push(`${item.name}: ${item.expression}`);
    }
    control.computed.value = computed.join("\n");
    const kind = Object.keys(spec.sink)[0];
    control.sink.value = kind;
    refreshSinkSettings();
    const sink = spec.sink[kind];
    for (const input of [control.path, control.table, control.index]) input.dataset.edited = "1";
    control.path.value = sink.path || "";
    if (sink.format) control.format.value = sink.format;
    control.url.value = sink.url || "";
    control.table.value = sink.table || "";
    control.index.value = sink.index || "";
    control.policy.value = spec.deletionPolicy || "Retain";
    refreshKeys();
    control.key.value = spec.key || "";
  }

  function renderPreview(answer) {
    const schema = answer.outputSchema || [];
    const rows = (answer.rows || []).slice(0, 20);
    const backfill = answer.backfill || {};
    previewBox.replaceChildren(h("div", { class: "card" },
      h("h2", {}, "Preview"),
      h("p", { id: "preview-plan" }, `Plan: ${answer.change?.action || "unchanged"}${answer.change?.detail ? ` (${answer.change.detail})` : ""}`),
      h("p", { id: "preview-counts" }, answer.note || `${formatCount(answer.passed)} of ${formatCount(answer.sampled)} sampled records passed the filter; ${formatCount(answer.deadLettered)} would be set aside.`),
      h("p", { id: "preview-backfill" }, `Backfill: ${formatCount(backfill.records)} records, about ${formatBytes(backfill.bytesEstimate)}, ${backfill.since ? `since ${backfill.since}` : "from the start of the log"}.`),
      h("h2", {}, "Output schema"),
      table(["Field", "Type", ""], schema.map(field => h("tr", {}, h("td", {}, h("code", {}, field.name)), h("td", {}, field.type),
        h("td", {}, field.pii ? h("span", { class: "badge pii" }, "pii") : "")))),
      h("h2", {}, "Sample output"),
      rows.length === 0 ? h("p", { class: "hint" }, "No sampled record passed.")
        : table(schema.map(field => field.name), rows.map(row => h("tr", {}, schema.map(field => h("td", {}, cellText(row[field.name]))))), { id: "preview-rows" })));
  }

  async function preview(fromYAML) {
    clearErrors();
    try {
      const answer = await api("POST", "/v1/preview?sample=200", { files: [{ name: "portal.yaml", content: yaml.value }] });
      if (fromYAML && answer.spec) fillForm(answer.product, answer.spec);
      renderPreview(answer);
      applyButton.disabled = false;
    } catch (error) {
      if (!(error instanceof APIError)) throw error;
      showErrors(error);
      previewBox.replaceChildren();
    }
  }

  async function apply() {
    clearErrors();
    try {
      await api("POST", "/v1/apply", { files: [{ name: "portal.yaml", content: yaml.value }] });
      const name = formState().name;
      toast(`${name} created`);
      location.hash = `#/products/${encodeURIComponent(name)}`;
    } catch (error) {
      if (!(error instanceof APIError)) throw error;
      showErrors(error);
    }
  }

  for (const input of [control.path, control.table, control.index]) input.addEventListener("input", () => { input.dataset.edited = "1"; });
  for (const input of Object.values(control)) { input.addEventListener("input", sync); input.addEventListener("change", sync); }
  control.from.addEventListener("change", () => { control.fields.replaceChildren(); refreshChoices(); sync(); });
  control.joinDataset.addEventListener("change", () => { control.joinAs.value = ""; refreshChoices(); sync(); });
  control.sink.addEventListener("change", () => { refreshSinkSettings(); sync(); });
  let yamlTimer = null;
  yaml.addEventListener("input", () => { clearTimeout(yamlTimer); applyButton.disabled = true; yamlTimer = setTimeout(() => preview(true), 700); });
  applyButton.addEventListener("click", apply);

  show(
    h("h1", {}, "New product"),
    h("div", { class: "grid2" },
      h("form", { class: "card", id: "product-form", onsubmit: event => { event.preventDefault(); preview(false); } },
        field("metadata.name", "Name", control.name, `Team ${state.me.team}`),
        field("spec.from", "Source dataset", control.from),
        field("spec.backfill", "Backfill", control.backfill), h("div", {}, control.since),
        field("spec.where", "Filter (where)", control.where, "An expression over the dataset's fields"),
        field("spec.join", "Join a dataset (by its key)", control.joinDataset),
        h("div", { class: "row" }, h("div", {}, h("label", { for: "product-join-on" }, "on"), control.joinOn),
          h("div", {}, h("label", { for: "product-join-as" }, "as"), control.joinAs)),
        h("div", { dataset: { path: "spec.select" } }, h("label", {}, "Fields to keep"), control.fields,
          h("label", { for: "product-computed" }, "Computed fields (name: expression, one a line)"), control.computed,
          errors["spec.select"] = h("div", { class: "error", role: "alert" })),
        field("spec.key", "Key", control.key),
        field("spec.sink", "Sink", control.sink), sinkSettings,
        field("spec.deletionPolicy", "When the product is deleted", control.policy),
        h("div", { class: "row" }, h("button", { type: "submit", id: "preview-button" }, "Preview"), applyButton)),
      h("div", { class: "card" }, h("label", { for: "product-yaml" }, "YAML (edit either side)"), yaml, yamlErrors)),
    previewBox);
  refreshChoices();
  refreshSinkSettings();
  sync();
}

// MARK: Products

function productRow(product, now) {
  const name = product.metadata.name;
  const written = product.status.recordsWritten;
  const last = state.rates[name];
  let rate = last?.rate ?? null;
  if (last && now > last.at && written !== last.written) rate = Math.max(0, (written - last.written) / ((now - last.at) / 1000));
  else if (last && now - last.at > 5000) rate = 0;
  if (!last || written !== last.written || now - last.at > 5000) state.rates[name] = { written, at: now, rate };
  return h("tr", { dataset: { product: name } },
    h("td", {}, h("a", { href: `#/products/${encodeURIComponent(name)}` }, name)),
    h("td", { class: `phase phase-${product.status.phase}` }, product.status.phase),
    h("td", { class: "lag" }, formatCount(product.status.lag)),
    h("td", { class: "freshness" }, freshness(product)),
    h("td", { class: "rate" }, rate === null ? "–" : `${rate.toFixed(rate < 10 ? 1 : 0)}/s`),
    h("td", { class: "written" }, formatCount(written)),
    h("td", { class: "hide-narrow" }, product.status.output || "–"));
}

async function renderProducts() {
  const body = h("tbody");
  const empty = h("p", { class: "hint", id: "products-empty", hidden: true }, "Your team has no products yet. ",
    h("a", { href: "#/new" }, "Create one"), ".");
  show(h("h1", {}, `Products of team ${state.me.team}`), empty,
    h("div", { class: "scroll" }, h("table", { id: "products-table" },
      h("thead", {}, h("tr", {}, ["Product", "Phase", "Lag", "Freshness", "Records/s", "Written", "Output"].map(column => h("th", { scope: "col" }, column)))),
      body)));
  every(2000, async () => {
    const products = await api("GET", "/v1/products");
    const now = Date.now();
    empty.hidden = products.length > 0;
    body.replaceChildren(...products.map(product => productRow(product, now)));
  });
}

async function renderProduct(name) {
  const header = h("div", { class: "card", id: "product-summary" });
  const conditions = h("tbody");
  const deadLetters = h("div", { id: "dead-letters" });
  const actions = h("div", { class: "row", id: "product-actions" });
  const confirmBox = h("div", { id: "confirm" });
  show(h("h1", {}, name), header, actions, confirmBox,
    h("h2", {}, "Conditions"), h("div", { class: "scroll" }, h("table", { id: "conditions" },
      h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message"].map(column => h("th", { scope: "col" }, column)))), conditions)),
    h("h2", {}, "Recent dead letters"), deadLetters);
  let product = null;
  let shownDeadLetters = null;

  async function act(method, path, done) {
    try {
      const answer = await api(method, path);
      toast(done(answer));
    } catch (error) {
      toast(error.message);
    }
  }

  function renderActions() {
    const paused = product.status.phase === "Paused";
    const buttons = [
      paused ? h("button", { type: "button", id: "resume", onclick: () => act("POST", `/v1/products/${encodeURIComponent(name)}/resume`, () => "Resumed") }, "Resume")
        : h("button", { type: "button", id: "pause", class: "secondary", onclick: () => act("POST", `/v1/products/${encodeURIComponent(name)}/pause`, () => "Paused") }, "Pause"),
      product.spec.sink.webhook ? h("button", { type: "button", id: "redeliver", class: "secondary",
        onclick: () => act("POST", `/v1/products/${encodeURIComponent(name)}/redeliver`, answer => `Redelivered ${answer.redelivered}, set aside again ${answer.deadLetteredAgain}`) }, "Redeliver dead letters") : null,
      h("button", { type: "button", id: "delete", class: "danger", onclick: confirmDelete }, "Delete…"),
    ];
    if (actions.childElementCount === 0 || actions.dataset.paused !== String(paused)) {
      actions.dataset.paused = String(paused);
      actions.replaceChildren(...buttons.filter(Boolean));
    }
  }

  function confirmDelete() {
    const output = product.status.output || "its output";
    const consequence = product.spec.deletionPolicy === "Delete"
      ? `Its output, ${output}, will be removed.` : `Its output, ${output}, stays but is no longer kept up to date.`;
    const cancel = h("button", { type: "button", class: "secondary", id: "confirm-cancel", onclick: () => confirmBox.replaceChildren() }, "Cancel");
    confirmBox.replaceChildren(h("div", { class: "card", role: "alertdialog", "aria-labelledby": "confirm-text" },
      h("p", { id: "confirm-text" }, `Delete ${name}? ${consequence}`),
      h("div", { class: "row" },
        h("button", { type: "button", class: "danger", id: "confirm-delete", onclick: async () => {
          try {
            await api("DELETE", `/v1/products/${encodeURIComponent(name)}`);
            toast(`${name} is being deleted`);
            location.hash = "#/products";
          } catch (error) { toast(error.message); }
        } }, "Delete"), cancel)));
    cancel.focus();
  }

  async function refresh() {
    try {
      product = await api("GET", `/v1/products/${encodeURIComponent(name)}`);
    } catch (error) {
      if (error.status === 404) { stopTimers(); header.replaceChildren(h("p", { id: "product-missing" }, "This product does not exist (or is not your team's).")); actions.replaceChildren(); return; }
      throw error;
    }
    const status = product.status;
    const read = status.recordsRead || 0;
    const total = read + status.lag;
    const progress = total > 0 ? Math.min(100, Math.round((read / total) * 100)) : (status.phase === "Live" ? 100 : 0);
    header.replaceChildren(
      h("p", {}, h("strong", { class: `phase-${status.phase}`, id: "product-phase" }, status.phase), ` · team ${product.metadata.team || "–"} · managed by `, h("span", { id: "product-manager" }, product.metadata.managedBy || "–"),
        managerLink(product.metadata.managedBy, " (its spec is in git: "), product.metadata.managedBy?.startsWith("gitops:") ? ")" : "",
        ` · from ${product.spec.from} → ${status.output || "not started"}`),
      h("p", {}, `Written ${formatCount(status.recordsWritten)} · lag `, h("span", { id: "product-lag" }, formatCount(status.lag)),
        ` · dead letters ${formatCount(status.deadLettered)} · freshness ${freshness(product)}`),
      h("div", { class: "bar", role: "progressbar", "aria-label": "Backfill progress", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": progress, id: "backfill-progress" },
        h("span", { style: `width: ${progress}%` })),
      h("p", { class: "hint" }, `${progress}% of the source read (${formatCount(read)} of ${formatCount(total)} records)`));
    conditions.replaceChildren(...status.conditions.map(condition => h("tr", { dataset: { condition: condition.type } },
      h("td", {}, condition.type), h("td", {}, condition.status), h("td", {}, condition.reason), h("td", {}, condition.message))));
    renderActions();
    // Read again only when there are new ones, so an open record stays open.
    if (status.deadLettered === shownDeadLetters) return;
    shownDeadLetters = status.deadLettered;
    if (status.deadLettered > 0) {
      const page = await api("GET", `/v1/topics/${encodeURIComponent(status.deadLetterTopic)}/records?limit=20`);
      deadLetters.replaceChildren(table(["Offset", "Reason", "Record"], page.records.slice().reverse().map(record => h("tr", { class: "dead-letter" },
        h("td", {}, record.headers?.["provision.source.offset"] ?? record.offset),
        h("td", { class: "reason" }, record.headers?.["provision.reason"] || "–"),
        h("td", {}, h("details", {}, h("summary", {}, "record"), h("pre", {}, cellText(record.value)))))), { id: "dead-letter-table" }));
    } else {
      deadLetters.replaceChildren(h("p", { class: "hint" }, "None."));
    }
  }
  every(2000, refresh);
}

// MARK: Git sources

/// A link to the git source a `gitops:<source>` writer is, or nothing for another writer.
function managerLink(managedBy, prefix) {
  if (!managedBy?.startsWith("gitops:")) return null;
  const source = managedBy.slice("gitops:".length);
  return h("span", { class: "source-link" }, prefix, h("a", { href: `#/sources/${encodeURIComponent(source)}` }, source));
}

function sourceState(source) {
  if (source.suspended) return "Suspended";
  const ready = source.conditions.find(condition => condition.type === "Ready");
  return ready ? (ready.status === "True" ? "Ready" : ready.reason) : "Starting";
}

async function renderSources() {
  const sources = await api("GET", "/v1/sources");
  show(h("h1", {}, "Git sources"),
    sources.length === 0 ? h("p", { class: "hint", id: "sources-empty" }, "No git source: apply a GitSource spec to follow a repository.")
      : table(["Source", "Repository", "Applied commit", "State"], sources.map(source => h("tr", { dataset: { source: source.name } },
        h("td", {}, h("a", { href: `#/sources/${encodeURIComponent(source.name)}` }, source.name)),
        h("td", {}, `${source.url}#${source.ref}:${source.path}`),
        h("td", {}, (source.lastAppliedCommit || "–").slice(0, 12)),
        h("td", { class: "source-state" }, sourceState(source)))), { id: "sources-table" }));
}

async function renderSource(name) {
  const source = await api("GET", `/v1/sources/${encodeURIComponent(name)}`);
  const products = (await api("GET", "/v1/products")).filter(product => product.metadata.managedBy === source.managedBy);
  const list = (title, items, render) => items?.length ? [h("h2", {}, title), h("ul", {}, items.map(item => h("li", {}, render(item))))] : [];
  show(h("h1", {}, `Git source ${source.name}`),
    h("div", { class: "card" },
      h("p", {}, h("strong", { id: "source-state" }, sourceState(source)), ` · team ${source.team || "–"} · ${source.url}#${source.ref}:${source.path} · every ${source.intervalSeconds} s · drift: ${source.driftPolicy}`),
      h("p", { class: "hint" }, `Fetched ${source.lastFetchedCommit || "–"} at ${source.lastFetchedAt || "–"} · applied ${source.lastAppliedCommit || "–"} at ${source.lastAppliedAt || "–"}`)),
    table(["Condition", "Status", "Reason", "Message"], source.conditions.map(condition => h("tr", {},
      h("td", {}, condition.type), h("td", {}, condition.status), h("td", {}, condition.reason), h("td", {}, condition.message)))),
    ...list("Errors in the commit", source.errors, error => `${error.file}:${error.line}:${error.column} ${error.path}: ${error.message}`),
    ...list("Would delete (waiting for approval)", source.wouldDelete, name => name),
    ...list("Left out: managed by another writer", source.conflicts, error => `${error.file}: ${error.message}`),
    ...list("Changed outside git", source.drift, drift => `${drift.name} by ${drift.changedBy} (${drift.fields.map(field => field.path).join(", ")}): ${drift.reverted ? "reverted" : "left as it is"}`),
    h("h2", {}, "Its products"),
    products.length === 0 ? h("p", { class: "hint" }, "None of your team's.")
      : h("ul", { id: "source-products" }, products.map(product => h("li", {},
        h("a", { href: `#/products/${encodeURIComponent(product.metadata.name)}` }, product.metadata.name), ` · ${product.status.phase}`))));
}

// MARK: Routing

async function route() {
  const [path, queryText] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(queryText || "");
  renderHeader();
  if (!state.token) {
    // A server without authentication (`serve --demo`, `--dev`) needs no token.
    const health = await fetch("/healthz").then(answer => answer.json()).catch(() => null);
    if (health?.auth !== "off") return renderSignIn();
    state.token = "none";
  }
  if (!state.me) {
    try { await signIn(state.token); } catch (error) { return signOut(error.message); }
  }
  try {
    switch (parts[0]) {
      case "datasets": return await renderDataset(parts[1]);
      case "new": return await renderNewProduct(params);
      case "products": return parts[1] ? await renderProduct(parts[1]) : await renderProducts();
      case "sources": return parts[1] ? await renderSource(parts[1]) : await renderSources();
      case "signin": return renderSignIn();
      default: return await renderCatalog(params.get("q") || "");
    }
  } catch (error) {
    show(h("div", { class: "card" }, h("p", { class: "error", role: "alert" }, error.message)));
  }
}

document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
window.addEventListener("hashchange", route);
route();
