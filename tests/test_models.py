"""build_model: shapes, seeded determinism, untouched global RNG, validation, learnability."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from secfl.errors import ConfigError
from secfl.fl.codec import ModelCodec
from secfl.fl.models import ModelName, build_model

SHAPES = {ModelName.LOGREG: (64,), ModelName.LINEAR: (64,), ModelName.MLP: (64,), ModelName.CNN: (1, 8, 8)}


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", list(ModelName))
def test_output_is_logits_for_flat_and_shaped_input(name: ModelName) -> None:
    shape = SHAPES[name]
    model = build_model(name, shape, 10, seed=0)
    assert model(torch.zeros(5, 64)).shape == (5, 10)
    assert model(torch.zeros(5, *shape)).shape == (5, 10)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())


def test_cnn_also_takes_28x28_and_binary() -> None:
    model = build_model("cnn", (1, 28, 28), 2, seed=3)
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 2)
    # adaptive pooling: same parameter count as the 8x8 variant
    assert ModelCodec.from_module(model).dim == ModelCodec.from_module(
        build_model("cnn", (1, 8, 8), 2, seed=3)).dim


@pytest.mark.parametrize("name", list(ModelName))
def test_same_seed_same_weights_other_seed_differs(name: ModelName) -> None:
    a = build_model(name.value, SHAPES[name], 10, seed=7)
    b = build_model(name, SHAPES[name], 10, seed=7)
    c = build_model(name, SHAPES[name], 10, seed=8)
    assert _state_equal(a, b)
    assert not _state_equal(a, c)


def test_global_rng_left_unchanged() -> None:
    before = torch.get_rng_state()
    build_model("mlp", (64,), 10, seed=123)
    assert torch.equal(before, torch.get_rng_state())


def test_independent_of_global_rng() -> None:
    torch.manual_seed(1)
    a = build_model("logreg", (64,), 10, seed=5)
    torch.manual_seed(2)
    b = build_model("logreg", (64,), 10, seed=5)
    assert _state_equal(a, b)


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ConfigError, match="logreg.*mlp.*cnn"):
        build_model("resnet", (64,), 10, seed=0)


@pytest.mark.parametrize("shape", [(64,), (8, 8), (1, 1, 8)])
def test_cnn_needs_image_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        build_model("cnn", shape, 10, seed=0)


@pytest.mark.parametrize("kwargs, field", [
    (dict(input_shape=()), "input_shape"),
    (dict(input_shape=(0,)), "input_shape"),
    (dict(input_shape=(8.0,)), "input_shape"),
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
])
def test_invalid_arguments(kwargs: dict, field: str) -> None:
    args = dict(name="mlp", input_shape=(64,), num_classes=10, seed=0) | kwargs
    with pytest.raises(ConfigError, match=field):
        build_model(**args)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Two intra-op threads on a busy 2-core box run conv nets ~10x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_cnn_learns_digits(one_thread: None) -> None:
    """Centralised sanity check of the architecture: two SGD epochs give >= 90% test accuracy."""
    datasets = pytest.importorskip("sklearn.datasets")
    from secfl.fl.training import TrainConfig, evaluate, local_train

    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1300], order[1300:]
    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    codec = ModelCodec.from_module(model)
    start = codec.to_vector(model)
    cpu = torch.device("cpu")
    result = local_train(model, codec, start, x[train], y[train],
                         TrainConfig(epochs=2, batch_size=64, lr=0.1, momentum=0.9), seed=0, device=cpu)
    accuracy, _ = evaluate(model, codec, start + result.update, x[test], y[test], cpu)
    assert accuracy >= 0.9
