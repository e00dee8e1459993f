"""Sealing personal data again under the current data secret, after a rotation listed a new one
first (docs/privacy.md, "Rotating keys"): every sealed column, in batches that each commit, while
the service runs. A row is locked while it is sealed again, so a write to it at the same moment
either lands first (and is what gets sealed) or waits."""

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from service.checkin.models import CheckinAnswer, HelpMessage
from service.citizens.models import Citizen, ContactCode
from service.citizens.verification import CHANNEL_FIELD
from service.privacy import PersonalDataVault


@dataclass(frozen=True)
class SealedColumn:
    """A column of sealed values, and the field each was sealed as (the authenticated data)."""

    name: str  # "table.column", as the command reports it
    table: Table
    column: str
    field_of: Callable[[dict], str]
    reads: tuple[str, ...] = ()  # other columns field_of needs


def _fixed(name: str) -> Callable[[dict], str]:
    return lambda _row: name


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn("citizen.name_sealed", Citizen.__table__, "name_sealed", _fixed("name")),
    SealedColumn("citizen.phone_sealed", Citizen.__table__, "phone_sealed", _fixed("phone")),
    SealedColumn("citizen.email_sealed", Citizen.__table__, "email_sealed", _fixed("email")),
    SealedColumn(
        "contact_code.contact_sealed",
        ContactCode.__table__,
        "contact_sealed",
        lambda row: CHANNEL_FIELD[row["channel"]],
        reads=("channel",),
    ),
    SealedColumn(
        "checkin_answer.note_sealed",
        CheckinAnswer.__table__,
        "note_sealed",
        _fixed("checkin-note"),
    ),
    SealedColumn(
        "help_message.note_sealed", HelpMessage.__table__, "note_sealed", _fixed("checkin-note")
    ),
)


@dataclass
class Batch:
    """One batch of one column: the last row id it read (None: nothing was left), the values
    it sealed again, and those no listed secret opens (left as they are)."""

    last_id: int | None
    resealed: int = 0
    unreadable: list[int] = field(default_factory=list)


def _not_current(column: ColumnElement, vault: PersonalDataVault) -> ColumnElement[bool]:
    prefix = vault.current_prefix
    return func.substr(column, 1, len(prefix)) != prefix


def reseal_batch(
    session: Session,
    *,
    vault: PersonalDataVault,
    sealed: SealedColumn,
    after_id: int,
    size: int,
) -> Batch:
    """Seal again up to `size` values of the column not sealed under the current data secret,
    in rows past `after_id`, each row locked first. A row a writer holds is skipped, not waited
    for: a writer locking two rows (a contact taken from another record) in the other order
    made a deadlock, and PostgreSQL stopped the run or the writer's request. The next pass
    takes it (cli.py)."""
    table, column = sealed.table, sealed.table.c[sealed.column]
    rows = (
        session.execute(
            select(table.c.id, column, *(table.c[name] for name in sealed.reads))
            .where(table.c.id > after_id, column.is_not(None), _not_current(column, vault))
            .order_by(table.c.id)
            .limit(size)
            # No key changes: writers' FK checks go on.
            .with_for_update(key_share=True, skip_locked=True)
        )
        .mappings()
        .all()
    )
    if not rows:
        return Batch(last_id=None)
    batch = Batch(last_id=rows[-1]["id"])
    changes = []
    for row in rows:
        name = sealed.field_of(row)
        try:
            plain = vault.open(name, row[sealed.column])
        except (InvalidTag, ValueError):  # sealed under a secret no longer listed
            batch.unreadable.append(row["id"])
            continue
        changes.append({"row_id": row["id"], "value": vault.seal(name, plain)})
    if changes:
        session.execute(
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values({column: bindparam("value")}),
            changes,
            execution_options={"synchronize_session": False},
        )
        batch.resealed = len(changes)
    return batch


SAMPLED = 200


def unopened_sample(session: Session, *, vault: PersonalDataVault) -> list[str]:
    """The values that no listed data secret opens, among each sealed table's oldest and
    newest SAMPLED rows, as "column (fingerprint …)": what a process checks before it serves.
    An operator's typo in ANJEON_DATA_KEYS, or an old secret dropped before `anjeon reseal`
    was done, started without a word, and every reveal and staff list answered 500. Rows by
    their primary key, not values by a scan: a column NULL in most rows (e-mail in an SMS-only
    registry) took 2 s a query at 10M citizens (a review)."""
    found = []
    for sealed in SEALED_COLUMNS:
        table, column = sealed.table, sealed.table.c[sealed.column]
        for order in (table.c.id.asc(), table.c.id.desc()):
            ends = select(table.c.id).order_by(order).limit(SAMPLED)
            rows = session.execute(
                select(table.c.id, column, *(table.c[name] for name in sealed.reads)).where(
                    table.c.id.in_(ends), column.is_not(None)
                )
            ).mappings()
            for row in rows:
                blob = row[sealed.column]
                try:
                    vault.open(sealed.field_of(row), blob)
                except (InvalidTag, ValueError):
                    named = f"fingerprint {blob[1:5].hex()}" if blob[:1] == b"\x02" else "format 1"
                    found.append(f"{sealed.name} ({named})")
    return sorted(set(found))


def left_to_reseal(session: Session, *, vault: PersonalDataVault) -> dict[str, int]:
    """For each sealed column, the values not sealed under the current data secret."""
    left = {}
    for sealed in SEALED_COLUMNS:
        column = sealed.table.c[sealed.column]
        left[sealed.name] = (
            session.scalar(
                select(func.count())
                .select_from(sealed.table)
                .where(column.is_not(None), _not_current(column, vault))
            )
            or 0
        )
    return left
