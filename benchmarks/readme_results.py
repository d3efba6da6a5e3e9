"""Rewrite the headline protocol tables of the results page from ``benchmarks/results/classification_protocol.json``.

The tables live on the documentation site's results page, ``docs/results/index.md`` (the README links to it). The
block between the ``<!-- protocol-results`` marker and the CheXpert paragraph is generated, never typed:

    python benchmarks/readme_results.py
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _report import markdown_table, plus_minus

ROOT = Path(__file__).resolve().parents[1]
# The results page of the documentation site (mkdocs.yml); the README keeps a short headline and links to it.
PAGE = ROOT / "docs" / "results" / "index.md"
RESULTS = ROOT / "benchmarks" / "results" / "classification_protocol.json"
START = "<!-- protocol-results"
END = "\n\n**CheXpert per sex**"
ARMS = ("synthetic_tissuemnist", "breastmnist")
SWEEP_METHODS = ("ft", "ga", "neggrad_plus", "rl", "salun")
COLUMNS = [("method", "method"), ("gap", "Avg. Gap"), ("speedup", "speedup"), ("retain", "retain acc %"),
           ("forget", "forget acc %"), ("test", "test acc %"), ("mia", "loss-attack AUC"),
           ("probe", "probe forget acc %"), ("ulira", "U-LiRA AUC")]  # fmt: skip


def _row(name: str, entry: Mapping[str, Any], speedup: str | None = None) -> dict[str, str]:
    get = entry.get
    return {
        "method": name,
        "gap": plus_minus(get("gap_mean"), get("gap_std")),
        "speedup": speedup or plus_minus(get("speedup_mean"), get("speedup_std"), digits=1),
        "retain": plus_minus(get("retain_acc_mean"), get("retain_acc_std"), 100, 1),
        "forget": plus_minus(get("forget_acc_mean"), get("forget_acc_std"), 100, 1),
        "test": plus_minus(get("test_acc_mean"), get("test_acc_std"), 100, 1),
        "mia": plus_minus(get("mia_loss_auc_mean"), get("mia_loss_auc_std"), digits=3),
        "probe": plus_minus(get("probe_forget_acc_mean"), get("probe_forget_acc_std"), 100, 1),
        "ulira": plus_minus(get("ulira_auc_mean"), get("ulira_auc_std"), digits=3),
    }


def arm_section(name: str, arm: Mapping[str, Any]) -> str:
    pairs = arm.get("ulira_shadow_pairs") or 0
    ulira = f"{pairs} shadow pairs per seed" if pairs else "not run yet"
    rows = [_row("noise floor", arm["noise_floor"], speedup="-")]
    rows += [_row(method, entry) for method, entry in {**arm["references"], **arm["methods"]}.items()]
    seeds = ", ".join(map(str, arm["seeds"]))
    return (
        f"**{name}** ({arm['data']}; seeds {seeds}; forget {arm['headline_forget_fraction']:.0%}; "
        f"U-LiRA: {ulira}):\n\n{markdown_table(rows, COLUMNS, lambda key, value: value)}"
    ).replace("%;", " %;", 1)


def sweep_section(arms: Mapping[str, Any]) -> str:
    rows = []
    for name in ARMS:
        sweep = arms[name]["forget_fraction_sweep"]
        for method in SWEEP_METHODS:
            drops = {f: sweep[f][method] for f in sweep}
            cells = {
                f: plus_minus(d["test_drop_vs_retrain_mean"], d["test_drop_vs_retrain_std"], digits=1)
                for f, d in drops.items()
            }
            rows.append({"arm": name, "method": method, **cells})
    fractions = list(arms[ARMS[0]]["forget_fraction_sweep"])
    columns = [("arm", "arm"), ("method", "method"), *((f, f"{float(f):.0%}".replace("%", " %")) for f in fractions)]
    return (
        "Test-accuracy drop against the retrained model (points, mean ± std over seeds) by forget-set size (the "
        f"methods of the sweep):\n\n{markdown_table(rows, columns, lambda key, value: value)}"
    )


def main() -> None:
    arms = json.loads(RESULTS.read_text())["arms"]
    block = "\n\n".join([*(arm_section(name, arms[name]) for name in ARMS), sweep_section(arms)])
    text = PAGE.read_text()
    start = text.index(START)
    header_end = text.index("\n", start) + 1
    end = text.index(END, header_end)
    PAGE.write_text(text[:header_end] + block + "\n" + text[end:])
    print(f"{PAGE.relative_to(ROOT)}: protocol tables rewritten from {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
