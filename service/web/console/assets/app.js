// The consular console: one page, views by the URL's hash, every action through the public API.
"use strict";

const ROLES = { viewer: 0, consul: 1, admin: 2 };
const state = { me: null, pollTimer: null, pollSeq: 0, failedOffset: 0, previewTimer: null, previewSeq: 0, previewRounds: {}, routeSeq: 0, provinces: [], provinceLists: {} };
const $ = (id) => document.getElementById(id);
// Rows of the roll call, and of the failed alerts, a page shows (a test sets them lower).
const rollcallPage = () => (window.anjeonConsole && window.anjeonConsole.rollcallPage) || 100;
const failedPage = () => (window.anjeonConsole && window.anjeonConsole.failedPage) || 100;

// ---- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem, challenge = "") {
    super(problem.detail || problem.title || String(status));
    this.status = status;
    this.problem = problem;
    this.challenge = challenge; // a 401's WWW-Authenticate: RFC 6750 names an expired key
  }
}

async function api(path, { method = "GET", body, timeoutMs } = {}) {
  // The page is being replaced (signing in or out): a timer's read would go out without the
  // key just dropped and come back 401. Nothing asked now is ever shown.
  if (state.leaving) return new Promise(() => {});
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem("anjeon-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    const signal = timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined;
    response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, { detail: t("network") });
  }
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { detail: text };
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers.get("WWW-Authenticate") || "");
  return data;
}

// Reach previews: the API counts at most two of a key's at once, refusing the rest for a moment
// (problem type …reach-previews-busy: 429, or 503 while the process counts others'). Those of a
// list or the queue go one after another; a refused one is asked again, one that ran out of time
// is not. `wanted` is asked before each try: a list left or shown anew drops what it queued.
let previewsInTurn = Promise.resolve();

async function reachOf(path, body, wanted = () => true) {
  for (let attempt = 1; ; attempt++) {
    if (!wanted()) return null;
    try {
      return await api(path, { method: "POST", body });
    } catch (error) {
      const busy = error instanceof ApiError && /reach-previews-busy$/.test(error.problem.type || "");
      if (!busy || attempt >= 8) throw error;
      await new Promise((done) => setTimeout(done, 500 * attempt));
    }
  }
}

// A list shown anew, or left: the previews it queued are no longer wanted. A round per list: a
// list whose render ends after another was shown must not drop that one's.
function previewRound(list, turn) {
  const round = (state.previewRounds[list] = (state.previewRounds[list] || 0) + 1);
  return () => round === state.previewRounds[list] && turn === state.routeSeq;
}

function reachInTurn(path, wanted) {
  const asked = previewsInTurn.then(() => reachOf(path, undefined, wanted));
  previewsInTurn = asked.catch(() => {});
  return asked;
}

// A failure as a sentence: what the role allows, or the API's own reason.
function sentence(error) {
  if (!(error instanceof ApiError)) return String(error.message || error);
  if (error.status === 403) return `${t("forbidden")} ${error.problem.detail || ""}`.trim();
  if (error.status === 401) return t(/error="invalid_token"/.test(error.challenge) ? "key_expired" : "unauthorized");
  return error.problem.detail || error.problem.title || String(error.status);
}

function flash(text, kind = "error") {
  const box = $("flash");
  box.textContent = text;
  box.className = `flash ${kind}`;
  box.hidden = !text;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (name === "text") node.textContent = value;
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function can(role) {
  return state.me && ROLES[state.me.role] >= ROLES[role];
}

function localised(texts) {
  return (texts && (texts[language()] || texts.ko || texts.en)) || "";
}

// The area's name as the advisory stores it (staff's `area.name`, or a feed's <areaDesc>).
function areaName(area) {
  const english = (area && area.description) || "";
  return language() === "ko" ? (area && area.description_ko) || english : english;
}

function levelName(level) {
  return t(`level_${level}`);
}

// A value the API names (an alert's status, a channel, a revision's change) in the page's
// language; a value the page has no words for is shown as the API names it.
function named(prefix, value) {
  const key = `${prefix}${value}`;
  const text = t(key);
  return text === key ? value : text;
}

function clock(date) {
  return date.toLocaleTimeString(language() === "ko" ? "ko-KR" : "en-GB");
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString(language() === "ko" ? "ko-KR" : "en-GB") : "–";
}

// ---- log in, log out, language ------------------------------------------------------------

async function logIn(key) {
  sessionStorage.setItem("anjeon-key", key);
  try {
    state.me = await api("/v1/staff/me");
  } catch (error) {
    sessionStorage.removeItem("anjeon-key");
    state.me = null;
    throw error;
  }
}

// Signing out, or in, starts a new document: what one key's pages showed (a roll call, the
// audit log, cries for help) must not stay in the page for the next key to read. A probe's
// viewer saw a consul's roll call and an admin's audit log so, on a shared workstation.
function freshPage(hash) {
  state.leaving = true;
  history.replaceState(null, "", `${location.pathname}${hash}`);
  location.reload();
}

function logOut() {
  state.leaving = true;
  sessionStorage.removeItem("anjeon-key");
  state.me = null;
  freshPage("#/login");
}

function showChrome() {
  const signedIn = Boolean(state.me);
  $("nav").hidden = !signedIn;
  $("logout").hidden = !signedIn && !state.retrying;
  $("who").hidden = !signedIn;
  if (signedIn) {
    $("who").textContent = `${t("signed_in_as")} ${state.me.name} (${t(`role_${state.me.role}`)})`;
    $("who").dataset.role = state.me.role;
  }
  // A key that stops working in the middle of a crisis is worse than one renewed a week early.
  const expiring = signedIn && state.me.expires_soon;
  $("key-expiry").hidden = !expiring;
  if (expiring) $("key-expiry").textContent = `${t("key_expires")} ${when(state.me.expires_at)}. ${t("key_expires_ask")}`;
  for (const link of document.querySelectorAll("[data-min-role]")) link.hidden = !can(link.dataset.minRole);
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", location.hash.startsWith(link.getAttribute("href")));
  }
}

// ---- views --------------------------------------------------------------------------------

function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
}

