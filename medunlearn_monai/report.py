"""An HTML report of one MLflow experiment that a privacy officer can read, logged back to MLflow.

One self-contained page (inline CSS, plots as base64 PNG, no scripts, no external URLs): the
comparison of every method with exact retraining, trade-off plots, the easy/hard and per-sex
bias views. It is built from run metrics and aggregate tables only, never from items or requests,
so no subject identifier can reach it; every text taken from MLflow is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run

from medunlearn_monai import report_plots
from medunlearn_monai.certificate.issue import guarantee_of
from medunlearn_monai.comparison import (
    METRIC_COLUMNS,
    REFERENCE_METHODS,
    TEXT_COLUMNS,
    data_summary,
    html_cell,
    latest_by_strategy,
    latest_evaluations,
    search_runs,
    workflow_of,
)
from medunlearn_monai.records import REFERENCE_KEY, REQUEST_KEY, write_atomically
from medunlearn_monai.tracking import PARENT_RUN_TAG, MLflowTracker, tracking_uri

REPORT_ARTIFACT = "report/report.html"
DIFFICULTY_ARTIFACT = "tables/difficulty_gaps.json"
QUANTILES = ("easy", "hard")
TUNED_SUFFIX = "_tuned"  # tuning writes its best model as unlearned_<strategy>_tuned, evaluated as that strategy
WORKFLOW_ORDER = ("train", "retrain", "unlearn", "evaluate", "tune", "ulira", "difficulty")


# the aggregate fields of a difficulty table row the report shows; any other field is never rendered
DIFFICULTY_FIELDS = (
    *(f"{split}_{metric}" for metric in ("acc", "dice") for split in ("forget", "retain", "test")),
    "mia_efficacy",
    "mia_loss_auc",
    "gap_to_retrain",
    "unlearn_seconds",
)
DIFFICULTY_COLUMNS = tuple(column for column in METRIC_COLUMNS if column.key in DIFFICULTY_FIELDS)


@dataclass
class ExperimentRuns:
    """What the report reads from one experiment.

    Attributes:
        name: the experiment.
        runs: every run except earlier reports.
        evaluations: method -> its latest finished evaluation (child runs such as tuning trials excluded), in
            table order.
        tunings: strategy -> its latest finished ``workflow=tune`` run.
        ulira: the latest finished ``workflow=ulira`` run, or None.
        difficulty_gaps: rows of the latest finished ``workflow=difficulty`` run's table (known fields only).
    """

    name: str
    runs: list[Run]
    evaluations: dict[str, Run]
    tunings: dict[str, Run] = field(default_factory=dict)
    ulira: Run | None = None
    difficulty_gaps: list[dict[str, Any]] = field(default_factory=list)


def write_report(experiment_name: str, output: str | os.PathLike = "report.html") -> Path:
    """Write the HTML report of an experiment to ``output`` (atomically) and log it as ``report/report.html``.

    The copy in MLflow belongs to a new FINISHED run of the same experiment with param ``workflow=report``.

    Raises:
        ValueError: when the experiment does not exist or holds no finished evaluation.
    """
    client = mlflow.MlflowClient(tracking_uri=tracking_uri())
    experiment = read_experiment(client, experiment_name)
    page = render_report(experiment, datetime.now(timezone.utc))
    path = Path(output)
    write_atomically(path, lambda target: Path(target).write_text(page, encoding="utf-8"))
    tracker = MLflowTracker(
        experiment_name, "report", params={"workflow": "report", "methods": len(experiment.evaluations)}
    )
    tracker.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / Path(REPORT_ARTIFACT).name
            copy.write_text(page, encoding="utf-8")
            tracker.log_artifact(copy, str(Path(REPORT_ARTIFACT).parent))
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return path


def read_experiment(client: mlflow.MlflowClient, experiment_name: str) -> ExperimentRuns:
    """Collect the runs the report needs from ``experiment_name``.

    Raises:
        ValueError: when the experiment does not exist, holds no finished evaluation, or its
            difficulty table is malformed.
    """
    runs = [run for run in search_runs(client, experiment_name) if workflow_of(run) != "report"]
    evaluations = latest_evaluations(client, experiment_name, runs)
    finished = [run for run in runs if run.info.status == "FINISHED"]
    difficulty = next((run for run in finished if workflow_of(run) == "difficulty"), None)
    return ExperimentRuns(
        name=experiment_name,
        runs=runs,
        evaluations=evaluations,
        tunings=latest_by_strategy(run for run in finished if workflow_of(run) == "tune"),
        ulira=next((run for run in finished if workflow_of(run) == "ulira"), None),
        difficulty_gaps=_difficulty_gaps(client, difficulty) if difficulty else [],
    )


def comparison_rows(experiment: ExperimentRuns) -> list[dict[str, Any]]:
    """One row per method: its evaluation's metrics, its U-LiRA AUC and its tuning cost when those exist."""
    ulira = experiment.ulira.data.metrics if experiment.ulira else {}
    rows = []
    for method, run in experiment.evaluations.items():
        tuning = _tuning_of(method, experiment)
        rows.append(
            {
                **run.data.metrics,
                "method": method,
                "guarantee": None if method == "original" else guarantee_of(method),
                "gap_reference": _gap_reference(run),
                "data": data_summary(run),
                "ulira_auc": ulira.get(f"ulira_auc_{method}"),
                "tuning_seconds": tuning.get("tuning_seconds"),
                "speedup_vs_retrain_incl_tuning": tuning.get("speedup_vs_retrain_incl_tuning"),
            }
        )
    return rows


