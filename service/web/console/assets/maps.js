// Maps on the offline country outlines (GET /v1/geo/countries): no tile server, no network.
"use strict";

// Colours with AA contrast against white text in the legend; fills are translucent on the map.
const LEVEL_COLOURS = { 1: "#1f5fa8", 2: "#8a6d00", 3: "#c2410c", 4: "#b91c1c", special: "#6b21a8" };
const BASE_STYLE = { color: "#6b7280", weight: 0.6, fillColor: "#e5e7eb", fillOpacity: 1 };

let outlinesPromise = null;

function countryOutlines(fetchJson) {
  if (!outlinesPromise) {
    outlinesPromise = fetchJson("/v1/geo/countries").catch((error) => {
      outlinesPromise = null;
      throw error;
    });
  }
  return outlinesPromise;
}

function newMap(elementId) {
  const map = L.map(elementId, { worldCopyJump: true, minZoom: 1, maxZoom: 12, attributionControl: false });
  map.getContainer().style.background = "#bfdbfe"; // the sea
  map.setView([20, 100], 2);
  return map;
}

function baseLayer(map, outlines, onClick) {
  const layer = L.geoJSON(outlines, { style: () => ({ ...BASE_STYLE }) });
  layer.eachLayer((country) => {
    const p = country.feature.properties;
    const name = document.createElement("span"); // text, never HTML
    name.textContent = `${p.code} ${language() === "ko" && p.name_ko ? p.name_ko : p.name}`;
    country.bindTooltip(name, { sticky: true });
    if (onClick) country.on("click", () => onClick(p.code));
  });
  layer.addTo(map);
  return layer;
}

// A map's country layer, loaded once and shared by renders that overlap (switching the language
// while the first render waits for the outlines): none may find the map without its countries.
// A failed load is tried again by the next render.
function loadCountries(view, fetchJson, onClick) {
  if (!view.base && !view.loading) {
    view.loading = countryOutlines(fetchJson)
      .then((outlines) => {
        view.base = baseLayer(view.map, outlines, onClick);
      })
      .finally(() => {
        view.loading = null;
      });
  }
  return view.loading || Promise.resolve();
}

function shadeCountries(layer, codes, colour) {
  layer.eachLayer((country) => {
    if (codes.has(country.feature.properties.code)) {
      country.setStyle({ fillColor: colour, fillOpacity: 0.45 });
    }
  });
}

// No province outlines are shipped: a province's country gets a thick dashed border instead.
function outlineCountries(layer, codes, colour) {
  layer.eachLayer((country) => {
    if (codes.has(country.feature.properties.code)) {
      country.setStyle({ color: colour, weight: 2.5, dashArray: "6 4" });
    }
  });
}

function resetCountries(layer) {
  layer.eachLayer((country) => country.setStyle({ ...BASE_STYLE }));
}

// Draws an advisory's area (geometry and circles; countries are shaded on the base layer).
function areaLayers(area, colour) {
  const layers = [];
  const style = { color: colour, weight: 2, fillColor: colour, fillOpacity: 0.35 };
  if (area.geometry) layers.push(L.geoJSON(area.geometry, { style: () => style }));
  for (const circle of area.circles || []) {
    layers.push(L.circle([circle.lat, circle.lon], { radius: circle.radius_km * 1000, ...style }));
  }
  return layers;
}