async function route() {
  const turn = ++state.routeSeq;
  hideRevealed(); // leaving the page (or logging out) takes revealed personal data with it
  stopPolling();
  const [, view = "map", id] = (location.hash || "#/map").split("/");
  if (!state.me || view === "login") {
    showChrome();
    show("login");
    if (!state.me) $("key").focus();
    return;
  }
  showChrome();
  show(view);
  try {
    if (view === "map") await showOverview();
    else if (view === "issue") await showIssue();
    else if (view === "queue") await showQueue();
    else if (view === "advisory") await showAdvisory(id);
    else if (view === "feeds") await showFeeds();
    else if (view === "audit") await showAudit();
  } catch (error) {
    // A render the staff member has already left must not cover the page now shown.
    if (turn === state.routeSeq) flash(sentence(error));
  }
}

// ---- the map of active advisories ---------------------------------------------------------

let overview = null;

async function showOverview() {
  const turn = state.routeSeq;
  if (!overview) {
    overview = { map: newMap("overview-map"), extra: [] };
    window.anjeonConsole = { ...window.anjeonConsole, overviewMap: overview.map }; // for the tests
  }
  await loadCountries(overview, api);
  overview.map.invalidateSize();
  const page = await api("/v1/advisories?status=active&limit=500");
  for (const layer of overview.extra) layer.remove();
  overview.extra = [];
  resetCountries(overview.base);
  const list = $("active-list");
  list.replaceChildren();
  // Lower levels first, so the most severe is drawn on top.
  const advisories = [...page.items].sort((a, b) => String(a.level).localeCompare(String(b.level)));
  const wanted = previewRound("overview", turn);
  for (const advisory of advisories) {
    const colour = LEVEL_COLOURS[advisory.level];
    shadeCountries(overview.base, new Set(advisory.area.countries || []), colour);
    const provinces = advisory.area.subdivisions || [];
    outlineCountries(overview.base, new Set(provinces.map((code) => code.split("-")[0])), colour);
    for (const layer of areaLayers(advisory.area, colour)) {
      // An element, not a string: Leaflet puts a string into the page as HTML, and titles come
      // from feeds too.
      layer.bindTooltip(el("span", { text: localised(advisory.title) }));
      layer.on("click", () => (location.hash = `#/advisory/${advisory.id}`));
      layer.addTo(overview.map);
      overview.extra.push(layer);
    }
    const reach = el("span", { class: "reach" });
    list.append(
      el("li", { class: `card level-${advisory.level}` },
        el("span", { class: "badge", style: `background:${colour}` }, levelName(advisory.level)),
        " ", el("a", { href: `#/advisory/${advisory.id}` }, localised(advisory.title)), " ", reach,
        provinces.length
          ? el("p", { class: "hint", "data-provinces": provinces.join(" ") },
              `${t("provinces_of")}: ${provinces.join(", ")} (${t("provinces_hint")})`)
          : null)
    );
    if (can("consul")) {
      reachInTurn(`/v1/advisories/${advisory.id}/preview`, wanted)
        .then((p) => p && (reach.textContent = `${t("reach")}: ${p.citizens}`))
        .catch(() => {});
    }
  }
  if (!advisories.length) list.append(el("li", {}, t("none")));
  if (can("consul")) await showHelpMessages();
  const counts = await api("/v1/registry/counts");
  const rows = Object.entries(counts.by_country || counts.countries || counts || {})
    .filter(([, n]) => typeof n === "number")
    .sort((a, b) => b[1] - a[1]);
  $("registry-counts").replaceChildren(...rows.map(([code, n]) => el("tr", {}, el("th", {}, code), el("td", {}, n))));
}

// Someone registered texted "2 …" with no check-in open: the duty staff were told; here the
// other consuls see it too, and reveal (with a reason) who it is and what they wrote.
async function showHelpMessages() {
  const page = await api("/v1/help-messages?limit=50");
  $("help-messages").replaceChildren(page.items.length
    ? el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, [t("received_at"), t("country"), t("contact"), t("messages"), t("duty_waiting"), ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, page.items.map((item) => el("tr", { "data-citizen": item.citizen_id },
          el("td", {}, when(item.received_at)), el("td", {}, item.country || "–"),
          el("td", {}, item.contact || "–", item.sms_opted_out ? el("span", { class: "stopped" }, ` ${t("sms_stopped")}`) : null),
          el("td", {}, item.messages), el("td", {}, item.waiting),
          el("td", {}, el("button", { type: "button", on: { click: () => reveal(item.citizen_id, "revealed-help") } }, t("reveal")))))))
    : el("p", {}, t("none")));
}

// ---- issuing ------------------------------------------------------------------------------

let issue = null;

async function showIssue() {
  if (!can("consul")) {
    $("issue-form").hidden = true;
    flash(t("forbidden"));
    return;
  }
  $("issue-form").hidden = false;
  $("province-codes").dataset.countries = ""; // names in the language now chosen
  renderProvinces();
  if (!issue) {
    issue = { map: newMap("issue-map"), shapes: L.featureGroup() };
    issue.shapes.addTo(issue.map);
    window.anjeonConsole = { ...window.anjeonConsole, issueMap: issue.map }; // for the tests
    issue.map.pm.setGlobalOptions({ snappable: false, continueDrawing: false });
    issue.map.on("pm:create", (event) => {
      issue.shapes.addLayer(event.layer);
      event.layer.on("pm:edit", shapesChanged);
      shapesChanged();
    });
    issue.map.on("pm:remove", shapesChanged);
  }
  await loadCountries(issue, api, toggleCountry);
  renderProvinces(); // their countries outlined, now that the outlines are there
  issue.map.invalidateSize();
}

function toggleCountry(code) {
  if (issue.map.pm.globalDrawModeEnabled()) return;
  const codes = new Set(countryCodes());
  if (codes.has(code)) codes.delete(code);
  else codes.add(code);
  $("f-countries").value = [...codes].join(", ");
  areaChanged();
}

function countryCodes() {
  return $("f-countries").value.split(/[\s,]+/).map((c) => c.trim().toUpperCase()).filter(Boolean);
}

// ---- provinces: ISO 3166-2 codes from GET /v1/geo/subdivisions, one country at a time ----

async function provincesOf(country) {
  if (!/^[A-Z]{2}$/.test(country)) return [];
  if (!state.provinceLists[country]) {
    state.provinceLists[country] = api(`/v1/geo/subdivisions?country=${country}`).catch((error) => {
      delete state.provinceLists[country];
      throw error;
    });
  }
  return state.provinceLists[country];
}

