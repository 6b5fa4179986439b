import pytest

from mvlib.study.config import load_profile, notebook_config, parse_cli_overrides


@pytest.mark.parametrize("profile", ["ci", "cpu", "paper"])
def test_profiles_load(profile):
    cfg = load_profile(profile)
    assert cfg["profile"] == profile and isinstance(cfg["width"], int)


def test_unknown_key_rejected():
    with pytest.raises(KeyError, match="unknown configuration key 'epoch'"):
        load_profile("ci", {"epoch": 3})


def test_wrong_type_rejected():
    with pytest.raises(TypeError, match="'epochs' must be int"):
        load_profile("ci", {"epochs": "3"})
    with pytest.raises(TypeError, match="'width' must be int, got bool"):
        load_profile("ci", {"width": True})
    assert load_profile("ci", {"lr": 1})["lr"] == 1.0  # an int is a fine float


def test_unknown_profile():
    with pytest.raises(FileNotFoundError, match="unknown profile 'gpu'"):
        load_profile("gpu")


def test_notebook_parameters_checked():
    before = {"x"}
    ns = {"x": 1, "profile": "ci", "epochs": 2, "_hidden": 0, "In": []}
    assert notebook_config(ns, before)["epochs"] == 2
    ns["epocs"] = 2  # papermill would only warn
    with pytest.raises(KeyError, match="epocs"):
        notebook_config(ns, before)


def test_cli_overrides():
    assert parse_cli_overrides(["epochs=2", "models=[reactnet18]", "lr=0.01"]) == {
        "epochs": 2, "models": ["reactnet18"], "lr": 0.01}
    with pytest.raises(ValueError):
        parse_cli_overrides(["epochs"])
