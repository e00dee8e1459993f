"""Waking the dispatcher when alerts are enqueued: a session that wrote alert rows is marked,
and once it commits (never before: the dispatcher must see the rows) the waker runs."""

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

_KEY = "alerts_enqueued"


def mark_enqueued(session: Session) -> None:
    """New work for the dispatcher: it is woken once this session commits."""
    session.info[_KEY] = True


def wake_after_commit(factory: sessionmaker[Session], waker: Callable[[], None]) -> None:
    # Not for a savepoint (SQLAlchemy fires these for one too): a wake at its release came
    # before the rows were committed, and the commit then woke nobody.
    def after_commit(session: Session) -> None:
        if not session.in_nested_transaction() and session.info.pop(_KEY, False):
            waker()

    def after_rollback(session: Session) -> None:
        if not session.in_nested_transaction():
            session.info.pop(_KEY, None)

    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_rollback", after_rollback)