def _gap_reference(run: Run) -> str | None:
    """The model file the evaluation measured its gap to retrain against, when it measured one."""
    reference = run.data.params.get(REFERENCE_KEY)
    return None if reference in (None, "none") else reference


def _tuning_of(method: str, experiment: ExperimentRuns) -> dict[str, float]:
    """Metrics of the search that produced ``method``: the model tuning wrote (``<strategy>_tuned``) when it was
    evaluated, else the strategy's own row; {} when the strategy was not tuned."""
    if method.endswith(TUNED_SUFFIX):
        strategy = method.removesuffix(TUNED_SUFFIX)
    elif f"{method}{TUNED_SUFFIX}" in experiment.evaluations:
        return {}
    else:
        strategy = method
    return experiment.tunings[strategy].data.metrics if strategy in experiment.tunings else {}


def render_report(experiment: ExperimentRuns, generated: datetime) -> str:
    """The whole HTML page; a section appears only when its data exist."""
    rows = comparison_rows(experiment)
    sections = [
        _comparison_section(rows, experiment.ulira),
        _tradeoff_section(rows),
        _difficulty_section(experiment.difficulty_gaps),
        _sex_section(rows),
    ]
    title = f"Unlearning report: {experiment.name}"
    return _PAGE.format(
        title=_escape(title),
        style=_CSS,
        header=_header(experiment, title, generated),
        sections="\n".join(section for section in sections if section),
    )


