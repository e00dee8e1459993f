/* Step 1 (the form → POST /v1/citizens) and step 2 (the codes → …/verify, …/verify/resend). */
(function () {
  "use strict";
  var A = window.Anjeon;
  var t = function (key, vars) { return window.I18N.t(key, vars); };
  var $ = function (id) { return document.getElementById(id); };
  var NO_GEOCODER = "anjeon.noGeocoder";

  /* ---- steps ---------------------------------------------------------------------------- */

  A.showStep = function (id) {
    if (id !== "step-verify") {
      // The token is shown once, on the page right after registering: leaving it forgets it.
      $("token-box").hidden = true;
      $("shown-token").textContent = "";
    }
    document.querySelectorAll("main > section").forEach(function (section) {
      section.hidden = section.id !== id;
    });
    var heading = $(id).querySelector("h1");
    if (heading) heading.focus();
    window.scrollTo(0, 0);
  };

  /* ---- trips ------------------------------------------------------------------------------ */

  var stays = []; // [{country, from, to}], mirrored from the rows before each re-render

  function readStays() {
    stays = stays.map(function (_, i) {
      return {
        country: $("stay-" + i + "-country").value,
        from: $("stay-" + i + "-from").value,
        to: $("stay-" + i + "-to").value,
      };
    });
  }

  function field(id, labelKey, control, errorFor) {
    var box = document.createElement("div");
    var label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = t(labelKey);
    control.id = id;
    control.setAttribute("aria-describedby", "err-" + id);
    var error = document.createElement("p");
    error.className = "error";
    error.id = "err-" + id;
    error.setAttribute("data-error-for", errorFor);
    box.append(label, control, error);
    return box;
  }

  function renderStays() {
    var list = $("stays");
    list.textContent = "";
    stays.forEach(function (stay, i) {
      var item = document.createElement("li");
      item.className = "stay";
      var group = document.createElement("fieldset");
      var legend = document.createElement("legend");
      legend.textContent = t("stayN", { n: i + 1 });
      var country = document.createElement("select");
      country.className = "countries";
      var from = document.createElement("input");
      from.type = "date";
      var to = document.createElement("input");
      to.type = "date";
      var dates = document.createElement("div");
      dates.className = "row";
      dates.append(
        field("stay-" + i + "-from", "from", from, "stays[" + i + "].from"),
        field("stay-" + i + "-to", "to", to, "stays[" + i + "].to")
      );
      var whole = document.createElement("p");
      whole.className = "error";
      whole.setAttribute("data-error-for", "stays[" + i + "]");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary";
      remove.textContent = t("removeStay");
      remove.setAttribute("aria-label", t("removeStay") + " " + (i + 1));
      remove.addEventListener("click", function () {
        readStays();
        stays.splice(i, 1);
        renderStays();
        $("add-stay").focus();
      });
      group.append(legend, field("stay-" + i + "-country", "country", country, "stays[" + i + "].country"), dates, whole, remove);
      item.appendChild(group);
      list.appendChild(item);
      A.fillCountries(item);
      country.value = stay.country;
      from.value = stay.from;
      to.value = stay.to;
    });
  }

  /* ---- the form ------------------------------------------------------------------------- */

  function placeKind() {
    return document.querySelector('input[name="place-kind"]:checked').value;
  }

  var placeMap = null; // made when the point choice is first shown

  function showPlaceKind() {
    var kind = placeKind();
    document.querySelectorAll("[data-place]").forEach(function (box) {
      box.hidden = box.getAttribute("data-place") !== kind;
    });
    if (kind === "point") {
      placeMap = placeMap || A.placeMap("location-map", $("location-lat"), $("location-lon"));
      placeMap.show();
    }
  }

  function number(text) {
    var trimmed = text.trim();
    // Anything else goes as typed, so the API names what is wrong with it.
    return /^[-+]?\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
  }

  function location() {
    var kind = placeKind();
    if (kind === "point") return { lat: number($("location-lat").value), lon: number($("location-lon").value) };
    if (kind === "address") return { address: $("location-address").value };
    return { country: $("location-country").value };
  }

  function body() {
    readStays();
    var data = {
      name: $("name").value,
      language: $("language").value,
      channels: ["sms", "email"].filter(function (c) { return $("channel-" + c).checked; }),
      consent: $("consent").checked,
      location: location(),
      stays: stays
        .filter(function (s) { return s.country || s.from || s.to; })
        .map(function (s) { return { country: s.country, from: s.from, to: s.to }; }),
      quiet_hours: $("quiet-none").checked ? null : { from: $("quiet-from").value, to: $("quiet-to").value },
      exercises: $("exercises").checked,
    };
    if ($("phone").value.trim()) data.phone = $("phone").value;
    if ($("email").value.trim()) data.email = $("email").value;
    return data;
  }

  function hideAddress() {
    $("address-choice").hidden = true;
    if (placeKind() === "address") {
      document.querySelector('input[name="place-kind"][value="country"]').checked = true;
      showPlaceKind();
    }
  }

  function submit(event) {
    event.preventDefault();
    var button = $("submit");
    button.disabled = true;
    var data = body();
    A.withProof(function (headers) {
      return A.api("POST", "/v1/citizens", data, null, headers);
    }, function () {
      // Many registrations from this network: the device proves its work instead.
      $("form-summary").textContent = t("provingWork");
      $("form-summary").hidden = false;
    }).then(function (result) {
      button.disabled = false;
      if (!result.ok) {
        var errors = A.showErrors($("register-form"), $("form-summary"), result);
        var geocoder = errors.find(function (e) {
          return e.field === "location.address" && /GEOCODER/.test(e.message);
        });
        if (geocoder) {
          // This server looks up no addresses: say so, and stop offering it.
          sessionStorage.setItem(NO_GEOCODER, "1");
          hideAddress();
          $("err-location").textContent = geocoder.shown;
        }
        $("form-summary").focus();
        return;
      }
      A.clearErrors($("register-form"), $("form-summary"));
      A.session.save(result.body.id, result.body.manage_token);
      $("shown-id").textContent = result.body.id;
      $("shown-token").textContent = result.body.manage_token;
      $("token-box").hidden = false;
      startVerify(data.channels, result.body.status);
    });
  }

  /* ---- step 2: the codes ------------------------------------------------------------------ */

  function setStatus(status) {
    $("verify-status").textContent = status === "active" ? t("statusActive") : t("statusPending");
  }

  function verifyRow(channel) {
    var row = document.createElement("div");
    row.className = "verify-row";
    var input = document.createElement("input");
    input.inputMode = "numeric";
    input.autocomplete = "one-time-code";
    input.maxLength = 6;
    var label = t("codeFor", { channel: channel === "sms" ? t("sms") : t("emailChannel") });
    var box = field("code-" + channel, "verify", input, "code");
    box.querySelector("label").textContent = label;
    var verify = document.createElement("button");
    verify.type = "button";
    verify.textContent = t("verify");
    var resend = document.createElement("button");
    resend.type = "button";
    resend.className = "secondary";
    resend.textContent = t("resend");
    var other = document.createElement("p");
    other.className = "error";
    other.setAttribute("data-error-for", "body");
    var done = document.createElement("p");
    done.className = "status";
    done.setAttribute("role", "status");
    var buttons = document.createElement("div");
    buttons.className = "buttons";
    buttons.append(verify, resend);
    row.append(box, buttons, other, done);

    function check() {
      var session = A.session.load();
      A.api("POST", "/v1/citizens/" + session.id + "/verify", { channel: channel, code: input.value.trim() }, session.token)
        .then(function (result) {
          if (!result.ok) return A.showErrors(row, null, result);
          A.clearErrors(row, null);
          done.textContent = t("verified");
          input.disabled = verify.disabled = resend.disabled = true;
          setStatus(result.body.status);
        });
    }
    verify.addEventListener("click", check);
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") check();
    });
    resend.addEventListener("click", function () {
      var session = A.session.load();
      resend.disabled = true; // a second click while the device proves its work asks twice
      A.withProof(function (headers) {
        return A.api("POST", "/v1/citizens/" + session.id + "/verify/resend", { channel: channel }, session.token, headers);
      }, function () {
        done.textContent = t("provingWork");
      }).then(function (result) {
        resend.disabled = input.disabled; // verified meanwhile: nothing more to resend
        done.textContent = "";
        if (!result.ok) return A.showErrors(row, null, result);
        A.clearErrors(row, null);
        done.textContent = t("resent");
      });
    });
    return row;
  }

  function startVerify(channels, status) {
    var list = $("verify-list");
    list.textContent = "";
    channels.forEach(function (channel) { list.appendChild(verifyRow(channel)); });
    setStatus(status);
    A.showStep("step-verify");
  }
  A.startVerify = startVerify;

  /* ---- start ------------------------------------------------------------------------------ */

  function relabel() {
    A.fillCountries(document);
    readStays();
    renderStays();
  }

  window.I18N.setLanguage(window.I18N.initial());
  $("language").value = window.I18N.language();
  relabel();
  showPlaceKind();
  if (sessionStorage.getItem(NO_GEOCODER)) hideAddress();

  document.addEventListener("anjeon:language", relabel);
  $("language").addEventListener("change", function () { window.I18N.setLanguage($("language").value); });
  $("ui-language").addEventListener("click", function () {
    var next = window.I18N.language() === "ko" ? "en" : "ko";
    if ($("step-form").hidden === false) $("language").value = next;
    window.I18N.setLanguage(next);
  });
  document.querySelectorAll('input[name="place-kind"]').forEach(function (radio) {
    radio.addEventListener("change", showPlaceKind);
  });
  $("quiet-none").addEventListener("change", function () {
    $("quiet-from").disabled = $("quiet-to").disabled = $("quiet-none").checked;
  });
  $("add-stay").addEventListener("click", function () {
    readStays();
    stays.push({ country: "", from: "", to: "" });
    renderStays();
    $("stay-" + (stays.length - 1) + "-country").focus();
  });
  $("use-position").addEventListener("click", function () {
    if (!navigator.geolocation) return ($("err-location").textContent = t("positionFailed"));
    navigator.geolocation.getCurrentPosition(function (position) {
      $("location-lat").value = position.coords.latitude.toFixed(5);
      $("location-lon").value = position.coords.longitude.toFixed(5);
    }, function () {
      $("err-location").textContent = t("positionFailed");
    });
  });
  $("register-form").addEventListener("submit", submit);
  $("go-open").addEventListener("click", function () { A.showStep("step-open"); });
  $("go-register").addEventListener("click", function () { A.showStep("step-form"); });
  $("erased-again").addEventListener("click", function () { A.showStep("step-form"); });
  $("to-manage").addEventListener("click", function () { A.openManage(); });
  A.initManage();
  $("form-summary").tabIndex = -1;
})();
