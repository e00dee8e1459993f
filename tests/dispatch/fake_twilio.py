"""A fake Twilio REST API on 127.0.0.1 for the real twilio SDK: it accepts, refuses or stalls
message creation as scripted, lists what it accepted, and records every request. Besides
per-number scripts it has provider faults for a window of time or a number of requests
(`fault("5xx" | "timeout" | "429", ...)`), and a log of every request with its time, so a
test can count how hard a client hammered it during an outage.

With `queue` set it models Twilio's queue for the sender: it holds `size` segments and drains
at `mps` segments a second; a create that would overflow it is refused with 400/21611 when sent
from a number, and accepted but failed with 30001 when sent through a messaging service (the
status callbacks it owes are kept in `overflowed`, for the test to deliver)."""

import base64
import contextlib
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

from service.dispatch.sms_text import segments
from tests.dispatch.fault_window import Window, take, within
from tests.loopback_server import serve_in_thread

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "fake-twilio-auth-token"


@dataclass
class Answer:
    """What the fake does with one create request."""

    status: int = 201
    code: int | None = None
    retry_after: str | None = None
    stall_s: float = 0.0  # accept the message, then answer this late (a client timeout)
    # Accept the message, then send the answer's body a byte at a time, this far apart: each
    # read is quick, the whole answer is not (no per-read timeout fires).
    trickle_s: float = 0.0
    # Accept the message, then answer once this is set: held for as long as the test needs
    # (until it has stopped a process, say), where a stall's length is a guess at a timing.
    hold: threading.Event | None = None
    # Read the request, create nothing, and close the connection without a word: as a server
    # closing a kept-alive connection as idle just as the request came (RemoteDisconnected).
    drop: bool = False
    # Read the request, then create the message this late and answer: a provider that acts on
    # a request after its client gave up waiting (found only by a look-up made after it).
    creates_after_s: float = 0.0

    @property
    def late(self) -> bool:
        return bool(self.stall_s or self.hold or self.creates_after_s)


HOLD_LIMIT_S = 300.0

FAULT_KINDS = ("5xx", "timeout", "429")


@dataclass(kw_only=True)
class Fault(Window):
    """A provider fault: every request (create, and list when `lists`) in its window, or its
    first `count` requests, is answered badly.

    - "5xx": `status` (default 500, code 20500) at once;
    - "timeout": nothing for `stall_s`, longer than the client's timeout (the reply, when it
      comes, is a 504 or the created message, to a client that has gone);
    - "429": 429 (code 20429) with `Retry-After: retry_after`.

    `created` says whether Twilio created the message before answering 5xx or stalling (the
    outcome the client cannot know): "never", "always" or "alternate" (every other one)."""

    kind: str
    to: str | None = None  # only requests to this number
    status: int = 500
    code: int | None = None
    retry_after: str | None = None
    stall_s: float = 1.0
    created: str = "never"
    lists: bool = True

    def covers(self, at: float, to: str | None) -> bool:
        return (self.to is None or to == self.to) and self.active(at)

    def creates(self) -> bool:
        """Whether this bad answer follows a message Twilio did create (counted per hit)."""
        if self.created == "alternate":
            return self.hits % 2 == 1
        return self.created == "always"


@dataclass
class SenderQueue:
    """Twilio's queue for one sender: `size` segments at most, drained at `mps` a second."""

    size: int
    mps: float
    depth: float = 0.0
    peak: float = 0.0
    accepted: int = 0  # segments taken in
    overflows: int = 0  # creates refused (21611) or failed (30001) for want of room
    at: float = field(default_factory=time.monotonic)

    def offer(self, count: int) -> bool:
        """Take a message of `count` segments, or refuse it when the queue has no room."""
        now = time.monotonic()
        self.depth = max(0.0, self.depth - (now - self.at) * self.mps)
        self.at = now
        if self.depth + count > self.size:
            self.overflows += 1
            return False
        self.depth += count
        self.accepted += count
        self.peak = max(self.peak, self.depth)
        return True


