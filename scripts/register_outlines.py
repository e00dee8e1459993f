"""Writes assets/countries.geojson, the enrolment page's base map: the same simplified country
outlines `GET /v1/geo/countries` gives the console, as a static file, because that endpoint
takes a staff key and /register is public. Run again when the shipped boundaries change:

    .venv/bin/python scripts/register_outlines.py
"""

from pathlib import Path

from service.web.geo_router import _countries_geojson

TARGET = Path(__file__).resolve().parent.parent / "service/web/register/assets/countries.geojson"


def main() -> None:
    data = _countries_geojson()
    TARGET.write_bytes(data)
    print(f"{TARGET}: {len(data) // 1024} KB")


if __name__ == "__main__":
    main()
