"""The HTML report: built from fabricated but realistic MLflow runs, read back as a browser would."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import numpy as np
import pytest
from known_datasets import KnownDatasets
from PIL import Image

from medunlearn_monai.cli import main
from medunlearn_monai.report import REPORT_ARTIFACT, write_report
from medunlearn_monai.tracking import MLflowTracker, tracking_uri

REQUEST = "5f1c0a9e" * 8
CLASSIFICATION = {
    "original": {"retain_acc": 1.0, "forget_acc": 1.0, "test_acc": 0.744, "mia_efficacy": 0.0, "mia_loss_auc": 0.812},
    "retrain": {"retain_acc": 1.0, "forget_acc": 0.77, "test_acc": 0.723, "mia_efficacy": 0.41, "mia_loss_auc": 0.507,
                "unlearn_seconds": 55.19},
    "rl": {"retain_acc": 1.0, "forget_acc": 0.9, "test_acc": 0.673, "mia_efficacy": 0.49, "mia_loss_auc": 0.561,
           "gap_to_retrain": 6.5, "unlearn_seconds": 6.07, "speedup_vs_retrain": 9.09},
    "salun": {"retain_acc": 0.998, "forget_acc": 0.87, "test_acc": 0.662, "mia_efficacy": 0.39, "mia_loss_auc": 0.534,
              "gap_to_retrain": 4.58, "unlearn_seconds": 8.0, "speedup_vs_retrain": 6.9},
}  # fmt: skip
# AUC overall and per sex: (retain, test, test female, test male, forget, forget female, forget male)
AUC = {
    "original": (0.995, 0.868, 0.861, 0.874, 0.992, 0.993, 0.991),
    "retrain": (0.993, 0.854, 0.842, 0.866, 0.908, 0.902, 0.915),
    "rl": (0.981, 0.836, 0.821, 0.851, 0.915, 0.911, 0.920),
    "salun": (0.979, 0.836, 0.826, 0.845, 0.911, 0.905, 0.917),
}
AUC_NAMES = ("retain_auc", "test_auc", "test_auc_female", "test_auc_male", "forget_auc", "forget_auc_female",
             "forget_auc_male")  # fmt: skip
DIFFICULTY = [
    {"quantile": "easy", "strategy": "rl", "gap_to_retrain": 3.1, "forget_acc": 0.96, "forgotten": ["patient-00042"]},
    {"quantile": "hard", "strategy": "rl", "gap_to_retrain": 9.4, "forget_acc": 0.71},
    {"quantile": "easy", "strategy": "salun", "gap_to_retrain": 2.2, "forget_acc": 0.95},
    {"quantile": "hard", "strategy": "salun", "gap_to_retrain": 6.8, "forget_acc": 0.69},
]


def log_run(
    experiment, workflow, strategy=None, metrics=None, params=None, tags=None, artifact=None, datasets=None
) -> str:
    """One finished run as the workflows log it; ``artifact`` is (local file, artifact folder)."""
    tracker = MLflowTracker(
        experiment,
        f"{workflow}-{strategy}",
        params={"workflow": workflow, "strategy": strategy, **(params or {})},
        tags=tags,
        datasets=datasets,
    )
    run_id = tracker.start()
    tracker.log_metrics(metrics or {})
    if artifact:
        tracker.log_artifact(*artifact)
    tracker.end()
    return run_id


def log_classification_experiment(tmp_path: Path, name: str = "cxr") -> None:
    """Train/retrain/unlearn/evaluate runs with per-sex AUC, a tuning with a trial, U-LiRA and a difficulty study."""
    log_run(name, "train", "original", {"train_seconds": 61.0})
    log_run(name, "evaluate", "rl", {**CLASSIFICATION["rl"], "forget_acc": 0.999})  # superseded by the next one
    for method, metrics in CLASSIFICATION.items():
        auc = dict(zip(AUC_NAMES, AUC[method], strict=True))
        auc["test_auc_gap"] = auc["test_auc_female"] - auc["test_auc_male"]
        params = {"forget_request_sha256": REQUEST, "forget_subjects": 24}
        log_run(name, "evaluate", method, {**metrics, **auc}, params)
    tuning = log_run(
        name,
        "tune",
        "salun",
        {"tuning_seconds": 120.0, "best_gap_to_retrain": 4.1, "speedup_vs_retrain_incl_tuning": 0.43},
        {"best_lr": 0.01},
    )
    trial = {**CLASSIFICATION["salun"], "forget_acc": 0.123}
    log_run(name, "evaluate", "salun", trial, tags={"mlflow.parentRunId": tuning})  # a trial, not the method
    log_run(
        name,
        "ulira",
        metrics={"ulira_auc_rl": 0.581, "ulira_auc_salun": 0.532, "ulira_seconds": 300.0, "ulira_shadow_pairs": 2},
    )
    table = tmp_path / "difficulty_gaps.json"
    table.write_text(json.dumps(DIFFICULTY))
    log_run(name, "difficulty", metrics={"gap_to_retrain_easy_rl": 3.1}, artifact=(table, "tables"))


def log_segmentation_experiment(name: str = "mri") -> None:
    """Segmentation evaluations only (Dice, MAE), one made for a different forget request."""
    dice = {"original": (0.93, 0.93, 0.927), "retrain": (0.94, 0.932, 0.925), "max_loss": (0.71, 0.51, 0.71)}
    for method, (retain, forget, test) in dice.items():
        metrics = {"retain_dice": retain, "forget_dice": forget, "test_dice": test, "forget_mae": 0.02}
        if method != "original":
            metrics["unlearn_seconds"] = 300.0 if method == "retrain" else 40.0
        request = "b" * 64 if method == "max_loss" else "a" * 64
        log_run(name, "evaluate", method, metrics, {"forget_request_sha256": request})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module (creating one costs seconds) holding experiments ``cxr`` and ``mri``."""
    folder = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the sqlite store keeps artifacts under ./mlruns
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        log_classification_experiment(folder)
        log_segmentation_experiment()
    return uri