def _difficulty_gaps(client: mlflow.MlflowClient, run: Run) -> list[dict[str, Any]]:
    """The easy/hard table of a difficulty run, keeping only its known aggregate fields; [] when it has none."""
    stored = {entry.path for entry in client.list_artifacts(run.info.run_id, str(Path(DIFFICULTY_ARTIFACT).parent))}
    if DIFFICULTY_ARTIFACT not in stored:
        return []
    with tempfile.TemporaryDirectory() as folder:
        table = json.loads(Path(client.download_artifacts(run.info.run_id, DIFFICULTY_ARTIFACT, folder)).read_text())
    problem = f"{DIFFICULTY_ARTIFACT} of difficulty run {run.info.run_id}"
    if not isinstance(table, list):
        raise ValueError(f"{problem} must be a list of rows, not {type(table).__name__}.")
    gaps = []
    for number, row in enumerate(table, start=1):
        if (
            not isinstance(row, Mapping)
            or row.get("quantile") not in QUANTILES
            or not isinstance(row.get("strategy"), str)
        ):
            raise ValueError(f"{problem}: row {number} needs 'quantile' (easy or hard) and 'strategy'.")
        if not isinstance(row.get("gap_to_retrain"), (int, float)):
            raise ValueError(f"{problem}: row {number} has no numeric 'gap_to_retrain'.")
        numbers = {column.key: row.get(column.key) for column in DIFFICULTY_COLUMNS}
        gaps.append({"quantile": row["quantile"], "strategy": row["strategy"], **numbers})
    return gaps


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _header(experiment: ExperimentRuns, title: str, generated: datetime) -> str:
    counts = Counter(workflow_of(run) for run in experiment.runs)
    order = {name: index for index, name in enumerate(WORKFLOW_ORDER)}
    workflows = sorted(counts, key=lambda name: (order.get(name, len(order)), name))
    by_workflow = ", ".join(f"{counts[workflow]} {_escape(workflow)}" for workflow in workflows)
    children = sum(PARENT_RUN_TAG in run.data.tags for run in experiment.runs)
    unfinished = sum(run.info.status != "FINISHED" for run in experiment.runs)
    notes = [f"{children} of them inside a tuning or study run"] if children else []
    notes += [f"{unfinished} did not finish"] if unfinished else []
    runs_line = (
        f"{len(experiment.runs)} run{'' if len(experiment.runs) == 1 else 's'} ({'; '.join([by_workflow, *notes])})"
    )
    requests = sorted({run.data.params.get(REQUEST_KEY, "") for run in experiment.evaluations.values()})
    subjects = sorted({run.data.params.get("forget_subjects", "") for run in experiment.evaluations.values()} - {""})
    request_line = ""
    if requests != [""]:
        digests = ", ".join(f"<code>{_escape(digest[:16])}…</code>" for digest in requests if digest)
        request_line = f"<p>Forget request (salted SHA-256): {digests}"
        request_line += f"; forgotten subjects: {_escape(', '.join(subjects))}.</p>" if subjects else ".</p>"
    warning = ""
    if len(requests) > 1:
        warning = (
            f'<p class="warning">The evaluations below were made for {len(requests)} different forget requests: '
            "compare only methods scored on the same request.</p>"
        )
    return f"""<header>
<h1>{_escape(title)}</h1>
<p class="meta">Generated {generated.strftime("%Y-%m-%d %H:%M UTC")} from {runs_line}.</p>
{request_line}{warning}
<section class="howto">
<h2>How to read this</h2>
<p>Each row of the table is one way of removing the forgotten subjects from a trained model, scored on three
data splits: <em>retain</em> (training data that stays), <em>forget</em> (the withdrawn subjects' data) and
<em>test</em> (patients the model never saw). <strong>Retrain</strong>, training again from scratch without the
forgotten subjects, is the exact answer and the reference; <strong>original</strong> is the model before any
removal. A good method behaves like retrain at a fraction of its cost.</p>
<p>The <strong>guarantee</strong> column says what kind of erasure a row is. <strong>Exact</strong> (retrain,
SISA): the model is trained from scratch without the forgotten subjects' data, so no weight was ever fitted to it,
and its erasure certificate proves what it was trained on. <strong>Approximate</strong> (every other method): the
model is edited from weights trained on the forgotten subjects' data; that reduces their influence but proves
nothing, and the gap to retrain and the attack scores below are the only evidence of how far it got. Its erasure
certificate says so and lists that evidence. SISA is compared with its own exact counterpart, sharded retraining
(<em>gap against</em> names the model each gap was measured against).</p>
<p><strong>Gap to retrain</strong> is the mean absolute difference from retrain over the quality and attack
scores, in percentage points: 0 means the method cannot be told apart from retraining by these scores, and
lower is better. <strong>Membership-inference attacks</strong> try to tell whether the forgotten subjects were
used in training. An attack AUC of <strong>0.5</strong> is a coin flip: the forgotten subjects look like patients
the model never saw. Values well above 0.5 mean traces of them remain; compare with retrain's value, which is
what genuine forgetting looks like on the same data.</p>
</section>
</header>"""


def _comparison_section(rows: Sequence[Mapping[str, Any]], ulira: Run | None) -> str:
    columns = [column for column in METRIC_COLUMNS if any(row.get(column.key) is not None for row in rows)]
    texts = [column for column in TEXT_COLUMNS if any(row.get(column.key) is not None for row in rows)]
    gaps = {row["method"]: row["gap_to_retrain"] for row in rows if row.get("gap_to_retrain") is not None}
    best = min((method for method in gaps if method not in REFERENCE_METHODS), key=gaps.get, default=None)
    head = "".join(
        f'<th title="{_escape(column.meaning)}">{_escape(column.header)}</th>' for column in [*texts, *columns]
    )
    body = []
    for row in rows:
        css = ' class="reference"' if row["method"] in REFERENCE_METHODS else ""
        cells = [f'<td class="text">{html_cell(column, row.get(column.key))}</td>' for column in texts]
        for column in columns:
            marked = ' class="best"' if column.key == "gap_to_retrain" and row["method"] == best else ""
            cells.append(f"<td{marked}>{html_cell(column, row.get(column.key))}</td>")
        body.append(f'<tr{css}><th scope="row">{_escape(row["method"])}</th>{"".join(cells)}</tr>')
    glossary = "".join(
        f"<dt>{_escape(column.header)}</dt><dd>{_escape(column.meaning)}</dd>" for column in [*texts, *columns]
    )
    note = ""
    if ulira:
        pairs, seconds = ulira.data.metrics.get("ulira_shadow_pairs"), ulira.data.metrics.get("ulira_seconds")
        if pairs is not None and seconds is not None:
            note = f"<p>U-LiRA used {pairs:.0f} shadow model pairs and took {seconds:.0f} s.</p>"
    best_note = f"<p>Closest to retraining: <strong>{_escape(best)}</strong> (marked).</p>" if best else ""
    return f"""<section id="comparison-section">
<h2>Methods compared with exact retraining</h2>
<p>Latest finished evaluation of each method. Shaded rows are the references.</p>
<table id="comparison">
<thead><tr><th scope="col">method</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
{best_note}{note}
<dl class="glossary">{glossary}</dl>
</section>"""


