/* Step 3: the citizen's own record with the manage token: read (GET), correct (PATCH), add a
   trip (PATCH stays), erase (DELETE). The token lives only in sessionStorage (this tab). */
(function () {
  "use strict";
  var A = window.Anjeon;
  var t = function (key, vars) { return window.I18N.t(key, vars); };
  var $ = function (id) { return document.getElementById(id); };
  var KEY = "anjeon.record";
  var record = null;

  A.session = {
    save: function (id, token) { sessionStorage.setItem(KEY, JSON.stringify({ id: id, token: token })); },
    load: function () {
      try { return JSON.parse(sessionStorage.getItem(KEY)) || null; } catch (e) { return null; }
    },
    forget: function () { sessionStorage.removeItem(KEY); },
  };

  function path() { return "/v1/citizens/" + encodeURIComponent(A.session.load().id); }
  function token() { return A.session.load().token; }

  function place(p) {
    if (!p) return t("none");
    var where = p.country ? A.countryName(p.country) : "";
    if (p.lat !== null && p.lat !== undefined) where += (where ? " · " : "") + p.lat + ", " + p.lon;
    return where || t("none");
  }

  function channelNames(list) {
    if (!list.length) return t("none");
    return list.map(function (c) { return c === "sms" ? t("sms") : t("emailChannel"); }).join(", ");
  }

  function renderRecord() {
    var dl = $("record");
    dl.textContent = "";
    if (!record) return;
    var statusText = t("statusValue")[record.status] || record.status;
    var rows = [
      ["status", statusText],
      ["name", record.name],
      ["phone", record.phone || t("none")],
      ["email", record.email || t("none")],
      ["language", record.language === "ko" ? "한국어" : "English"],
      ["verifiedChannels", channelNames(record.verified)],
      ["pendingChannels", channelNames(record.pending)],
      ["currentPlace", place(record.location)],
      ["quietHours", record.quiet_hours ? record.quiet_hours.from + "–" + record.quiet_hours.to : t("quietNone")],
      ["exercises", record.exercises ? "✓" : "✗"],
      ["trips", record.stays.length ? record.stays.map(function (s) {
        return place(s) + ": " + s.from + " – " + s.to;
      }).join("; ") : t("none")],
    ];
    rows.forEach(function (row) {
      var dt = document.createElement("dt");
      dt.textContent = t(row[0]);
      var dd = document.createElement("dd");
      dd.textContent = row[1];
      if (row[0] === "status") dd.id = "record-status";
      dl.append(dt, dd);
    });
    $("manage-verify").hidden = record.pending.length === 0;
  }

  function fillEdit() {
    $("edit-name").value = record.name;
    $("edit-phone").value = record.phone || "";
    $("edit-email").value = record.email || "";
    $("edit-language").value = record.language;
    $("edit-exercises").checked = record.exercises;
  }

  function say(message) { $("manage-message").textContent = message; }

  function load(onFail) {
    var session = A.session.load();
    if (!session) return A.showStep("step-open");
    A.api("GET", path(), undefined, token()).then(function (result) {
      if (!result.ok) return onFail(result);
      record = result.body;
      renderRecord();
      fillEdit();
      A.clearErrors($("step-manage"), $("manage-summary"));
      say("");
      A.showStep("step-manage");
    });
  }

  A.openManage = function () {
    load(function (result) {
      A.showStep("step-open");
      A.showErrors($("open-form"), $("open-summary"),
        result.status === 404 || result.status === 401 ? { status: 400, body: { detail: t("notFound") } } : result);
    });
  };

  function patch(changes, form, rename, done) {
    A.withProof(function (headers) {
      return A.api("PATCH", path(), changes, token(), headers);
    }, function () {
      $("manage-summary").textContent = t("provingWork");
      $("manage-summary").hidden = false;
    }).then(function (result) {
      if (!result.ok) {
        A.showErrors(form, $("manage-summary"), result, rename);
        return;
      }
      A.clearErrors(form, $("manage-summary"));
      record = result.body;
      renderRecord();
      fillEdit();
      done();
    });
  }

  function edit(event) {
    event.preventDefault();
    var changes = {};
    var was = { name: record.name, phone: record.phone || "", email: record.email || "", language: record.language };
    ["name", "phone", "email", "language"].forEach(function (name) {
      var value = $("edit-" + name).value.trim();
      if (value === was[name]) return;
      changes[name] = value === "" && (name === "phone" || name === "email") ? null : value;
    });
    if ($("edit-exercises").checked !== record.exercises) changes.exercises = $("edit-exercises").checked;
    if (!Object.keys(changes).length) return say(t("nothingChanged"));
    patch(changes, $("edit-form"), null, function () { say(t("saved")); });
  }

  function stayIn(s) {
    var where = s.lat !== null && s.lat !== undefined ? { lat: s.lat, lon: s.lon } : { country: s.country };
    where.from = s.from;
    where.to = s.to;
    return where;
  }

  function addTrip(event) {
    event.preventDefault();
    var n = record.stays.length;
    var stays = record.stays.map(stayIn);
    stays.push({ country: $("trip-country").value, from: $("trip-from").value, to: $("trip-to").value });
    var mine = "stays[" + n + "]";
    var rename = function (field) { return field.indexOf(mine) === 0 ? "trip" + field.slice(mine.length) : field; };
    patch({ stays: stays }, $("trip-form"), rename, function () {
      $("trip-form").reset();
      say(t("tripAdded"));
    });
  }

  /* "Move my current place" → PUT …/location with a country or a latitude and longitude. */
  var moveMap = null;

  function moveKind() {
    return document.querySelector('input[name="move-kind"]:checked').value;
  }

  function showMoveKind() {
    var kind = moveKind();
    document.querySelectorAll("[data-move]").forEach(function (box) {
      box.hidden = box.getAttribute("data-move") !== kind;
    });
    if (kind === "point") {
      moveMap = moveMap || A.placeMap("move-map", $("move-lat"), $("move-lon"));
      moveMap.show();
    }
  }

  function number(text) {
    var trimmed = text.trim();
    // Anything else goes as typed, so the API names what is wrong with it.
    return /^[-+]?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
  }

  function move(event) {
    event.preventDefault();
    var form = $("move-form");
    var where = moveKind() === "point"
      ? { lat: number($("move-lat").value), lon: number($("move-lon").value) }
      : { country: $("move-country").value };
    var rename = function (field) { return field === "body" ? "move" : "move." + field; };
    A.api("PUT", path() + "/location", where, token()).then(function (result) {
      if (!result.ok) return A.showErrors(form, $("manage-summary"), result, rename);
      A.clearErrors(form, $("manage-summary"));
      record = result.body;
      renderRecord();
      fillEdit();
      say(t("moved"));
    });
  }

  A.initManage = function () {
    $("move-form").addEventListener("submit", move);
    document.querySelectorAll('input[name="move-kind"]').forEach(function (radio) {
      radio.addEventListener("change", showMoveKind);
    });
    $("open-form").addEventListener("submit", function (event) {
      event.preventDefault();
      A.session.save($("open-id").value.trim(), $("open-token").value.trim());
      $("open-token").value = "";
      A.openManage();
    });
    $("edit-form").addEventListener("submit", edit);
    $("trip-form").addEventListener("submit", addTrip);
    $("manage-verify").addEventListener("click", function () {
      A.startVerify(record.pending, record.status);
    });
    $("erase").addEventListener("click", function () {
      $("erase-confirm").hidden = false;
      $("erase-yes").focus();
    });
    $("erase-no").addEventListener("click", function () {
      $("erase-confirm").hidden = true;
      $("erase").focus();
    });
    $("erase-yes").addEventListener("click", function () {
      A.api("DELETE", path(), undefined, token()).then(function (result) {
        if (!result.ok) return A.showErrors($("step-manage"), $("manage-summary"), result);
        A.session.forget();
        record = null;
        $("erase-confirm").hidden = true;
        A.showStep("step-erased");
      });
    });
    document.addEventListener("anjeon:language", function () { renderRecord(); });
  };
})();
