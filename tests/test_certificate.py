"""Erasure certificates: issued by retraining and unlearning, completed by evaluation, re-checked by the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from medunlearn_monai import tracking
from medunlearn_monai.certificate import (
    EVIDENCE,
    GUARANTEES,
    CertificateError,
    CertificateWriter,
    batch_identities,
    erasure_proof,
    guarantee_lines,
    read_certificate,
    retain_manifest,
)
from medunlearn_monai.cli import _root_cause, main
from medunlearn_monai.data.medmnist import load_medmnist_items
from medunlearn_monai.data.synthetic import write_synthetic_tissuemnist
from medunlearn_monai.forget import ForgetRequest, ForgetSplit
from medunlearn_monai.records import certificate_path, evaluation_path, file_sha256, read_json, record_path, write_json
from medunlearn_monai.registry import register_model
from medunlearn_monai.workflows import run_workflow

BUNDLE = "tissuemnist_resnet_classification"
SALT = "certificate-test-salt"
TINY = {"batch_size": 32, "max_epochs": 1, "experiment_name": "certificates"}
EPOCHS_KEY = {"retrained": "max_epochs", "unlearned_rl": "unlearn_epochs"}  # training and unlearning budgets
VERSION_KEYS = {"python", "torch", "monai", "ignite", "mlflow", "medunlearn_monai"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train, retrain, unlearn (rl, ft) and evaluate the original, retrained and rl models, once for the module."""
    work = tmp_path_factory.mktemp("certificates")
    data = write_synthetic_tissuemnist(work / "data" / "tissuemnist.npz", n_train=120, n_val=30, n_test=60)
    request = ForgetRequest.generate(load_medmnist_items(data, "train"), 0.2, seed=0)
    (work / "request.txt").write_text("\n".join(request.subject_ids) + "\n")
    environment = {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "MEDUNLEARN_SALT": SALT}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for key, value in environment.items():
            patch.setenv(key, value)
        common = {"dataset_dir": str(work / "data"), "model_dir": str(work / "models"), **TINY}
        with_request = {**common, "forget_request_file": str(work / "request.txt")}
        run_workflow(BUNDLE, "train", **common)
        run_workflow(BUNDLE, "train", **with_request)
        run_workflow(BUNDLE, "unlearn", "rl", **with_request, unlearn_epochs=1)
        run_workflow(BUNDLE, "unlearn", "ft", **with_request, unlearn_epochs=2)  # its own budget, not max_epochs
        for model in ("model", "retrained", "unlearned_rl"):
            run_workflow(BUNDLE, "evaluate", **with_request, model_path=str(work / "models" / f"{model}.pt"))
    return work, request, environment


@pytest.fixture
def deployment(runs, monkeypatch):
    """The module's deployment: its salt and MLflow store, in its working folder."""
    work, request, environment = runs
    monkeypatch.chdir(work)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return work, request


def verify(
    work: Path, model: Path, request_file: Path, capsys, certificate: Path | None = None
) -> tuple[int, str, str]:
    certificate = certificate or certificate_path(work / "models" / "unlearned_rl.pt")
    code = main(
        ["verify-certificate", str(certificate), str(model),
         "--bundle", BUNDLE, "--dataset_dir", str(work / "data"), "--forget_request_file", str(request_file)]
    )  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("model", ["retrained", "unlearned_rl"])
