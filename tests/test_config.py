"""Settings: published configs, overrides, and clear errors for bad ones."""

import pytest

from mirec.config import load_config, model_names
from mirec.errors import ConfigError


def test_published_models_load():
    assert {"comirec-sa", "youtube-dnn", "most-popular"} <= set(model_names())
    cfg = load_config("comirec-sa")
    assert (cfg.model, cfg.extractor, cfg.num_interests) == ("comirec-sa", "self_attentive", 4)
    assert load_config("youtube-dnn").num_interests == 1
    plain = load_config("remi-plain")  # a candidate of `mirec train` without --model
    assert plain.num_interests == 4
    assert (plain.regularizer, plain.hard_negative_beta) == ("covariance:100", 0.0)


def test_overrides_are_typed_and_layered(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: youtube-dnn\nlr: 0.01\nbatch_size: 64\n")
    cfg = load_config(None, path, ["lr=3e-3", "maxlen=30", "max_train_minutes=2"], seed=7)
    assert cfg.model == "youtube-dnn" and cfg.extractor == "mean_pooling"
    assert (cfg.lr, cfg.batch_size, cfg.maxlen, cfg.seed) == (0.003, 64, 30, 7)
    assert cfg.max_train_minutes == 2.0 and isinstance(cfg.max_train_minutes, float)


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        ("no-such-model", [], "unknown model 'no-such-model'"),
        ("comirec-sa", ["learning_rate=0.1"], "unknown setting 'learning_rate'"),
        ("comirec-sa", ["batch_size=big"], "batch_size='big': expected int"),
        ("comirec-sa", ["lr"], "expected key=value"),
    ],
)
def test_bad_settings_name_the_problem(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(model, None, overrides)


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_config(None, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(None, tmp_path / "missing.yaml")
    # plain YAML keeps the last of two equal keys; a config file refuses them
    bad.write_text("model: sasrec\nlr: 0.01\nembedding_dim: 32\nlr: 0.001\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line 4: .*the key 'lr' is given twice"):
        load_config(None, bad)


def test_the_ctr_task_has_its_own_default_model():
    # retrieval's default is auto, several configs (tests/test_auto.py)
    with pytest.raises(ConfigError, match="model auto trains 3 candidates"):
        load_config()
    assert load_config(task="ctr").model == "comirec-sa"
    assert load_config(overrides=["task=ctr"]).task == "ctr"
    assert load_config(overrides=["task=ctr"]).model == "comirec-sa"
    assert load_config("din").task == "ctr"  # a CTR config carries its task


def test_remi_plain_is_remi_without_hard_negatives():
    """remi-plain, a candidate of the default, is REMI without its hard negatives (model
    remi, hard_negative_beta 0), as docs/results.md's rows "remi" and "remi-plain" compare
    them: the two must stay the same configuration but for that setting."""
    plain = load_config("remi-plain").to_dict()
    remi = load_config("remi", overrides=["hard_negative_beta=0"]).to_dict()
    assert plain.pop("model") == "remi-plain" and remi.pop("model") == "remi"
    assert plain == remi
    assert load_config("remi").hard_negative_beta == 1.0
