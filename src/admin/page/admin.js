// The ccrelay admin page: reads the admin JSON API every few seconds and draws it.
// Every value from the API goes into the page through textContent, never as HTML.
// URLs are relative, so the page also works behind a proxy that serves it under a prefix.
"use strict";

const REFRESH_MS = 5000;
const RATE_WINDOW_MS = 60000;
const MAX_LETTERS_SHOWN = 200;

// Recent readings of each source's request counter, oldest first, for rates over about a minute.
let sourceReadings = [];

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell);
  return tr;
}

function number(value) {
  return element("td", value === null || value === undefined ? "—" : value, "number");
}

function bytes(value) {
  if (value === null || value === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let amount = value;
  let unit = 0;
  while (amount >= 1024 && unit < units.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return (unit === 0 ? amount : amount.toFixed(1)) + " " + units[unit];
}

async function getJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  const body = await response.json();
  if (!response.ok && path !== "readyz") {
    throw new Error(path + ": " + response.status + " " + (body.detail || ""));
  }
  return body;
}

function showError(text) {
  const banner = document.getElementById("error");
  banner.textContent = text || "";
  banner.hidden = !text;
}

function showMessage(text) {
  const banner = document.getElementById("message");
  banner.textContent = text || "";
  banner.hidden = !text;
}

function drawReady(ready) {
  const badge = document.getElementById("ready");
  badge.textContent = ready.ready ? "ready" : "not ready";
  badge.className = "badge " + (ready.ready ? "ok" : "bad");
}

function drawRules(rules) {
  document.getElementById("rules-version").textContent = rules.version;
  document.getElementById("rules-path").textContent = rules.path || "embedded default";
  document.getElementById("rules-loaded-at").textContent = rules.loaded_at;
  document.getElementById("rules-count").textContent =
    plural(rules.rule_count, "rule") + "; sinks: " + (rules.sinks.join(", ") || "none");
  const lastError = document.getElementById("rules-last-error");
  if (rules.last_error) {
    lastError.textContent = rules.last_error_at + ": " + rules.last_error;
    lastError.className = "error";
  } else {
    lastError.textContent = "none";
    lastError.className = "";
  }
}

function drawSources(reading, now) {
  const body = document.querySelector("#sources tbody");
  body.replaceChildren();
  // The oldest reading within the window (or the last one before it) is the rate's baseline.
  while (sourceReadings.length > 1 && now - sourceReadings[1].now >= RATE_WINDOW_MS) {
    sourceReadings.shift();
  }
  const baseline = sourceReadings[0];
  for (const source of reading.sources) {
    let rate = null;
    if (baseline && now > baseline.now) {
      const before = baseline.requests[source.source] || 0;
      rate = ((source.requests - before) * 1000 / (now - baseline.now)).toFixed(2);
    }
    const tr = row([
      element("td", source.source, "name"),
      number(source.requests),
      number(rate),
      number(source.requests_2xx),
      number(source.requests_4xx),
      number(source.requests_5xx),
      number(source.accepted),
      number(source.duplicates),
      number(source.decode_failures),
      number(bytes(source.bytes)),
    ]);
    tr.dataset.source = source.source;
    body.appendChild(tr);
  }
  if (reading.sources.length === 0) {
    const empty = element("td", "No requests yet.", "muted");
    empty.colSpan = 10;
    body.appendChild(row([empty]));
  }
  const requests = {};
  for (const source of reading.sources) requests[source.source] = source.requests;
  sourceReadings.push({ now, requests });
}

function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}

function healthCell(sink) {
  let badge;
  if (!sink.in_rules) {
    badge = element("span", "not in rules", "badge unknown");
  } else if (sink.healthy === null || sink.healthy === undefined) {
    badge = element("span", "no delivery yet", "badge unknown");
  } else {
    badge = element("span", sink.healthy ? "healthy" : "failing", "badge " + (sink.healthy ? "ok" : "bad"));
  }
  const cell = document.createElement("td");
  cell.appendChild(badge);
  return cell;
}

async function replay(sink, button) {
  button.disabled = true;
  try {
    const response = await fetch("dead-letters/replay?sink=" + encodeURIComponent(sink), { method: "POST" });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.detail || response.status);
    const skipped = answer.skipped.length;
    showMessage("Replayed " + plural(answer.replayed, "dead letter") + " of " + sink +
      (skipped ? ", skipped " + skipped + ": " + answer.skipped.map((s) => s.reason).join("; ") : ""));
  } catch (err) {
    showMessage("Replay of " + sink + " failed: " + err.message);
  }
  await refresh();
}

function drawSinks(reading) {
  const body = document.querySelector("#sinks tbody");
  body.replaceChildren();
  for (const sink of reading.sinks) {
    const action = document.createElement("td");
    if (sink.dead_letters > 0 && sink.in_rules) {
      const button = element("button", "Replay " + sink.dead_letters, "replay");
      button.type = "button";
      button.dataset.sink = sink.sink;
      button.addEventListener("click", () => replay(sink.sink, button));
      action.appendChild(button);
    }
    const tr = row([
      element("td", sink.sink, "name"),
      element("td", sink.type || "—"),
      healthCell(sink),
      number(sink.backlog),
      number(sink.delivered),
      number(sink.retried),
      number(sink.dead_letters),
      action,
    ]);
    tr.dataset.sink = sink.sink;
    body.appendChild(tr);
  }
}

function drawDeadLetters(listing) {
  const body = document.querySelector("#dead-letters tbody");
  body.replaceChildren();
  const shown = listing.dead_letters.slice(0, MAX_LETTERS_SHOWN);
  for (const letter of shown) {
    const tr = row([
      element("td", letter.sink, "sink"),
      element("td", letter.envelope_id, "envelope"),
      element("td", letter.rule),
      element("td", letter.kind),
      number(letter.attempts),
      element("td", letter.last_attempt_at),
      element("td", letter.reason, "reason"),
    ]);
    tr.dataset.sink = letter.sink;
    body.appendChild(tr);
  }
  document.getElementById("dead-letters-summary").textContent =
    listing.count === 0 ? "None." :
    plural(listing.count, "dead letter") + (listing.count > shown.length ? ", the first " + shown.length + " shown" : "");
}

async function refresh() {
  try {
    const [ready, rules, sources, sinks, letters] = await Promise.all([
      getJson("readyz"), getJson("rules"), getJson("sources"), getJson("sinks"), getJson("dead-letters"),
    ]);
    const now = Date.now();
    drawReady(ready);
    drawRules(rules);
    drawSources(sources, now);
    drawSinks(sinks);
    drawDeadLetters(letters);
    showError("");
    document.getElementById("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (err) {
    showError("Cannot read the admin API: " + err.message);
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
