"""Rendering alerts with the Jinja2 templates in templates/: per channel and language."""

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.dispatch import sms_text
from service.dispatch.content import AlertContent, area_text, country_name

_LINK_MARK = "\x00link\x00"


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
        self._cache: dict[tuple, Rendered] = {}
        self._env = Environment(
            loader=PackageLoader("service.dispatch", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=False,
        )

    def _values(self, content: AlertContent, lang: str, link: str, part_of: str = "") -> dict:
        return {
            # Set for a citizen known only by a country the area covers part of.
            "part_of": country_name(part_of, lang) if part_of else "",
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

    # A burst sends one revision to many people: the words are rendered once per revision,
    # language and channel, and only the per-alert link differs (it is ASCII, so two links of
    # one length fit the same way).

    def sms(
        self, content: AlertContent, *, language: str, link: str, part_of: str = ""
    ) -> Rendered:
        lang = content.language_for(language)
        key = ("sms", content.advisory_public_id, content.revision, lang, len(link), part_of)
        cached = self._cache.get(key)
        if cached is None:
            values = self._values(content, lang, _LINK_MARK, part_of)
            text = " ".join(self._env.get_template(f"sms.{lang}.j2").render(values).split())
            sample = "x" * len(link)
            body = sms_text.fit(text, sample, max_segments=self.max_segments)
            cached = self._remember(
                key, Rendered(text=body[: -len(sample)], segments=sms_text.segments(body))
            )
        return Rendered(text=cached.text + link, segments=cached.segments)

    def email(
        self, content: AlertContent, *, language: str, link: str, part_of: str = ""
    ) -> Rendered:
        lang = content.language_for(language)
        key = ("email", content.advisory_public_id, content.revision, lang, 0, part_of)
        cached = self._cache.get(key)
        if cached is None:
            values = self._values(content, lang, _LINK_MARK, part_of)
            subject = self._env.get_template(f"subject.{lang}.j2").render(values)
            cached = self._remember(
                key,
                Rendered(
                    subject=" ".join(subject.split()),
                    text=self._env.get_template(f"email.{lang}.txt.j2").render(values),
                    html=self._env.get_template(f"email.{lang}.html.j2").render(values),
                ),
            )
        return Rendered(
            subject=cached.subject,
            text=cached.text.replace(_LINK_MARK, link),
            html=cached.html.replace(_LINK_MARK, link),
        )

    def _remember(self, key: tuple, rendered: Rendered) -> Rendered:
        if len(self._cache) >= 1024:
            self._cache.clear()
        self._cache[key] = rendered
        return rendered

    def details(self, content: AlertContent, *, language: str, seen: bool = False) -> str:
        lang = content.language_for(language)
        values = {**self._values(content, lang, ""), "lang": lang, "seen": seen}
        return self._env.get_template("details.html.j2").render(values)
