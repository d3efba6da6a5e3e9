import json

import pytest

from medunlearn_monai.forget import (
    ForgetRequest,
    ForgetRequestError,
    hash_subject,
    load_salt,
    require_request,
    split_items,
)

ITEMS = [{"subject": f"patient-{index // 2}", "image": index} for index in range(20)]  # 10 subjects, 2 items each


def test_reads_txt_with_comments_and_blank_lines(tmp_path):
    path = tmp_path / "request.txt"
    path.write_text("# clinic request\npatient-1\n\npatient-3  # withdrew consent\n")
    assert ForgetRequest.from_file(path).subject_ids == ("patient-1", "patient-3")


def test_reads_csv_by_known_column(tmp_path):
    path = tmp_path / "request.csv"
    path.write_text("date,Patient_ID\n2026-01-01,patient-2\n2026-01-02,patient-4\n")
    assert ForgetRequest.from_file(path).subject_ids == ("patient-2", "patient-4")


def test_reads_single_column_csv(tmp_path):
    path = tmp_path / "request.csv"
    path.write_text("whatever\npatient-5\n")
    assert ForgetRequest.from_file(path).subject_ids == ("patient-5",)


@pytest.mark.parametrize("content", [["patient-1", "patient-2"], {"subjects": ["patient-1", "patient-2"]}])
def test_reads_json_list_or_object(tmp_path, content):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(content))
    assert ForgetRequest.from_file(path).subject_ids == ("patient-1", "patient-2")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "does not exist"),
        ("request.xml", "<a/>", "suffix"),
        ("request.json", "{not json", "not valid JSON"),
        ("request.json", '{"ids": ["a"]}', "'subjects' list"),
        ("request.csv", "a,b\n1,2\n", "needs one of"),
        ("request.txt", "# nothing here\n\n", "is empty"),
        ("request.txt", "patient-1\npatient-2\npatient-1\n", "more than once (entries #1, #3)"),
    ],
)
def test_malformed_request_files_fail_clearly(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ForgetRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ForgetRequest.from_file(path)


def test_split_removes_every_item_of_a_subject():
    split = ForgetRequest(("patient-3", "patient-7")).split(ITEMS)
    assert len(split.forget) == 4 and len(split.retain) == 16
    assert {item["subject"] for item in split.forget} == {"patient-3", "patient-7"}
    assert not {item["subject"] for item in split.retain} & {"patient-3", "patient-7"}


def test_unknown_subjects_are_named_by_position_not_by_id():
    with pytest.raises(
        ForgetRequestError, match=r"2 of 3 subjects are not in the training data \(entries #1, #3\)"
    ) as error:
        ForgetRequest(("ghost-1", "patient-1", "ghost-2")).split(ITEMS)
    assert "ghost" not in str(error.value)


def test_forgetting_everyone_is_refused():
    with pytest.raises(ForgetRequestError, match="names all 10 training subjects"):
        ForgetRequest(tuple(f"patient-{index}" for index in range(10))).split(ITEMS)


def test_generate_is_seeded_and_sized():
    first = ForgetRequest.generate(ITEMS, 0.3, seed=1)
    assert first == ForgetRequest.generate(ITEMS, 0.3, seed=1)
    assert len(first.subject_ids) == 3
    assert first != ForgetRequest.generate(ITEMS, 0.3, seed=2) or first != ForgetRequest.generate(ITEMS, 0.3, seed=3)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.01])
def test_generate_rejects_fractions_that_select_nothing_or_everything(fraction):
    with pytest.raises(ForgetRequestError):
        ForgetRequest.generate(ITEMS, fraction)


def test_resolve_prefers_file_then_fraction_then_none(tmp_path):
    path = tmp_path / "request.txt"
    path.write_text("patient-9\n")
    assert ForgetRequest.resolve(path, 0.5, ITEMS).subject_ids == ("patient-9",)
    assert len(ForgetRequest.resolve(None, 0.5, ITEMS).subject_ids) == 5
    assert ForgetRequest.resolve(None, None, ITEMS) is None
    assert split_items(ITEMS, None).forget == []
    with pytest.raises(ForgetRequestError, match="unlearn needs a forget request"):
        require_request(None, "unlearn")


def test_hashes_are_salted_order_free_and_hide_ids():
    request = ForgetRequest(("patient-1", "patient-2"))
    salt = b"secret"
    assert request.sha256(salt) == ForgetRequest(("patient-2", "patient-1")).sha256(salt)
    assert request.sha256(salt) != request.sha256(b"other")
    assert request.subject_hashes(salt) == sorted([hash_subject("patient-1", salt), hash_subject("patient-2", salt)])
    assert all("patient" not in digest and len(digest) == 64 for digest in request.subject_hashes(salt))


def test_flagged_marks_forget_items_without_touching_originals():
    split = ForgetRequest(("patient-0",)).split(ITEMS)
    flagged = split.flagged()
    assert [item["forget"] for item in flagged] == [0] * 18 + [1] * 2
    assert [item["forget"] for item in split.flagged(include_retain=False)] == [1, 1]
    repeated = split.flagged(forget_repeats=3)
    assert [item["forget"] for item in repeated] == [0] * 18 + [1] * 6
    assert [item["subject"] for item in repeated[18:]] == [item["subject"] for item in split.forget] * 3
    with pytest.raises(ValueError, match="forget_repeats must be at least 1"):
        split.flagged(forget_repeats=0)
    assert "forget" not in ITEMS[0]


def test_salt_file_is_created_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDUNLEARN_SALT")
    monkeypatch.setenv("MEDUNLEARN_SALT_FILE", str(tmp_path / "deploy" / "salt"))
    first = load_salt()
    assert len(first) == 64 and load_salt() == first
    assert (tmp_path / "deploy" / "salt").stat().st_mode & 0o777 == 0o600


def test_generated_request_can_be_restricted_to_an_attribute():
    items = [{"subject": f"p{index}", "sex": "Female" if index % 2 else "Male"} for index in range(40)]
    request = ForgetRequest.generate(items, 0.5, seed=1, where={"sex": "Female"})
    assert len(request.subject_ids) == 10
    assert all(int(subject[1:]) % 2 == 1 for subject in request.subject_ids)
    assert ForgetRequest.resolve(None, 0.5, items, 1, {"sex": "Female"}).subject_ids == request.subject_ids
    with pytest.raises(ForgetRequestError, match="no training subject has the attributes"):
        ForgetRequest.generate(items, 0.5, where={"sex": "Unknown"})


def test_by_score_takes_the_lowest_or_highest_fraction_of_subjects():
    scores = {"p1": 0.1, "p2": 0.9, "p3": 0.5, "p4": 0.05, "p5": 0.7}
    assert ForgetRequest.by_score(scores, 0.4, highest=False).subject_ids == ("p4", "p1")
    assert ForgetRequest.by_score(scores, 0.4, highest=True).subject_ids == ("p2", "p5")
    with pytest.raises(ForgetRequestError, match="selects no subject"):
        ForgetRequest.by_score(scores, 0.01, highest=True)


def test_a_printed_request_shows_no_subject_id():
    request = ForgetRequest(("patient00042", "patient00043"), source="generated")
    assert "patient00042" not in repr(request) and "patient00042" not in str(request)