function provinceName(item) {
  return language() === "ko" && item.name_ko ? item.name_ko : item.name;
}

// The datalist offers the provinces of the country typed (the first two letters), else of the
// countries picked.
async function offerProvinces() {
  const typed = $("f-province").value.trim().toUpperCase().slice(0, 2);
  const wanted = /^[A-Z]{2}$/.test(typed) ? [typed] : countryCodes();
  const key = wanted.join(",");
  if ($("province-codes").dataset.countries === key) return;
  try {
    const lists = await Promise.all(wanted.map((c) => provincesOf(c).catch(() => [])));
    $("province-codes").dataset.countries = key;
    $("province-codes").replaceChildren(...lists.flat().map((item) =>
      el("option", { value: item.code }, `${item.code} ${provinceName(item)}`)));
  } catch {
    // the add button says what is wrong
  }
}

async function addProvince() {
  const input = $("f-province");
  const error = $("province-error");
  const code = input.value.trim().toUpperCase();
  if (!code) return;
  let item;
  try {
    item = (await provincesOf(code.slice(0, 2))).find((p) => p.code === code);
  } catch (failure) {
    error.textContent = sentence(failure);
    error.hidden = false;
    return;
  }
  if (!item) {
    error.textContent = `${t("province_unknown")} ${code}`;
    error.hidden = false;
    return;
  }
  error.hidden = true;
  input.value = "";
  if (!state.provinces.some((p) => p.code === code)) state.provinces.push(item);
  renderProvinces();
  areaChanged();
}

function removeProvince(code) {
  state.provinces = state.provinces.filter((p) => p.code !== code);
  renderProvinces();
  areaChanged();
}

function renderProvinces() {
  if (issue && issue.base) {
    resetCountries(issue.base);
    outlineCountries(issue.base, new Set(state.provinces.map((p) => p.code.split("-")[0])), "#1d4ed8");
  }
  $("f-provinces").replaceChildren(...state.provinces.map((item) =>
    el("li", { class: "chip", "data-code": item.code }, `${item.code} ${provinceName(item)}`,
      el("button", { type: "button", "aria-label": `${t("remove_province")} ${item.code}`, on: { click: () => removeProvince(item.code) } }, "×"))));
}

function drawnCircles() {
  return issue.shapes.getLayers().filter((layer) => layer instanceof L.Circle).map((circle) => ({
    lat: Number(circle.getLatLng().lat.toFixed(5)),
    lon: Number(circle.getLatLng().lng.toFixed(5)),
    radius_km: Math.min(2000, Math.max(0.1, Number((circle.getRadius() / 1000).toFixed(2)))),
  }));
}

// Drawn polygons become the GeoJSON field (which may also be pasted or typed).
function shapesChanged() {
  const polygons = issue.shapes.getLayers().filter((layer) => layer instanceof L.Polygon);
  const rings = polygons.map((polygon) => polygon.toGeoJSON().geometry.coordinates);
  let geometry = "";
  if (rings.length === 1) geometry = JSON.stringify({ type: "Polygon", coordinates: rings[0] });
  else if (rings.length > 1) geometry = JSON.stringify({ type: "MultiPolygon", coordinates: rings });
  $("f-geometry").value = geometry;
  $("f-circles").textContent = String(drawnCircles().length);
  areaChanged();
}

function readForm() {
  const pair = (ko, en) => {
    const out = {};
    if ($(ko).value.trim()) out.ko = $(ko).value.trim();
    if ($(en).value.trim()) out.en = $(en).value.trim();
    return out;
  };
  const area = {};
  const codes = countryCodes();
  if (codes.length) area.countries = codes;
  if (state.provinces.length) area.subdivisions = state.provinces.map((p) => p.code);
  const text = $("f-geometry").value.trim();
  if (text) {
    try {
      area.geometry = JSON.parse(text);
    } catch {
      area.geometry = text; // the API says why it is not GeoJSON
    }
  }
  const circles = issue ? drawnCircles() : [];
  if (circles.length) area.circles = circles;
  const name = pair("f-area-ko", "f-area-en");
  if (Object.keys(name).length) area.name = name;
  const level = $("f-level").value;
  const body = {
    title: pair("f-title-ko", "f-title-en"),
    message: pair("f-message-ko", "f-message-en"),
    level: level === "special" ? "special" : Number(level),
    category: $("f-category").value,
    area,
  };
  if ($("f-expires").value) body.expires = new Date($("f-expires").value).toISOString();
  return body;
}

function hasArea(area) {
  return Boolean(area.countries || area.subdivisions || area.geometry || area.circles);
}

function areaChanged() {
  clearTimeout(state.previewTimer);
  state.previewTimer = setTimeout(runPreview, 300);
}

function counts(label, values) {
  const entries = Object.entries(values || {});
  return el("div", {}, el("strong", {}, `${label}: `),
    entries.length ? entries.map(([k, v]) => `${k} ${v}`).join(", ") : "0");
}

function renderPreview(target, preview) {
  target.replaceChildren(
    el("p", { class: "big" }, `${t("citizens")}: `, el("strong", { "data-testid": "preview-citizens" }, preview.citizens)),
    counts(t("by_channel"), preview.by_channel),
    counts(t("by_language"), preview.by_language),
    counts(t("by_country"), preview.by_country),
    el("div", {}, el("strong", {}, `${t("sms_cost")}: `),
      `${t("sms_messages")} ${preview.sms.messages} · ${t("sms_segments")} `,
      Object.entries(preview.sms.segments).map(([k, v]) => `${k} ${v}`).join(", "))
  );
}

async function runPreview() {
  const body = readForm();
  const target = $("preview");
  if (!hasArea(body.area)) {
    target.replaceChildren(el("p", {}, t("preview_empty")));
    return;
  }
  // The preview needs a title and message to price the SMS: stand-ins until they are typed.
  if (!Object.keys(body.title).length) body.title = { ko: "…" };
  if (!Object.keys(body.message).length) body.message = { ko: "…" };
  const seq = ++state.previewSeq;
  try {
    const preview = await reachOf("/v1/advisories/preview", body, () => seq === state.previewSeq);
    if (preview && seq === state.previewSeq) renderPreview(target, preview);
  } catch (error) {
    if (seq === state.previewSeq) target.replaceChildren(el("p", { class: "error", role: "alert" }, sentence(error)));
  }
}

