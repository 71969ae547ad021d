"""Training parameters and job specs: parsing, validation, JSON round trip."""

from __future__ import annotations

import pytest

from services.finetune.evaluation import GateConfig
from services.finetune.jobs import JobSpec, TrainingParams, parse_params


def test_overrides_are_typed_and_checked() -> None:
    params = parse_params(TrainingParams(), {"epochs": "3", "learning_rate": "0.001", "fail_at": "train"})
    assert (params.epochs, params.learning_rate, params.fail_at) == (3, 0.001, "train")
    with pytest.raises(ValueError, match="unknown training parameter 'epoch'"):
        parse_params(TrainingParams(), {"epoch": "3"})
    with pytest.raises(ValueError, match="not a int"):
        parse_params(TrainingParams(), {"rank": "eight"})
    with pytest.raises(ValueError, match="out of range: rank=0"):
        parse_params(TrainingParams(), {"rank": "0"})
    with pytest.raises(ValueError, match="fail_at"):
        parse_params(TrainingParams(), {"fail_at": "somewhere"})


def test_compared_templates_are_id_at_version_pairs() -> None:
    params = parse_params(TrainingParams(), {"compare_templates": " grounded_qa@v2 ,"})
    assert params.template_refs() == [("grounded_qa", "v2")]
    assert TrainingParams().template_refs() == [("grounded_qa", "v1"), ("grounded_qa", "v2")]
    assert parse_params(TrainingParams(), {"compare_templates": ""}).template_refs() == []
    for bad in ("grounded_qa", "grounded_qa@", "@v1", "a@b@c"):
        with pytest.raises(ValueError, match="compare_templates"):
            parse_params(TrainingParams(), {"compare_templates": bad})


def test_fault_injection_parameters_show_only_when_set() -> None:
    assert "fail_at" not in TrainingParams().as_strings()
    assert TrainingParams(fail_at="write").as_strings()["fail_at"] == "write"


def test_spec_round_trips_through_json() -> None:
    spec = JobSpec(
        "ft-1", "t1", "/d", "/a", "/m", params=TrainingParams(epochs=2), gate=GateConfig(margin=0.1)
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    assert str(spec.artifact_dir) == "/a/ft-1"
