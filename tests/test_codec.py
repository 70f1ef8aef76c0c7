"""ModelCodec: layout, exact round-trips, buffers (BatchNorm), casting and rejection of bad vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from secfl.errors import ConfigError, InvalidUpdateError
from secfl.fl.codec import ModelCodec, TensorSpec
from secfl.fl.models import build_model


class BNNet(nn.Module):
    """Conv + BatchNorm2d + BatchNorm1d, a float64 parameter, an int and a bool buffer, and a
    weight tied between two layers (two state-dict keys, one parameter)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.bn1 = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 5, bias=False)
        self.tail = nn.Linear(5, 5, bias=False)
        self.tail.weight = self.head.weight
        self.scale = nn.Parameter(torch.ones(2, dtype=torch.float64))
        self.register_buffer("counter", torch.tensor([3, 7], dtype=torch.int32))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn2(self.conv(x))).flatten(1)
        return self.tail(self.head(self.bn1(self.fc(h)))) * self.scale.float().sum()


def _warm(seed: int) -> BNNet:
    """A BNNet whose running statistics moved away from their defaults."""
    net = BNNet(seed)
    net.train()
    with torch.no_grad():
        for i in range(3):
            net(torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(seed * 10 + i)))
    return net


def test_layout_covers_every_state_entry() -> None:
    net = BNNet(0)
    codec = ModelCodec.from_module(net)
    state = net.state_dict()
    assert [s.name for s in codec.specs] == list(state)
    assert codec.dim == sum(t.numel() for t in state.values())
    offset = 0
    for spec in codec.specs:
        assert spec.offset == offset and spec.size == state[spec.name].numel()
        assert spec.shape == tuple(state[spec.name].shape)
        assert spec.dtype == str(state[spec.name].dtype).removeprefix("torch.")
        offset += spec.size
    by_name = {s.name: s for s in codec.specs}
    for buf in ("bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked",
                "bn1.running_mean", "counter", "mask"):
        assert by_name[buf].is_buffer
    for param in ("conv.weight", "bn2.weight", "head.weight", "tail.weight", "scale"):
        assert not by_name[param].is_buffer
    assert by_name["bn2.num_batches_tracked"].dtype == "int64"


def test_round_trip_is_exact_and_loads_buffers() -> None:
    src, dst = _warm(1), BNNet(2)
    codec = ModelCodec.from_module(src)
    vec = codec.to_vector(src)
    assert vec.dtype == np.float32 and vec.shape == (codec.dim,)
    codec.load_vector(dst, vec)
    np.testing.assert_array_equal(codec.to_vector(dst), vec)
    s_src, s_dst = src.state_dict(), dst.state_dict()
    for name, tensor in s_src.items():
        got = s_dst[name]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        if tensor.dtype == torch.float64:  # travelled as float32
            assert torch.equal(got, tensor.float().double())
        else:
            assert torch.equal(got, tensor), name
    assert int(s_dst["bn2.num_batches_tracked"]) == 3
    assert not torch.equal(s_dst["bn1.running_var"], torch.ones(5))
    assert dst.tail.weight is dst.head.weight  # tying survives loading


def test_state_dict_from_vector_round_trip_and_no_aliasing() -> None:
    net = _warm(3)
    codec = ModelCodec.from_module(net)
    vec = codec.to_vector(net)
    state = codec.state_dict_from_vector(vec)
    assert list(state) == [s.name for s in codec.specs]
    np.testing.assert_array_equal(codec.to_vector(state), vec)
    before = vec.copy()
    for tensor in state.values():
        if tensor.is_floating_point():
            tensor.add_(1.0)
    np.testing.assert_array_equal(vec, before)