@pytest.fixture(autouse=True)
def shared_store(store, isolated_workdir, monkeypatch):
    """Point every test at the module's store; tests that add runs use experiments of their own."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)


class TableReader(HTMLParser):
    """The text of every cell of one ``<table id=...>``, row by row."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def table_cells(page: str, table_id: str = "comparison") -> dict[str, dict[str, str]]:
    """Rows of a table keyed by their first cell, each a header -> cell text mapping."""
    reader = TableReader(table_id)
    reader.feed(page)
    header, *rows = reader.rows
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def embedded_pngs(page: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        images.append(image)
    return images


def test_table_has_a_row_per_method_with_the_logged_numbers(tmp_path):
    page = write_report("cxr", tmp_path / "report.html").read_text()
    table = table_cells(page)
    assert list(table) == ["original", "retrain", "rl", "salun"]
    salun, rl = table["salun"], table["rl"]
    assert salun["forget acc"] == "87.0" and salun["retain acc"] == "99.8" and salun["MIA efficacy"] == "39.0"
    assert salun["gap to retrain"] == "4.58" and salun["seconds"] == "8.0" and salun["speedup"] == "6.9×"
    assert salun["loss-attack AUC"] == "0.534" and salun["U-LiRA AUC"] == "0.532"
    assert salun["tuning seconds"] == "120.0" and salun["speedup incl. tuning"] == "0.4×"
    assert salun["test AUC"] == "0.836" and salun["test AUC gap F-M"] == "-0.019"
    assert rl["forget acc"] == "90.0" and rl["U-LiRA AUC"] == "0.581" and rl["tuning seconds"] == "–"
    assert table["retrain"]["seconds"] == "55.2" and table["original"]["gap to retrain"] == "–"
    assert "U-LiRA used 2 shadow model pairs and took 300 s." in page
    assert (
        "from 10 runs (1 train, 6 evaluate, 1 tune, 1 ulira, 1 difficulty; 1 of them inside a tuning or study run)"
        in page
    )
    assert "forgotten subjects: 24." in page and REQUEST[:16] in page
    assert '<td class="best">4.58</td>' in page


def test_tuning_cost_goes_to_the_tuned_model_when_it_was_evaluated(tmp_path):
    log_run("tuned", "tune", "rl", {"tuning_seconds": 90.0, "speedup_vs_retrain_incl_tuning": 0.6})
    for method in ("retrain", "rl", "rl_tuned"):
        log_run("tuned", "evaluate", method, {"forget_acc": 0.8, "unlearn_seconds": 5.0})
    table = table_cells(write_report("tuned", tmp_path / "report.html").read_text())
    assert table["rl_tuned"]["tuning seconds"] == "90.0" and table["rl_tuned"]["speedup incl. tuning"] == "0.6×"
    assert table["rl"]["tuning seconds"] == "–" and table["retrain"]["tuning seconds"] == "–"


def test_each_method_says_whether_its_erasure_is_exact_and_what_its_gap_was_measured_against(tmp_path):
    log_run("guarantees", "evaluate", "original", {"forget_acc": 1.0})
    log_run("guarantees", "evaluate", "retrain", {"forget_acc": 0.8, "unlearn_seconds": 50.0})
    log_run("guarantees", "evaluate", "salun", {"gap_to_retrain": 4.0}, {"reference_model": "retrained.pt"})
    log_run("guarantees", "evaluate", "sisa", {"gap_to_retrain": 0.0}, {"reference_model": "sisa_retrained.pt"})
    page = write_report("guarantees", tmp_path / "report.html").read_text()
    table = table_cells(page)
    assert {method: row["guarantee"] for method, row in table.items()} == {
        "original": "–",
        "retrain": "exact",
        "salun": "approximate",
        "sisa": "exact",
    }
    assert table["salun"]["gap against"] == "retrained.pt" and table["sisa"]["gap against"] == "sisa_retrained.pt"
    assert table["retrain"]["gap against"] == "–"
    assert "<strong>Approximate</strong> (every other method)" in page and "sharded retraining" in page


def test_each_method_names_the_data_it_was_evaluated_on_by_digest(tmp_path):
    digests = {"retain": "ab" * 18, "forget": REQUEST[:36], "test": "cd" * 18}
    log_run("lineage", "evaluate", "retrain", {"forget_acc": 0.8}, datasets=KnownDatasets(digests))
    log_run("lineage", "evaluate", "rl", {"forget_acc": 0.7}, datasets=KnownDatasets({"forget": "ef" * 18}))
    log_run("lineage", "evaluate", "ft", {"forget_acc": 0.9})
    page = write_report("lineage", tmp_path / "report.html").read_text()
    table = table_cells(page)
    assert table["retrain"]["data"] == f"retain abababab · forget {REQUEST[:8]} · test cdcdcdcd"
    assert table["rl"]["data"] == "forget efefefef" and table["ft"]["data"] == "–"
    assert "the same digest means the same data" in page


def test_plots_are_embedded_pngs_and_the_page_loads_nothing_from_outside(tmp_path):
    page = write_report("cxr", tmp_path / "report.html").read_text()
    images = embedded_pngs(page)
    # forget-vs-retain and test-vs-seconds for accuracy and for AUC, easy/hard bars, AUC by sex
    assert len(images) == 6
    assert all(image.format == "PNG" and image.width > 300 and image.height > 200 for image in images)
    assert all(np.asarray(image.convert("L")).std() > 5 for image in images)
    assert {"difficulty", "sex", "tradeoffs"} <= set(re.findall(r'<section id="([a-z-]+)"', page))
    assert not re.search(r"https?://|<script|<link", page)
    difficulty = table_cells(page, "difficulty-table")
    assert difficulty["hard"]["gap to retrain"] == "6.80" and difficulty["easy"]["forget acc"] == "95.0"


def test_text_from_mlflow_is_escaped_and_unknown_table_fields_are_dropped(tmp_path):
    page = write_report("cxr", tmp_path / "report.html").read_text()
    assert "patient-00042" not in page and "forgotten" not in table_cells(page, "difficulty-table")["hard"]
    log_run("hostile", "evaluate", "<img src=x>", {"forget_acc": 0.5})
    page = write_report("hostile", tmp_path / "hostile.html").read_text()
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page
    assert table_cells(page)["<img src=x>"]["forget acc"] == "50.0"


def test_segmentation_report_has_dice_and_leaves_out_what_was_not_measured(tmp_path):
    page = write_report("mri", tmp_path / "report.html").read_text()
    table = table_cells(page)
    assert list(table) == ["original", "retrain", "max_loss"]
    assert table["max_loss"]["forget Dice"] == "0.510" and table["max_loss"]["forget MAE"] == "0.020"
    assert not {"forget acc", "U-LiRA AUC", "tuning seconds", "loss-attack AUC", "MIA efficacy"} & set(table["retrain"])
    assert len(embedded_pngs(page)) == 2  # forget vs retain Dice, test Dice vs seconds
    sections = set(re.findall(r'<section id="([a-z-]+)"', page))
    assert "difficulty" not in sections and "sex" not in sections and "tradeoffs" in sections
    assert "made for 2 different forget requests" in page


def test_report_is_logged_to_mlflow_as_a_finished_report_run(tmp_path):
    log_run("logged", "evaluate", "retrain", {"forget_acc": 0.77})
    first = write_report("logged", tmp_path / "first.html").read_text()
    second = write_report("logged", tmp_path / "second.html").read_text()
    assert "from 1 run (1 evaluate)" in first and "from 1 run (1 evaluate)" in second  # reports are not counted
    client = mlflow.MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("logged")
    reports = client.search_runs([experiment.experiment_id], "params.workflow = 'report'", order_by=["start_time DESC"])
    assert len(reports) == 2 and {run.info.status for run in reports} == {"FINISHED"}
    stored = client.download_artifacts(reports[0].info.run_id, REPORT_ARTIFACT, str(tmp_path))
    assert Path(stored).read_text() == second


def test_missing_experiment_or_evaluation_fails_clearly_and_writes_nothing(tmp_path):
    output = tmp_path / "report.html"
    with pytest.raises(ValueError, match=rf"'nope' at {re.escape(tracking_uri())} does not exist"):
        write_report("nope", output)
    log_run("only-training", "train", "original", {"train_seconds": 3.0})
    with pytest.raises(ValueError, match="'only-training' .* holds no finished evaluation"):
        write_report("only-training", output)
    assert not output.exists() and not list(tmp_path.glob(".report.html.*"))


def test_cli_writes_the_report_and_turns_a_bad_name_into_exit_code_2(tmp_path, capsys):
    assert main(["report", "--experiment", "mri", "--output", str(tmp_path / "out.html")]) == 0
    assert '<table id="comparison">' in (tmp_path / "out.html").read_text()
    assert main(["report", "--experiment", "nope"]) == 2
    assert "ValueError: MLflow experiment 'nope'" in capsys.readouterr().err


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    command = [
        shutil.which("chromium"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_headless_chromium_renders_the_report(tmp_path):
    page = write_report("cxr", tmp_path / "report.html")
    screenshot = tmp_path / "report.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1280,2000", page.as_uri(), profile=tmp_path / "profile-1")
    image = Image.open(screenshot)
    assert image.format == "PNG" and image.size == (1280, 2000)
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # text, table and plots, not a blank page
    assert (np.abs(pixels[..., 0] - pixels[..., 2]) > 60).mean() > 0.001  # coloured table header and plot marks
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-2").stdout
    table = table_cells(dom)
    assert list(table) == ["original", "retrain", "rl", "salun"]
    assert table["salun"]["forget acc"] == "87.0" and table["rl"]["U-LiRA AUC"] == "0.581"