async function sendAdvisory(draft) {
  const result = $("issue-result");
  result.className = "";
  result.textContent = t("loading");
  try {
    const body = readForm();
    if (draft) body.draft = true;
    const advisory = await api("/v1/advisories", { method: "POST", body });
    result.replaceChildren(
      `${t("issued")} `, el("strong", { "data-status": advisory.status }, t(`status_${advisory.status}`)), " ",
      el("a", { href: `#/advisory/${advisory.id}` }, t("open"))
    );
  } catch (error) {
    result.className = "error";
    result.textContent = sentence(error);
  }
}

// ---- the approval queue -------------------------------------------------------------------

// All of what is approved, not the page's language alone: every language's words side by
// side, and the area's parts as the API holds them. A probe's Korean text was harmless while
// its English one linked to a phishing page, and its area's name said "central Bangkok" over
// five whole countries; the second pair of eyes saw only the Korean and the name.
function proposalDetails(content) {
  const area = content.area || {};
  // Every language any part is written in: a title in Korean alone hid an English message.
  const given = new Set([...Object.keys(content.title || {}), ...Object.keys(content.message || {})]);
  if (area.description_ko) given.add("ko");
  if (area.description) given.add("en");
  const languages = [...given].sort((a, b) => (a === "ko" ? -1 : b === "ko" ? 1 : a.localeCompare(b)));
  const areaWords = (lang) => (lang === "ko" ? area.description_ko || area.description : area.description) || "";
  const words = el("table", { class: "proposal-words", "data-testid": "proposal-words" },
    el("caption", {}, t("approve_all_of_it")),
    el("tbody", {}, languages.map((lang) =>
      el("tr", { "data-language": lang },
        el("th", { scope: "row", lang }, lang),
        el("td", { lang },
          el("strong", {}, (content.title || {})[lang] || ""),
          el("p", {}, (content.message || {})[lang] || ""),
          areaWords(lang) ? el("p", { class: "hint" }, `${t("area")}: ${areaWords(lang)}`) : null)))));
  const shapes = area.geometry
    ? (area.geometry.type === "MultiPolygon" ? area.geometry.coordinates.length : 1)
    : 0;
  const parts = [
    ["parts_countries", (area.countries || []).join(", ")],
    ["parts_provinces", (area.subdivisions || []).join(", ")],
    ["parts_shapes", shapes ? String(shapes) : ""],
    ["parts_circles", (area.circles || []).map((c) => `${c.radius_km} km @ ${c.lat}, ${c.lon}`).join("; ")],
    ["parts_zones", (area.zones || []).length ? String(area.zones.length) : ""],
  ].filter(([, value]) => value);
  const facts = el("dl", { class: "proposal-parts", "data-testid": "proposal-parts" },
    el("dt", {}, t("area_parts")), el("dd", {}, parts.length ? "" : "–"),
    parts.flatMap(([key, value]) => [el("dt", { "data-part": key }, t(key)), el("dd", {}, value)]),
    el("dt", {}, t("takes_effect")), el("dd", {}, when(content.effective)),
    el("dt", {}, t("ends")), el("dd", {}, content.expires ? when(content.expires) : t("never_ends")));
  return [
    content.exercise ? el("p", { class: "flash", "data-testid": "exercise" }, t("exercise_flag")) : null,
    content.alerts_citizens === false ? el("p", { class: "hint" }, t("alerts_nobody")) : null,
    words,
    facts,
  ];
}

async function showQueue() {
  const turn = state.routeSeq;
  const page = await api("/v1/advisories?status=pending_approval&limit=500");
  const wanted = previewRound("queue", turn);
  const list = $("queue-list");
  list.replaceChildren();
  if (!page.items.length) list.append(el("li", {}, t("none")));
  for (const advisory of page.items) {
    const pending = advisory.pending || {};
    const content = pending.content || advisory;
    const preview = el("div", { class: "preview" }, t("loading"));
    const reason = el("input", { id: `reason-${advisory.id}`, minlength: "3" });
    const message = el("p", { role: "status" });
    const decide = async (action) => {
      try {
        // Approve names the proposal read here: if it was replaced since, the API says 409.
        const body =
          action === "reject"
            ? { reason: reason.value }
            : { proposal_id: pending.id ?? 0 }; // nothing read: the API's own 409
        await api(`/v1/advisories/${advisory.id}/${action}`, { method: "POST", body });
        message.className = "";
        message.textContent = t(action === "approve" ? "approved" : "rejected");
        // The card leaves the queue: what was done stays said above it (a review saw the
        // approved card vanish with no word).
        flash(`${t(action === "approve" ? "approved" : "rejected")} ${localised(content.title)}`, "ok");
        setTimeout(showQueue, 800);
      } catch (error) {
        message.className = "error";
        message.textContent = sentence(error);
      }
    };
    // The proposer's own proposal waits for someone else: no Approve or Reject that answers
    // 403 (the proposer cancels it instead, on its page).
    const own = state.me && (pending.proposed_by || advisory.issued_by) === state.me.name;
    const actions = !can("consul")
      ? null
      : own
        ? el("div", { class: "row" }, el("span", { class: "hint", "data-testid": "own-proposal" }, t("own_proposal")))
        : el("div", { class: "row" },
            el("button", { type: "button", class: "primary", on: { click: () => decide("approve") } }, t("approve")),
            el("label", { for: `reason-${advisory.id}` }, t("reason")), reason,
            el("button", { type: "button", on: { click: () => decide("reject") } }, t("reject")));
    list.append(el("li", { class: `card level-${content.level}`, "data-advisory": advisory.id },
      el("h3", {}, el("a", { href: `#/advisory/${advisory.id}` }, localised(content.title))),
      el("p", {}, levelName(content.level), " · ", `${t("proposed_by")}: ${pending.proposed_by || advisory.issued_by}`,
        " · ", `${t("proposed_at")}: ${when(pending.proposed_at)}`),
      areaName(content.area) ? el("p", { "data-testid": "area-name" }, `${t("area")}: ${areaName(content.area)}`) : null,
      proposalDetails(content),
      preview, actions, message));
    if (can("consul")) {
      reachInTurn(`/v1/advisories/${advisory.id}/preview`, wanted)
        .then((p) => p && renderPreview(preview, p))
        .catch((error) => (preview.textContent = sentence(error)));
    } else preview.remove();
  }
}

