import pytest

from meddistill.config import config_from_dict, load_config, save_config
from meddistill.errors import MeddistillError


def test_defaults_and_nested_values():
    config = config_from_dict({"name": "x", "train": {"epochs": 3, "optimizer": {"lr": 1}}})
    assert config.train.epochs == 3
    assert config.train.optimizer.lr == 1.0 and isinstance(config.train.optimizer.lr, float)
    assert config.teacher is None
    assert config.data.dataset == "phantom"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "unknown config key 'trian' (did you mean 'train'?)"),
        ({"train": {"epoch": 3}}, "unknown config key 'train.epoch' (did you mean 'epochs'?)"),
        ({"train": {"optimizer": {"lr_rate": 1e-3}}}, "'train.optimizer.lr_rate'"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected int, got 'ten'"),
        ({"train": {"epochs": True}}, "train.epochs: expected int"),
        ({"teacher": {"nmae": "fanet"}}, "unknown config key 'teacher.nmae' (did you mean 'name'?)"),
    ],
)
def test_invalid_configs_name_the_key(values, message):
    with pytest.raises(MeddistillError, match=None) as err:
        config_from_dict(values)
    assert message in str(err.value)


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    save_config(config_from_dict({"name": "a", "teacher": {"name": "fanet", "args": {"base_channels": 8}}}), path)
    config = load_config(path, ["train.epochs=7", "method.name=kd", "data.root=/data/DRIVE"])
    assert config.train.epochs == 7
    assert config.method.name == "kd"
    assert config.data.root == "/data/DRIVE"
    assert config.teacher.args == {"base_channels": 8}


def test_load_errors(tmp_path):
    with pytest.raises(MeddistillError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(MeddistillError, match="not valid YAML"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("name: a\n")
    with pytest.raises(MeddistillError, match="key.sub=value"):
        load_config(good, ["train.epochs"])
    with pytest.raises(MeddistillError, match="did you mean 'epochs'"):
        load_config(good, ["train.epoch=3"])
