"""Rendering alerts with the Jinja2 templates in templates/: per channel and language."""

from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.dispatch import sms_text
from service.dispatch.area_time import local_end
from service.dispatch.content import EXERCISE_MARK, AlertContent, area_text, country_name
from service.schema_rules import UNSHOWN

_LINK_MARK = "\x00link\x00"
_CHECKIN_MARK = "\x00checkin\x00"
# How to answer "are you safe?" by SMS, at the end of the text and never cut. Digits, because a
# bare HELP is answered by the carrier itself in the US and Canada.
ASK = {"ko": "답장 1 안전 / 2 도움", "en": "Reply 1 = safe / 2 = need help"}


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
        self._ends: dict[tuple, str] = {}
        self._env = Environment(
            loader=PackageLoader("service.dispatch", "templates"),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            trim_blocks=False,
            keep_trailing_newline=False,
        )

    def _values(
        self, content: AlertContent, lang: str, link: str, part_of: str = "", checkin: str = ""
    ) -> dict:
        return {
            # Set for a citizen known only by a country the area covers part of.
            "part_of": country_name(part_of, lang) if part_of else "",
            "sender": self.sender[lang],
            "kind": content.kind,
            "revision": content.revision,
            "level_name": content.level_name(lang),
            # What displays as other text is left out of every word we send, whoever wrote it
            # (a feed's U+202E showed our link reversed beside a readable fake one).
            "title": _shown(content.text(content.title, lang)),
            "message": _shown(content.text(content.message, lang)),
            "area": _shown(area_text(content.area, lang)),
            "source": content.source,
            "expires": self._ends_at(content, lang),
            "link": link,
            "checkin_link": checkin,
            # "[훈련]" / "[EXERCISE]" for a drill, else "": the first words of every message.
            "exercise": EXERCISE_MARK[lang] if content.exercise else "",
        }

    # A burst sends one revision to many people: the words are rendered once per revision,
    # language and channel, and only the per-alert link differs (it is ASCII, so two links of
    # one length fit the same way).

    def sms(
        self,
        content: AlertContent,
        *,
        language: str,
        link: str,
        part_of: str = "",
        ask: bool = False,
        template: str = "sms",
    ) -> Rendered:
        """The SMS: its words cut to the segment budget, then (when it asks for a check-in)
        how to answer, then the link; neither of those is ever cut."""
        lang = content.language_for(language)
        key = (template, content.advisory_public_id, content.revision, lang, len(link), part_of)
        key += (ask,)
        cached = self._cache.get(key)
        if cached is None:
            values = self._values(content, lang, _LINK_MARK, part_of)
            text = " ".join(self._env.get_template(f"{template}.{lang}.j2").render(values).split())
            sample = "x" * len(link)
            tail = f"{ASK[lang]} {sample}" if ask else sample
            body = sms_text.fit(text, tail, max_segments=self.max_segments)
            cached = self._remember(
                key, Rendered(text=body[: -len(sample)], segments=sms_text.segments(body))
            )
        return Rendered(text=cached.text + link, segments=cached.segments)

    def checkin_sms(self, content: AlertContent, *, language: str, link: str) -> Rendered:
        """A check-in request on its own (a roll call, or asking again): short, with how to
        answer and the check-in link."""
        return self.sms(content, language=language, link=link, ask=True, template="checkin_sms")

    def email(
        self,
        content: AlertContent,
        *,
        language: str,
        link: str,
        part_of: str = "",
        checkin: str = "",
        template: str = "email",
    ) -> Rendered:
        """The e-mail; with `checkin` (a check-in link) it asks "are you safe?" too."""
        lang = content.language_for(language)
        key = (template, content.advisory_public_id, content.revision, lang, bool(checkin))
        key += (part_of,)
        cached = self._cache.get(key)
        if cached is None:
            mark = _CHECKIN_MARK if checkin else ""
            values = self._values(content, lang, _LINK_MARK, part_of, mark)
            subject_template = "checkin_subject" if template == "checkin_email" else "subject"
            subject = self._env.get_template(f"{subject_template}.{lang}.j2").render(values)
            cached = self._remember(
                key,
                Rendered(
                    subject=" ".join(subject.split()),
                    text=self._env.get_template(f"{template}.{lang}.txt.j2").render(values),
                    html=self._env.get_template(f"{template}.{lang}.html.j2").render(values),
                ),
            )
        return Rendered(
            subject=cached.subject,
            text=cached.text.replace(_LINK_MARK, link).replace(_CHECKIN_MARK, checkin),
            html=cached.html.replace(_LINK_MARK, link).replace(_CHECKIN_MARK, checkin),
        )

    def checkin_email(
        self, content: AlertContent, *, language: str, link: str, checkin: str
    ) -> Rendered:
        """A check-in request on its own, by e-mail."""
        return self.email(
            content, language=language, link=link, checkin=checkin, template="checkin_email"
        )

    def _ends_at(self, content: AlertContent, lang: str) -> str:
        # Finding the area's clock reads its outline: once per revision, not on every view of
        # the details and check-in pages.
        if content.expires is None:
            return ""
        key = ("ends", content.advisory_public_id, content.revision, lang, content.expires)
        if key not in self._ends:
            if len(self._ends) >= 1024:
                self._ends.clear()
            self._ends[key] = local_end(content.expires, content.area, lang)
        return self._ends[key]

    def _remember(self, key: tuple, rendered: Rendered) -> Rendered:
        if len(self._cache) >= 1024:
            self._cache.clear()
        self._cache[key] = rendered
        return rendered

    def details(self, content: AlertContent, *, language: str, seen: bool = False) -> str:
        lang = content.language_for(language)
        values = {**self._values(content, lang, ""), "lang": lang, "seen": seen}
        return self._env.get_template("details.html.j2").render(values)

    def checkin_page(
        self,
        content: AlertContent,
        *,
        language: str,
        answer: str | None,
        recorded: bool,
        duty_paged: bool = True,
        safe_said: bool = False,
        help_kept: bool = False,
        words_cut: bool = False,
    ) -> str:
        """The check-in link's page: the advisory and two buttons (safe, need help); a help
        just recorded says the duty staff were told only when someone is paged (`duty_paged`).
        `safe_said`: a safe was pressed since their help, which stays in force until a consul
        confirms it; `help_kept`: that safe was the press just recorded; `words_cut`: the
        help stands but its words were not all kept (the page's note is full)."""
        lang = content.language_for(language)
        values = {**self._values(content, lang, ""), "lang": lang}
        values |= {"answer": answer, "recorded": recorded, "duty_paged": duty_paged}
        values |= {"safe_said": safe_said, "help_kept": help_kept, "words_cut": words_cut}
        return self._env.get_template("checkin_page.html.j2").render(values)


def _shown(text: str) -> str:
    return UNSHOWN.sub("", text)