// ---- one advisory -------------------------------------------------------------------------

// Whether the page shows advisory `id` now. An answer that comes back after the staff member
// has moved on (to the map, or to another advisory) must not be drawn over that page, nor
// start polling the advisory left behind.
function showing(id) {
  const [, view, shown] = (location.hash || "").split("/");
  return view === "advisory" && shown === String(id);
}

async function showAdvisory(id) {
  const turn = state.routeSeq;
  hideRevealed();
  state.heardAt = null;
  $("advisory-updated").textContent = "";
  const advisory = await api(`/v1/advisories/${id}`);
  if (!showing(id)) return;
  $("advisory-head").replaceChildren(
    el("h2", {}, localised(advisory.title)),
    el("p", {}, el("span", { class: "badge", style: `background:${LEVEL_COLOURS[advisory.level]}` }, levelName(advisory.level)),
      " ", `${t("status")}: `, el("strong", { id: "advisory-status" }, t(`status_${advisory.status}`)),
      " · ", `${t("issued_by")}: ${advisory.issued_by}`, advisory.rejected_reason ? ` · ${t("reason")}: ${advisory.rejected_reason}` : ""),
    el("p", {}, localised(advisory.message)),
    // replaceChildren writes a null as the text "null": only what there is goes in.
    ...(advisory.pending
      ? [el("section", { class: "card", "data-testid": "pending" },
          el("h3", {}, t("queue_heading")), proposalDetails(advisory.pending.content))]
      : [])
  );
  const actions = $("advisory-actions");
  actions.replaceChildren();
  const live = !["cancelled", "expired", "rejected"].includes(advisory.status);
  if (can("consul") && advisory.status === "draft") {
    actions.append(el("button", { type: "button", class: "primary", on: { click: () => act(id, "submit") } }, t("submit_draft")));
  }
  if (can("consul") && live) {
    actions.append(el("button", { type: "button", class: "danger", on: { click: () => {
      if (confirm(t("confirm_cancel"))) act(id, "cancel", "cancelled");
    } } }, t("cancel_advisory")));
  }
  const revisions = await api(`/v1/advisories/${id}/revisions`).catch(() => []);
  if (!showing(id)) return;
  $("revisions").replaceChildren(...(revisions.items || revisions).map((r) =>
    el("li", {}, `#${r.revision} ${named("change_", r.change)} · ${r.changed_by} · ${when(r.created_at)}`)));
  $("start-rollcall").onclick = () => startRollcall(id);
  // A cancelled advisory asks nobody (the API answers 409); a draft or a rejected one told nobody.
  $("start-rollcall").hidden = !can("consul") || ["cancelled", "rejected", "draft"].includes(advisory.status);
  if (state.rollcallAdvisory !== id) {
    // Another advisory: its roll call starts unfiltered, on its first page.
    state.rollcallAdvisory = id;
    state.rollcallOffset = 0;
    state.failedOffset = 0;
    for (const filter of ["rollcall-country", "rollcall-answer", "rollcall-taken"]) $(filter).value = "";
  }
  for (const filter of ["rollcall-country", "rollcall-answer", "rollcall-taken"]) {
    $(filter).onchange = () => {
      state.rollcallOffset = 0;
      refreshAdvisory(id);
    };
  }
  for (const [list, offset, size] of [["rollcall", "rollcallOffset", rollcallPage], ["failed", "failedOffset", failedPage]]) {
    $(`${list}-previous`).onclick = () => {
      state[offset] = Math.max(0, state[offset] - size());
      refreshAdvisory(id);
    };
    $(`${list}-next`).onclick = () => {
      state[offset] += size();
      refreshAdvisory(id);
    };
  }
  $("test-send-form").onsubmit = (event) => {
    event.preventDefault();
    testSend(id);
  };
  await refreshAdvisory(id);
  if (turn !== state.routeSeq || !showing(id)) return; // left meanwhile: no poll for this one
  pollAdvisory(id, turn);
}

// An open advisory asks for its delivery and roll call again every 3 s, or ten times as long
// as the last answer took, at most 30 s apart: a roll call of 200,000 citizens takes most of a
// second of the server's time, and a room of open consoles must not fill its CPU in a crisis.
// Never while the tab is hidden, one request at a time, and none waited for longer than 20 s
// (a lost connection must not stop the page for good); the page says when it last heard.
const setting = (name, otherwise) => (window.anjeonConsole && window.anjeonConsole[name]) || otherwise;
const pollMs = () => setting("pollMs", 3000);

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
  state.pollSeq += 1; // a refresh in flight does not start another round
}

function pollAdvisory(id, turn) {
  stopPolling(); // after an action the page is shown again: one poll, not two
  const round = state.pollSeq;
  const live = () => round === state.pollSeq && turn === state.routeSeq;
  const next = async () => {
    let wait = pollMs();
    if (!document.hidden) {
      const started = performance.now();
      await refreshAdvisory(id, { timeoutMs: setting("pollTimeoutMs", 20000) }).catch((error) => {
        if (live()) stale(error);
      });
      wait = Math.min(Math.max(wait, 10 * (performance.now() - started)), setting("pollMaxMs", 30000));
    }
    if (live()) state.pollTimer = setTimeout(next, wait);
  };
  state.pollTimer = setTimeout(next, pollMs());
}

async function act(id, action, done) {
  try {
    await api(`/v1/advisories/${id}/${action}`, { method: "POST" });
    if (done) flash(t(done), "ok");
    if (showing(id)) await showAdvisory(id);
  } catch (error) {
    flash(sentence(error));
  }
}

// Alerts that reached nobody: listed on the advisory's page, each with "retry".
const ATTENTION = ["failed", "undelivered", "expired"];
const FUNNEL = ["queued", "claimed", "retry_wait", "deferred", "sent", "delivered", "failed", "undelivered", "expired", "maybe_sent"];

// When the advisory's figures were last fetched; a failed refresh says how old they are.
function heard() {
  state.heardAt = new Date();
  const note = $("advisory-updated");
  note.className = "muted";
  note.textContent = `${t("updated_at")} ${clock(state.heardAt)}`;
}

