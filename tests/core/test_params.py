"""One definition per parameter: the schemas, the presets and model files over them, and the flags derived."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from pipeline.core import params
from pipeline.core.cli import StageError, parse_stage_args, stage_parser
from tests.conftest import ROOT

PRESETS = sorted((ROOT / "pipeline" / "params" / "presets").glob("*.toml"))
MODELS = sorted((ROOT / "pipeline" / "params" / "models").glob("*.toml"))


@pytest.mark.parametrize("stage", params.stages())
def test_every_schema_defines_each_parameter_once_with_default_and_help(stage: str) -> None:
    s = params.schema(stage)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["additionalProperties"] is False and "required" not in s
    for name, prop in s["properties"].items():
        assert "default" in prop and prop.get("description"), f"{stage}.{name}"
    params.validate(stage, params.defaults(stage), "defaults")  # the defaults obey their own ranges


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_presets_hold_only_overrides_that_differ_from_the_defaults(preset: Path) -> None:
    """A preset value that every model family already has is noise; each preset resolves with each family."""
    data = params.read_file(preset)
    assert set(data) <= set(params.stages()), preset
    for stage, over in data.items():
        assert over, f"{preset}: empty [{stage}] section"
        family_values = [params.resolve(stage, [m]) for m in MODELS]
        same = sorted(k for k, v in over.items() if all(f[k] == v for f in family_values))
        assert not same, f"{preset}: [{stage}] {same} repeat what every model family has"
        for m in MODELS:
            params.resolve(stage, [m, preset])


@pytest.mark.parametrize("model", MODELS, ids=lambda p: p.stem)
def test_each_model_file_names_its_family(model: Path) -> None:
    params.check_family_layers(model, None)
    assert params.resolve("train", [model])["family"] == model.stem


def test_a_preset_cannot_choose_the_family(tmp_path: Path) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text('[train]\nfamily = "crnn"\n')
    with pytest.raises(params.ParamsError, match="chosen with make MODEL=<family>"):
        params.check_family_layers(None, preset)
    model = tmp_path / "crnn.toml"
    model.write_text('[train]\nfamily = "embedding"\n')
    with pytest.raises(params.ParamsError, match="set family = 'crnn' in it"):
        params.check_family_layers(model, None)


def test_resolve_layers_in_order_and_names_the_file_of_a_bad_key(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("[calib]\nnum_samples = 10\nseed = 7\n")
    b.write_text("[calib]\nnum_samples = 20\n")
    assert params.resolve("calib", [a, b]) == {"num_samples": 20, "seed": 7}
    assert params.resolve("calib", [b, a]) == {"num_samples": 10, "seed": 7}
    assert params.resolve("train", [a]) == params.defaults("train")
    b.write_text("[calib]\nnum_sample = 20\n")
    with pytest.raises(params.ParamsError, match=r"b.toml: \['num_sample'\] are not parameters of calib"):
        params.resolve("calib", [a, b])
    b.write_text("[calibration]\nnum_samples = 20\n")
    with pytest.raises(params.ParamsError, match=r"b.toml: sections \['calibration'\] are not stages"):
        params.resolve("calib", [b])
    b.write_text("[calib]\nnum_samples = 0\n")
    with pytest.raises(params.ParamsError, match=r"num_samples \(--num-samples\): 0 is less than the minimum of 1"):
        params.resolve("calib", [b])


def test_a_wrong_enum_value_is_one_line(tmp_path: Path) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text("[pulsar2]\nnpu_mode = 3\n")
    with pytest.raises(params.ParamsError) as e:
        params.resolve("pulsar2", [preset])
    problems = [line for line in str(e.value).splitlines() if "npu_mode" in line]
    assert problems == ["  npu_mode (--npu-mode): 3 is not one of ['NPU1', 'NPU2', 'NPU3']"], str(e.value)


def test_flags_derive_from_the_schema_and_win_over_the_file(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text("[dataset]\nper_class = 7\nsnr_list = [3.0]\n")
    parser = stage_parser("test", "dataset")
    args = parse_stage_args(parser, ["--params", str(f), "--p-shift", "0.25", "--snr-list", "1,2", "5",
                                     "--no-use-fondo-as-noise"], "dataset")
    assert (args.per_class, args.p_shift, args.snr_list, args.use_fondo_as_noise) == (7, 0.25, [1.0, 2.0, 5.0], False)
    assert args.params_used["p_warp"] == params.defaults("dataset")["p_warp"]
    assert re.search(r"--per-class PER_CLASS\s+augmented clips per keyword class.*?\[default\s+1000\]",
                     parser.format_help(), re.S)
    with pytest.raises(StageError, match=r"p_shift \(--p-shift\): 2.0 is greater than the maximum of 1"):
        parse_stage_args(stage_parser("test", "dataset"), ["--p-shift", "2"], "dataset")
    with pytest.raises(SystemExit):  # argparse: a value of the wrong type
        parse_stage_args(stage_parser("test", "dataset"), ["--per-class", "many"], "dataset")


def test_a_new_parameter_needs_only_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a property to a schema gives it a flag, a default and validation, with no other file touched."""
    s = json.loads(json.dumps(params.schema("calib")))
    s["properties"]["max_per_class"] = {"type": "integer", "minimum": 1, "default": 5, "description": "cap per class"}
    monkeypatch.setattr(params, "schema", lambda stage: s if stage == "calib" else params.schema.__wrapped__(stage))
    args = parse_stage_args(stage_parser("test", "calib"), ["--max-per-class", "9"], "calib")
    assert args.max_per_class == 9 and args.params_used["max_per_class"] == 9
    assert parse_stage_args(stage_parser("test", "calib"), [], "calib").max_per_class == 5


def test_resolution_writes_a_stage_file_only_when_its_values_change(tmp_path: Path) -> None:
    out, preset = tmp_path / "params", tmp_path / "p.toml"
    preset.write_text("[train]\nepochs = 3\n")
    assert params.main(["--preset", str(preset), "--out-dir", str(out)]) == 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert set(mtimes) == {f"{s}.json" for s in params.stages()} | {"clip.json"}
    assert json.loads((out / "train.json").read_text())["params"]["epochs"] == 3
    preset.write_text("[train]\nepochs = 4\n")
    assert params.main(["--preset", str(preset), "--out-dir", str(out)]) == 0
    changed = {p.name for p in out.iterdir() if p.stat().st_mtime_ns != mtimes[p.name]}
    assert changed == {"train.json"}
    preset.write_text("[train]\nepochs = -1\n")
    assert params.main(["--preset", str(preset), "--out-dir", str(out)]) == 2  # nothing half-written
    assert json.loads((out / "train.json").read_text())["params"]["epochs"] == 4
    # the dataset's clip length is the [features] window, stamped alone: other features values leave it alone
    clip = out / "clip.json"
    before = clip.stat().st_mtime_ns
    preset.write_text("[features]\nval_fraction = 0.3\n")
    assert params.main(["--preset", str(preset), "--out-dir", str(out)]) == 0
    assert clip.stat().st_mtime_ns == before
    preset.write_text("[features]\nclip_samples = 24000\nn_frames = 148\n")
    assert params.main(["--preset", str(preset), "--out-dir", str(out)]) == 0
    assert json.loads(clip.read_text())["params"] == {"clip_samples": 24000, "sample_rate": 16000}
