"""Domain errors. Each carries its HTTP status; services raise them, one handler renders them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class InvalidInput(DomainError):
    """Input that is well-formed but wrong: always names the field."""

    status = 422
    title = "Invalid input"
    slug = "validation-error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[FieldError(field, message)])

    @classmethod
    def of(cls, errors: list[FieldError]) -> "InvalidInput":
        """One error naming several fields, so a client can fix everything in one go."""
        error = cls(errors[0].field, errors[0].message)
        error.errors = list(errors)
        error.detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return error


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFound(DomainError):
    status = 404
    title = "Not found"
    slug = "not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class ServiceUnavailable(DomainError):
    status = 503
    title = "Service unavailable"
    slug = "unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 30) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooManyRequests(DomainError):
    """A rate limit refused the request; retry_after_s says when its window frees a slot."""

    status = 429
    title = "Too many requests"
    slug = "rate-limited"

    def __init__(
        self,
        detail: str,
        *,
        retry_after_s: int,
        rule: str = "",
        proof: str | None = None,
        waits: dict[str, int] | None = None,
    ) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.rule = rule
        # Every limit that refused, and the seconds until each admits (rule is the longest's).
        self.waits = waits or ({rule: retry_after_s} if rule else {})
        # Where a challenge is to be had whose solution admits the request all the same.
        self.proof = proof
