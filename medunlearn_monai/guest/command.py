"""``medunlearn guest``: run, print or verify one workflow of a guest bundle."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from medunlearn_monai.certificate import guarantee_lines, require_all_passed
from medunlearn_monai.guest.verify import verify_guest_certificate
from medunlearn_monai.guest.workflows import WORKFLOWS, plan

VERIFY = "verify"


def run_guest_command(
    bundle: str | os.PathLike,
    workflow: str,
    strategy: str | None = None,
    print_command: bool = False,
    certificate: str | None = None,
    guest_configs: str | Sequence[str] | None = None,
    **options: Any,
) -> str | None:
    """Run ``workflow`` (train, unlearn, evaluate) of the guest bundle in ``bundle``, or verify a certificate.

    Args:
        bundle: the guest bundle's folder.
        workflow: one of :data:`~medunlearn_monai.guest.workflows.WORKFLOWS`, or ``verify``.
        strategy: the unlearning strategy, for ``unlearn``.
        print_command: return the ``python -m monai.bundle run`` command line instead of running it.
        certificate: the erasure certificate to verify (``verify``, with ``model_path`` among ``options``).
        guest_configs: the guest's training config files in its ``configs/``, as a list or comma-separated.
        **options: ``layout``, ``task``, ``items_key``, ``test_items_key`` and config keys
            (see :func:`~medunlearn_monai.guest.workflows.plan`).

    Returns:
        The command line (``print_command``), the verification summary (``verify``), or None.

    Raises:
        ValueError: for an unknown workflow, or ``verify`` without a certificate and a model file.
        CertificateError: when a verification check fails (its verdicts are printed first).
    """
    names = [name.strip() for name in guest_configs.split(",")] if isinstance(guest_configs, str) else guest_configs
    if workflow == VERIFY:
        model_path = options.pop("model_path", None)
        if not certificate or not model_path:
            raise ValueError("verify needs --certificate FILE and --model_path FILE (the certified model).")
        training = plan(bundle, "train", guest_configs=names, **options)
        verdicts = verify_guest_certificate(training, certificate, model_path)
        print("\n".join([*map(str, verdicts), *guarantee_lines(certificate, model_path)]))
        return require_all_passed(verdicts)
    if workflow not in WORKFLOWS:
        raise ValueError(f"unknown workflow '{workflow}'; choose one of {', '.join([*WORKFLOWS, VERIFY])}.")
    run = plan(bundle, workflow, strategy, guest_configs=names, **options)
    if print_command:
        return run.command()
    run.run()
    return None
