"""E-mail through an SMTP relay: STARTTLS or implicit TLS, optional auth (over TLS unless
allowed otherwise), text and HTML parts."""

import contextlib
import smtplib
import socket
import ssl
import threading
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formatdate
from typing import ClassVar

from service.config import Settings
from service.dispatch.notifiers.base import (
    Failed,
    Notifier,
    NotifierConfigError,
    Outcome,
    OutgoingMessage,
    Retry,
    Sent,
    revealed,
)
from service.provider_wire import bounded, watch_socket
from service.send_window import SendWindowClosed, check_send_window

_WIRE = compat32.clone(linesep="\r\n")  # SMTP wants CRLF; sendmail() leaves bytes alone


class _Watched:
    """Knows whether the DATA command of the current transaction was sent: from then on the
    relay may have the message, so a lost connection leaves the outcome unknown. Its socket is
    watched by the bound of the try that opened it (provider_wire.bounded)."""

    data_sent = False
    _in_data = False

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        watch_socket(sock)  # from the greeting on: a relay that trickles it is cut too
        return sock

    def data(self, msg: bytes | str) -> tuple[int, bytes]:
        check_send_window()  # the claim's lease, checked again before DATA
        self.data_sent = True
        self._in_data = True
        try:
            return super().data(msg)  # type: ignore[misc]
        finally:
            self._in_data = False

    def send(self, s: bytes | str) -> None:
        # And before the message itself, sent after the relay's 354 (which may be slow): a
        # transaction cut before its final "." delivers nothing. Not for RSET or QUIT.
        if self._in_data:
            check_send_window()
        super().send(s)  # type: ignore[misc]


class _SMTP(_Watched, smtplib.SMTP):
    pass


class _SMTP_SSL(_Watched, smtplib.SMTP_SSL):
    pass


