/* Talking to the public API, and showing its problem answers (RFC 9457) next to the fields. */
(function () {
  "use strict";
  var t = function (key, vars) { return window.I18N.t(key, vars); };

  /* fetch JSON; resolves {ok, status, body, retryAfter}; a network failure is status 0. */
  function api(method, path, body, token, more) {
    var headers = Object.assign({ Accept: "application/json" }, more || {});
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      var parsed = type.indexOf("json") >= 0 ? response.json() : Promise.resolve(null);
      return parsed.then(function (data) {
        return {
          ok: response.ok,
          status: response.status,
          body: data,
          retryAfter: response.headers.get("Retry-After"),
        };
      });
    }, function () {
      return { ok: false, status: 0, body: null, retryAfter: null };
    });
  }

  /* 'stays.0.to' and 'stays[0].to' name the same field. */
  function normalise(field) {
    return String(field || "body").replace(/\.(\d+)(?=\.|$)/g, "[$1]");
  }

  function clear(container, summary) {
    container.querySelectorAll("[data-error-for]").forEach(function (el) {
      el.textContent = "";
    });
    container.querySelectorAll("[aria-invalid]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
    });
    if (summary) {
      summary.textContent = "";
      summary.hidden = true;
    }
  }

  /* The element for a field, or for the nearest enclosing field ('stays[0].to' → 'stays[0]'). */
  function slotFor(container, field) {
    var path = field;
    while (path) {
      var slot = container.querySelector('[data-error-for="' + path + '"]');
      if (slot) return slot;
      var cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
      path = cut > 0 ? path.slice(0, cut) : "";
    }
    return null;
  }

  function messagesOf(result) {
    if (result.status === 0) return [{ field: "body", message: t("networkError") }];
    if (result.status === 429) {
      return [{ field: "body", message: t("retryAfter", { s: result.retryAfter || "60" }) }];
    }
    var body = result.body || {};
    if (Array.isArray(body.errors) && body.errors.length) return body.errors;
    return [{ field: "body", message: body.detail || body.title || "HTTP " + result.status }];
  }

  /* What the page says of an API error: the API's words (English), or on the Korean page the
     field's Korean advice ('stays[0].to' → stays, 'location.lat' → location.lat), the code's
     tries left, or, for anything else, the API's words. */
  function said(field, message) {
    if (window.I18N.language() !== "ko") return message;
    if (/GEOCODER/.test(message)) return t("noGeocoder");
    var path = field.replace(/\[\d+\]/g, "");
    var advice = t("fieldErrors");
    while (path) {
      if (advice[path]) return advice[path];
      path = path.lastIndexOf(".") > 0 ? path.slice(0, path.lastIndexOf(".")) : "";
    }
    var left = /(\d+) tr(?:y|ies) left/.exec(message);
    if (left) return t("codeWrong", { n: left[1] });
    if (/no tries are left|no longer valid/.test(message)) return t("codeVoid");
    return message;
  }

  /* Each error beside its field (marked aria-invalid), and all of them in the summary. Each
     keeps the API's own message; `shown` is what the page says. */
  function show(container, summary, result, rename) {
    clear(container, summary);
    var errors = messagesOf(result).map(function (error) {
      var field = normalise(error.field);
      var named = rename ? rename(field) : field;
      return { field: named, message: error.message, shown: said(field, error.message) };
    });
    var list = document.createElement("ul");
    errors.forEach(function (error) {
      var slot = slotFor(container, error.field);
      if (slot) {
        // Korean advice is per field: two errors of one field say it once.
        if (slot.textContent.indexOf(error.shown) < 0) {
          slot.textContent = slot.textContent ? slot.textContent + " " + error.shown : error.shown;
        }
        var input = slot.id && container.querySelector('[aria-describedby~="' + slot.id + '"]');
        if (input) input.setAttribute("aria-invalid", "true");
      }
      var item = document.createElement("li");
      // The API's words name their field by its JSON path; the Korean advice names it itself,
      // and a citizen should not read "location.country:" before it.
      var own = error.field === "body" || error.shown !== error.message;
      item.textContent = own ? error.shown : error.field + ": " + error.shown;
      list.appendChild(item);
    });
    if (summary) {
      var title = document.createElement("p");
      title.textContent = t("errorsTitle");
      summary.appendChild(title);
      summary.appendChild(list);
      summary.hidden = false;
    }
    return errors;
  }

  /* Fill every select.countries with the ISO codes, named in the page's language. */
  function fillCountries(root) {
    var language = window.I18N.language();
    var rows = window.ANJEON_COUNTRIES.slice().sort(function (a, b) {
      var left = language === "ko" ? a[1] : a[2];
      var right = language === "ko" ? b[1] : b[2];
      return left.localeCompare(right, language);
    });
    (root || document).querySelectorAll("select.countries").forEach(function (select) {
      var keep = select.value;
      select.textContent = "";
      var blank = document.createElement("option");
      blank.value = "";
      blank.textContent = t("chooseCountry");
      select.appendChild(blank);
      rows.forEach(function (row) {
        var option = document.createElement("option");
        option.value = row[0];
        option.textContent = (language === "ko" ? row[1] : row[2]) + " (" + row[0] + ")";
        select.appendChild(option);
      });
      select.value = keep;
    });
  }

  function countryName(code) {
    var row = window.ANJEON_COUNTRIES.find(function (r) { return r[0] === code; });
    if (!row) return code;
    return (window.I18N.language() === "ko" ? row[1] : row[2]) + " (" + code + ")";
  }

  window.Anjeon = {
    api: api,
    showErrors: show,
    clearErrors: clear,
    fillCountries: fillCountries,
    countryName: countryName,
  };
})();
