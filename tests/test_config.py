import pytest

from mvlib.study.config import (CONFIG_DIR, SCHEMA, SCOPES, check_value, load_overlay, load_profile,
                                notebook_config, parse_cli_overrides, scope_keys)


@pytest.mark.parametrize("profile", ["ci", "cpu", "paper"])
def test_profiles_load(profile):
    cfg = load_profile(profile)
    assert cfg["profile"] == profile and isinstance(cfg["width"], int)
    assert set(cfg["sweep_seeds"]) <= set(cfg["seeds"])


def test_cpu_profile_has_three_seeds_and_a_validation_split():
    cfg = load_profile("cpu")
    assert len(cfg["seeds"]) >= 3 and cfg["val_per_class"] >= 1


def test_unknown_key_rejected():
    with pytest.raises(KeyError, match="unknown configuration key 'epoch'"):
        load_profile("ci", {"epoch": 3})


def test_wrong_type_rejected():
    with pytest.raises(TypeError, match="'epochs' must be int"):
        load_profile("ci", {"epochs": "3"})
    with pytest.raises(TypeError, match="'width' must be int, got bool"):
        load_profile("ci", {"width": True})
    assert load_profile("ci", {"lr": 1})["lr"] == 1.0  # an int is a fine float
    with pytest.raises(TypeError, match="'lr' must be float"):
        load_profile("ci", {"lr": "fast"})


def test_numbers_written_like_1e_3_are_floats():
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; the schema knows lr is a float
    assert parse_cli_overrides(["lr=1e-3"]) == {"lr": 0.001}
    assert load_profile("ci", {"lr": "5e-4"})["lr"] == 0.0005


@pytest.mark.parametrize("key,value,match", [
    ("epochs", 0, ">= 1"), ("epochs", -1, ">= 1"), ("width", 0, ">= 1"), ("batch_size", 0, ">= 1"),
    ("lr", 0.0, "> 0"), ("lr", -1e-3, "> 0"), ("optimizer", "adamw", "one of"), ("schedule", "step", "one of"),
    ("norm", "ln", "one of"), ("dataset", "mnist", "one of"), ("device", "gpu", "auto, cpu"),
    ("seeds", [], "not be empty"), ("seeds", [0, 0], "repeat"), ("seeds", [-1], ">= 0"),
    ("hmv_ties", ["pos", "up"], "one of"), ("hmv_nested", [[4, 1]], ">= 2"), ("label_smoothing", 1.0, r"\[0, 1\)"),
    ("mv_retrain_epochs", 0, ">= 1"), ("models", ["resnet50"], "one of"), ("lr", float("nan"), "nan"),
])
def test_values_out_of_range_rejected(key, value, match):
    with pytest.raises(ValueError, match=match):
        check_value(key, value)


def test_rules_across_keys():
    with pytest.raises(ValueError, match="sweep_seeds"):
        load_profile("ci", {"seeds": [0, 1], "sweep_seeds": [2]})
    with pytest.raises(ValueError, match="two_step"):
        load_profile("ci", {"two_step": True, "epochs": 1})


def test_unknown_profile():
    with pytest.raises(FileNotFoundError, match="unknown profile 'gpu'"):
        load_profile("gpu")


@pytest.mark.parametrize("profile", ["ci", "cpu", "paper"])
def test_the_smoke_overlay_holds_valid_keys_and_lays_over_every_profile(profile):
    import yaml

    from mvlib.study.pipeline import smoke_overrides
    raw = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    smoke = load_overlay("smoke")
    assert set(smoke) == set(raw) and set(smoke) <= set(SCHEMA)
    assert all(check_value(k, v) == v for k, v in raw.items())
    cfg = load_profile(profile, smoke_overrides(profile))  # every rule across keys holds under the overlay
    assert cfg["seeds"] == [0] and cfg["results_dir"] == f"build/smoke/{profile}/results"
    assert all(cfg["model_recipes"][m].get("epochs", smoke["epochs"]) == smoke["epochs"] for m in cfg["model_recipes"])