def _tradeoff_section(rows: Sequence[Mapping[str, Any]]) -> str:
    figures = []
    for family, (label, _) in report_plots.QUALITY_LABELS.items():
        if any(row.get(f"forget_{family}") is not None and row.get(f"retain_{family}") is not None for row in rows):
            figures.append(_figure(report_plots.quality_tradeoff(rows, family), f"forget versus retain {label}"))
        if any(row.get(f"test_{family}") is not None and row.get("unlearn_seconds") is not None for row in rows):
            figures.append(_figure(report_plots.quality_cost(rows, family), f"test {label} versus seconds"))
    if not figures:
        return ""
    tuned = any(row.get("tuning_seconds") is not None for row in rows)
    tuning = "; hollow circles add the time spent tuning its hyperparameters" if tuned else ""
    return f"""<section id="tradeoffs">
<h2>Trade-offs</h2>
<p>Left: a method should land on the red star (retrain): forget quality as low as retraining gives, retain
quality kept. Right: what the method's test quality costs in seconds{tuning}.</p>
<div class="figures">{"".join(figures)}</div>
</section>"""


def _difficulty_section(gaps: Sequence[Mapping[str, Any]]) -> str:
    if not gaps:
        return ""
    columns = [column for column in DIFFICULTY_COLUMNS if any(row.get(column.key) is not None for row in gaps)]
    head = "".join(f"<th>{_escape(column.header)}</th>" for column in columns)
    body = "\n".join(
        f'<tr><td class="text">{_escape(row["quantile"])}</td><td class="text">{_escape(row["strategy"])}</td>'
        + "".join(f"<td>{html_cell(column, row.get(column.key))}</td>" for column in columns)
        + "</tr>"
        for row in gaps
    )
    return f"""<section id="difficulty">
<h2>Easy versus hard subjects to forget</h2>
<p>The difficulty study repeats the comparison with forget sets drawn from the subjects the original model fits
best (easy: lowest loss) and worst (hard: highest loss). A method whose gap to retrain grows on the hard quantile
forgets well only when forgetting is easy.</p>
<div class="figures">{_figure(report_plots.difficulty_gaps(gaps), "gap to retrain by difficulty quantile")}</div>
<table id="difficulty-table">
<thead><tr><th>quantile</th><th>method</th>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
</section>"""


def _sex_section(rows: Sequence[Mapping[str, Any]]) -> str:
    splits = [
        split
        for split in ("test", "forget")
        if any(row.get(f"{split}_auc_female") is not None and row.get(f"{split}_auc_male") is not None for row in rows)
    ]
    if not splits:
        return ""
    return f"""<section id="sex">
<h2>Quality by sex</h2>
<p>AUC among female and male patients. Unlearning should not widen the difference between the groups, on patients
never seen (test) or on the forgotten subjects (forget).</p>
<div class="figures">{_figure(report_plots.auc_by_sex(rows, splits), "AUC by sex per method")}</div>
</section>"""


def _figure(figure: Any, caption: str) -> str:
    source = report_plots.png_base64(figure)
    return (
        f'<figure><img alt="{_escape(caption)}" src="data:image/png;base64,{source}">'
        f"<figcaption>{_escape(caption)}</figcaption></figure>"
    )


_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #1d2330; margin: 24px 32px; line-height: 1.45; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; color: #24406b; }
.meta { color: #555; margin-top: 0; } .howto { background: #f3f6fa; border-left: 4px solid #24406b;
 padding: 4px 16px; } .warning { background: #fff1e0; border-left: 4px solid #d9822b; padding: 8px 12px; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th, td { border: 1px solid #c9d1dc; padding: 4px 8px; text-align: right; }
thead th { background: #24406b; color: #fff; font-weight: 600; } tbody th { text-align: left; }
td.text { text-align: left; } tr.reference { background: #eef1f5; } td.best { background: #d8f0dc; font-weight: 700; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; } figure { margin: 0; }
figure img { max-width: 100%; border: 1px solid #e1e5eb; } figcaption { font-size: 13px; color: #555; }
.glossary { font-size: 13px; color: #444; display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
.glossary dt { font-weight: 600; } .glossary dd { margin: 0; }
footer { margin-top: 32px; font-size: 13px; color: #666; }
"""
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{header}
<main>
{sections}
</main>
<footer>This page holds metrics and aggregate tables only: no subject identifiers, no images of patients.</footer>
</body>
</html>
"""
