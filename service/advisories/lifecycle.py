"""The rules every advisory obeys, whoever issued it."""

from datetime import datetime, timedelta

from service.advisories.drafts import LANGUAGES, AdvisoryDraft
from service.advisories.levels import LEVELS
from service.errors import FieldError, InvalidInput

SPECIAL_MAX = timedelta(days=90)


def check_draft(draft: AdvisoryDraft, *, now: datetime) -> None:
    """Raise InvalidInput naming every broken rule."""
    errors: list[FieldError] = []
    if draft.level not in LEVELS:
        errors.append(FieldError("level", "must be 1, 2, 3, 4 or 'special'"))
    for name, text in (("title", draft.title), ("message", draft.message)):
        if not any(text.get(lang) for lang in LANGUAGES):
            errors.append(FieldError(name, "needs text in ko or en"))
    if draft.expires is not None:
        if draft.expires <= draft.effective:
            errors.append(FieldError("expires", "must be after effective"))
        elif draft.expires <= now:
            errors.append(FieldError("expires", "is in the past"))
    if draft.level == "special":
        if draft.expires is None:
            errors.append(FieldError("expires", "a special travel advisory needs an end date"))
        elif draft.expires - draft.effective > SPECIAL_MAX:
            errors.append(FieldError("expires", "a special travel advisory lasts at most 90 days"))
    if draft.area.is_empty() and not draft.area.zones:
        errors.append(FieldError("area", "covers nothing"))
    if errors:
        raise InvalidInput.of(errors)