class SmtpNotifier(Notifier):
    """E-mail by SMTP. One connection per sending thread, reused across messages; 4xx replies
    and lost connections are retried, 5xx replies are final. A connection lost after DATA is
    retried as an unknown outcome: the relay may have the message, so it is not sent again at
    once, and a later resend carries the same Message-ID."""

    name: ClassVar[str] = "smtp"
    channels: ClassVar[tuple[str, ...]] = ("email",)

    def __init__(
        self,
        *,
        host: str,
        port: int = 25,
        sender: str,
        username: str = "",
        password: str = "",
        starttls: bool = False,
        implicit_tls: bool = False,
        allow_plain_auth: bool = False,
        timeout_s: float = 10.0,
        max_per_second: float | None = None,
    ) -> None:
        if not host or not sender:
            raise NotifierConfigError("smtp needs ANJEON_SMTP_HOST and ANJEON_SMTP_FROM")
        if username and not (starttls or implicit_tls) and not allow_plain_auth:
            # Anyone on the path would read the relay's password, and could send as the ministry.
            raise NotifierConfigError(
                "the ANJEON_SMTP_USERNAME login would send its password in clear: set "
                "ANJEON_SMTP_STARTTLS=true or ANJEON_SMTP_SSL=true, or, for a relay reached "
                "without crossing a network, ANJEON_SMTP_ALLOW_PLAIN_AUTH=true"
            )
        self.host, self.port, self.sender = host, port, sender
        self._username, self._password = username, password
        self.starttls, self.implicit_tls = starttls, implicit_tls
        self.timeout_s = timeout_s
        self.max_per_second = max_per_second or None
        self._domain = sender.rpartition("@")[2] or "anjeon.invalid"
        self._local = threading.local()
        self._all: list[_SMTP | _SMTP_SSL] = []
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> "SmtpNotifier":
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            username=settings.smtp_username,
            password=revealed(settings.smtp_password),
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_ssl,
            allow_plain_auth=settings.smtp_allow_plain_auth,
            timeout_s=settings.smtp_timeout_s,
            max_per_second=settings.smtp_mps,
        )

    def sender_key(self) -> str:
        return f"smtp:{self.host}:{self.port}"

    def describe(self) -> str:
        tls = "tls" if self.implicit_tls else "starttls" if self.starttls else "plain"
        user = f", user {self._username}" if self._username else ""
        return f"smtp ({self.host}:{self.port}, {tls}{user}, from {self.sender})"

    def _connection(self) -> _SMTP | _SMTP_SSL:
        existing: _SMTP | _SMTP_SSL | None = getattr(self._local, "smtp", None)
        if existing is not None:
            return existing
        connection: _SMTP | _SMTP_SSL
        if self.implicit_tls:
            connection = _SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=ssl.create_default_context()
            )
        else:
            connection = _SMTP(self.host, self.port, timeout=self.timeout_s)
            if self.starttls:
                connection.starttls(context=ssl.create_default_context())
        if self._username:
            connection.login(self._username, self._password)
        self._local.smtp = connection
        with self._lock:
            self._all.append(connection)
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()

    def _compose(self, message: OutgoingMessage) -> tuple[str, bytes]:
        """(Message-ID, the message's bytes). The compat32 MIME classes: a quarter of the CPU
        of EmailMessage's default policy, which bounded a burst at ~270 e-mails/s here."""
        body = MIMEText(message.text, "plain", "utf-8")
        if message.html:
            email: MIMEMultipart | MIMEText = MIMEMultipart("alternative")
            email.attach(body)
            email.attach(MIMEText(message.html, "html", "utf-8"))
        else:
            email = body
        # Our own Message-ID: the alert's reference, so a resend is recognisable as the same.
        message_id = f"<{message.reference}@{self._domain}>"
        email["From"] = self.sender
        email["To"] = message.to
        email["Subject"] = Header(message.subject, "utf-8")
        email["Date"] = formatdate(localtime=False)
        email["Message-ID"] = message_id
        return message_id, email.as_bytes(policy=_WIRE)

    def send(self, message: OutgoingMessage) -> Outcome:
        message_id, data = self._compose(message)
        outcome = self._transaction(message.to, message_id, data)
        if outcome is None:
            # A reused connection the relay had closed while idle, found closed before DATA:
            # nothing was sent on it. Once more, on a new connection (never reused: so this
            # second call returns an outcome).
            outcome = self._transaction(message.to, message_id, data)
        assert outcome is not None
        return outcome

    def _transaction(self, to: str, message_id: str, data: bytes) -> Outcome | None:
        """One SMTP try; None when a reused connection turned out closed before DATA. The try,
        from connecting to the final reply and however slowly the relay's replies trickle in,
        ends within twice the timeout (which bounds each read alone): cut, it counts as lost."""
        reused = getattr(self._local, "smtp", None) is not None
        with bounded(2 * self.timeout_s):
            if reused:
                connection = self._local.smtp
                if connection.sock is not None:  # closed meanwhile: sendmail finds it closed
                    watch_socket(connection.sock)
            return self._try(to, message_id, data, reused=reused)

    def _try(self, to: str, message_id: str, data: bytes, *, reused: bool) -> Outcome | None:
        try:
            connection = self._connection()
        except smtplib.SMTPConnectError as exc:
            if _cut(exc.smtp_code):
                self._drop_connection()
                return Retry(reason=f"connecting: greeting cut short ({exc.smtp_code})")
            # The relay's greeting turned us away (421 and the like): nothing was sent, and a
            # second connection at once would be turned away too.
            return Retry(
                reason=f"greeting: {exc.smtp_code} {_text(exc.smtp_error)}", code=str(exc.smtp_code)
            )
        except smtplib.SMTPResponseException as exc:  # a refused login, as before
            self._drop_connection()
            if _cut(exc.smtp_code):
                return Retry(reason=f"connecting: reply cut short ({exc.smtp_code})")
            return _by_code(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            # Refused, unreachable, no greeting in time, TLS or login failed: nothing was sent.
            self._drop_connection()
            return Retry(reason=f"connecting: {type(exc).__name__}: {exc}")
        connection.data_sent = False
        try:
            refused = connection.sendmail(self.sender, [to], data)
        except SendWindowClosed:
            self._drop_connection()  # left inside a transaction (MAIL and RCPT sent)
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            return self._refused(connection, code, reply)
        except smtplib.SMTPResponseException as exc:
            return self._refused(connection, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError) as exc:
            self._drop_connection()
            if connection.data_sent:
                # Cut off, or no final reply in time, after DATA: the relay may have the
                # message (RFC 1047). Not again on this try; a later try resends it with the
                # same Message-ID (a relay cannot be asked whether it has it).
                return Retry(
                    reason=f"outcome unknown, lost after DATA: {type(exc).__name__}: {exc}",
                    outcome_unknown=True,
                )
            if reused and isinstance(exc, smtplib.SMTPServerDisconnected):
                return None
            return Retry(reason=f"{type(exc).__name__}: {exc}")
        if refused:
            code, reply = next(iter(refused.values()))
            return self._refused(connection, code, reply)
        return Sent(provider_ref=message_id)

    def _refused(self, connection: "_SMTP | _SMTP_SSL", code: int, reply: bytes | str) -> Outcome:
        """A reply that is not a success. One cut inside its code (the bound shut a trickle:
        smtplib reads "25" as code 25) is a lost connection, not a refusal."""
        if not _cut(code):
            self._reset()
            return _by_code(code, reply)
        self._drop_connection()
        if connection.data_sent:
            return Retry(
                reason=f"outcome unknown, reply cut after DATA ({code})", outcome_unknown=True
            )
        return Retry(reason=f"reply cut short before DATA ({code}): nothing was sent")

    def _reset(self) -> None:
        connection = getattr(self._local, "smtp", None)
        if connection is None:
            return
        try:
            connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop_connection()

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _cut(code: int) -> bool:
    """A reply code no relay sends: what smtplib makes of a reply cut inside its code."""
    return not 200 <= code < 600


def _by_code(code: int, reply: bytes | str) -> Outcome:
    reason = f"{code} {_text(reply)}"
    if 400 <= code < 500:
        return Retry(reason=reason, code=str(code))
    return Failed(reason=reason, code=str(code))
