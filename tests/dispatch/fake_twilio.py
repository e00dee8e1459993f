"""A fake Twilio REST API on 127.0.0.1 for the real twilio SDK: it accepts, refuses or stalls
message creation as scripted, lists what it accepted, and records every request."""

import base64
import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-twilio-auth-token"


@dataclass
class Answer:
    """What the fake does with one create request."""

    status: int = 201
    code: int | None = None
    retry_after: str | None = None
    stall_s: float = 0.0  # accept the message, then answer this late (a client timeout)


@dataclass
class FakeTwilio:
    messages: list[dict] = field(default_factory=list)  # accepted, in order
    posts: list[dict] = field(default_factory=list)  # every create request
    lists: list[dict] = field(default_factory=list)  # every list request
    scripts: dict[str, deque] = field(default_factory=dict)  # by To number
    default: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    _sids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, to: str | None, *answers: Answer) -> None:
        """Answers for the next create requests to `to` (or to anyone), then 201s."""
        with self.lock:
            (self.scripts.setdefault(to, deque()) if to else self.default).extend(answers)

    def bodies_to(self, to: str) -> list[str]:
        with self.lock:
            return [m["body"] for m in self.messages if m["to"] == to]

    def _next_answer(self, to: str) -> Answer:
        with self.lock:
            queue = self.scripts.get(to) or self.default
            return queue.popleft() if queue else Answer()

    def start(self) -> "FakeTwilio":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in one segment: otherwise Nagle and delayed ACKs add ~40 ms.
            disable_nagle_algorithm = True
            wbufsize = 65536

            def log_message(self, *args: object) -> None:
                pass

            def _authorised(self) -> bool:
                expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
                return self.headers.get("Authorization") == f"Basic {expected}"

            def _reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                path = urlparse(self.path).path
                if (
                    not self._authorised()
                    or path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
                ):
                    self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    return
                with fake.lock:
                    fake.posts.append(form)
                if not form.get("To") or not form.get("Body"):
                    # As Twilio answers a request cut short (a client killed mid-send).
                    self._reply(
                        400, {"code": 21604, "message": "'To' and 'Body' required", "status": 400}
                    )
                    return
                answer = fake._next_answer(form.get("To", ""))
                if answer.status >= 300:
                    headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
                    self._reply(
                        answer.status,
                        {
                            "code": answer.code or answer.status,
                            # Twilio's own texts quote the number, as this one does.
                            "message": f"scripted {answer.status} for 'To' {form.get('To')}",
                            "more_info": "https://www.twilio.com/docs/errors",
                            "status": answer.status,
                        },
                        headers,
                    )
                    return
                now = datetime.now(UTC)
                message = {
                    "sid": f"SM{next(fake._sids):032x}",
                    "account_sid": ACCOUNT_SID,
                    "to": form.get("To"),
                    "from": form.get("From"),
                    "messaging_service_sid": form.get("MessagingServiceSid"),
                    "body": form.get("Body", ""),
                    "status": "queued",
                    "status_callback": form.get("StatusCallback"),
                    "validity_period": form.get("ValidityPeriod"),
                    "date_created": format_datetime(now),
                    "date_sent": format_datetime(now),
                    "num_segments": "1",
                }
                with fake.lock:
                    fake.messages.append(message)
                if answer.stall_s:
                    time.sleep(answer.stall_s)
                self._reply(201, message)

            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                if (
                    not self._authorised()
                    or parsed.path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
                ):
                    self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    return
                query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                with fake.lock:
                    fake.lists.append(query)
                    found = [m for m in fake.messages if m["to"] == query.get("To")]
                self._reply(
                    200,
                    {
                        "messages": found,
                        "page": 0,
                        "page_size": 50,
                        "uri": parsed.path,
                        "first_page_uri": parsed.path,
                        "next_page_uri": None,
                        "previous_page_uri": None,
                        "start": 0,
                        "end": len(found),
                    },
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
