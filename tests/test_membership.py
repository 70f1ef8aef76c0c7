"""Dynamic membership (issue 13 item 8): sites join and leave between rounds on a schedule or
through a callback; every protocol handles the new client set; ckks re-keys when a client leaves."""

from __future__ import annotations

import numpy as np
import pytest

from secfl.errors import ConfigError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.simulator import Experiment

BASE = {"clients": 6, "rounds": 4, "data": {"name": "synthetic", "synthetic_samples": 480},
        "train": {"epochs": 1, "batch_size": 16},
        "membership": {"initial": [0, 1, 2, 3], "schedule": [{"round": 2, "join": [4, 5]},
                                                             {"round": 3, "leave": [0, 4]}]}}


def test_the_schedule_sets_who_takes_part_and_is_recorded():
    got = Experiment(ExperimentConfig.from_dict({**BASE, "protocol": "plaintext"})).run()
    assert [r.clients for r in got.rounds] == [[0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [1, 2, 3, 5], [1, 2, 3, 5]]
    assert [r.population for r in got.rounds] == [4, 6, 4, 4]
    assert got.meta["membership"] == [{"round": 2, "joined": [4, 5], "left": [], "population": 6},
                                      {"round": 3, "joined": [], "left": [0, 4], "population": 4}]


@pytest.mark.parametrize("protocol,opts", [("ckks", {}), ("ckks-threshold", {"quorum": [2, 3]}),
                                           ("additive", {}), ("secagg", {})])
def test_every_protocol_follows_the_changing_population(protocol, opts):
    plain = Experiment(ExperimentConfig.from_dict({**BASE, "protocol": "plaintext",
                                                   "protocol_options": {"wire_dtype": "float64"}})).run()
    got = Experiment(ExperimentConfig.from_dict({**BASE, "protocol": protocol, "protocol_options": opts})).run()
    assert [r.clients for r in got.rounds] == [r.clients for r in plain.rounds]
    assert all(not r.dropped for r in got.rounds)
    np.testing.assert_allclose(got.model_vector, plain.model_vector, atol=1e-3)


def test_a_callback_decides_the_population():
    seen = []

    def every_other(rnd, active):
        seen.append((rnd, sorted(active)))
        return [0, 2, 4] if rnd % 2 else [1, 3, 5]

    cfg = ExperimentConfig.from_dict({**BASE, "protocol": "plaintext", "membership": {}})
    got = Experiment(cfg, membership=every_other).run()
    assert [r.clients for r in got.rounds] == [[0, 2, 4], [1, 3, 5], [0, 2, 4], [1, 3, 5]]
    assert seen[0] == (1, [0, 1, 2, 3, 4, 5])
    with pytest.raises(ConfigError, match="out of range"):
        Experiment(cfg, membership=lambda r, a: [0, 9]).run()
    with pytest.raises(ConfigError, match="no client is active"):
        Experiment(cfg, membership=lambda r, a: []).run()
    with pytest.raises(ConfigError, match="out of range"):
        Experiment(ExperimentConfig.from_dict({**BASE, "protocol": "plaintext", "membership": {"initial": [7]}})).run()


def test_ckks_regenerates_its_key_when_a_client_leaves_and_not_when_one_joins():
    proto = make_protocol("ckks")
    try:
        def round_(rnd, clients):
            r = proto.open_round(RoundSpec(rnd, tuple(clients), 8), Network())
            r.setup()
            for c in clients:
                r.receive(c, r.protect(c, np.full(8, 0.1 * (c + 1)), 1.0))
            return r.reveal()

        round_(0, [0, 1, 2])
        holder0 = proto.key_holder
        round_(1, [0, 1, 2, 3])  # client 3 joins: provisioned with the same key
        assert proto.key_holder is holder0 and proto.client(3).provisioned
        proto.clients_left(frozenset({0}))
        out = round_(2, [1, 2, 3])  # under a fresh key: every remaining client provisioned again
        assert proto.key_holder is not holder0
        np.testing.assert_allclose(out.mean, np.full(8, 0.3), atol=1e-6)
    finally:
        proto.close()


def test_a_resumed_run_keeps_the_membership(tmp_path):
    cfg = ExperimentConfig.from_dict({**BASE, "protocol": "plaintext"})
    whole = Experiment(cfg).run()

    class Crash(Exception):
        pass

    def crash(rec):
        if rec.round == 3:
            raise Crash

    with pytest.raises(Crash):
        Experiment(cfg).run(crash, out=tmp_path)
    resumed = Experiment(cfg).run(out=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.model_vector, whole.model_vector)
    assert resumed.meta["membership"] == whole.meta["membership"]
