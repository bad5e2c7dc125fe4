"""Config composition, overrides, type checking and error messages."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import yaml

from wsss.config import Config, load_config, to_dict
from wsss.config.loader import apply_overrides, from_dict, read_yaml
from wsss.errors import ConfigError


@dataclass
class Inner:
    lr: float = 0.01
    steps: int = 10
    scales: tuple[float, ...] = (1.0,)
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    name: Optional[str] = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_composition_merges_sections_key_by_key(tmp_path):
    write(tmp_path / "base.yaml", {"inner": {"lr": 0.1, "steps": 5}, "tags": ["x"]})
    write(tmp_path / "mid.yaml", {"_base_": "base.yaml", "inner": {"steps": 7}})
    child = write(tmp_path / "child.yaml", {"_base_": ["mid.yaml"], "inner": {"mode": "b"}})
    cfg = load_config(Outer, child)
    assert cfg.inner.lr == 0.1 and cfg.inner.steps == 7 and cfg.inner.mode == "b"
    assert cfg.tags == ["x"]


def test_later_files_and_overrides_win(tmp_path):
    a = write(tmp_path / "a.yaml", {"inner": {"lr": 0.1}})
    b = write(tmp_path / "b.yaml", {"inner": {"lr": 0.2}})
    cfg = load_config(Outer, [a, b], ["inner.steps=3", "inner.scales=[0.5, 1, 1.5]", "inner.name=abc"])
    assert cfg.inner.lr == 0.2
    assert cfg.inner.steps == 3
    assert cfg.inner.scales == (0.5, 1.0, 1.5)
    assert cfg.inner.name == "abc"


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert from_dict(Inner, {"lr": 1}).lr == 1.0
    with pytest.raises(ConfigError, match="'inner.steps' must be an integer"):
        from_dict(Outer, {"inner": {"steps": 2.5}})


@pytest.mark.parametrize("override, message", [
    ("inner.lrr=0.1", "unknown config key 'inner.lrr'"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("inner.flag=yes please", "'inner.flag' must be true or false"),
    ("inner.mode=c", "'inner.mode' must be one of"),
    ("inner.scales=3", "'inner.scales' must be a list"),
    ("inner.scales=[1, x]", r"'inner.scales\[1\]' must be a number"),
    ("tags=[1]", r"'tags\[0\]' must be a string"),
    ("inner=3", "'inner' must be a section"),
    ("noequals", "must look like key.sub=value"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, overrides=[override])


def test_missing_file_and_cycles_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "missing.yaml")
    write(tmp_path / "x.yaml", {"_base_": "y.yaml"})
    write(tmp_path / "y.yaml", {"_base_": "x.yaml"})
    with pytest.raises(ConfigError, match="includes itself"):
        read_yaml(tmp_path / "x.yaml")


def test_override_of_a_leaf_as_section_is_an_error():
    with pytest.raises(ConfigError, match="is not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_real_schema_round_trips_through_yaml(tmp_path):
    cfg = load_config(Config, overrides=["data.root=/data/voc", "run.seed=7"])
    text = yaml.safe_dump(to_dict(cfg))
    again = load_config(Config, write(tmp_path / "r.yaml", yaml.safe_load(text)))
    assert again == cfg
    assert again.data.root == "/data/voc" and again.run.seed == 7


def test_floats_in_every_standard_form(tmp_path):
    from wsss.config import Config, load_config
    from wsss.errors import ConfigError

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train_cls:\n  lr: 1e-3\n  weight_decay: 5E-4\n")   # YAML 1.1 strings
    cfg = load_config(Config, [cfg_file], ["train_cls.momentum=9e-1"])
    assert cfg.train_cls.lr == 1e-3 and cfg.train_cls.weight_decay == 5e-4 and cfg.train_cls.momentum == 0.9
    for bad in ("fast", "nan", "inf"):
        with pytest.raises(ConfigError, match="train_cls.lr"):
            load_config(Config, overrides=[f"train_cls.lr={bad}"])