def test_integer_buffers_rounded_and_bools_thresholded() -> None:
    net = BNNet(0)
    codec = ModelCodec.from_module(net)
    by_name = {s.name: s for s in codec.specs}
    vec = codec.to_vector(net)
    nbt, counter, mask = by_name["bn1.num_batches_tracked"], by_name["counter"], by_name["mask"]
    vec[nbt.offset] = 2.6
    vec[counter.offset:counter.offset + 2] = [4.4, -1e30]  # clamped to int32 range
    vec[mask.offset:mask.offset + 3] = [0.49, 0.5, 0.9]
    codec.load_vector(net, vec)
    state = net.state_dict()
    assert int(state["bn1.num_batches_tracked"]) == 3
    assert state["counter"].tolist() == [4, torch.iinfo(torch.int32).min]
    assert state["mask"].tolist() == [False, True, True]
    assert state["counter"].dtype == torch.int32 and state["mask"].dtype == torch.bool


@pytest.mark.parametrize("kind", ["too short", "too long", "2d", "nan", "inf", "float64 overflow",
                                  "complex"])
def test_bad_vectors_rejected_without_writing(kind: str) -> None:
    net = BNNet(0)
    codec = ModelCodec.from_module(net)
    good = codec.to_vector(net)
    bad: np.ndarray = good.copy()
    if kind == "too short":
        bad = good[:-1]
    elif kind == "too long":
        bad = np.append(good, np.float32(0.0))
    elif kind == "2d":
        bad = good.reshape(1, -1)
    elif kind == "nan":
        bad[5] = np.nan
    elif kind == "inf":
        bad[5] = -np.inf
    elif kind == "float64 overflow":  # finite in float64, inf after the float32 cast
        bad = good.astype(np.float64)
        bad[0] = 1e300
    elif kind == "complex":
        bad = good.astype(np.complex64)
    with pytest.raises(InvalidUpdateError):
        codec.load_vector(net, bad)
    with pytest.raises(InvalidUpdateError):
        codec.state_dict_from_vector(bad)
    np.testing.assert_array_equal(codec.to_vector(net), good)


def test_nan_in_middle_rejected() -> None:
    net = BNNet(0)
    codec = ModelCodec.from_module(net)
    vec = codec.to_vector(net)
    vec[codec.dim // 2] = np.nan
    with pytest.raises(InvalidUpdateError, match="NaN"):
        codec.load_vector(net, vec)


def test_mismatched_module_rejected() -> None:
    codec = ModelCodec.from_module(build_model("mlp", (64,), 10, seed=0))
    other = build_model("mlp", (32,), 10, seed=0)
    with pytest.raises(ConfigError):
        codec.to_vector(other)
    with pytest.raises(ConfigError):
        codec.load_vector(other, np.zeros(codec.dim, dtype=np.float32))
    with pytest.raises(ConfigError):
        codec.to_vector(build_model("logreg", (64,), 10, seed=0))


def test_non_tensor_state_refused() -> None:
    class WithExtra(nn.Linear):
        def get_extra_state(self) -> dict:
            return {"step": 1}

        def set_extra_state(self, state: dict) -> None:
            pass

    with pytest.raises(ConfigError, match="_extra_state"):
        ModelCodec.from_module(WithExtra(2, 2))


def test_specs_must_be_contiguous() -> None:
    spec = TensorSpec(name="w", shape=(2, 2), dtype="float32", offset=1, size=4, is_buffer=False)
    with pytest.raises(ConfigError):
        ModelCodec(specs=(spec,))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_property_float_vectors_round_trip_exactly(data: st.DataObject) -> None:
    net = build_model("logreg", (6,), 3, seed=0)
    codec = ModelCodec.from_module(net)
    finite = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)
    vec = data.draw(arrays(np.float32, codec.dim, elements=finite))
    codec.load_vector(net, vec)
    np.testing.assert_array_equal(codec.to_vector(net), vec)
    np.testing.assert_array_equal(codec.to_vector(codec.state_dict_from_vector(vec)), vec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: GPU machines only")
def test_cuda_module_keeps_device() -> None:
    net = _warm(4).cuda()
    codec = ModelCodec.from_module(net)
    vec = codec.to_vector(net)
    assert isinstance(vec, np.ndarray)
    fresh = BNNet(5).cuda()
    codec.load_vector(fresh, vec)
    assert all(t.is_cuda for t in fresh.state_dict().values())
    np.testing.assert_array_equal(codec.to_vector(fresh), vec)
