"""Settings: defaults in config/default.toml, ANJEON_* environment variables override them."""

import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from service.privacy import PersonalDataVault

log = logging.getLogger("anjeon.config")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config" / "default.toml"
# Storages of `limits` that keep a moving window (Memcached cannot).
# The most stays ANJEON_MAX_STAYS may allow: each stay is a place matched against every
# advisory, and one with an address costs a geocoder request inside the registration.
MAX_STAYS_CEILING = 100
RATE_LIMIT_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
# SMTP relays on this machine: their traffic never leaves it, so TLS is not asked of them.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def config_file() -> Path:
    """The TOML file settings are read from: ANJEON_CONFIG, or config/default.toml. A file
    ANJEON_CONFIG names that is not there is an error: a forgotten mount ran the service on
    defaults, without config/default.toml either (a review)."""
    named = os.environ.get("ANJEON_CONFIG")
    if named and not Path(named).is_file():
        raise ValueError(f"ANJEON_CONFIG: {named}: no such file")
    return Path(named or DEFAULT_CONFIG_FILE)


LEDGER_RETENTION_LEAST_DAYS = 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANJEON_", extra="forbid")

    database_url: str = "sqlite:///var/anjeon.db"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    environment: Literal["development", "production"] = "development"
    secret_key: SecretStr | None = None
    secret_key_file: str = ""
    # The data secrets (sealing, link and proof signing), newest first, comma-separated or one
    # a line in the file: empty means the secret key alone (docs/privacy.md, "Rotating keys").
    data_keys: SecretStr | None = None
    data_keys_file: str = ""
    scheduler_enabled: bool = True
    sweep_interval_s: int = Field(60, ge=1)
    # 0: each periodic job at its own interval (60 s to 6 h); else all of them at this one
    # (tests and drills: a job's lease lasts three intervals).
    job_interval_s: int = Field(0, ge=0)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_area_vertices: int = Field(50_000, ge=4)
    # Reach previews counted at once in a process, and by one staff key (ReachCounts): each
    # counts the registry in the area, seconds at a large one.
    reach_previews_at_once: int = Field(4, ge=1)
    reach_previews_per_key: int = Field(2, ge=1)
    max_advisory_body_bytes: int = Field(8_388_608, ge=1024)
    geocoder: Literal["none", "nominatim"] = "none"
    geocoder_user_agent: str = ""
    geocoder_timeout_s: float = Field(5.0, gt=0)
    geocoder_url: str = ""
    geocoder_per_second: int = Field(1, ge=1, le=1000)
    stay_retention_days: int = Field(30, ge=0)
    words_retention_days: int = Field(180, ge=1)
    ledger_retention_days: int = Field(365, ge=0)
    max_stays: int = Field(20, ge=1, le=MAX_STAYS_CEILING)
    feeds_file: str = str(PROJECT_ROOT / "config" / "feeds.toml")
    feed_timeout_s: float = Field(20.0, gt=0)
    feed_max_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    phone_default_region: str = Field("KR", min_length=2, max_length=2)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Empty: http://{host}:{port}, so alert links follow the port the service listens on.
    public_base_url: str = ""

    # Contacts are alerted only once their owner typed the code sent to them.
    verification: Literal["required", "off"] = "required"
    # Four eyes on mass sends (see approval_min_reach); "off" only for development and demos.
    approval: Literal["required", "off"] = "required"
    unverified_ttl_h: int = Field(24, ge=1)
    # Production: what start-up refuses, and who may read /metrics and the API description.
    allow_console_notifier: bool = False
    metrics_token: SecretStr | None = None
    # Staff keys admit nobody after this many days from their issue (an admin may choose fewer).
    staff_key_life_days: int = Field(90, ge=1, le=400)

    # Dispatch: which notifier sends each channel, and how the outbox is drained.
    sms_notifier: str = "console"
    email_notifier: str = "console"
    dispatch_interval_s: float = Field(5.0, gt=0)
    dispatch_batch: int = Field(500, ge=1)
    dispatch_threads: int = Field(8, ge=1, le=256)
    dispatch_lease_s: float = Field(10.0, gt=0)
    dispatch_max_attempts: int = Field(8, ge=1)
    dispatch_backoff_base_s: float = Field(5.0, ge=0)
    dispatch_backoff_cap_s: float = Field(900.0, ge=0)
    circuit_failures: int = Field(10, ge=1)
    circuit_open_s: float = Field(30.0, gt=0)
    circuit_max_open_s: float = Field(300.0, gt=0)
    # A sender whose provider queue is full (Twilio 21611/30001): no sends for this long, then
    # back to its rate over the ramp (every process, through rate_limit_storage).
    sender_hold_s: float = Field(30.0, gt=0, le=3600)
    sender_ramp_s: float = Field(60.0, ge=0, le=3600)
    max_routine_alerts_per_hour: int = Field(5, ge=0)
    sms_max_segments: int = Field(3, ge=1, le=10)
    alert_sender_ko: str = "외교부 해외안전여행"
    alert_sender_en: str = "MOFA Korea Overseas Safety"

    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr | None = None
    twilio_from: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_api_base: str = "https://api.twilio.com"
    # Segments per second the sender may send, all processes together (Twilio meters segments:
    # a 3-segment SMS spends 3): long code 1, toll-free 3, short code 100; 0: no limit.
    twilio_mps: float = Field(1.0, ge=0)
    twilio_timeout_s: float = Field(10.0, gt=0)
    # How late Twilio may make a message after its request began: a look-up sooner can miss
    # it, and send it again. 0: twice the timeout (a request is cut at twice it).
    twilio_settle_s: float = Field(0.0, ge=0)
    twilio_validity_period_s: int = Field(14_400, ge=1, le=36_000)

    smtp_host: str = ""
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = ""
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_ssl: bool = False
    smtp_allow_plain_auth: bool = False
    smtp_timeout_s: float = Field(10.0, gt=0)
    smtp_mps: float = Field(0.0, ge=0)

    webhook_url: str = ""
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(10.0, gt=0)

    # Limits against floods and SMS pumping (service/rate_limits.py), in the `limits` notation
    # ("3/hour;5/day"), kept in rate_limit_storage so that every process shares them.
    rate_limit_storage: str = "memory://"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default=[])
    rate_limit_client: str = "20/hour"
    rate_limit_client_network: str = "200/hour"
    rate_limit_client_proven: str = "600/hour"
    rate_limit_client_proven_network: str = "6000/hour"
    # Past rate_limit_client, a registration solving a proof of work of this size is admitted
    # (citizens/proof.py); 0: none is, and the limit is a wall.
    registration_proof_max_number: int = Field(300_000, ge=0, le=100_000_000)
    rate_limit_resend: str = "1/minute"
    rate_limit_change: str = "60/hour"
    rate_limit_change_refused: str = "30/hour"
    rate_limit_change_refused_address: str = "300/hour"
    rate_limit_geocode: str = "10/hour"
    rate_limit_geocode_client: str = "12/minute;300/hour"
    rate_limit_contact: str = "3/hour;5/day"
    rate_limit_prefix: str = "20/hour"
    rate_limit_prefix_client: str = "5/hour"
    rate_limit_country: str = "200/hour"
    rate_limit_country_client: str = "50/hour"
    rate_limit_email_domain_client: str = "10/hour"
    rate_limit_client_unverified: str = "30/hour"
    # Mail providers whose every inbox is a person's own sign-up: no per-domain limit there.
    email_domains_shared: Annotated[list[str], NoDecode] = Field(
        default=[
            "gmail.com",
            "googlemail.com",
            "naver.com",
            "daum.net",
            "hanmail.net",
            "kakao.com",
            "nate.com",
            "outlook.com",
            "hotmail.com",
            "live.com",
            "msn.com",
            "yahoo.com",
            "yahoo.co.kr",
            "icloud.com",
            "me.com",
            "proton.me",
            "protonmail.com",
            "mac.com",
            "pm.me",
            "aol.com",
            "yahoo.co.jp",
            "hotmail.co.uk",
            "hotmail.fr",
            "gmx.com",
            "gmx.de",
            "web.de",
            "qq.com",
            "163.com",
            "korea.com",
            "empas.com",
            "yandex.com",
            "mail.ru",
        ]
    )
    rate_limit_global: str = "1000/hour"
    rate_limit_global_proven: str = "200/hour;1000/day"
    rate_limit_cooldown: str = "1/10minute"
    rate_limit_code_try: str = "10/hour;20/day"
    rate_limit_reply: str = "10/hour;30/day"
    rate_limit_reply_unknown: str = "1/day"
    rate_limit_reply_unknown_all: str = "60/hour;300/day"
    rate_limit_test_send: str = "10/hour;30/day"
    rate_limit_reveal: str = "60/hour;300/day"
    rate_limit_preview: str = "120/hour;600/day"
    rate_limit_duty_page: str = "60/hour"
    rate_limit_duty_page_new: str = "15/hour"
    rate_limit_staff: str = "600/minute;30000/hour"
    sms_daily_budget: int = Field(5000, ge=0)
    # Destination countries codes may go to (alpha-2; empty: any); duty staff's e-mail.
    code_countries: Annotated[list[str], NoDecode] = Field(default=[])
    duty_email: Annotated[list[str], NoDecode] = Field(default=[])
    duty_webhook_url: str = ""
    # "Are you safe?": asked again after this many minutes without an answer, this many times.
    checkin_escalate_after_m: int = Field(60, ge=1, le=10080)
    checkin_rounds: int = Field(2, ge=0, le=10)
    # Four eyes: an advisory of level 3, 4, special, or reaching more than this many citizens,
    # waits for a second staff key.
    approval_min_reach: int = Field(1000, ge=0)
    # A feed's advisory under "level3+" reaching more than this many citizens waits too.
    feed_approval_min_reach: int = Field(10000, ge=0)
    # Where staff hear what became of what they proposed, when their key has no e-mail.
    staff_webhook_url: str = ""

    # Faults: how long anything waits for the database (docs/faults.md#database-outage).
    request_timeout_s: float = Field(15.0, gt=0)
    database_connect_timeout_s: int = Field(5, ge=2)  # libpq takes 2 s at least
    database_pool_timeout_s: float = Field(5.0, gt=0)
    database_pool_size: int = Field(20, ge=1, le=1000)
    database_max_overflow: int = Field(10, ge=0, le=1000)
    ready_timeout_s: float = Field(3.0, gt=0)

    @field_validator(
        "rate_limit_client",
        "rate_limit_client_network",
        "rate_limit_client_proven",
        "rate_limit_client_proven_network",
        "rate_limit_resend",
        "rate_limit_change",
        "rate_limit_change_refused",
        "rate_limit_change_refused_address",
        "rate_limit_geocode",
        "rate_limit_geocode_client",
        "rate_limit_contact",
        "rate_limit_prefix",
        "rate_limit_prefix_client",
        "rate_limit_country",
        "rate_limit_country_client",
        "rate_limit_email_domain_client",
        "rate_limit_client_unverified",
        "rate_limit_global",
        "rate_limit_global_proven",
        "rate_limit_cooldown",
        "rate_limit_code_try",
        "rate_limit_reply",
        "rate_limit_reply_unknown",
        "rate_limit_reply_unknown_all",
        "rate_limit_test_send",
        "rate_limit_reveal",
        "rate_limit_preview",
        "rate_limit_duty_page",
        "rate_limit_duty_page_new",
    )
    @classmethod
    def _limit_notation(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a limit like '5/hour' or '3/hour;5/day'") from exc
        return value

    @field_validator("ledger_retention_days")
    @classmethod
    def _ledger_retention(cls, value: int) -> int:
        # Check-in links answer for 7 days after the ask, and replies come within days: rows
        # deleted sooner took answers that landed on a forgotten advisory (a review).
        if 0 < value < LEDGER_RETENTION_LEAST_DAYS:
            raise ValueError(
                f"keep alerts and answers {LEDGER_RETENTION_LEAST_DAYS} days at least after an "
                "advisory ended (0 keeps them for ever)"
            )
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _limit_storage(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in RATE_LIMIT_SCHEMES:
            raise ValueError(
                f"{value!r}: use memory:// (one process) or a Redis URL such as "
                "redis://127.0.0.1:6379/0 (shared by every process)"
            )
        return value

    @field_validator(
        "trusted_proxies", "code_countries", "duty_email", "email_domains_shared", mode="before"
    )
    @classmethod
    def _listed(cls, value: object) -> object:
        """A list in the environment as JSON (["a", "b"]), or as plain text, comma-separated:
        ANJEON_DUTY_EMAIL=duty@example.org gave only "error parsing value" (a review)."""
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list: {exc.msg}") from exc
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("email_domains_shared")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        domains = [domain.strip().lower().lstrip("@") for domain in value]
        bad = [domain for domain in domains if "." not in domain or "@" in domain or " " in domain]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a mail domain (such as gmail.com)")
        return domains

    @field_validator("code_countries")
    @classmethod
    def _country_codes(cls, value: list[str]) -> list[str]:
        codes = [code.strip().upper() for code in value]
        bad = [code for code in codes if len(code) != 2 or not code.isalpha()]
        if bad:
            raise ValueError(f"{bad[0]!r} is not an ISO 3166-1 alpha-2 country code")
        return codes

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network") from exc
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)

    @model_validator(mode="after")
    def _waits_fit_in_a_request(self) -> "Settings":
        # A request waiting for a pooled connection, or for a new one, must fail (503) before
        # its deadline does, or the deadline's 503 would hide which wait was too long.
        for name in ("database_pool_timeout_s", "database_connect_timeout_s", "ready_timeout_s"):
            if getattr(self, name) >= self.request_timeout_s:
                raise ValueError(
                    f"ANJEON_{name.upper()} must be shorter than ANJEON_REQUEST_TIMEOUT_S "
                    f"({self.request_timeout_s})"
                )
        # An address's look-up must fit before the request's deadline too: no turn would.
        if self.geocoder == "nominatim" and self.geocoder_timeout_s >= self.request_timeout_s:
            raise ValueError(
                "ANJEON_GEOCODER_TIMEOUT_S must be shorter than ANJEON_REQUEST_TIMEOUT_S "
                f"({self.request_timeout_s}): no address could be looked up in time"
            )
        return self

    @model_validator(mode="after")
    def _refuse_broken_setup(self) -> "Settings":
        if self.geocoder == "nominatim" and not self.geocoder_user_agent.strip():
            raise ValueError(
                "ANJEON_GEOCODER=nominatim needs ANJEON_GEOCODER_USER_AGENT "
                "(Nominatim's usage policy requires an identifying user agent)"
            )
        if self.geocoder_url and not re.fullmatch(r"https?://[^/\s?#]+/?", self.geocoder_url):
            raise ValueError(
                "ANJEON_GEOCODER_URL must be a scheme and host, such as https://nominatim.example.org"
            )
        if self.geocoder_per_second > 1 and not self.geocoder_url:
            raise ValueError(
                "ANJEON_GEOCODER_PER_SECOND above 1 needs ANJEON_GEOCODER_URL: OpenStreetMap's "
                "public Nominatim takes at most one request a second"
            )
        if self.smtp_ssl and self.smtp_starttls:
            raise ValueError("ANJEON_SMTP_SSL and ANJEON_SMTP_STARTTLS exclude each other")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "Settings":
        """ANJEON_ENVIRONMENT=production means something: each of these stops start-up."""
        if self.environment != "production":
            return self
        problems = []
        if self.secret_key is None and not self.secret_key_file:
            problems.append("an explicit ANJEON_SECRET_KEY (or ANJEON_SECRET_KEY_FILE)")
        if self.verification == "off":
            problems.append("ANJEON_VERIFICATION=required (it is off)")
        if self.approval == "off":
            problems.append("ANJEON_APPROVAL=required (it is off)")
        consoles = [
            f"ANJEON_{channel}_NOTIFIER"
            for channel, name in (("SMS", self.sms_notifier), ("EMAIL", self.email_notifier))
            if name == "console"
        ]
        if consoles and not self.allow_console_notifier:
            problems.append(
                f"a real notifier for {' and '.join(consoles)} (console prints alerts to the "
                "log; ANJEON_ALLOW_CONSOLE_NOTIFIER=true if that is meant)"
            )
        if not self.public_base_url.strip().lower().startswith("https://"):
            problems.append("an https:// ANJEON_PUBLIC_BASE_URL (links and callbacks)")
        if not self.pages_duty_staff:
            # Nobody would be paged when a citizen answers "need help".
            problems.append(
                "ANJEON_DUTY_EMAIL or ANJEON_DUTY_WEBHOOK_URL (who is told at once when a "
                "citizen needs help)"
            )
        hooks = {
            name: url.strip()
            for name, url in (
                ("ANJEON_WEBHOOK_URL", self.webhook_url),
                ("ANJEON_DUTY_WEBHOOK_URL", self.duty_webhook_url),
                ("ANJEON_STAFF_WEBHOOK_URL", self.staff_webhook_url),
            )
            if url.strip()
        }
        if hooks and not (self.webhook_secret and self.webhook_secret.get_secret_value()):
            # A duty notice carries a citizen's name and place: its receiver must be able to
            # tell it from a forgery.
            problems.append(f"ANJEON_WEBHOOK_SECRET to sign what {', '.join(hooks)} receive")
        if plain := [name for name, url in hooks.items() if not url.lower().startswith("https://")]:
            problems.append(f"https:// for {', '.join(plain)}")
        if (
            self.email_notifier == "smtp"
            and not (self.smtp_starttls or self.smtp_ssl)
            and self.smtp_host.strip().lower() not in _LOOPBACK_HOSTS
        ):
            # Duty notices (a citizen in need, their contacts and place), codes and check-in
            # links cross the network in clear otherwise; a relay on this machine is exempt.
            problems.append(
                "ANJEON_SMTP_STARTTLS or ANJEON_SMTP_SSL for a relay not on this machine "
                "(duty notices, codes and check-in links would cross the network in clear)"
            )
        if problems:
            raise ValueError("production needs " + "; ".join(problems))
        return self

    @property
    def pages_duty_staff(self) -> bool:
        """Whether a citizen's "need help" is sent to someone at once (e-mail or webhook)."""
        return bool(self.duty_email or self.duty_webhook_url)

    def enforced(self) -> list[str]:
        """What this configuration enforces, for the start-up log line."""
        production = self.environment == "production"
        return [
            f"environment={self.environment}",
            f"verification={self.verification}",
            f"approval={self.approval}",
            f"rate_limit_storage={self.rate_limit_storage.split('://', 1)[0]}",
            "api-docs=" + ("off, /openapi.json with a staff key" if production else "open"),
            "metrics="
            + ("bearer token" if self.metrics_token else "off" if production else "open"),
        ]

    def approval_policy(self, feed_policy: str = "staff") -> str:
        """Who decides whether something waits for a second person: staff's rule (level and
        reach), a feed's own policy, or nobody when approval is off."""
        return "auto" if self.approval == "off" else feed_policy

    @model_validator(mode="after")
    def _derive_public_base_url(self) -> "Settings":
        if not self.public_base_url.strip():
            self.public_base_url = _own_url(self.host, self.port)
        return self

    def feeds_path(self) -> Path:
        path = Path(self.feeds_file)
        return path if path.is_absolute() else PROJECT_ROOT / path

    def secret_key_bytes(self) -> bytes:
        """The raw secret, from ANJEON_SECRET_KEY or the key file."""
        if self.secret_key is not None:
            raw = self.secret_key.get_secret_value()
        elif not self.secret_key_file:
            raise RuntimeError(
                "no secret key: set ANJEON_SECRET_KEY, or ANJEON_SECRET_KEY_FILE to a file holding "
                "one (`make run` creates var/secret.key for local use)"
            )
        else:
            path = Path(self.secret_key_file)
            if not path.is_file():
                raise RuntimeError(f"secret key file {path} does not exist")
            warn_if_others_read(path)
            raw = path.read_text().strip()
        if len(raw) < 32:
            raise RuntimeError("the secret key must be at least 32 characters long")
        return raw.encode()

    def data_key_bytes(self) -> list[bytes]:
        """The data secrets, newest first, from ANJEON_DATA_KEYS or its file; [] when neither
        is set (the secret key is then the one data secret)."""
        if self.data_keys is not None:
            where, unit = "ANJEON_DATA_KEYS", "entry"
            listed = self.data_keys.get_secret_value().split(",")
        elif self.data_keys_file:
            path = Path(self.data_keys_file)
            if not path.is_file():
                raise RuntimeError(f"data keys file {path} does not exist")
            warn_if_others_read(path)
            where, unit = str(path), "line"
            # "# …" lines are comments; a secret that starts with "#" and no space stays one.
            listed = [
                "" if line.strip() == "#" or line.lstrip().startswith("# ") else line
                for line in path.read_text().splitlines()
            ]
        else:
            return []
        keys = [(n, each.strip()) for n, each in enumerate(listed, 1) if each.strip()]
        if not keys:
            raise RuntimeError(f"{where} is set but lists no secret")
        for n, each in keys:
            if len(each) < 32:  # the secret itself is never printed
                raise RuntimeError(
                    f"{unit} {n} of {where} is {len(each)} characters long: every data key must "
                    "be at least 32"
                )
        return [each.encode() for _, each in keys]

    def personal_data_vault(self) -> PersonalDataVault:
        return PersonalDataVault(self.secret_key_bytes(), self.data_key_bytes())


def warn_if_others_read(path: Path) -> None:
    """Say so when a key file is readable by its group or by everyone (a review found the
    rotation recipe's data.keys made so): it opens every contact in the database."""
    if path.stat().st_mode & 0o077:
        log.warning("key file readable by other users: chmod 600 it", extra={"file": str(path)})


def _own_url(host: str, port: int) -> str:
    """The URL of a service listening on host:port; a wildcard bind is reached on loopback."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - reading a bind address, not binding
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()


# ANJEON_* names that are no setting's but are read all the same: the config file's path, and
# the test, benchmark and fuzzing harnesses' own.
_READ_ELSEWHERE = ("ANJEON_CONFIG",)
_HARNESS_PREFIXES = ("ANJEON_TEST_", "ANJEON_BENCH_", "ANJEON_LOAD_", "ANJEON_FUZZ_")


def unknown_environment(
    environ: Mapping[str, str], *, plugin_prefixes: Iterable[str] = ()
) -> list[str]:
    """The ANJEON_* variables in `environ` that no setting reads (nor a plugin notifier's own
    settings, under `plugin_prefixes`), each with the setting it is nearest to: the settings
    refuse an unknown key in the TOML file, and an operator's ANJEON_DISPATCH_INTERVALS=3 was
    ignored without a word (a review)."""
    settings = [f"ANJEON_{name.upper()}" for name in Settings.model_fields]
    allowed = (*_HARNESS_PREFIXES, *plugin_prefixes)
    found = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("ANJEON_") or upper in settings or upper in _READ_ELSEWHERE:
            continue
        if upper.startswith(tuple(prefix.upper() for prefix in allowed if prefix)):
            continue
        near = difflib.get_close_matches(upper, settings, n=1, cutoff=0.75)
        found.append(f"{name} (did you mean {near[0]}?)" if near else name)
    return found
