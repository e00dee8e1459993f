"""Finding notifiers by name: the built-ins, and third-party ones registered under the
`anjeon.notifiers` entry-point group. Any doubt stops start-up: an operator must not learn in
an emergency that alerts were going nowhere."""

from importlib.metadata import entry_points
from typing import Any, Protocol

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from service.config import Settings
from service.dispatch.notifiers.base import Notifier, NotifierConfigError
from service.dispatch.notifiers.console import ConsoleNotifier
from service.dispatch.notifiers.smtp_email import SmtpNotifier
from service.dispatch.notifiers.twilio_sms import TwilioNotifier
from service.dispatch.notifiers.webhook import WebhookNotifier

ENTRY_POINT_GROUP = "anjeon.notifiers"
BUILT_IN: dict[str, type] = {
    "console": ConsoleNotifier,
    "twilio": TwilioNotifier,
    "smtp": SmtpNotifier,
    "webhook": WebhookNotifier,
}


class NotifierFactory(Protocol):
    channels: tuple[str, ...]

    def from_settings(self, settings: Settings) -> Notifier: ...


def plugin_settings(name: str, factory: Any) -> BaseSettings | None:
    """A plugin's own typed settings: a notifier class may name a pydantic-settings model in
    `settings_model` (its own env_prefix, e.g. ANJEON_PIGEON_); it is read and checked here,
    so a plugin never parses raw environment variables and a bad value stops start-up."""
    model = getattr(factory, "settings_model", None)
    if model is None:
        return None
    try:
        return model()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        prefix = model.model_config.get("env_prefix", "")
        raise NotifierConfigError(
            f"notifier {name!r} settings ({prefix}*) are invalid: {problems}"
        ) from exc


def available() -> dict[str, NotifierFactory]:
    """Every notifier name that can be configured; a plugin that fails to load is an error."""
    found: dict[str, NotifierFactory] = dict(BUILT_IN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in found:
            raise NotifierConfigError(
                f"notifier plugin {point.value!r} uses the name {point.name!r}, already taken"
            )
        try:
            factory = point.load()
        except Exception as exc:
            raise NotifierConfigError(
                f"notifier plugin {point.name!r} ({point.value}) failed to load: {exc}"
            ) from exc
        if not hasattr(factory, "from_settings") or not hasattr(factory, "channels"):
            raise NotifierConfigError(
                f"notifier plugin {point.name!r} has no from_settings() and channels"
            )
        found[point.name] = factory
    return found


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    """The notifier for each channel, as configured; one instance when both name the same."""
    factories = available()
    built: dict[str, Notifier] = {}
    by_channel: dict[str, Notifier] = {}
    for channel, name in (("sms", settings.sms_notifier), ("email", settings.email_notifier)):
        factory = factories.get(name)
        if factory is None:
            raise NotifierConfigError(
                f"ANJEON_{channel.upper()}_NOTIFIER={name!r} is not a notifier; known: "
                + ", ".join(sorted(factories))
            )
        if channel not in factory.channels:
            raise NotifierConfigError(f"notifier {name!r} cannot send {channel}")
        if name not in built:
            own = plugin_settings(name, factory)
            built[name] = (
                factory.from_settings(settings)
                if own is None
                else factory.from_settings(settings, own)  # type: ignore[call-arg]
            )
        by_channel[channel] = built[name]
    return by_channel