def test_an_overlay_is_not_a_profile():
    # configs/smoke.yaml alone would run the default study into the committed results folder
    with pytest.raises(FileNotFoundError, match=r"unknown profile 'smoke': .*smoke.yaml is an overlay \(--smoke\)"):
        load_profile("smoke")
    with pytest.raises(FileNotFoundError, match="unknown profile 'smok'") as e:
        load_profile("smok")
    assert "smoke" not in str(e.value).split(";")[1]  # not offered among the profiles
    with pytest.raises(FileNotFoundError, match="unknown overlay 'ci'"):
        load_overlay("ci")


def test_every_key_has_a_scope_and_a_default_that_passes_its_check():
    for key, spec in SCHEMA.items():
        assert spec.scope in SCOPES, key
        check_value(key, spec.default)
    assert {"lr", "epochs", "seed", "norm", "agc_clip", "width"} <= set(scope_keys("train"))
    assert {"dataset", "val_per_class", "train_per_class"} <= set(scope_keys("data"))
    assert not {"threads", "progress", "results_dir", "device"} & set(scope_keys("data", "train"))


def test_notebook_parameters_checked():
    before = {"x"}
    ns = {"x": 1, "profile": "ci", "epochs": 2, "seeds": None, "_hidden": 0, "In": []}
    cfg = notebook_config(ns, before)
    assert cfg["epochs"] == 2 and cfg["seeds"] == load_profile("ci")["seeds"]  # None = the profile's value
    bad = {"x": 1, "profile": "ci", "epocs": 2}  # papermill would only warn
    with pytest.raises(KeyError, match="epocs"):
        notebook_config(bad, before)


def test_rerunning_the_configuration_cell_reads_the_same_parameters():
    before = {"x"}
    ns = {"x": 1, "profile": "ci", "epochs": 2}
    ns["cfg"] = notebook_config(ns, before)
    ns["table"] = object()  # names later cells define
    ns["epochs"] = 3        # the user edits the parameter cell and runs it again
    assert notebook_config(ns, before)["epochs"] == 3


def test_cli_overrides():
    assert parse_cli_overrides(["epochs=2", "models=[reactnet18]", "lr=0.01"]) == {
        "epochs": 2, "models": ["reactnet18"], "lr": 0.01}
    with pytest.raises(ValueError):
        parse_cli_overrides(["epochs"])
    with pytest.raises(ValueError, match=">= 1"):
        parse_cli_overrides(["epochs=0"])


def test_cli_refuses_keys_the_command_does_not_use():
    allowed = scope_keys("exec", "data", "train")
    assert parse_cli_overrides(["norm=none"], allowed=allowed) == {"norm": "none"}
    with pytest.raises(KeyError, match="does not use configuration key.*appendix_epochs"):
        parse_cli_overrides(["appendix_epochs=3"], allowed=allowed, command="python -m mvlib.study.train")


def test_non_finite_values_and_near_miss_keys_are_refused_by_name():
    for key in ("lr", "weight_decay"):
        for bad in (float("inf"), "inf", float("-inf"), float("nan")):
            with pytest.raises(ValueError, match=rf"configuration key '{key}' must be a finite number"):
                check_value(key, bad)
    with pytest.raises(KeyError, match=r"unknown configuration key 'epoks'; did you mean 'epochs'\?") as e:
        check_value("epoks", 1)
    assert len(str(e.value)) < 200  # one line, not the whole schema


def test_a_cuda_device_the_machine_lacks_is_refused_before_work(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device.*device=auto or device=cpu"):
        load_profile("ci", {"device": "cuda"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert load_profile("ci", {"device": "cuda:0"})["device"] == "cuda:0"
    with pytest.raises(ValueError, match="1 CUDA device"):
        load_profile("ci", {"device": "cuda:1"})
    assert load_profile("ci", {"device": "cpu"})["device"] == "cpu"


def test_precision_is_a_training_key():
    assert SCHEMA["precision"].scope == "train"
    assert load_profile("ci", {"precision": "bf16"})["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        load_profile("ci", {"precision": "fp16"})