def test_retraining_and_unlearning_issue_a_complete_certificate(runs, model):
    work, request, environment = runs
    models = work / "models"
    certificate = read_certificate(certificate_path(models / f"{model}.pt"))
    items = load_medmnist_items(work / "data" / "tissuemnist.npz", "train")
    split = request.split(items)
    salt = SALT.encode()

    assert certificate["workflow"] == ("retrain" if model == "retrained" else "unlearn")
    assert certificate["strategy"] == ("retrain" if model == "retrained" else "rl")
    assert certificate["forget_request_sha256"] == request.sha256(salt)
    assert certificate["counts"] == {
        "forgotten_subjects": 24,
        "forgotten_items": 24,
        "retained_subjects": 96,
        "retained_items": 96,
        "trained_items": 96 if model == "retrained" else 120,
        "trained_forget_items": 0 if model == "retrained" else 24,
    }
    assert certificate["retain_manifest"]["sha256"] == retain_manifest(split.retain, salt, work / "data").sha256
    assert certificate["retain_manifest"]["forgotten_subjects_in_manifest"] == 0
    assert certificate["model_sha256"] == file_sha256(models / f"{model}.pt")
    assert certificate["source_model_sha256"] == file_sha256(models / "model.pt")
    assert (
        certificate["hyperparameters"]["learning_rate"] > 0 and certificate["hyperparameters"][EPOCHS_KEY[model]] == 1
    )
    assert certificate["seed"] == 0 and certificate["bundle"] == BUNDLE
    # one epoch over every trained item (unlearning keeps the last partial batch; 96 retained items fill 3 batches)
    timing = certificate["timing"]
    assert timing["epochs"] == 1
    assert timing["seconds"] * timing["samples_per_second"] == pytest.approx(certificate["counts"]["trained_items"])
    assert set(certificate["versions"]) == VERSION_KEYS and certificate["versions"]["torch"] == torch.__version__

    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    logged = [entry.path for entry in client.list_artifacts(certificate["mlflow_run_id"], "certificate")]
    assert logged == [f"certificate/{model}.certificate.json"]
    assert client.get_run(certificate["mlflow_run_id"]).data.params["workflow"] == certificate["workflow"]


def test_the_original_model_gets_no_certificate(runs):
    work, _, _ = runs
    assert (work / "models" / "model.pt").is_file()
    assert not certificate_path(work / "models" / "model.pt").exists()


def test_certificates_name_no_subject_and_hold_no_salt(runs):
    work, _, _ = runs
    subjects = [item["subject"] for item in load_medmnist_items(work / "data" / "tissuemnist.npz", "train")]
    for model in ("retrained", "unlearned_rl"):
        text = certificate_path(work / "models" / f"{model}.pt").read_text()
        assert not [subject for subject in subjects if subject in text]
        assert SALT not in text
        assert "train-0" not in text  # not even a fragment of the MedMNIST ID pattern


def test_the_proof_fails_when_a_forgotten_item_is_put_back_into_the_retained_data(runs):
    work, request, _ = runs
    salt = SALT.encode()
    split = request.split(load_medmnist_items(work / "data" / "tissuemnist.npz", "train"))
    honest = retain_manifest(split.retain, salt, work / "data")
    leaky = retain_manifest([*split.retain, split.forget[0]], salt, work / "data")
    assert leaky.sha256 != honest.sha256
    assert (honest.forgotten_subjects(request, salt), leaky.forgotten_subjects(request, salt)) == (0, 1)
    with pytest.raises(CertificateError, match="1 of the 24 forgotten subjects have items in the retained"):
        erasure_proof(request, ForgetSplit([*split.retain, split.forget[0]], split.forget[1:]), [], salt, work / "data")
    with pytest.raises(CertificateError, match="would train on 1 items that are not in the retained data"):
        erasure_proof(request, split, [*split.retain, split.forget[0]], salt, work / "data")


def test_the_manifest_keys_files_by_their_path_inside_the_data_so_moving_the_data_keeps_it(tmp_path):
    salt = b"salt"
    for root in ("site_a", "site_b"):
        for subject in ("s1", "s2"):
            (tmp_path / root / subject).mkdir(parents=True)
            (tmp_path / root / subject / "t1.nii.gz").write_bytes(b"x")

    def items(root: str) -> list[dict]:
        folder = tmp_path / root
        return [{"image": [str(folder / s / "t1.nii.gz")], "label": "", "subject": s} for s in ("s2", "s1")]

    moved = retain_manifest(items("site_b"), salt, tmp_path / "site_b")
    assert retain_manifest(items("site_a"), salt, tmp_path / "site_a").sha256 == moved.sha256
    swapped = [{**item, "image": [item["image"][0].replace("s1", "s2")]} for item in items("site_b")]
    assert retain_manifest(swapped, salt, tmp_path / "site_b").sha256 != moved.sha256
    pixels = [{"image": np.zeros((1, 28, 28), np.uint8), "subject": "s1"}]
    changed = [{"image": np.ones((1, 28, 28), np.uint8), "subject": "s1"}]
    assert retain_manifest(pixels, salt, tmp_path).sha256 != retain_manifest(changed, salt, tmp_path).sha256


