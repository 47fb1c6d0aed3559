"""Registries and optimizer presets: names, 'did you mean', overrides and config validation."""

from __future__ import annotations

import pytest

from promptopt import OPTIMIZERS, ConfigError, UnknownComponentError, load_optimizer
from promptopt.core._registry import Registry
from promptopt.optimizers import APEConfig, APEOptimizer, BaselineOptimizer
from promptopt.optimizers.presets import available_presets


def test_unknown_optimizer_suggests_the_closest_name():
    with pytest.raises(UnknownComponentError) as info:
        load_optimizer("apee")
    msg = str(info.value)
    assert msg.startswith("Unknown optimizer 'apee'. Did you mean 'ape")
    assert "baseline" in msg and "ape-fast" in msg  # lists registered names and presets
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)


def test_registry_get_unknown():
    with pytest.raises(UnknownComponentError, match=r"Unknown optimizer 'baselin'\. Did you mean 'baseline'\?"):
        OPTIMIZERS.get("baselin")


def test_builtins_are_registered():
    assert {"ape", "baseline"} <= set(OPTIMIZERS.names())
    assert OPTIMIZERS.get("ape") is APEOptimizer
    assert "ape" in OPTIMIZERS


def test_presets_are_found():
    presets = available_presets()
    assert {"ape", "ape-fast", "baseline"} <= set(presets)


def test_load_preset():
    opt = load_optimizer("ape-fast")
    assert isinstance(opt, APEOptimizer)
    assert opt.config.n_prompts == 6
    assert opt.config.resample_rounds == 0
    assert opt.config.top_k == 2
    assert opt.config.n_resample == APEConfig().n_resample  # not in the preset: the default


def test_load_preset_with_overrides():
    opt = load_optimizer("ape-fast", n_prompts=3, temperature=0.5)
    assert (opt.config.n_prompts, opt.config.temperature, opt.config.top_k) == (3, 0.5, 2)


def test_ape_and_baseline_presets():
    assert isinstance(load_optimizer("baseline"), BaselineOptimizer)
    assert load_optimizer("ape").config == APEConfig(
        n_prompts=8, n_demos=5, minibatch_size=20, top_k=3, resample_rounds=1, n_resample=4, temperature=0.9
    )


def test_unknown_preset_setting_is_named():
    with pytest.raises(ConfigError) as info:
        load_optimizer("ape-fast", n_promts=3)
    assert info.value.field == "n_promts"
    msg = str(info.value)
    assert "unknown setting(s) ['n_promts'] for optimizer 'ape'" in msg
    assert "ape-fast.yaml" in msg
    assert "'n_prompts'" in msg  # lists what is allowed


def test_out_of_range_setting():
    with pytest.raises(ConfigError, match=r"field 'n_prompts': must be >= 1, got 0"):
        load_optimizer("ape", n_prompts=0)


@pytest.mark.parametrize(
    ("name", "setting", "value"),
    [
        ("fewshot", "shots", [4, 0]),
        ("fewshot", "shots", []),
        ("unsupervised", "shots", [0]),
        ("ics", "ks", [0, 3]),
        ("ics", "shots", []),
        ("structure_search", "shots", [-1]),
        ("structure_search", "ks", []),
    ],
)
def test_a_list_setting_with_a_bound_is_non_empty_and_each_number_in_range(name, setting, value):
    with pytest.raises(ConfigError, match=r"must be a non-empty list of numbers >= \d") as info:
        load_optimizer(name, **{setting: value})
    assert info.value.field == setting


def test_preset_file_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("optimizer: ape\ndescription: mine\nconfig:\n  n_prompts: 2\n  top_k: 1\n")
    opt = load_optimizer(str(path))
    assert (opt.config.n_prompts, opt.config.top_k) == (2, 1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("optimizer: ape\nconfig: {n_prompts: [\n", "malformed YAML"),
        ("config: {}\n", "'optimizer: <name>'"),
        ("optimizer: ape\nsettings: {}\n", "unknown key(s) ['settings']"),
        ("optimizer: ape\nconfig: [1, 2]\n", "field 'config'"),
        ("optimizer: ape\nconfig: {n_demo: 2}\n", "unknown setting(s) ['n_demo']"),
    ],
)
def test_bad_preset_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_optimizer(str(path))
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_optimizer_in_preset(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer: apo_typo\n")
    with pytest.raises(UnknownComponentError, match="Unknown optimizer 'apo_typo'"):
        load_optimizer(str(path))


def test_config_round_trip_and_repr():
    opt = load_optimizer("ape-fast")
    again = APEOptimizer.from_config(opt.to_config())
    assert again.config == opt.config
    assert repr(again) == repr(opt)
    assert repr(opt).startswith("APEOptimizer(race_stages=3, ") and "n_prompts=6, " in repr(opt)


def test_optimizer_constructor_overrides_and_type_check():
    assert APEOptimizer(n_prompts=2).config.n_prompts == 2
    with pytest.raises(TypeError, match="needs a APEConfig"):
        APEOptimizer(config=BaselineOptimizer.Config())


def test_generic_registry():
    reg: Registry[object] = Registry("widget")
    reg.add("json", "json:dumps")  # lazy "module:attr" entries are imported on first use
    assert reg.names() == ["json"]
    import json

    assert reg.get("json") is json.dumps
    reg.add("json", json.dumps)  # the same object again is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("json", json.loads)

    @reg.register("mine")
    def mine():
        return 1

    assert reg.get("mine") is mine
    assert list(reg) == ["json", "mine"]
    with pytest.raises(UnknownComponentError, match=r"Unknown widget 'mien'\. Did you mean 'mine'\?"):
        reg.get("mien")
