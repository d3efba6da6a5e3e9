"""The adapter between a guest bundle's config and our overlays: which guest keys they read and write.

A *layout* file (``configs/layouts/<name>.json``, or your own) is layered right after the guest's config list. It is
the only overlay that names guest keys:

- ``guest_<name>`` entries read guest keys: ``"guest_items": "@train#dataset#data"`` says the training items are the
  guest's ``train#dataset#data``; ``guest_test_items``, ``guest_network``, ``guest_optimizer``, ``guest_epochs``,
  ``guest_train_preprocessing``, ``guest_eval_inferer``, ``guest_trainer``, ... likewise;
- the other entries write into the guest's objects by path, as model-zoo's ``multi_gpu_*.json`` do: the trainer's
  data loader gets our dataset (retain items, or flagged retain and forget items), the trainer gets our handlers and,
  to unlearn, our epoch budget.

Two layouts ship: ``nested`` (``train#trainer``, ``validate#evaluator``: ``spleen_ct_segmentation`` and most
model-zoo bundles) and ``flat`` (top-level ``trainer``, ``evaluator``, ``train_sub``: ``classification_template``);
the one whose marker key the guest has is chosen. A bundle of another shape needs a copy of one of them with its
own key paths (``--layout FILE``). The training and test items can also be named on their own (``--items_key``,
``--test_items_key``), and how a subject ID is read from an item is :mod:`medunlearn_monai.guest.subjects`'.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

LAYOUTS_DIR = Path(__file__).resolve().parent / "configs" / "layouts"
# A guest key the layout's guest has, in the order layouts are tried.
LAYOUT_MARKERS = {"nested": "train#trainer", "flat": "trainer"}
GUEST_PREFIX = "guest_"
ITEMS, TEST_ITEMS = "guest_items", "guest_test_items"
HANDLER_LISTS = ("guest_train_handlers", "guest_validation_handlers")
_REFERENCE = re.compile(r"@(\w+(?:(?:#|::)\w+)*)")


class GuestKeyError(KeyError):
    """A guest key the adapter needs that the guest's config does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class GuestAdapter:
    """How our overlays read and write one guest: its layout file and, optionally, its items keys.

    Args:
        layout: the layout file (see the module docstring).
        items_key: the guest key holding the training items, instead of the layout's ``guest_items``.
        test_items_key: the guest key holding the test items, instead of the layout's ``guest_test_items``.
    """

    layout: Path
    items_key: str | None = None
    test_items_key: str | None = None
    entries: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.layout.is_file():
            raise FileNotFoundError(f"no layout file {self.layout}.")
        entries = json.loads(self.layout.read_text())
        for our_key, guest_key in ((ITEMS, self.items_key), (TEST_ITEMS, self.test_items_key)):
            if guest_key:
                entries[our_key] = f"@{guest_key}"
        object.__setattr__(self, "entries", entries)

    @classmethod
    def for_config(
        cls,
        config: ConfigParser,
        layout: str | os.PathLike | None = None,
        items_key: str | None = None,
        test_items_key: str | None = None,
    ) -> GuestAdapter:
        """The adapter for a guest config: ``layout`` is a shipped layout's name, a layout file, or None to choose
        the shipped layout whose marker key (:data:`LAYOUT_MARKERS`) the config has.

        Raises:
            GuestKeyError: when no shipped layout fits the config.
            ValueError: when ``layout`` is neither a shipped layout's name nor a file.
        """
        if layout is None:
            found = [name for name, marker in LAYOUT_MARKERS.items() if marker in config]
            if not found:
                raise GuestKeyError(
                    f"the bundle has none of the keys {', '.join(LAYOUT_MARKERS.values())} that the shipped layouts "
                    "find a trainer under: write a layout file for it (docs: Unlearning your own bundle) and pass "
                    "--layout FILE."
                )
            layout = found[0]
        path = LAYOUTS_DIR / f"{layout}.json" if str(layout) in LAYOUT_MARKERS else Path(layout)
        if not path.is_file():
            raise ValueError(f"--layout must be one of {', '.join(LAYOUT_MARKERS)} or a layout file, got {layout!r}.")
        return cls(path, items_key, test_items_key)

    def overrides(self) -> dict[str, str]:
        """Config overrides for the items keys given instead of the layout's."""
        given = {ITEMS: self.items_key, TEST_ITEMS: self.test_items_key}
        return {key: self.entries[key] for key, guest_key in given.items() if guest_key}

    def read_keys(self) -> dict[str, list[str]]:
        """Each ``guest_<name>`` entry and the guest keys it reads (its ``@`` references)."""
        return {
            key: _REFERENCE.findall(value)
            for key, value in self.entries.items()
            if key.startswith(GUEST_PREFIX) and isinstance(value, str)
        }

    def written_keys(self) -> list[str]:
        """The guest keys the layout sets (``a#b``: ``a`` must exist) or appends to (``+a``: ``a`` must exist)."""
        return [key for key in self.entries if not key.startswith(GUEST_PREFIX)]

    def handler_lists(self) -> list[str]:
        """The guest keys of the handler lists the trainer and its evaluator attach (:data:`HANDLER_LISTS`).

        Raises:
            ValueError: when the layout names one by anything but a plain reference (``"@key"``).
        """
        keys = []
        for name in HANDLER_LISTS:
            value = self.entries.get(name)
            if value is None:
                continue
            if not (isinstance(value, str) and _REFERENCE.fullmatch(value)):
                raise ValueError(f"{self.layout.name}: {name} must be a reference to a guest key, got {value!r}.")
            keys.append(value[1:])
        return keys

    def check(self, config: ConfigParser) -> None:
        """Fail before anything runs when the guest's config lacks a key the layout reads or writes into.

        Raises:
            GuestKeyError: naming the missing keys and the layout entries that need them.
        """
        missing = [
            f"{guest_key} (read as {our_key})"
            for our_key, guest_keys in self.read_keys().items()
            for guest_key in guest_keys
            if guest_key not in config
        ]
        for written in self.written_keys():
            needed = written[1:] if written.startswith("+") else written.rpartition("#")[0]
            if needed and needed not in config:
                missing.append(f"{needed} (written as {written})")
        if missing:
            options = " (--items_key, --test_items_key)" if self.items_key or self.test_items_key else ""
            raise GuestKeyError(
                f"the bundle's config has no key {', '.join(missing)}, which the layout {self.layout.name}"
                f"{options} names: pass the bundle's own key, or another layout with --layout."
            )
