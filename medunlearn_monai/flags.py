"""Yes/no options, as bundle configs (JSON ``true``) and the command line (``--resume true``) give them."""

from __future__ import annotations

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "none", "")


def as_flag(value: bool | str | None, name: str) -> bool:
    """A yes/no setting given in JSON (``true``) or on the command line (fire passes ``--resume true`` as "true").

    Raises:
        ValueError: for anything but a bool, None or one of true/false/1/0/yes/no.
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE + _FALSE:
        return text in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")
