"""Forget requests: which subjects must leave the model, validated, split out of the data and hashed.

A clinic sends subject IDs as a text, CSV or JSON file. The IDs themselves are personal data: error
messages name request entries by position, and everything that is logged carries salted SHA-256
digests instead (see :func:`load_salt`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBJECT_KEY = "subject"
FORGET_KEY = "forget"
CSV_SUBJECT_COLUMNS = ("subject", "subject_id", "patient_id", "patient", "id")
SALT_ENV = "MEDUNLEARN_SALT"
SALT_FILE_ENV = "MEDUNLEARN_SALT_FILE"
DEFAULT_SALT_FILE = Path(".medunlearn") / "salt"


class ForgetRequestError(ValueError):
    """A forget request that cannot be carried out as given."""


def load_salt() -> bytes:
    """Return the deployment's secret salt for hashing subject IDs.

    ``MEDUNLEARN_SALT`` wins; otherwise the file named by ``MEDUNLEARN_SALT_FILE`` (default
    ``.medunlearn/salt`` in the working directory), created with a random salt on first use so that
    all runs of one deployment hash the same ID to the same digest.
    """
    if os.environ.get(SALT_ENV):
        return os.environ[SALT_ENV].encode()
    salt_file = Path(os.environ.get(SALT_FILE_ENV, DEFAULT_SALT_FILE))
    if not salt_file.exists():
        salt_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(salt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return salt_file.read_text().strip().encode()


def hash_subject(subject_id: str, salt: bytes) -> str:
    """Salted SHA-256 hex digest of one subject ID."""
    return hashlib.sha256(salt + b"\x00" + str(subject_id).encode()).hexdigest()


def _entry_positions(positions: Iterable[int], limit: int = 10) -> str:
    listed = sorted(positions)
    shown = ", ".join(f"#{position + 1}" for position in listed[:limit])
    return shown + (f" and {len(listed) - limit} more" if len(listed) > limit else "")


@dataclass(frozen=True)
class ForgetSplit:
    """Training items divided by a forget request: ``retain`` stays, ``forget`` must be forgotten."""

    retain: list[dict[str, Any]]
    forget: list[dict[str, Any]]

    def flagged(
        self, include_retain: bool = True, include_forget: bool = True, forget_repeats: int = 1
    ) -> list[dict[str, Any]]:
        """Copies of the chosen items carrying the ``forget`` flag (1 forget, 0 retain) that strategies read.

        ``forget_repeats`` lists every forget item that many times, so that a few forgotten subjects
        are not drowned out by many retained ones in each unlearning epoch.

        Raises:
            ValueError: when ``forget_repeats`` is below 1.
        """
        if forget_repeats < 1:
            raise ValueError(f"forget_repeats must be at least 1, got {forget_repeats}.")
        chosen = (self.retain if include_retain else []), (self.forget * forget_repeats if include_forget else [])
        return [{**item, FORGET_KEY: flag} for flag, items in enumerate(chosen) for item in items]


@dataclass(frozen=True)
class ForgetRequest:
    """The subject IDs one request asks to forget, in the order received.

    Args:
        subject_ids: the IDs as received; duplicates and an empty list are refused.
        source: where the request came from (a path or ``generated``), for messages only.

    Raises:
        ForgetRequestError: when the request is empty or names a subject twice.
    """

    # repr=False: a request printed by a log line (monai.bundle echoes its overrides) must not show the IDs.
    subject_ids: tuple[str, ...] = field(repr=False)
    source: str = field(default="request", compare=False)

    def __post_init__(self) -> None:
        if not self.subject_ids:
            raise ForgetRequestError(f"Forget request {self.source} is empty: it names no subject to forget.")
        counts = Counter(self.subject_ids)
        repeated = [index for index, subject in enumerate(self.subject_ids) if counts[subject] > 1]
        if repeated:
            raise ForgetRequestError(
                f"Forget request {self.source} names the same subject more than once "
                f"(entries {_entry_positions(repeated)}); list each subject once."
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ForgetRequest:
        """Read a request from ``.txt`` (one ID per line, ``#`` comments), ``.csv`` or ``.json``.

        A CSV has a header with one of the columns ``subject``, ``subject_id``, ``patient_id``,
        ``patient``, ``id`` (or a single column). A JSON file holds a list of IDs or an object with a
        ``subjects`` list.

        Raises:
            ForgetRequestError: the file is missing, unreadable or not in one of these formats.
        """
        path = Path(path)
        if not path.is_file():
            raise ForgetRequestError(f"Forget request file {path} does not exist.")
        readers = {".txt": _read_txt, ".csv": _read_csv, ".json": _read_json}
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise ForgetRequestError(
                f"Forget request file {path} has suffix {path.suffix!r}; use one of {', '.join(readers)}."
            )
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise ForgetRequestError(f"Forget request file {path} cannot be read as UTF-8 text: {error}") from error
        return cls(tuple(reader(text, path)), source=str(path))

    @classmethod
    def generate(
        cls,
        items: Sequence[dict[str, Any]],
        fraction: float,
        seed: int = 0,
        where: Mapping[str, Any] | None = None,
    ) -> ForgetRequest:
        """A random request for studies: ``fraction`` of the distinct subjects of ``items``, seeded.

        With ``where`` (e.g. ``{"sex": "Female"}``) only subjects whose items carry those attribute
        values are drawn, and ``fraction`` is of those subjects: requests by attribute test for bias.

        Raises:
            ForgetRequestError: when ``fraction`` is not in (0, 1), or it or ``where`` selects no subject.
        """
        if not 0.0 < fraction < 1.0:
            raise ForgetRequestError(f"forget fraction must be between 0 and 1 (exclusive), got {fraction}.")
        if where:
            items = [item for item in items if all(item.get(key) == value for key, value in where.items())]
            if not items:
                raise ForgetRequestError(f"no training subject has the attributes {dict(where)}.")
        subjects = sorted({str(item[SUBJECT_KEY]) for item in items})
        count = round(fraction * len(subjects))
        if count == 0:
            raise ForgetRequestError(
                f"forget fraction {fraction} of {len(subjects)} subjects selects no subject; raise the fraction."
            )
        return cls(tuple(random.Random(seed).sample(subjects, count)), source="generated")

    @classmethod
    def by_score(
        cls, subject_scores: Mapping[str, float], fraction: float, highest: bool, source: str = "generated"
    ) -> ForgetRequest:
        """A request for studies: the ``fraction`` of subjects with the lowest (or, with ``highest``, the highest)
        score, e.g. the easiest or hardest subjects by the original model's loss. Ties break by subject ID.

        Raises:
            ForgetRequestError: when ``fraction`` is not in (0, 1) or selects no subject.
        """
        if not 0.0 < fraction < 1.0:
            raise ForgetRequestError(f"forget fraction must be between 0 and 1 (exclusive), got {fraction}.")
        count = round(fraction * len(subject_scores))
        if count == 0:
            raise ForgetRequestError(
                f"forget fraction {fraction} of {len(subject_scores)} subjects selects no subject; raise the fraction."
            )
        ranked = sorted(subject_scores, key=lambda subject: (subject_scores[subject], subject), reverse=highest)
        return cls(tuple(ranked[:count]), source=source)

    @classmethod
    def resolve(
        cls,
        file: str | os.PathLike | None,
        fraction: float | None,
        items: Sequence[dict[str, Any]],
        seed: int = 0,
        where: Mapping[str, Any] | None = None,
    ) -> ForgetRequest | None:
        """The request a workflow runs with: from ``file`` if given, else generated from ``fraction``
        (among subjects matching ``where``), else None."""
        if file:
            return cls.from_file(file)
        if fraction:
            return cls.generate(items, fraction, seed, where)
        return None

    def split(self, items: Sequence[dict[str, Any]]) -> ForgetSplit:
        """Divide ``items`` into retain and forget items; all items of a named subject are forgotten.

        Raises:
            ForgetRequestError: a requested subject is not in ``items``, or the request forgets every subject.
        """
        known = {str(item[SUBJECT_KEY]) for item in items}
        unknown = [index for index, subject in enumerate(self.subject_ids) if subject not in known]
        if unknown:
            raise ForgetRequestError(
                f"Forget request {self.source}: {len(unknown)} of {len(self.subject_ids)} subjects are not in the "
                f"training data (entries {_entry_positions(unknown)}); check the IDs against the dataset."
            )
        if len(self.subject_ids) >= len(known):
            raise ForgetRequestError(
                f"Forget request {self.source} names all {len(known)} training subjects: nothing would remain to "
                "train on. Retire the model instead of unlearning."
            )
        forgotten = set(self.subject_ids)
        retain = [item for item in items if str(item[SUBJECT_KEY]) not in forgotten]
        forget = [item for item in items if str(item[SUBJECT_KEY]) in forgotten]
        return ForgetSplit(retain=retain, forget=forget)

    def subject_hashes(self, salt: bytes) -> list[str]:
        """Salted SHA-256 of every requested ID, sorted so the order of the request leaks nothing."""
        return sorted(hash_subject(subject, salt) for subject in self.subject_ids)

    def sha256(self, salt: bytes) -> str:
        """Salted SHA-256 of the whole request, independent of the order of its entries."""
        return hashlib.sha256("\n".join(self.subject_hashes(salt)).encode()).hexdigest()


def require_request(request: ForgetRequest | None, workflow: str) -> ForgetRequest:
    """``request``, or a clear error that ``workflow`` cannot run without one."""
    if request is None:
        raise ForgetRequestError(
            f"{workflow} needs a forget request: pass --forget_request_file FILE (txt, csv or json) "
            "or --forget_fraction F to draw one at random."
        )
    return request


def split_items(items: Sequence[dict[str, Any]], request: ForgetRequest | None) -> ForgetSplit:
    """``request.split(items)``, or everything retained when there is no request (the original model)."""
    return ForgetSplit(retain=list(items), forget=[]) if request is None else request.split(items)


def _read_txt(text: str, path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _read_csv(text: str, path: Path) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    rows = list(reader)
    columns = list(reader.fieldnames or [])
    matches = [name for name in CSV_SUBJECT_COLUMNS if name in [column.lower() for column in columns]]
    if matches:
        column = next(name for name in columns if name.lower() == matches[0])
    elif len(columns) == 1:
        column = columns[0]
    else:
        raise ForgetRequestError(
            f"Forget request file {path} has columns {columns}; it needs one of {', '.join(CSV_SUBJECT_COLUMNS)}."
        )
    return [row[column].strip() for row in rows if row.get(column) and row[column].strip()]


def _read_json(text: str, path: Path) -> list[str]:
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ForgetRequestError(f"Forget request file {path} is not valid JSON: {error}") from error
    subjects = content.get("subjects") if isinstance(content, dict) else content
    if not isinstance(subjects, list) or not all(isinstance(subject, (str, int)) for subject in subjects):
        raise ForgetRequestError(
            f"Forget request file {path} must hold a list of subject IDs or an object with a 'subjects' list."
        )
    return [str(subject).strip() for subject in subjects]