function stale(error) {
  const note = $("advisory-updated");
  note.className = "stale";
  const since = state.heardAt ? ` ${clock(state.heardAt)}` : "";
  note.textContent = `${t("not_updated_since")}${since}: ${sentence(error)}`;
}

function deliveryTable(counts, attributes) {
  const statuses = [...new Set([...FUNNEL.filter((s) => s in counts), ...Object.keys(counts)])];
  const channels = [...new Set(Object.values(counts).flatMap((c) => Object.keys(c)))].sort();
  return statuses.length
    ? el("table", { class: "grid", ...attributes },
        el("thead", {}, el("tr", {}, el("th", {}, t("status")), channels.map((c) => el("th", {}, named("channel_", c))))),
        el("tbody", {}, statuses.map((s) => el("tr", { "data-status": s }, el("th", {}, named("alert_", s)),
          channels.map((c) => el("td", {}, counts[s][c] || 0))))))
    : el("p", {}, t("none"));
}

async function refreshAdvisory(id, { timeoutMs } = {}) {
  if (!can("consul")) {
    $("delivery").textContent = t("forbidden");
    return;
  }
  // The counts, and the alerts that need a consul's eye (failed, undelivered, expired): asked
  // for by status, however old, not picked out of the newest few hundred of a large send.
  const wanted = new URLSearchParams({ limit: failedPage(), offset: state.failedOffset });
  for (const status of ATTENTION) wanted.append("status", status);
  const alerts = await api(`/v1/advisories/${id}/alerts?${wanted}`, { timeoutMs });
  if (!showing(id)) return;
  if (!alerts.items.length && alerts.offset > 0 && alerts.total > 0) {
    // Retried ones left this last page: go back to the new last page.
    state.failedOffset = Math.floor((alerts.total - 1) / failedPage()) * failedPage();
    return refreshAdvisory(id, { timeoutMs });
  }
  // One table a revision when there are several, and a roll call's asks apart: an
  // all-clear's sends, or a second "are you safe?", summed with the warning's would read as
  // more people told.
  const revisions = alerts.by_revision || [];
  const asked = (r) => Object.keys(r.asks || {}).length > 0;
  // Its rows were deleted under the retention rule: the counts are those kept, no row is left.
  const forgotten = alerts.rows_forgotten_at
    ? [el("p", { class: "flash", "data-testid": "rows-forgotten" }, `${t("rows_forgotten")} ${when(alerts.rows_forgotten_at)}`)]
    : [];
  $("delivery").replaceChildren(...forgotten, ...(revisions.length > 1 || revisions.some(asked)
    ? revisions.flatMap((r) => [
        el("h4", { "data-revision": r.revision, "data-change": r.change },
          `${named("revision_", r.change)} (${t("revision")} ${r.revision})`),
        deliveryTable(r.counts, { "data-revision": r.revision }),
        ...(asked(r) ? [el("h5", {}, t("asks")), deliveryTable(r.asks, { "data-revision": r.revision, "data-asks": "" })] : [])])
    : [deliveryTable(alerts.counts, {})]));
  $("failed").replaceChildren(alerts.items.length
    ? el("ul", {}, alerts.items.map((a) => el("li", { "data-alert-status": a.status },
        `${named("channel_", a.channel)} ${a.contact || ""} ${named("alert_", a.status)} ${a.error_code || ""} `,
        el("button", { type: "button", on: { click: () => retry(a.id, id) } }, t("retry")))))
    : el("p", {}, t("none")));
  showPages("failed", alerts);
  const country = $("rollcall-country").value;
  const query = new URLSearchParams({ limit: rollcallPage(), offset: state.rollcallOffset });
  if (country) query.set("country", country);
  if ($("rollcall-answer").value) query.set("answer", $("rollcall-answer").value);
  if ($("rollcall-taken").value) query.set("taken", $("rollcall-taken").value);
  const rollcall = await api(`/v1/advisories/${id}/rollcall?${query}`, { timeoutMs });
  if (!showing(id)) return;
  if (!rollcall.items.length && rollcall.offset > 0 && rollcall.total > 0) {
    // Rows left the filter while this last page was shown: go back to the new last page.
    state.rollcallOffset = Math.floor((rollcall.total - 1) / rollcallPage()) * rollcallPage();
    return refreshAdvisory(id, { timeoutMs });
  }
  renderRollcall(rollcall, country, id);
  heard();
}

// Who is handling a citizen who needs help: "Take" it, or the consul's name (and "Give
// back" for one's own), so that two consuls do not call one person while nobody calls the next.
function takenCell(id, row) {
  // A safe from a page keeps its consul (a link can be leaked): they call, then give it back.
  if (row.answer !== "help" && !row.taken_by) return "–";
  const path = `/v1/advisories/${id}/rollcall/${row.citizen_id}/take`;
  const change = (method) => async () => {
    try {
      await api(path, { method });
      await refreshAdvisory(id);
    } catch (error) {
      flash(sentence(error));
      await refreshAdvisory(id);
    }
  };
  const mine = state.me && row.taken_by === state.me.name;
  // Reached them and they are safe: closes the case (a page's safe alone does not; see safeSaid).
  const confirmSafe = row.answer === "help" && (!row.taken_by || mine || can("admin"))
    ? el("button", { type: "button", on: { click: async () => {
        if (!confirm(t("confirm_safe_question"))) return;
        try {
          // Their newest help as shown: one answered since is refused, to be read first.
          const body = { seen_help_at: row.latest_help_at };
          await api(`/v1/advisories/${id}/rollcall/${row.citizen_id}/confirm-safe`, { method: "POST", body });
          flash(t("confirmed_safe"), "ok");
        } catch (error) {
          flash(sentence(error));
        }
        await refreshAdvisory(id);
      } } }, t("confirm_safe"))
    : null;
  if (!row.taken_by) {
    if (row.erased) return confirmSafe || "–"; // nothing left to call
    return [el("button", { type: "button", class: "primary", on: { click: change("POST") } }, t("take")), confirmSafe];
  }
  return [
    el("span", { class: "taken" }, `${row.taken_by} · ${when(row.taken_at)}`),
    mine || can("admin") ? el("button", { type: "button", on: { click: change("DELETE") } }, t("give_back")) : null,
    confirmSafe,
  ];
}

