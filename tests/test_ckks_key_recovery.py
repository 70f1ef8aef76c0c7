"""Li–Micciancio key recovery by the ``ckks`` server from the revealed mean (issue 12, item 1).

The server holds its aggregate ciphertext and receives the revealed mean (the FL loop applies it).
With the noisy float decryption it re-encodes the mean, solves for the key and reads a client's
upload; the default ``grid`` input rounds the noise away, so the same attack must fail on the
defaults of ``secure_mean`` and ``secfl run``. Each attack also runs against ``unsafe-float``,
where it must succeed: otherwise the failing attack would prove nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import secfl
import secfl.runtime.simulator as simulator
from secfl.crypto.ckks import CkksPublicContext
from secfl.errors import ConfigError, SecurityWarning
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks import KEY_HOLDER, CkksAggregate, CkksContextMessage, CkksOptions, CkksUpdate
from secfl.protocols.network import Network, server_id
from secfl.protocols.wire import Frame, MsgType
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.simulator import Experiment
from secfl.threats.key_recovery import recover_ckks_key


def _server_material(net: Network, rnd: int = 0):
    """What the server holds after round ``rnd``: its public context, every upload it received
    (client -> bytes) and the aggregate it sent to the key holder."""
    public, uploads, aggregate = None, {}, None
    for d in net.views[server_id(0)]:
        frame = Frame.from_bytes(d.data)
        if frame.type == MsgType.CKKS_PUBLIC_CONTEXT:
            public = CkksPublicContext.from_bytes(CkksContextMessage.from_bytes(d.data).context)
        elif frame.type == MsgType.CKKS_UPDATE and frame.round == rnd:
            uploads[d.sender] = CkksUpdate.from_bytes(d.data).ciphertexts
    for d in net.views[KEY_HOLDER]:
        frame = Frame.from_bytes(d.data)
        if frame.type == MsgType.CKKS_AGGREGATE and frame.round == rnd:
            aggregate = CkksAggregate.from_bytes(d.data).ciphertexts
    assert public is not None and aggregate is not None and uploads
    return public, uploads, public.ciphertexts_from_bytes(aggregate)


def _attack(public, aggregate, mean, total_weight, options: CkksOptions, clients: int):
    """The server's best reconstructions of the decrypted reals of ciphertext 0 from the revealed
    mean and total weight (all else public), each tried; the recovered key or None."""
    vals = public.params.values_per_ciphertext
    s_w = total_weight / options.max_weight
    sums = np.asarray(mean, dtype=np.float64) * s_w
    candidates = [sums[:vals]]
    proto = make_protocol("ckks", **{f: getattr(options, f) for f in ("preset", "clip_range", "max_weight",
                                                                          "input")})
    codec = proto.open_round(RoundSpec(0, tuple(range(clients)), mean.size), Network())._codec
    if codec.grid:  # the lifted grid values the key holder actually decrypted
        candidates.append(np.rint(sums[:vals] * codec.grid) / codec.grid * codec.lift)
    proto.close()
    for cand in candidates:
        key = recover_ckks_key(public, aggregate, cand)
        if key is not None:
            return key
    return None


def _client_plain(key, public, upload: bytes, dim: int) -> np.ndarray:
    return key.decrypt(public.ciphertexts_from_seeded_bytes(upload), dim + 1)


@pytest.mark.parametrize("mode", ["grid", "unsafe-float"])
def test_secure_mean_reveal_gives_the_server_the_key_only_in_unsafe_float(mode):
    rng = np.random.default_rng(3)
    clients, dim = 5, 3000  # ciphertext 0 carries 2048 update reals: all of them revealed
    xs = rng.uniform(-1, 1, size=(clients, dim))
    ws = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    kwargs = {} if mode == "grid" else {"input": "unsafe-float"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = secfl.secure_mean(xs, ws, protocol="ckks", record_views=True, **kwargs)
    loud = [w for w in caught if issubclass(w.category, SecurityWarning)]
    assert bool(loud) == (mode == "unsafe-float")
    public, uploads, aggregate = _server_material(res.network)
    options = CkksOptions(max_weight=float(ws.max()), **kwargs)  # secure_mean's default: the largest weight
    key = _attack(public, aggregate, res.mean, res.total_weight, options, clients)
    if mode == "grid":
        assert key is None
        ref = (ws[:, None] * xs).sum(0) / ws.sum()
        assert np.max(np.abs(res.mean - ref)) < 1e-5
        return
    assert key is not None  # the attack works: the server decrypts client 3's individual upload
    got = _client_plain(key, public, uploads[3], dim)
    a = ws[3] / options.max_weight
    assert np.max(np.abs(got[:dim] - a * xs[3])) < 1e-6 and abs(got[dim] - a) < 1e-6


def test_ckks_refuses_plain_float_and_warns_every_unsafe_round():
    with pytest.raises(ConfigError, match="unsafe-float"):
        CkksOptions(input="float")
    assert CkksOptions().input.value == "grid"
    proto = make_protocol("ckks", input="unsafe-float")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # even the default filter shows it every round
        for rnd in range(3):
            proto.open_round(RoundSpec(rnd, (0, 1), 4), Network())
    proto.close()
    assert sum(issubclass(w.category, SecurityWarning) for w in caught) == 3


@pytest.mark.parametrize("mode", ["default", "unsafe-float"])
def test_secfl_run_defaults_give_the_server_nothing_to_recover(monkeypatch, mode):
    """``secfl run``'s defaults (protocol ckks, its default options): the server gets the mean the
    FedAvg step applies; digits/mlp has more than 2048 parameters, so ciphertext 0 is all revealed."""
    nets: list[Network] = []
    applied: list[np.ndarray] = []

    class Recording(Network):
        def __init__(self) -> None:
            super().__init__(record_views=True)
            nets.append(self)

    real_apply = simulator.apply_mean

    def spy(global_vec, mean, lr):
        applied.append(np.array(mean, dtype=np.float64))
        return real_apply(global_vec, mean, lr)

    from secfl.protocols.ckks import protocol as ckks_protocol

    revealed = []
    real_reveal = ckks_protocol._CkksRound.reveal

    def reveal_spy(self):
        out = real_reveal(self)
        revealed.append(out)  # what the server's process holds after the reveal (mean, total weight)
        return out

    monkeypatch.setattr(simulator, "Network", Recording)
    monkeypatch.setattr(simulator, "apply_mean", spy)
    monkeypatch.setattr(ckks_protocol._CkksRound, "reveal", reveal_spy)
    opts = {} if mode == "default" else {"input": "unsafe-float"}
    cfg = ExperimentConfig.from_dict({"model": "mlp", "clients": 3, "rounds": 1, "data": {"name": "digits"},
                                      "train": {"epochs": 1}, "protocol_options": opts})
    assert cfg.protocol == "ckks"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        result = Experiment(cfg).run()
    sizes = np.asarray(result.meta["client_sizes"], dtype=np.float64)  # public in this runtime
    mean = applied[0]
    assert mean.size > 2048
    public, uploads, aggregate = _server_material(nets[0])
    options = CkksOptions(max_weight=float(sizes.max()), **opts)
    assert np.array_equal(revealed[0].mean, mean)
    key = _attack(public, aggregate, mean, float(revealed[0].total_weight), options, cfg.clients)
    if mode == "default":
        assert key is None
    else:
        assert key is not None
        got = _client_plain(key, public, uploads[1], mean.size)
        assert abs(got[-1] - sizes[1] / sizes.max()) < 1e-6  # client 1's own weight, read by the server
