"""How many SMS can anonymous requests make the service send? The probes of issue #11, run
through the real app against the fake Twilio (loopback), alerts drained by the dispatcher:

  one      one registration with 20 stays, in 20 countries each under a level-2 advisory
  loop     register, erase, register again with the same number, 10 times
  burst    30 registrations from one client address

Prints SMS accepted by the fake per probe. Usage: .venv/bin/python bench/pumping_probe.py"""

import os
import sys
import tempfile
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.migrate import upgrade
from service.staff import service as staff
from tests.dispatch.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio


def _app(url: str, twilio: FakeTwilio) -> TestClient:
    values = {
        "database_url": url,
        "secret_key": "p" * 40,
        "scheduler_enabled": False,
        "sms_notifier": "twilio",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from": "+15005550006",
        "twilio_api_base": twilio.url,
        "twilio_mps": 0,
    }
    known = set(Settings.model_fields)
    return TestClient(create_app(Settings(**{k: v for k, v in values.items() if k in known})))


COUNTRIES = [
    "JP",
    "TH",
    "VN",
    "PH",
    "ID",
    "MY",
    "SG",
    "KH",
    "LA",
    "MM",
    "IN",
    "NP",
    "LK",
    "MN",
    "CN",
    "TW",
    "HK",
    "FR",
    "DE",
    "IT",
]


def _citizen(phone: str, stays: int = 0) -> dict:
    start = date.today() + timedelta(days=2)
    return {
        "name": "Probe",
        "phone": phone,
        "language": "ko",
        "channels": ["sms"],
        "consent": True,
        "location": {"lat": 35.5, "lon": 139.5},
        "stays": [
            {
                "country": code,
                "from": str(start),
                "to": str(start + timedelta(days=30)),
            }
            for code in COUNTRIES[:stays]
        ],
    }


def probe(name: str) -> int:
    twilio = FakeTwilio().start()
    url = f"sqlite:///{tempfile.mkdtemp()}/probe.db"
    upgrade(url)
    try:
        with _app(url, twilio) as client:
            with client.app.state.session_factory.begin() as session:
                key = staff.create_key(session, name="probe", role="consul").key
            consul = {"Authorization": f"Bearer {key}"}
            for code in COUNTRIES:
                advisory = {
                    "title": {"ko": f"{code} 주의", "en": f"{code}: take care"},
                    "message": {"ko": "주의", "en": "Take care"},
                    "level": 2,
                    "category": "security",
                    "area": {"countries": [code]},
                }
                client.post("/v1/advisories", json=advisory, headers=consul)
            if name == "one":
                client.post("/v1/citizens", json=_citizen("010-5000-0001", stays=20))
            elif name == "loop":
                for _ in range(10):
                    made = client.post("/v1/citizens", json=_citizen("010-5000-0002")).json()
                    token = {"Authorization": f"Bearer {made.get('manage_token', '')}"}
                    client.delete(f"/v1/citizens/{made.get('id')}", headers=token)
            else:
                codes = [
                    client.post("/v1/citizens", json=_citizen(f"010-5001-{i:04d}")).status_code
                    for i in range(30)
                ]
                print(f"  burst answers: {codes.count(201)} x 201, {codes.count(429)} x 429")
            client.app.state.dispatcher.drain()
        return len(twilio.messages)
    finally:
        twilio.stop()


if __name__ == "__main__":
    os.environ.setdefault("ANJEON_LOG_LEVEL", "WARNING")
    for probe_name in ("one", "loop", "burst"):
        print(f"{probe_name}: {probe(probe_name)} SMS")
