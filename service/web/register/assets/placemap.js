/* A map to pick a place on: the vendored Leaflet (vendor/leaflet/, BSD-2-Clause) over the
   offline country outlines in countries.geojson (made by scripts/register_outlines.py from the outlines
   the service ships): no tile server, no network beyond this page's own files. A click fills
   the latitude and longitude inputs and puts a marker there; keyboard users type them. */
(function () {
  "use strict";
  var A = window.Anjeon;
  var STYLE = { color: "#6b7280", weight: 0.6, fillColor: "#e5e7eb", fillOpacity: 1 };
  var outlines = null;

  function loadOutlines() {
    if (!outlines) {
      outlines = fetch("/register/assets/countries.geojson", { credentials: "omit" }).then(function (r) {
        if (!r.ok) throw new Error("countries.geojson: HTTP " + r.status);
        return r.json();
      });
      outlines.catch(function () { outlines = null; });
    }
    return outlines;
  }

  function inRange(value, limit) {
    var n = Number(String(value).trim());
    return String(value).trim() !== "" && isFinite(n) && Math.abs(n) <= limit ? n : null;
  }

  /* placeMap("map-id", latInput, lonInput) -> {show}: the map is made on the first show(),
     once its box is visible (Leaflet measures it). */
  A.placeMap = function (elementId, lat, lon) {
    var map = null;
    var marker = null;

    function mark() {
      if (!map) return;
      var la = inRange(lat.value, 90);
      var lo = inRange(lon.value, 180);
      if (la === null || lo === null) {
        if (marker) marker.remove();
        marker = null;
        return;
      }
      if (marker) marker.setLatLng([la, lo]);
      else marker = L.marker([la, lo], { keyboard: false, interactive: false }).addTo(map);
    }

    function show() {
      if (map) {
        map.invalidateSize();
        mark();
        return;
      }
      map = L.map(elementId, { worldCopyJump: true, minZoom: 1, maxZoom: 12, attributionControl: false });
      map.setView([20, 100], 2);
      loadOutlines().then(function (geo) {
        L.geoJSON(geo, { style: function () { return STYLE; }, interactive: false }).addTo(map).bringToBack();
      }, function () { /* the map still picks points on the plain sea */ });
      map.on("click", function (event) {
        var where = event.latlng.wrap();
        lat.value = where.lat.toFixed(5);
        lon.value = where.lng.toFixed(5);
        mark();
      });
      lat.addEventListener("input", mark);
      lon.addEventListener("input", mark);
      mark();
    }

    return { show: show };
  };
})();
