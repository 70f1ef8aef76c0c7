"""The studies people run (issue 13): regression, models from configuration, stopping rules and
the trained model as an artefact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from secfl import StopRun, load_model
from secfl.errors import ConfigError
from secfl.fl.codec import ModelCodec
from secfl.fl.data import DataConfig, Task, load_dataset
from secfl.fl.models import ModelSpec, build_model
from secfl.fl.partition import PartitionConfig, partition
from secfl.fl.training import evaluate_metrics
from secfl.runtime.config import ExperimentConfig, apply_overrides, dump_toml, load_toml
from secfl.runtime.simulator import Experiment

SIZES = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
LINEAR = {"clients": 10, "model": "linear", "seed": 3, "partition": {"sizes": SIZES},
          "data": {"name": "synthetic-linear", "synthetic_samples": 700, "synthetic_features": 5},
          "train": {"epochs": 5, "batch_size": 100, "lr": 0.1}}


def _pooled_least_squares(cfg: ExperimentConfig) -> float:
    """Test MSE of ordinary least squares on the union of the sites' training data."""
    data = load_dataset(cfg.data, cfg.seed, cfg.task)
    idx = np.concatenate(partition(data.y_train, cfg.clients, cfg.partition, cfg.seed))
    design = np.c_[data.x_train[idx].astype(np.float64), np.ones(idx.size)]
    w, *_ = np.linalg.lstsq(design, data.y_train[idx].astype(np.float64), rcond=None)
    pred = np.c_[data.x_test.astype(np.float64), np.ones(len(data.y_test))] @ w
    return float(np.mean((pred - data.y_test) ** 2))


# -- 1. tasks ------------------------------------------------------------------------------


def test_the_task_is_inferred_from_the_labels_and_checked():
    assert load_dataset(DataConfig(name="diabetes"), 0).task is Task.REGRESSION
    assert load_dataset(DataConfig(name="digits"), 0).task is Task.CLASSIFICATION
    reg = load_dataset(DataConfig(name="synthetic-linear", synthetic_samples=100), 0)
    assert reg.task is Task.REGRESSION and reg.y_train.dtype == np.float32 and reg.num_outputs == 1
    with pytest.raises(ConfigError, match="non-integer targets"):
        load_dataset(DataConfig(name="synthetic-linear", synthetic_samples=100), 0, Task.CLASSIFICATION)


def test_exact_client_sizes_are_disjoint_and_as_asked():
    y = np.zeros(700, dtype=np.float32)
    parts = partition(y, 10, PartitionConfig(sizes=SIZES), seed=1)
    assert [p.size for p in parts] == SIZES
    assert np.unique(np.concatenate(parts)).size == sum(SIZES)
    with pytest.raises(ConfigError, match="names 3 clients"):
        partition(y, 10, PartitionConfig(sizes=[1, 2, 3]), seed=1)
    with pytest.raises(ConfigError, match="asks for 800"):
        partition(y, 2, PartitionConfig(sizes=[400, 400]), seed=1)
    with pytest.raises(ConfigError, match="kind = 'iid' only"):
        PartitionConfig(kind="dirichlet", sizes=[1, 2])


def test_regression_metrics_match_numpy():
    data = load_dataset(DataConfig(name="diabetes"), 0)
    model = build_model("linear", data.input_shape, 1, 0)
    codec = ModelCodec.from_module(model)
    vec = codec.to_vector(model)
    m = evaluate_metrics(model, codec, vec, data.x_test, data.y_test, torch.device("cpu"), Task.REGRESSION)
    with torch.no_grad():
        pred = model(torch.as_tensor(data.x_test)).numpy().reshape(-1).astype(np.float64)
    y = data.y_test.astype(np.float64)
    assert m["mse"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-6)
    assert m["mae"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-6)
    assert m["r2"] == pytest.approx(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-6)


def test_federated_linear_regression_reaches_the_pooled_least_squares_fit():
    cfg = ExperimentConfig.from_dict({**LINEAR, "rounds": 60, "protocol": "plaintext"})
    got = Experiment(cfg).run()
    ref = _pooled_least_squares(cfg)
    assert got.meta["task"] == "regression" and got.final["accuracy"] is None
    assert got.meta["client_sizes"] == SIZES
    assert got.final["metrics"]["mse"] <= 1.05 * ref + 1e-3, (got.final["metrics"], ref)
    assert got.final["metrics"]["r2"] > 0.95


@pytest.mark.parametrize("protocol", ["ckks", "secagg", "additive"])
def test_secure_regression_equals_plaintext_within_the_protocol_error(protocol):
    base = {**LINEAR, "rounds": 5}
    plain = Experiment(ExperimentConfig.from_dict({**base, "protocol": "plaintext",
                                                   "protocol_options": {"wire_dtype": "float64"}})).run()
    secure = Experiment(ExperimentConfig.from_dict({**base, "protocol": protocol})).run()
    np.testing.assert_allclose(secure.model_vector, plain.model_vector, atol=1e-3)
    assert secure.final["metrics"]["mse"] == pytest.approx(plain.final["metrics"]["mse"], rel=1e-2)


