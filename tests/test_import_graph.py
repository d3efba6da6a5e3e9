"""The package's layers point one way, read from its source with ``ast`` (nothing is imported or run).

- ``medunlearn_monai.metrics`` scores: arrays and tensors in, numbers out. Its modules import nothing of the
  package outside ``metrics`` (so neither the evaluation that runs the evaluator, writes files and logs, nor
  ``tracking``, ``model_io`` or ``records``), neither MLflow nor matplotlib, and call no file-writing or logging
  helper.
- Nothing inside the package imports the command line (``medunlearn_monai.cli``).
- ``precision`` does not import ``checkpoints`` (both read their yes/no options with ``flags``).
- ``certificate`` does not import the evaluation or the metrics: it reads what they wrote (``<model>.eval.json``).
- ``records`` (paths and keys of the files beside a model) is the bottom layer: it imports no other module of the
  package.
- ``sisa.plan`` (where each subject's items go) takes at most the manifest from ``certificate``, nothing that issues
  or verifies certificates.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medunlearn_monai"
NAME = PACKAGE.name
# Calls that write files or log to MLflow, by the called function's or method's name.
WRITING_CALLS = {
    "open",
    "write_json",
    "write_atomically",
    "save_weights",
    "write_text",
    "write_bytes",
    "mkdir",
    "save",
    "savez",
    "savez_compressed",
    "savefig",
    "dump",
    "log_artifact",
    "log_artifacts",
    "log_figure",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_dict",
    "log_table",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def _imports(module: str) -> set[str]:
    """Every module ``module``'s source imports (at any depth of its code), as absolute dotted names.

    ``from a import b`` counts as importing ``a`` and, when ``a.b`` is a module, ``a.b`` too.
    """
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in MODULES)
    return found


def _loads(module: str) -> set[str]:
    """The package's modules that importing ``module`` loads, itself included: its imports, every package above
    each of them (its ``__init__`` runs first) and, in turn, theirs."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        parts = current.split(".")
        pending.extend(".".join(parts[:end]) for end in range(1, len(parts)))
        pending.extend(name for name in _imports(current) if name.split(".")[0] == NAME)
    return seen


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules_under(prefix: str) -> list[str]:
    found = [module for module in MODULES if _under(module, prefix)]
    assert found, f"no module {prefix} in {PACKAGE}"
    return found


def _offending_imports(module: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(name for name in _imports(module) if any(_under(name, prefix) for prefix in forbidden))


def _called_names(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Attribute):
                names.add(function.attr)
            elif isinstance(function, ast.Name):
                names.add(function.id)
    return names


@pytest.mark.parametrize("module", _modules_under(f"{NAME}.metrics"))
def test_metrics_import_nothing_of_the_package_outside_metrics(module):
    outside = sorted(
        name for name in _imports(module) if _under(name, NAME) and not _under(name, f"{NAME}.metrics") and name != NAME
    )
    assert not outside, f"{module} imports {outside}: metrics score arrays and tensors and import no other layer"


@pytest.mark.parametrize("module", _modules_under(f"{NAME}.metrics"))
def test_metrics_load_neither_tracking_nor_model_files(module):
    forbidden = (f"{NAME}.tracking", f"{NAME}.model_io", f"{NAME}.records", f"{NAME}.evaluation")
    loaded = sorted(name for name in _loads(module) if any(_under(name, prefix) for prefix in forbidden))
    assert not loaded, f"importing {module} loads {loaded}"


@pytest.mark.parametrize("module", _modules_under(f"{NAME}.metrics"))
def test_metrics_neither_log_nor_plot(module):
    offending = _offending_imports(module, ("mlflow", "matplotlib"))
    assert not offending, f"{module} imports {offending}: logging and plots belong to the evaluation"


@pytest.mark.parametrize("module", _modules_under(f"{NAME}.metrics"))
def test_metrics_write_no_files(module):
    calls = sorted(_called_names(module) & WRITING_CALLS)
    assert not calls, f"{module} calls {calls}: metrics return numbers, the evaluation writes and logs them"


@pytest.mark.parametrize("module", sorted(set(MODULES) - {f"{NAME}.cli"}))
def test_nothing_in_the_package_imports_the_command_line(module):
    assert not _offending_imports(module, (f"{NAME}.cli",)), f"{module} imports {NAME}.cli"


def test_precision_does_not_import_checkpoints():
    assert not _offending_imports(f"{NAME}.precision", (f"{NAME}.checkpoints",))


@pytest.mark.parametrize("module", _modules_under(f"{NAME}.certificate"))
def test_certificates_do_not_import_the_evaluation(module):
    offending = _offending_imports(module, (f"{NAME}.evaluation", f"{NAME}.metrics"))
    assert not offending, f"{module} imports {offending}: a certificate reads the evaluation's record instead"


def test_records_are_the_bottom_layer():
    inside = sorted(name for name in _imports(f"{NAME}.records") if _under(name, NAME))
    assert not inside, f"{NAME}.records imports {inside}"


def test_the_shard_plan_takes_at_most_the_manifest_from_certificates():
    certificates = f"{NAME}.certificate"
    offending = sorted(
        name
        for name in _imports(f"{NAME}.sisa.plan")
        if _under(name, certificates) and name != f"{certificates}.manifest"
    )
    assert not offending, f"{NAME}.sisa.plan imports {offending}: it needs item identities only"
