"""The Pulsar2 config schema: well-formed, accepts the documented configs, rejects the bad ones with JSON paths."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from pulsar2.schema import SCHEMA_PATH, load_config_file, main, validate_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "schemas" / "examples" / "pulsar2"
VALID = sorted((EXAMPLES / "valid").glob("*.json"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.json"))

# invalid example -> the JSON path every report must name
EXPECTED_PATHS = {
    "unknown-top-level-key": "$.calibration_size: unknown key",
    "unknown-quant-key-tensor-format": "$.quant.tensor_format: unknown key",
    "wrong-calibration-format": "$.quant.input_configs[0].calibration_format: 'Npy' is not one of",
    "wrong-calibration-method": "$.quant.calibration_method: 'Entropy' is not one of",
    "ax630c-as-target": "$.target_hardware: 'AX630C' is not one of",
    "ax620e-npu3": "$.npu_mode: 'NPU3' is not one of ['NPU1', 'NPU2']",
    "missing-input-configs": "$.quant.input_configs: required key is missing",
    "missing-input-and-output-dir": "$.output_dir: required key is missing",
    "calibration-dataset-not-archive": "$.quant.input_configs[0].calibration_dataset",
    "calibration-size-zero": "$.quant.input_configs[0].calibration_size",
    "layer-config-wrong-dtype": "$.quant.layer_configs[0].data_type: 'INT16' is not one of",
    "layer-config-without-selector": "$.quant.layer_configs[0]: ",
    "compiler-check-level-5": "$.compiler.check: 5 is not one of",
    "processor-wrong-layout": "$.input_processors[0].tensor_layout: 'NWHC'",
    "boolean-as-string": "$.onnx_opt.enable_onnxsim: 'true' is not of type 'boolean'",
    "input-shapes-bad": "$.input_shapes",
}


def test_schema_is_valid_draft_2020_12_and_closed() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema" and schema["$id"]
    assert set(schema["required"]) == {"input", "output_dir", "quant"}
    assert schema["properties"]["quant"]["required"] == ["input_configs"]

    def objects(node, path="$"):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                yield path, node
            for k, v in node.items():
                yield from objects(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from objects(v, f"{path}/{i}")

    found = list(objects(schema))
    assert len(found) > 10
    for path, node in found:
        assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"


def test_documented_enums_cite_the_docs() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    props = schema["properties"]
    assert "AX620E" in props["target_hardware"]["enum"]
    assert {"NPU1", "NPU2", "NPU3"} <= set(props["npu_mode"]["enum"])
    assert props["quant"]["properties"]["calibration_method"]["enum"] == ["MinMax", "Percentile", "MSE", "KL"]
    ic = schema["$defs"]["input_config"]["properties"]
    assert ic["calibration_format"]["enum"] == ["Image", "Numpy", "Binary", "NumpyObject"]
    for enum_holder in (props["target_hardware"], props["npu_mode"], ic["calibration_format"]):
        assert "config.md" in enum_holder["$comment"]

    def enums(node, path="#"):
        if isinstance(node, dict):
            if "enum" in node:
                yield path, node
            for k, v in node.items():
                yield from enums(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from enums(v, f"{path}/{i}")

    for path, node in enums(schema):
        assert node.get("$comment"), f"{path}: enum without a $comment naming its source"


def test_the_expected_examples_exist() -> None:
    names = {p.stem for p in VALID}
    assert {"seed-4.2-working-config", "notes-1.7-example"} <= names
    assert {p.stem for p in INVALID} == set(EXPECTED_PATHS)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_examples_pass(path: Path) -> None:
    cfg, errors = load_config_file(path)
    assert cfg is not None and errors == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_examples_fail_with_the_json_path(path: Path) -> None:
    _, errors = load_config_file(path)
    assert errors, f"{path.name} was accepted"
    assert any(e.startswith(EXPECTED_PATHS[path.stem]) for e in errors), errors


def test_every_error_is_reported_not_just_the_first() -> None:
    cfg = json.loads((EXAMPLES / "valid" / "notes-1.7-example.json").read_text(encoding="utf-8"))
    cfg["bogus"] = 1
    cfg["npu_mode"] = "NPU9"
    cfg["quant"]["input_configs"][0]["calibration_format"] = "Wav"
    cfg["compiler"]["chek"] = 0
    errors = validate_config(cfg)
    assert {e.split(": ")[0] for e in errors} == {"$.bogus", "$.npu_mode", "$.quant.input_configs[0].calibration_format",
                                                   "$.compiler.chek"}, errors
    joined = "\n".join(errors)
    for path in ("$.bogus: unknown key", "$.npu_mode:", "$.quant.input_configs[0].calibration_format:",
                 "$.compiler.chek: unknown key"):
        assert path in joined


def test_cli_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(VALID[0])]) == 0
    assert main([str(INVALID[0])]) == 2
    assert "schema error" in capsys.readouterr().err
    bad = tmp_path / "c.json"
    bad.write_text("{ // comment\n}", encoding="utf-8")
    assert main([str(bad)]) == 2
    assert "not strict JSON" in capsys.readouterr().err
