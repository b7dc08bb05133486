"""Class lists, prompt templates and the manifest reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import tiny_spec
from vtc_deploy.errors import ArtifactError, ConfigError, LabelError
from vtc_deploy.labels import check_templates, fill_template, load_class_names
from vtc_deploy.spec import SCHEMA_VERSION, ArtifactSpec, InputSpec, ParitySummary, from_dict

SHARED = Path(__file__).resolve().parents[1] / "vtc_deploy" / "data" / "labels"


@pytest.mark.parametrize(
    ("name", "count", "first", "last"),
    [
        ("kinetics400", 400, "abseiling", "zumba"),
        ("ucf101", 101, "ApplyEyeMakeup", "YoYo"),
        ("hmdb51", 51, "brush hair", "wave"),
        ("activitynet200", 200, "Applying sunscreen", "Zumba"),
    ],
)
def test_bundled_sets(name: str, count: int, first: str, last: str) -> None:
    names = load_class_names(name)
    assert (len(names), names[0], names[-1]) == (count, first, last)


def test_csv_crlf_and_unordered_ids(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b'id,name\r\n2,jump\r\n0,run\r\n1,"sit, then stand"')  # CRLF, no final newline, quoted comma
    assert load_class_names(path) == ("run", "sit, then stand", "jump")


def test_txt_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\ufeffrun\n\njump\n  sit  \n", encoding="utf-8")
    assert load_class_names(path) == ("run", "jump", "sit")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,label\n0,run\n", "no 'name' column"),
        ("id,name\n0,run\n0,jump\n", "duplicate id 0"),
        ("id,name\n", "empty"),
        ("", "empty"),
        ("id,name\n0,run\n2,jump\n", "without gaps"),
        ("id,name\n0,run\n1,run\n", "duplicate class name"),
        ("id,name\nx,run\n", "not an integer"),
    ],
)
def test_bad_csv(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(LabelError, match=message) as info:
        load_class_names(path)
    assert str(path) in str(info.value)


def test_missing_class_list_names_file(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="not found.*kinetics400"):
        load_class_names(tmp_path / "nope.csv")


def test_templates() -> None:
    assert check_templates(["a video of a person {}."]) == ("a video of a person {}.",)
    with pytest.raises(LabelError, match="exactly one"):
        check_templates(["no placeholder"])
    with pytest.raises(LabelError, match="at least one"):
        check_templates([])
    assert fill_template("a video of {}.", "{0.__class__}") == "a video of {0.__class__}."  # never str.format


def test_manifest_round_trip() -> None:
    spec = tiny_spec(
        parity=ParitySummary(True, "fp32", 1e-6, 0.9999999, 1.0, 1.0, 1e-12, 7, 3, {"max_abs_logit": 1e-3}),
        input=InputSpec(kind="float"),
    )
    again = ArtifactSpec.from_json(spec.to_json())
    assert again == spec
    assert again.input.layout == "BTCHW" and again.classes == ("a", "b")


def test_logit_multiplier_is_read_and_written_as_the_manifest_key_logit_scale() -> None:
    """The multiplier keeps its manifest key (every artifact written so far, the C/C++ reader); only the Python name
    changed, so that it cannot be taken for the PyTorch model's logit_scale, which is its logarithm."""
    data = json.loads(tiny_spec().to_json())
    assert data["logit_scale"] == 100.0 and "logit_multiplier" not in data
    assert list(data)[:5] == ["model", "frames", "classes", "templates", "logit_scale"]  # the order manifests had
    assert ArtifactSpec.from_json(json.dumps({**data, "logit_scale": 42.5})).logit_multiplier == 42.5
    renamed = {("logit_multiplier" if k == "logit_scale" else k): v for k, v in data.items()}
    with pytest.raises(ArtifactError, match="unknown key.*logit_multiplier"):
        ArtifactSpec.from_json(json.dumps(renamed))
    missing = {k: v for k, v in data.items() if k != "logit_scale"}
    with pytest.raises(ArtifactError, match="manifest: missing key 'logit_scale'"):
        ArtifactSpec.from_json(json.dumps(missing))
    with pytest.raises(ArtifactError, match="manifest.logit_scale: expected a number"):
        ArtifactSpec.from_json(json.dumps({**data, "logit_scale": "100"}))


def test_manifest_rejects_unknown_keys_types_and_newer_schema() -> None:
    data = json.loads(tiny_spec().to_json())
    with pytest.raises(ArtifactError, match="unknown key.*surprise"):
        ArtifactSpec.from_json(json.dumps({**data, "surprise": 1}))
    with pytest.raises(ArtifactError, match="newer"):
        ArtifactSpec.from_json(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ArtifactError, match="frames: expected int"):
        ArtifactSpec.from_json(json.dumps({**data, "frames": "8"}))
    bad_input = {**data, "input": {**data["input"], "kind": "int8"}}
    with pytest.raises(ArtifactError, match="kind: 'int8' is not one of"):
        ArtifactSpec.from_json(json.dumps(bad_input))
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ArtifactSpec.from_json("{")


def test_literal_does_not_accept_bool_for_int() -> None:
    from vtc_deploy.spec import SamplingSpec

    with pytest.raises(ConfigError, match="crops"):
        from_dict(SamplingSpec, {"crops": True}, "sampling")
    assert from_dict(SamplingSpec, {"crops": 3}, "sampling").crops == 3
