"""Rendering alerts with the Jinja2 templates in templates/: per channel and language."""

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.dispatch import sms_text
from service.dispatch.content import AlertContent, area_text


@dataclass(frozen=True)
class Rendered:
    text: str
    subject: str = ""
    html: str = ""
    segments: int | None = None


class Renderer:
    """Turns one advisory revision into a citizen's SMS or e-mail."""

    def __init__(self, *, sender: dict[str, str], max_segments: int) -> None:
        self.sender = sender
        self.max_segments = max_segments
        self._env = Environment(
            loader=PackageLoader("service.dispatch", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=False,
        )

    def _values(self, content: AlertContent, lang: str, link: str) -> dict:
        return {
            "sender": self.sender[lang],
            "kind": content.kind,
            "revision": content.revision,
            "level_name": content.level_name(lang),
            "title": content.text(content.title, lang),
            "message": content.text(content.message, lang),
            "area": area_text(content.area, lang),
            "source": content.source,
            "expires": content.expires.strftime("%Y-%m-%d %H:%M UTC") if content.expires else "",
            "link": link,
        }

    def sms(self, content: AlertContent, *, language: str, link: str) -> Rendered:
        lang = content.language_for(language)
        values = self._values(content, lang, link)
        text = " ".join(self._env.get_template(f"sms.{lang}.j2").render(values).split())
        body = sms_text.fit(text, link, max_segments=self.max_segments)
        return Rendered(text=body, segments=sms_text.segments(body))

    def email(self, content: AlertContent, *, language: str, link: str) -> Rendered:
        lang = content.language_for(language)
        values = self._values(content, lang, link)
        subject = self._env.get_template(f"subject.{lang}.j2").render(values).strip()
        return Rendered(
            subject=" ".join(subject.split()),
            text=self._env.get_template(f"email.{lang}.txt.j2").render(values),
            html=self._env.get_template(f"email.{lang}.html.j2").render(values),
        )

    def details(self, content: AlertContent, *, language: str) -> str:
        lang = content.language_for(language)
        values = {**self._values(content, lang, ""), "lang": lang}
        return self._env.get_template("details.html.j2").render(values)