def test_verify_certificate_passes_on_the_untouched_model(deployment, capsys):
    work, _ = deployment
    code, out, err = verify(work, work / "models" / "unlearned_rl.pt", work / "request.txt", capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == [
        "PASS model_sha256",
        "PASS forget_request_sha256",
        "PASS retain_manifest_sha256",
        "PASS learned_items_retained",
    ]
    assert lines[3].endswith(
        "96 of the 96 items the trainer learned from are in the retained data rebuilt here; 24 forget items were "
        "given to it flagged, to be unlearned"
    )
    assert lines[4] == f"guarantee: approximate (rl): {GUARANTEES['approximate']}"
    assert lines[5].startswith("evidence (unlearned_rl.eval.json): gap_to_retrain ")
    assert "(against retrained.pt), mia_loss_auc 0." in lines[5] and "probe_forget_acc" in lines[5]
    assert lines[6] == "missing: nothing"
    assert lines[-1] == "certificate verified: all 4 checks passed."


def test_verify_certificate_fails_on_a_model_with_one_byte_changed(deployment, capsys, tmp_path):
    work, _ = deployment
    tampered = tmp_path / "unlearned_rl.pt"
    content = bytearray((work / "models" / "unlearned_rl.pt").read_bytes())
    content[len(content) // 2] ^= 0x01
    tampered.write_bytes(bytes(content))
    code, out, err = verify(work, tampered, work / "request.txt", capsys)
    assert code == 2
    assert "FAIL model_sha256" in out and "PASS retain_manifest_sha256" in out
    assert (
        err.strip().splitlines()[-1]
        == "medunlearn: error: CertificateError: 1 of 4 certificate checks failed: model_sha256."
    )


def test_verify_certificate_fails_on_a_different_request(deployment, capsys, tmp_path):
    work, request = deployment
    (tmp_path / "other.txt").write_text("\n".join(request.subject_ids[1:]) + "\n")
    code, out, err = verify(work, work / "models" / "unlearned_rl.pt", tmp_path / "other.txt", capsys)
    assert code == 2
    assert "PASS model_sha256" in out and "FAIL forget_request_sha256" in out
    assert "FAIL learned_items_retained: the record of learned items does not fit the rebuilt retained data" in out
    failed = "forget_request_sha256, retain_manifest_sha256, learned_items_retained"
    assert f"3 of 4 certificate checks failed: {failed}." in err
    assert request.subject_ids[0] not in out + err


def test_evaluation_adds_its_metrics_and_the_references_to_the_certificate(runs):
    work, request, environment = runs
    models = work / "models"
    certificate = read_certificate(certificate_path(models / "unlearned_rl.pt"))
    metrics = certificate["metrics"]
    evaluation = read_json(evaluation_path(models / "unlearned_rl.pt"))
    assert {"mia_efficacy", "mia_loss_auc", "gap_to_retrain", "forget_acc", "test_acc"} <= metrics["model"].keys()
    assert metrics["model"]["gap_to_retrain"] == evaluation["gap_to_retrain"]
    assert metrics["original"]["forget_acc"] == read_json(evaluation_path(models / "model.pt"))["forget_acc"]
    assert metrics["retrained"]["forget_acc"] == read_json(evaluation_path(models / "retrained.pt"))["forget_acc"]
    assert certificate["model_sha256"] == file_sha256(models / "unlearned_rl.pt")  # still the certified model
    retrained = read_certificate(certificate_path(models / "retrained.pt"))["metrics"]
    assert "mia_efficacy" in retrained["model"] and "original" in retrained and "retrained" not in retrained

    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("certificates").experiment_id
    evaluate_rl = client.search_runs([experiment], "params.workflow = 'evaluate' and params.strategy = 'rl'")[0]
    for run_id in (evaluate_rl.info.run_id, certificate["mlflow_run_id"]):
        folder = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="certificate", dst_path=str(work / "downloads" / run_id),
            tracking_uri=environment["MLFLOW_TRACKING_URI"],
        )  # fmt: skip
        assert read_json(Path(folder) / "unlearned_rl.certificate.json")["metrics"] == metrics


def test_evaluation_refuses_a_model_that_is_not_the_certified_one(deployment, tmp_path, capsys):
    work, _ = deployment
    models = tmp_path / "models"
    models.mkdir()
    for path in (work / "models" / "unlearned_rl.pt", record_path(work / "models" / "unlearned_rl.pt")):
        shutil.copy(path, models / path.name)
    shutil.copy(certificate_path(work / "models" / "unlearned_rl.pt"), certificate_path(models / "unlearned_rl.pt"))
    weights = torch.load(models / "unlearned_rl.pt", weights_only=True)
    first = next(name for name, value in weights.items() if value.is_floating_point())
    weights[first] = weights[first] + 1.0
    torch.save(weights, models / "unlearned_rl.pt")
    certified = certificate_path(models / "unlearned_rl.pt").read_bytes()

    code = main(
        ["run", BUNDLE, "evaluate", "--dataset_dir", str(work / "data"), "--model_dir", str(work / "models"),
         "--forget_request_file", str(work / "request.txt"), "--model_path", str(models / "unlearned_rl.pt"),
         "--experiment_name", "certificates-refused"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "CertificateError: " in err and "is not the model its certificate unlearned_rl.certificate.json" in err
    assert not evaluation_path(models / "unlearned_rl.pt").exists()
    assert certificate_path(models / "unlearned_rl.pt").read_bytes() == certified


def test_the_registry_carries_the_certificate_with_the_model(deployment):
    work, _ = deployment
    model = work / "models" / "unlearned_rl.pt"
    registration = register_model(model, "certified-classifier", "certificates-registry")
    assert "unlearned_rl.certificate.json" in registration.artifacts
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    version = client.get_model_version("certified-classifier", str(registration.version))
    assert version.tags["certificate_sha256"] == file_sha256(certificate_path(model))
    assert version.tags["forget_request_sha256"] == read_certificate(certificate_path(model))["forget_request_sha256"]


@pytest.mark.parametrize(("model", "guarantee"), [("retrained", "exact"), ("unlearned_rl", "approximate")])
def test_the_certificate_says_what_kind_of_erasure_it_certifies(runs, model, guarantee):
    work, _, _ = runs
    models = work / "models"
    certificate = read_certificate(certificate_path(models / f"{model}.pt"))
    assert certificate["schema_version"] == 2
    assert certificate["guarantee"] == guarantee and certificate["guarantee_meaning"] == GUARANTEES[guarantee]
    if guarantee == "exact":
        assert "evidence" not in certificate
        return
    evaluation = read_json(evaluation_path(models / f"{model}.pt"))
    assert evaluation["reference_model"] == "retrained.pt"
    assert evaluation["model_sha256"] == certificate["model_sha256"]
    evidence = certificate["evidence"]
    assert evidence["evaluation"] == "unlearned_rl.eval.json" and evidence["missing"] == {}
    assert evidence["available"] == {**{name: evaluation[name] for name in EVIDENCE}, "gap_reference": "retrained.pt"}


def test_an_approximate_certificate_lists_the_evidence_it_lacks(deployment, tmp_path):
    work, _ = deployment
    model, certificate = tmp_path / "unlearned_rl.pt", tmp_path / "unlearned_rl.certificate.json"
    shutil.copy(work / "models" / "unlearned_rl.pt", model)
    shutil.copy(certificate_path(work / "models" / "unlearned_rl.pt"), certificate)
    lines = guarantee_lines(certificate, model)
    assert lines[0].startswith("guarantee: approximate (rl): ")
    assert lines[1].startswith("evidence: none: no evaluation of this model file for this request")
    assert lines[2] == "missing: " + "; ".join(f"{name} ({how})" for name, (_, how) in EVIDENCE.items())
    # an evaluation of another model file does not count, even beside this one
    evaluation = read_json(evaluation_path(work / "models" / "unlearned_rl.pt"))
    write_json(evaluation_path(model), {**evaluation, "model_sha256": file_sha256(work / "models" / "model.pt")})
    assert guarantee_lines(certificate, model)[1:] == lines[1:]
    write_json(evaluation_path(model), {key: value for key, value in evaluation.items() if key != "probe_forget_acc"})
    assert guarantee_lines(certificate, model)[2].startswith("missing: probe_forget_acc (evaluate this classifier")


def test_a_forgotten_item_fed_to_the_trainer_unflagged_stops_the_run_and_fails_verification(
    deployment, tmp_path, monkeypatch, capsys
):
    """The override slips past the check of the listed items; the record of the consumed ones catches it."""
    work, _ = deployment
    leak = {"train#dataset#data": "$@train#items + @forget_split.forget[:1]", "train#dataloader#drop_last": False}
    retrain = {"dataset_dir": str(work / "data"), "forget_request_file": str(work / "request.txt"), **TINY, **leak}
    with pytest.raises(Exception) as error:
        run_workflow(BUNDLE, "train", **retrain, model_dir=str(tmp_path / "refused"))
    tracking.fail_open_runs()
    cause = _root_cause(error.value)
    assert isinstance(cause, CertificateError)
    assert "1 items without the forget flag that are not in the retained data; stopped before" in str(cause)
    assert not (tmp_path / "refused" / "retrained.pt").exists()

    def record_without_refusing(self, identities, forget_flags):  # a writer that would let the run finish
        if self.consumed is None:
            self.check()
        self.consumed.add(identities, forget_flags)

    monkeypatch.setattr(CertificateWriter, "record", record_without_refusing)
    model = tmp_path / "leaky" / "retrained.pt"
    run_workflow(BUNDLE, "train", **retrain, model_dir=str(model.parent))
    consumed = read_certificate(certificate_path(model))["consumed_items"]
    assert consumed["learned_items"] == 97 and consumed["learned_outside_manifest"] == 1
    code, out, err = verify(work, model, work / "request.txt", capsys, certificate_path(model))
    assert code == 2
    assert "PASS retain_manifest_sha256" in out
    assert "FAIL learned_items_retained: 96 of the 97 items the trainer learned from are in the retained" in out
    assert err.strip().endswith("CertificateError: 1 of 4 certificate checks failed: learned_items_retained.")


def test_batches_must_carry_item_identities_and_the_bitmap_marks_the_learned_ones():
    with pytest.raises(CertificateError, match="carry no 'item_sha256'"):
        batch_identities({"image": torch.zeros(2, 1, 4, 4), "subject": ["s1", "s2"]})
    identities, flags = batch_identities({"item_sha256": ["a", "b"], "forget": torch.tensor([0, 1])})
    assert identities == ["a", "b"] and flags == [False, True]
    items = [{"image": np.full((1, 2, 2), value, np.uint8), "subject": f"s{value}"} for value in range(10)]
    manifest = retain_manifest(items, b"salt", ".")
    learned = sorted(manifest.identities)[::3]
    assert manifest.chosen(manifest.bitmap(learned)) == learned
    with pytest.raises(ValueError, match="a bitmap of 2 bytes does not cover a manifest of 8 items"):
        retain_manifest(items[:8], b"salt", ".").chosen(manifest.bitmap(learned))


# FT's effect is a mechanism, not an outcome: it fine-tunes on the retained items alone (its measured forget-accuracy
# drop is 0 in the end-to-end settings, benchmarks/results/outcome_spread*.md). The certificate's record of what the
# trainer consumed shows it: every retained item, no forget item; RL consumes the forget items too, flagged.
def test_fine_tuning_consumes_every_retained_item_and_no_forgotten_one(runs):
    work, request, _ = runs
    split = request.split(load_medmnist_items(work / "data" / "tissuemnist.npz", "train"))
    manifest = retain_manifest(split.retain, SALT.encode(), work / "data")
    consumed = {
        model: read_certificate(certificate_path(work / "models" / f"{model}.pt"))["consumed_items"]
        for model in ("unlearned_ft", "unlearned_rl")
    }
    assert consumed["unlearned_ft"]["forget_flagged_items"] == 0
    assert consumed["unlearned_rl"]["forget_flagged_items"] == len(split.forget) == 24
    for record in consumed.values():
        assert record["learned_items"] == len(split.retain) == 96 and record["learned_outside_manifest"] == 0
        assert manifest.chosen(record["learned_in_manifest"]) == sorted(manifest.identities)


def test_an_unlearning_run_logs_its_own_budget_beside_the_source_models_training_epochs(runs):
    work, _, environment = runs
    client = mlflow.MlflowClient(environment["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("certificates").experiment_id
    (run,) = client.search_runs([experiment], "params.workflow = 'unlearn' and params.strategy = 'ft'")
    assert run.data.params["unlearn_epochs"] == "2" and run.data.params["trained_epochs"] == "1"
    assert read_certificate(certificate_path(work / "models" / "unlearned_ft.pt"))["timing"]["epochs"] == 2