def test_a_classification_model_on_regression_data_is_refused_before_round_one():
    cfg = ExperimentConfig.from_dict({**LINEAR, "rounds": 1, "protocol": "plaintext", "task": "classification"})
    with pytest.raises(ConfigError, match="non-integer targets"):
        Experiment(cfg).run()


# -- 2. models from configuration -----------------------------------------------------------


def test_mlp_and_cnn_take_their_architecture_from_the_config():
    mlp = build_model({"name": "mlp", "hidden": [64, 64]}, (20,), 3, 0)
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [64, 64, 3]
    cnn = build_model({"name": "cnn", "channels": [32, 64], "pool": "each", "fc": 128}, (1, 28, 28), 10, 0)
    convs = [m for m in cnn if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64] and cnn(torch.zeros(2, 784)).shape == (2, 10)
    with pytest.raises(ConfigError, match="not an option of model 'mlp'"):
        ModelSpec.of({"name": "mlp", "channels": [8]})
    with pytest.raises(ConfigError, match="unknown 'resnet'"):
        ModelSpec.of("resnet")


def test_a_model_by_import_path_in_toml_and_on_the_command_line(tmp_path):
    from secfl.cli import main

    toml = tmp_path / "exp.toml"
    toml.write_text(dump_toml({"protocol": "plaintext", "clients": 2, "rounds": 1,
                               "model": {"name": "model_factories:tiny_mlp", "options": {"width": 5}},
                               "data": {"name": "synthetic", "synthetic_samples": 200}}))
    cfg = ExperimentConfig.from_dict(load_toml(toml))
    got = Experiment(cfg).run()
    assert got.meta["model"]["spec"] == {"name": "model_factories:tiny_mlp", "options": {"width": 5}}
    assert "Linear(in_features=20, out_features=5" in got.meta["model"]["architecture"]
    out = tmp_path / "cli"
    assert main(["run", "--protocol", "plaintext", "--clients", "2", "--rounds", "1", "--quiet",
                 "--model", "model_factories:FixedNet", "--set", "data.name=\"synthetic\"",
                 "--set", "data.synthetic_samples=200", "--set", "data.synthetic_classes=3",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["model"] == "model_factories:FixedNet"
    assert res["meta"]["model"]["class"] == "model_factories.FixedNet"
    assert isinstance(load_model(out)(torch.zeros(4, 20)), torch.Tensor)


def test_cli_options_extend_a_named_model():
    merged = apply_overrides({"model": "mlp"}, {"model.hidden": [32, 32]})
    assert ExperimentConfig.from_dict(merged).model == ModelSpec(name="mlp", hidden=(32, 32))
    assert ExperimentConfig.from_dict(merged).to_dict()["model"] == {"name": "mlp", "hidden": [32, 32]}


@pytest.mark.parametrize("model,shape_words", [
    ({"name": "model_factories:FixedNet"}, "(1, 8, 8)"),  # digits are 1x8x8, the net takes 20 inputs
    ("cnn", "image shape"),  # tabular data, an image model
])
def test_a_model_that_does_not_fit_the_data_fails_before_round_one(model, shape_words):
    data = "digits" if isinstance(model, dict) else "breast-cancer"
    cfg = ExperimentConfig.from_dict({"protocol": "plaintext", "clients": 2, "rounds": 1, "model": model,
                                      "data": {"name": data}})
    with pytest.raises(ConfigError, match=shape_words.replace("(", r"\(").replace(")", r"\)")):
        Experiment(cfg).run(on_round=lambda rec: pytest.fail("a round ran"))


def test_too_few_outputs_for_the_classes_names_both():
    cfg = ExperimentConfig.from_dict({"protocol": "plaintext", "clients": 2, "rounds": 1,
                                      "model": "model_factories:FixedNet",  # 3 outputs
                                      "data": {"name": "synthetic", "synthetic_samples": 400,
                                               "synthetic_classes": 5}})
    with pytest.raises(ConfigError, match=r"output has shape \(2, 3\).*needs \(N, 5\)"):
        Experiment(cfg).run()


# -- 4. stopping rules --------------------------------------------------------------------------

TINY = {"clients": 3, "rounds": 6, "protocol": "plaintext", "data": {"name": "synthetic", "synthetic_samples": 240},
        "train": {"epochs": 1, "batch_size": 16}}


def test_the_stopping_rule_ends_the_run_and_says_why():
    cfg = ExperimentConfig.from_dict({**TINY, "server_lr": 1e-9,  # the model cannot improve
                                      "stop": {"metric": "loss", "patience": 2, "min_delta": 1e-3}})
    got = Experiment(cfg).run()
    assert len(got.rounds) == 3 and got.final["stopped_at"] == 3
    assert "loss did not improve by more than 0.001 for 2 rounds" in got.final["stop_reason"]
    full = Experiment(ExperimentConfig.from_dict(TINY)).run()
    assert full.final["stopped_at"] is None and full.final["stop_reason"] == "ran all 6 rounds"


def test_a_callback_stops_the_run_cleanly_and_the_result_is_kept(tmp_path):
    def stop_at_two(rec):
        if rec.round == 2:
            raise StopRun("enough for this study")

    got = Experiment(ExperimentConfig.from_dict(TINY)).run(stop_at_two)
    assert [r.round for r in got.rounds] == [1, 2] and got.final["stop_reason"] == "enough for this study"
    got.write(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["final"]["stopped_at"] == 2
    assert len(Experiment(ExperimentConfig.from_dict(TINY)).run(lambda rec: rec.round >= 4).rounds) == 4


def test_a_metric_the_task_does_not_measure_is_refused():
    cfg = ExperimentConfig.from_dict({**TINY, "stop": {"metric": "r2"}})
    with pytest.raises(ConfigError, match="not measured for this task"):
        Experiment(cfg).run()
    with pytest.raises(ConfigError, match="stop.metric"):
        ExperimentConfig.from_dict({**TINY, "stop": {"metric": "f1"}})


# -- 5. the model as an artefact --------------------------------------------------------------


@pytest.mark.parametrize("data,model", [("digits", "cnn"), ("diabetes", "linear")])
def test_the_saved_model_predicts_as_the_run_evaluated_it(tmp_path, data, model):
    cfg = ExperimentConfig.from_dict({"protocol": "plaintext", "clients": 3, "rounds": 2, "model": model,
                                      "data": {"name": data}})
    got = Experiment(cfg).run()
    got.write(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "model.json").exists()
    net = load_model(tmp_path)  # raw inputs: the training standardizer is its first layer
    ds = load_dataset(cfg.data, cfg.seed)
    raw = ds.standardizer.mean + ds.standardizer.std * ds.x_test.astype(np.float64)  # undo standardization
    with torch.no_grad():
        out = net(torch.as_tensor(raw, dtype=torch.float32))
    if ds.task is Task.REGRESSION:
        mse = float(np.mean((out.numpy().reshape(-1) - ds.y_test) ** 2))
        assert mse == pytest.approx(got.final["metrics"]["mse"], rel=1e-4)
    else:
        acc = float((out.argmax(1).numpy() == ds.y_test).mean())
        assert acc == pytest.approx(got.final["accuracy"], abs=1.5 / len(ds.y_test))


def test_a_model_file_that_does_not_match_is_a_typed_error(tmp_path):
    with pytest.raises(ConfigError, match="model.json"):
        load_model(tmp_path)
    cfg = ExperimentConfig.from_dict({**TINY, "rounds": 1})
    Experiment(cfg).run().write(tmp_path)
    info = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**info, "model": {"name": "mlp", "hidden": [3]}}))
    with pytest.raises(ConfigError, match="do not fit"):
        load_model(tmp_path)