// A help with a safe pressed on its page since: still help (a link can be leaked) until a
// consul reaches them; the row says so.
function safeSaid(row) {
  // Safe here, while a help of theirs is open under another advisory: that case is not closed.
  // Where their newest help is: a link to that advisory's page.
  const there = () => el("a", { href: `#/advisory/${row.latest_help_advisory}` }, when(row.latest_help_at));
  if (row.answer !== "help") {
    return row.latest_help_at
      ? el("span", { class: "stopped", "data-testid": "help-elsewhere" }, ` ${t("help_open_elsewhere")} `, there())
      : null;
  }
  // A help pressed under another advisory's page since shows only as their newest help.
  const later = row.latest_help_at && Date.parse(row.latest_help_at) > Date.parse(row.answered_at)
    ? el("span", { class: "stopped", "data-testid": "help-elsewhere" }, ` ${t("help_elsewhere")} `, there())
    : null;
  const said = row.safe_said_at
    ? el("span", { class: "stopped", "data-testid": "safe-said" }, ` ${t("safe_said")} ${when(row.safe_said_at)}`)
    : null;
  return [later, said];
}

function answeredBy(row) {
  if (!row.channel) return "–";
  return row.confirmed_by ? `${named("channel_", row.channel)} · ${row.confirmed_by}` : named("channel_", row.channel);
}

function renderRollcall(rollcall, country, id) {
  const select = $("rollcall-country");
  // "??" counts those with no country: a count, not a filter the API takes.
  const codes = Object.keys(rollcall.by_country || {}).filter((c) => /^[A-Z]{2}$/.test(c)).sort();
  if (select.options.length !== codes.length + 1) {
    select.replaceChildren(el("option", { value: "" }, t("all_countries")), ...codes.map((c) => el("option", { value: c }, c)));
    select.value = country;
  }
  const c = rollcall.counts;
  $("rollcall").replaceChildren(
    el("p", { class: "tally" }, ["safe", "help", "no_answer", "unreachable"].map((k) =>
      el("span", { class: `tally-${k}`, "data-answer": k }, `${t(k)} `, el("strong", {}, c[k] || 0)))),
    rollcall.items.length
      ? el("table", { class: "grid" },
          el("thead", {}, el("tr", {}, [t("country"), t("contact"), t("answer"), t("channel"), t("answered_at"), t("taken_by"), ""].map((h) => el("th", {}, h)))),
          el("tbody", {}, rollcall.items.map((row) => el("tr", { "data-citizen": row.citizen_id, "data-row-answer": row.answer },
            el("td", {}, row.country || "–"),
            el("td", {}, row.erased ? el("span", { class: "stopped", "data-testid": "erased" }, t("record_erased")) : row.contact || "–",
              row.sms_opted_out ? el("span", { class: "stopped", "data-testid": "sms-stopped" }, ` ${t("sms_stopped")}`) : null,
              // Anyone can make such a record: its help counts, and is weighed with that in mind.
              row.established === false ? el("span", { class: "stopped", "data-testid": "new-record", title: t("new_record_why") }, ` ${t("new_record")}`) : null),
            el("td", {}, t(row.answer), safeSaid(row)),
            el("td", { "data-testid": "answered-by" }, answeredBy(row)), el("td", {}, when(row.answered_at)),
            el("td", { "data-testid": "taken" }, takenCell(id, row)),
            el("td", {}, row.erased ? null : el("button", { type: "button", on: { click: () => reveal(row.citizen_id) } }, t("reveal")))))))
      : el("p", {}, t("none"))
  );
  showPages("rollcall", rollcall);
}

// "Showing 101–200 / 5000" and the previous and next buttons of a paged list.
function showPages(list, page) {
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  $(`${list}-shown`).textContent = `${t("shown_of")} ${first}–${last} / ${page.total}`;
  $(`${list}-previous`).disabled = page.offset === 0;
  $(`${list}-next`).disabled = last >= page.total;
}

async function startRollcall(id) {
  try {
    const round = await api(`/v1/advisories/${id}/rollcall`, { method: "POST" });
    flash(`${t("rollcall_started")} ${round.asked}`, "ok");
  } catch (error) {
    flash(sentence(error));
  }
}

async function retry(alertId, advisoryId) {
  try {
    await api(`/v1/alerts/${alertId}/retry`, { method: "POST" });
    flash(t("retried"), "ok");
    await refreshAdvisory(advisoryId);
  } catch (error) {
    flash(sentence(error));
  }
}

async function reveal(citizenId, where = "revealed") {
  const reason = prompt(t("reveal_reason"));
  if (!reason) return;
  const turn = state.routeSeq;
  try {
    const found = await api(`/v1/citizens/${citizenId}/reveal`, { method: "POST", body: { reason } });
    // Left meanwhile: personal data is not put on a page the staff member has moved away from.
    if (turn === state.routeSeq) showRevealed(found, where);
  } catch (error) {
    flash(sentence(error));
  }
}

function hideRevealed() {
  // Personal data leaves the page as soon as it is not needed.
  for (const id of ["revealed", "revealed-help"]) {
    $(id).hidden = true;
    $(id).replaceChildren();
  }
}

function showRevealed(found, where = "revealed") {
  const contact = (c) => (c ? `${c.address}${c.verified ? "" : ` (${t("unverified")})`}` : "–");
  const box = $(where);
  box.replaceChildren(
    el("h4", {}, `${t("revealed_heading")}: ${found.name || "–"}`),
    el("dl", {},
      el("dt", {}, t("test_phone")),
      el("dd", { "data-testid": "revealed-phone" }, contact(found.phone), found.sms_opted_out_at ? ` · ${t("sms_stopped")}` : ""),
      el("dt", {}, t("test_email")), el("dd", { "data-testid": "revealed-email" }, contact(found.email)),
      el("dt", {}, t("country")), el("dd", {}, (found.location && found.location.country) || "–")),
    el("h4", {}, t("note")),
    // Their words, as text: they are whatever anyone texted us.
    found.said.length
      ? el("ul", {}, found.said.map((said) => el("li", { "data-testid": "said" },
          // Page notes are written by whoever holds the link: said so beside them.
          `${when(said.at)} · ${named("channel_", said.channel)}${said.channel === "web" ? ` (${t("link_unverified")})` : ""} · ${t(said.answer)}: `,
          el("q", {}, said.words))))
      : el("p", {}, t("none")),
    el("button", { type: "button", on: { click: hideRevealed } }, t("close"))
  );
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}