@dataclass(frozen=True)
class Request:
    """One request the fake received, and what it answered ("201", "500", "429", "stalled"...)."""

    at: float  # time.monotonic()
    method: str  # "create" | "list"
    to: str
    answer: str


@dataclass
class FakeTwilio:
    messages: list[dict] = field(default_factory=list)  # accepted, in order
    posts: list[dict] = field(default_factory=list)  # every create request
    lists: list[dict] = field(default_factory=list)  # every list request
    requests: list[Request] = field(default_factory=list)  # every request, in order, timed
    faults: list[Fault] = field(default_factory=list)
    scripts: dict[str, deque] = field(default_factory=dict)  # by To number
    default: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    queue: SenderQueue | None = None
    overflowed: list[dict] = field(default_factory=list)  # accepted, then failed with 30001
    holding: int = 0  # create requests held now (Answer.hold), unanswered
    _sids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, to: str | None, *answers: Answer) -> None:
        """Answers for the next create requests to `to` (or to anyone), then 201s."""
        with self.lock:
            (self.scripts.setdefault(to, deque()) if to else self.default).extend(answers)

    def fault(
        self,
        kind: str,
        *,
        for_s: float | None = None,
        count: int | None = None,
        after: Window | None = None,
        on_first_request: bool = False,
        to: str | None = None,
        status: int = 500,
        code: int | None = None,
        retry_after: str | None = None,
        stall_s: float = 1.0,
        created: str = "never",
        lists: bool = True,
    ) -> Fault:
        """A provider fault for `for_s` seconds or `count` requests, from now, from the first
        request, or from the end of the fault `after` (see Fault)."""
        assert kind in FAULT_KINDS, kind
        assert created in ("never", "always", "alternate"), created
        fault = Fault(
            kind=kind,
            for_s=for_s,
            count=count,
            after=after,
            on_first_request=on_first_request,
            to=to,
            status=429 if kind == "429" else status,
            code=code or (20429 if kind == "429" else 20500 if status == 500 else None),
            retry_after=retry_after,
            stall_s=stall_s,
            created=created,
            lists=lists,
        )
        with self.lock:
            self.faults.append(fault)
        return fault

    def during(self, fault: Fault, method: str | None = None) -> list[Request]:
        """The requests received within the fault's window (of `method`, if given)."""
        with self.lock:
            return within(fault, self.requests, lambda r: method in (None, r.method))

    def _fault_for(self, method: str, to: str) -> tuple[Fault | None, bool]:
        """The fault that answers this request (taking one hit of it), and whether a create
        it answers is created all the same."""
        with self.lock:
            fault = take(
                self.faults, lambda f, now: (method == "create" or f.lists) and f.covers(now, to)
            )
            return fault, fault is not None and fault.creates()

    def _log(self, method: str, to: str, answer: str) -> None:
        with self.lock:
            self.requests.append(Request(time.monotonic(), method, to, answer))

    def _create(self, form: dict[str, str], *, status: str = "queued") -> dict:
        """Twilio creates the message (it is listed from now on) and returns it."""
        now = datetime.now(UTC)
        message = {
            "sid": f"SM{next(self._sids):032x}",
            "account_sid": ACCOUNT_SID,
            "to": form.get("To"),
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form.get("Body", ""),
            "status": status,
            "status_callback": form.get("StatusCallback"),
            "validity_period": form.get("ValidityPeriod"),
            "date_created": format_datetime(now),
            # As at Twilio: set once the message leaves its queue for the carrier, which
            # nothing here models; a list filtered on DateSent leaves such a message out.
            "date_sent": None,
            "num_segments": str(segments(form.get("Body", ""))),
        }
        with self.lock:
            self.messages.append(message)
        return message

    def _overflows(self, form: dict[str, str]) -> bool:
        if self.queue is None:
            return False
        with self.lock:
            return not self.queue.offer(segments(form.get("Body", "")))

    def bodies_to(self, to: str) -> list[str]:
        with self.lock:
            return [m["body"] for m in self.messages if m["to"] == to]

    def _held(self, gate: threading.Event) -> None:
        with self.lock:
            self.holding += 1
        try:
            # Bounded: a test that fails before it lets go must not leave the server's
            # threads waiting for ever.
            gate.wait(HOLD_LIMIT_S)
        finally:
            with self.lock:
                self.holding -= 1

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

            def _trickle(self, status: int, payload: dict, every_s: float) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.flush()
                with contextlib.suppress(OSError):  # the client cut it: what it wanted
                    for byte in data:
                        time.sleep(every_s)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                self.close_connection = True

            def _error(
                self, status: int, code: int | None, text: str, retry_after: str | None = None
            ) -> None:
                headers = {"Retry-After": retry_after} if retry_after else {}
                self._reply(
                    status,
                    {
                        "code": code or status,
                        "message": text,
                        "more_info": "https://www.twilio.com/docs/errors",
                        "status": status,
                    },
                    headers,
                )

            def _faulty(self, fault: Fault, method: str, to: str, created: dict | None) -> None:
                """Answer as the fault says; the request is logged with what it got."""
                if fault.kind == "timeout":
                    fake._log(method, to, "stalled")
                    time.sleep(fault.stall_s)
                    # The client has gone by now: what it would have read is of no account.
                    with contextlib.suppress(OSError):
                        if created is not None:
                            self._reply(201, created)
                        else:
                            self._error(504, 20504, "gateway timeout")
                    return
                fake._log(method, to, str(fault.status))
                self._error(
                    fault.status,
                    fault.code,
                    f"{fault.kind} fault for 'To' {to}",
                    fault.retry_after,
                )

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
                to = form.get("To", "")
                with fake.lock:
                    fake.posts.append(form)
                if not to or not form.get("Body"):
                    # As Twilio answers a request cut short (a client killed mid-send).
                    fake._log("create", to, "400")
                    self._error(400, 21604, "'To' and 'Body' required")
                    return
                answer = fake._next_answer(to)
                if answer.drop:
                    fake._log("create", to, "dropped")
                    self.close_connection = True
                    return
                if answer.status >= 300:
                    fake._log("create", to, str(answer.status))
                    if answer.hold:  # a refusal that comes when the test lets it
                        fake._held(answer.hold)
                    # Twilio's own texts quote the number, as this one does.
                    text = f"scripted {answer.status} for 'To' {to}"
                    self._error(answer.status, answer.code, text, answer.retry_after)
                    return
                fault, creates = (None, False) if answer.late else fake._fault_for("create", to)
                if fault is not None:
                    self._faulty(fault, "create", to, fake._create(form) if creates else None)
                    return
                if fake._overflows(form):
                    if not form.get("MessagingServiceSid"):
                        fake._log("create", to, "400")
                        text = (
                            "This 'From' number has exceeded the maximum number of queued messages"
                        )
                        self._error(400, 21611, text)
                        return
                    # A messaging service takes it, and fails it later: the callback says 30001.
                    failed = fake._create(form, status="failed")
                    with fake.lock:
                        fake.overflowed.append(failed)
                    fake._log("create", to, "201")
                    self._reply(201, {**failed, "status": "accepted"})
                    return
                if answer.creates_after_s:
                    fake._log("create", to, "stalled")
                    time.sleep(answer.creates_after_s)
                    self._reply(201, fake._create(form))
                    return
                message = fake._create(form)
                fake._log("create", to, "stalled" if answer.late else "201")
                if answer.stall_s:
                    time.sleep(answer.stall_s)
                if answer.hold:
                    fake._held(answer.hold)
                if answer.trickle_s:
                    self._trickle(201, message, answer.trickle_s)
                    return
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
                to = query.get("To", "")
                with fake.lock:
                    fake.lists.append(query)
                fault, _ = fake._fault_for("list", to)
                if fault is not None:
                    self._faulty(fault, "list", to, None)
                    return
                fake._log("list", to, "200")
                with fake.lock:
                    # Newest first, as Twilio lists them.
                    found = [m for m in reversed(fake.messages) if m["to"] == to]
                if "From" in query:
                    found = [m for m in found if m["from"] == query["From"]]
                if any(key.startswith("DateSent") for key in query):
                    found = [m for m in found if m["date_sent"] is not None]
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
        serve_in_thread(self.server)
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