# -- 3. personalization ----------------------------------------------------------------------------


def test_each_site_fine_tunes_and_is_evaluated_on_its_own_held_out_split(tmp_path):
    from secfl.runtime.personalize import split_sites

    cfg = ExperimentConfig.from_dict({**TINY, "rounds": 4, "clients": 3,
                                      "partition": {"kind": "dirichlet", "alpha": 0.3},
                                      "personalize": {"epochs": 3, "lr": 0.05, "every": 2, "holdout": 0.25,
                                                      "save_models": True}})
    got = Experiment(cfg).run()
    evals = got.meta["personalization"]
    assert [e["round"] for e in evals] == [2, 4] and got.final["personalized"] == evals[-1]
    data = load_dataset(cfg.data, cfg.seed)
    train, test = split_sites(partition(data.y_train, 3, cfg.partition, cfg.seed), 0.25, cfg.seed)
    everything = np.concatenate(train + test)
    assert np.unique(everything).size == everything.size  # held-out parts disjoint from all training
    assert got.meta["client_sizes"] == [int(p.size) for p in train]  # the federation trained on train parts only
    for s, tr, te in zip(evals[-1]["sites"], train, test, strict=True):
        assert (s["train"], s["test"]) == (tr.size, te.size)
        assert set(s["before"]) == set(s["after"]) == {"accuracy", "loss"}
    mean = evals[-1]
    assert mean["mean_after"]["loss"] <= mean["mean_before"]["loss"] + 1e-9  # fine-tuning on skewed sites helps
    got.write(tmp_path)
    site1 = load_model(tmp_path, site=1, raw_inputs=False)
    x_t = torch.as_tensor(data.x_train[test[1]])
    with torch.no_grad():
        acc = float((site1(x_t).argmax(1).numpy() == data.y_train[test[1]]).mean())
    assert acc == pytest.approx(evals[-1]["sites"][1]["after"]["accuracy"])


def test_personalization_is_refused_across_sites_for_now():
    from secfl.runtime.federation import FederationServer

    with pytest.raises(ConfigError, match="personalize"):
        FederationServer(ExperimentConfig.from_dict({**TINY, "personalize": {"epochs": 1}}))