async function testSend(id) {
  const body = { language: language() };
  if ($("test-phone").value.trim()) body.phone = $("test-phone").value.trim();
  else body.email = $("test-email").value.trim();
  try {
    const sent = await api(`/v1/advisories/${id}/test-send`, { method: "POST", body });
    $("test-send-result").textContent = `${sent.to}: ${sent.outcome}`;
  } catch (error) {
    $("test-send-result").textContent = sentence(error);
  }
}

// ---- feeds and the audit log --------------------------------------------------------------

async function showFeeds() {
  const items = (await api("/v1/feeds?limit=500")).items;
  $("feeds").replaceChildren(
    el("tr", {}, [t("feed"), t("last_polled"), t("outcome")].map((h) => el("th", {}, h))),
    ...items.map((f) => el("tr", { "data-feed": f.name }, el("td", {}, f.name), el("td", {}, when(f.last_polled_at)),
      // A feed shipped off (config/feeds.toml) says so, rather than "–" as if it had failed;
      // one whose document has not changed past its stale_after_s says that first.
      el("td", {}, f.enabled ? `${f.stale ? `${t("feed_stale")} ${when(f.changed_at)}. ` : ""}${f.last_outcome || "–"} ${f.last_detail || ""}` : t("feed_disabled"),
        // Advisories its source no longer lists still stand until a consul ends them.
        ...(f.unlisted.length ? [el("p", { "data-unlisted": f.unlisted.length }, `${t("feed_unlisted")} `,
          ...f.unlisted.flatMap((id, i) => [i ? ", " : "", el("a", { href: `#/advisory/${id}` }, id.slice(0, 8))]))] : [])))));
}

const AUDIT_PAGE = 100;

// Without "show reads", the plain reads are left out: an open console polls them every few
// seconds, and they buried an approval and a cancel within two minutes (an operator's review).
async function showAudit() {
  const query = new URLSearchParams({ limit: String(AUDIT_PAGE), offset: String(state.auditOffset || 0) });
  if (!$("audit-reads").checked) query.set("reads", "false");
  // Later pages stay below the first page's newest entry: entries written meanwhile (this
  // very read's among them) must not shift them (a review saw rows repeat or go missing).
  if (state.auditOffset && state.auditUpTo) query.set("up_to", String(state.auditUpTo));
  for (const name of ["actor", "action", "subject"]) {
    const value = $(`audit-${name}`).value.trim();
    if (value) query.set(name, value);
  }
  const page = await api(`/v1/audit?${query}`);
  const items = page.items || [];
  if (!state.auditOffset) state.auditUpTo = items.length ? items[0].id : null;
  $("audit").replaceChildren(
    el("tr", {}, [t("when"), t("who"), t("what"), t("subject")].map((h) => el("th", {}, h))),
    ...items.map((e) => el("tr", {}, el("td", {}, when(e.at || e.created_at)),
      el("td", {}, `${e.actor || ""} (${e.role || ""})`), el("td", {}, e.action || ""),
      el("td", {}, `${e.subject || ""} ${e.reason || ""}`))));
  const offset = page.offset || 0;
  $("audit-shown").textContent = items.length ? `${offset + 1}–${offset + items.length} / ${page.total}` : `0 / ${page.total}`;
  $("audit-newer").disabled = offset === 0;
  $("audit-older").disabled = offset + items.length >= page.total;
}

function auditFrom(offset) {
  state.auditOffset = Math.max(0, offset);
  showAudit().catch((error) => flash(sentence(error)));
}

// ---- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  setLanguage(language());
  $("lang").addEventListener("click", () => {
    setLanguage(language() === "ko" ? "en" : "ko");
    route();
  });
  $("logout").addEventListener("click", logOut);
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await logIn($("key").value.trim());
      $("key").value = "";
      freshPage("#/map");
    } catch (error) {
      flash(sentence(error));
    }
  });
  $("issue-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sendAdvisory(false);
  });
  $("save-draft").addEventListener("click", () => sendAdvisory(true));
  $("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    auditFrom(0);
  });
  $("audit-reads").addEventListener("change", () => auditFrom(0));
  $("audit-older").addEventListener("click", () => auditFrom((state.auditOffset || 0) + AUDIT_PAGE));
  $("audit-newer").addEventListener("click", () => auditFrom((state.auditOffset || 0) - AUDIT_PAGE));
  for (const id of ["f-countries", "f-geometry", "f-level", "f-title-ko", "f-title-en", "f-message-ko", "f-message-en", "f-area-ko", "f-area-en"]) {
    $(id).addEventListener("input", areaChanged);
  }
  $("f-province").addEventListener("input", (event) => {
    offerProvinces();
    // A pick from the list adds it at once; typing needs Enter or "Add".
    if (event.inputType === "insertReplacementText") {
      const code = $("f-province").value.trim().toUpperCase();
      if (/^[A-Z]{2}-[A-Z0-9]{1,3}$/.test(code)) {
        provincesOf(code.slice(0, 2)).then((list) => list.some((p) => p.code === code) && addProvince()).catch(() => {});
      }
    }
  });
  $("f-province").addEventListener("focus", offerProvinces);
  $("f-province").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addProvince();
    }
  });
  $("add-province").addEventListener("click", addProvince);
  $("draw-polygon").addEventListener("click", () => issue.map.pm.enableDraw("Polygon"));
  $("draw-circle").addEventListener("click", () => issue.map.pm.enableDraw("Circle"));
  $("clear-shapes").addEventListener("click", () => {
    issue.shapes.clearLayers();
    shapesChanged();
  });
  window.addEventListener("hashchange", () => {
    flash("");
    route();
  });
  if (sessionStorage.getItem("anjeon-key")) {
    try {
      state.me = await api("/v1/staff/me");
    } catch (error) {
      // Only a refused key is forgotten: a 429, a 503 or a lost connection right after
      // signing in must not sign the person out. The page asks again by itself, and offers
      // to sign out meanwhile (a shared workstation must not keep the key unseen).
      if (error instanceof ApiError && error.status === 401) sessionStorage.removeItem("anjeon-key");
      else state.retrying = setTimeout(() => location.reload(), setting("signInRetryMs", 5000));
      flash(sentence(error));
    }
  }
  route();
});
