"""E-mail through an SMTP relay: STARTTLS or implicit TLS, optional auth (over TLS unless
allowed otherwise), text and HTML parts."""

import contextlib
import smtplib
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

_WIRE = compat32.clone(linesep="\r\n")  # SMTP wants CRLF; sendmail() leaves bytes alone


class SmtpNotifier(Notifier):
    """E-mail by SMTP. One connection per sending thread, reused across messages; 4xx replies
    and lost connections are retried, 5xx replies are final."""

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
        self._all: list[smtplib.SMTP] = []
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

    def describe(self) -> str:
        tls = "tls" if self.implicit_tls else "starttls" if self.starttls else "plain"
        user = f", user {self._username}" if self._username else ""
        return f"smtp ({self.host}:{self.port}, {tls}{user}, from {self.sender})"

    def _connection(self) -> smtplib.SMTP:
        connection = getattr(self._local, "smtp", None)
        if connection is not None:
            return connection
        if self.implicit_tls:
            connection = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_s, context=ssl.create_default_context()
            )
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
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
        for fresh_connection in (False, True):
            try:
                refused = self._connection().sendmail(self.sender, [message.to], data)
            except smtplib.SMTPServerDisconnected as exc:
                # A reused connection the server closed while idle: reconnect once.
                self._drop_connection()
                if fresh_connection:
                    return Retry(reason=f"disconnected: {exc}")
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                self._reset()
                code, reply = next(iter(exc.recipients.values()))
                return _by_code(code, reply)
            except smtplib.SMTPResponseException as exc:
                self._reset()
                return _by_code(exc.smtp_code, exc.smtp_error)
            except (smtplib.SMTPException, OSError) as exc:
                # Connection failures, and timeouts after DATA (the relay may have the mail:
                # at most one duplicate, which e-mail cannot rule out).
                self._drop_connection()
                return Retry(reason=f"{type(exc).__name__}: {exc}")
            if refused:
                code, reply = next(iter(refused.values()))
                return _by_code(code, reply)
            return Sent(provider_ref=message_id)
        return Retry(reason="no connection")  # unreachable: the loop returns

    def _reset(self) -> None:
        try:
            self._connection().rset()
        except (smtplib.SMTPException, OSError):
            self._drop_connection()

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                connection.quit()


def _by_code(code: int, reply: bytes | str) -> Outcome:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    reason = f"{code} {text}"
    if 400 <= code < 500:
        return Retry(reason=reason, code=str(code))
    return Failed(reason=reason, code=str(code))
