"""The run-state protocol every strategy handler follows, so a resumed run continues exactly where it stopped."""

from __future__ import annotations

from typing import Any


class NoRunState:
    """Base of a strategy handler that keeps nothing a resumed run needs: its checkpoint entry is empty.

    Run checkpoints (:class:`medunlearn_monai.checkpoints.RunCheckpointer`) refuse a strategy handler without
    ``state_dict``/``load_state_dict``, so that none that draws random numbers is resumed with its generator reset.
    A handler derives from this only when it draws none and whatever it builds when the run starts (a mask, a
    frozen copy, a teacher) comes out the same in a resumed run: start handlers run before the checkpoint is loaded,
    on the source model, as in the uninterrupted run.
    """

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the handler keeps no state across epochs."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accept the empty state of :meth:`state_dict`.

        Raises:
            ValueError: when ``state`` is not empty (a checkpoint of another version of the handler).
        """
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no run state, but the checkpoint holds {sorted(state)}: "
                "it was made by another version of the strategy."
            )


def has_run_state(handler: Any) -> bool:
    """Whether ``handler`` follows the run-state protocol (``state_dict`` and ``load_state_dict``)."""
    return callable(getattr(handler, "state_dict", None)) and callable(getattr(handler, "load_state_dict", None))
