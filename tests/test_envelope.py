"""Signed envelopes (issue 12 item 6): every request and reply across sites is signed end to end,
so a relay that rewrites, redirects, replays or re-orders a message is refused with a typed error
and the offending message costs its sender the round, not the round itself."""

from __future__ import annotations

import pytest
from relay_support import Relay

from secfl.crypto.identity import new_identities
from secfl.errors import AuthenticationError, ConfigError, ReplayError
from secfl.protocols.envelope import ENVELOPE_BYTES, ServerEnvelopes, SignedTransport, SiteEnvelopes
from secfl.protocols.network import Network, server_id
from secfl.protocols.parties import LocalTransport
from secfl.runtime.config import ExperimentConfig
from secfl.runtime.federation import TRAIN_STAGE, FederationServer, local_federation

SERVER = server_id(0)
STAGE = "demo.stage"


@pytest.fixture(scope="module")
def federation():
    keys, roster = new_identities([0, 1, 2, SERVER])
    return keys, roster


def ends(federation, owners=None):
    keys, roster = federation
    owners = owners or {10: 1, 20: 2}
    server = ServerEnvelopes(keys[SERVER], roster, owners.get)
    sites = {k: SiteEnvelopes(keys[k], k, roster) for k in (0, 1, 2)}
    return server, sites


def test_a_request_and_its_reply_round_trip_with_84_bytes_each(federation):
    server, sites = ends(federation)
    sealed = server.seal(STAGE, 10, b"request")
    assert len(sealed) == len(b"request") + ENVELOPE_BYTES == 7 + 84
    reply = sites[1].answer(STAGE, 10, sealed, lambda body: body.upper())
    assert server.open(STAGE, 10, reply) == b"REQUEST" and server.signer_of(10) == 1


@pytest.mark.parametrize("where", [0, 3, -ENVELOPE_BYTES, -1])
def test_a_flipped_byte_anywhere_in_a_request_is_refused(federation, where):
    server, sites = ends(federation)
    sealed = bytearray(server.seal(STAGE, 10, b"a request body"))
    sealed[where] ^= 0x01
    with pytest.raises(AuthenticationError):
        sites[1].open(STAGE, 10, bytes(sealed))


def test_a_tampered_reply_is_refused(federation):
    server, sites = ends(federation)
    reply = bytearray(sites[1].answer(STAGE, 10, server.seal(STAGE, 10, b"x"), lambda b: b"reply"))
    reply[0] ^= 0x80
    with pytest.raises(AuthenticationError, match="does not verify"):
        server.open(STAGE, 10, bytes(reply))


def test_a_request_redirected_to_another_party_or_stage_is_refused(federation):
    server, sites = ends(federation)
    sealed = server.seal(STAGE, 10, b"for party 10")
    with pytest.raises(AuthenticationError):
        sites[2].open(STAGE, 20, sealed)  # another recipient
    with pytest.raises(AuthenticationError):
        sites[1].open("other.stage", 10, sealed)  # another stage


def test_a_reply_cannot_answer_another_request(federation):
    server, sites = ends(federation)
    first = sites[1].answer(STAGE, 10, server.seal(STAGE, 10, b"first"), lambda b: b"ok")
    assert server.open(STAGE, 10, first) == b"ok"
    server.seal(STAGE, 10, b"second")
    with pytest.raises(AuthenticationError, match="does not verify"):
        server.open(STAGE, 10, first)  # replayed onto the second request


def test_a_reply_nobody_asked_for_is_refused(federation):
    server, sites = ends(federation)
    reply = sites[1].answer(STAGE, 10, server.seal(STAGE, 10, b"x"), lambda b: b"ok")
    server.open(STAGE, 10, reply)
    with pytest.raises(AuthenticationError, match="no request"):
        server.open(STAGE, 10, reply)  # the same reply twice
    with pytest.raises(AuthenticationError, match="no verified request"):
        sites[1].seal(STAGE, 10, b"unasked")


def test_requests_and_replies_of_another_run_are_replays(federation):
    server, sites = ends(federation)
    sites[1].open(STAGE, 10, server.seal(STAGE, 10, b"run 1"))
    other_run, _ = ends(federation)
    with pytest.raises(ReplayError, match="another session"):
        sites[1].open(STAGE, 10, other_run.seal(STAGE, 10, b"run 2"))
    # a reply made in another run, to the same request bytes
    _, fresh_sites = ends(federation)
    old_reply = fresh_sites[1].answer(STAGE, 10, other_run.seal(STAGE, 10, b"same"), lambda b: b"ok")
    server.seal(STAGE, 10, b"same")
    with pytest.raises(ReplayError, match="another session"):
        server.open(STAGE, 10, old_reply)


def test_a_reply_signed_by_a_site_that_does_not_play_the_party_is_refused(federation):
    server, sites = ends(federation)
    sealed = server.seal(STAGE, 20, b"for site 2's party")
    # site 1 answers a request it was handed for party 20 (a relay redirected it), signing as itself
    keys, roster = federation
    rogue = SiteEnvelopes(keys[1], 1, roster)
    forged = rogue.answer(STAGE, 20, sealed, lambda b: b"forged")
    with pytest.raises(AuthenticationError, match="site 2 plays this party"):
        server.open(STAGE, 20, forged)


def test_a_signer_outside_the_roster_and_unsigned_messages_are_refused(federation):
    keys, roster = federation
    outsider_keys, outsider_roster = new_identities([5, SERVER])
    server, sites = ends(federation, owners={50: None})
    # an outsider on the path copies the session from the server's request and signs a reply
    # with a key of its own, claiming to be site 5 (no such site in the roster)
    import hashlib
    import struct

    from secfl.protocols import envelope

    request = server.seal(STAGE, 50, b"x")
    session = request[-ENVELOPE_BYTES:][:envelope.SESSION_BYTES]
    signed = envelope._reply_bytes(roster.digest(), session, STAGE, 50, 5, hashlib.sha256(b"x").digest(), b"hi")
    reply = b"hi" + session + struct.pack("<I", 5) + outsider_keys[5].sign(signed)
    with pytest.raises(AuthenticationError, match="not in the federation roster"):
        server.open(STAGE, 50, reply)
    impostor_server = ServerEnvelopes(outsider_keys[SERVER], outsider_roster, lambda p: None)
    # a request signed by a server key outside this federation's roster
    with pytest.raises(AuthenticationError, match="does not verify"):
        sites[1].open(STAGE, 10, impostor_server.seal(STAGE, 10, b"x"))
    for short in (b"", b"plain frame without an envelope", bytes(ENVELOPE_BYTES - 1)):
        with pytest.raises(AuthenticationError):
            sites[1].open(STAGE, 10, short)


def test_keys_that_do_not_match_the_roster_are_configuration_errors(federation):
    keys, roster = federation
    with pytest.raises(ConfigError, match="roster lists for the server"):
        ServerEnvelopes(keys[1], roster, lambda p: None)
    with pytest.raises(ConfigError, match="roster lists for site 2"):
        SiteEnvelopes(keys[1], 2, roster)
    site_keys, no_server = new_identities([0, 1])
    with pytest.raises(ConfigError, match="no server key"):
        SiteEnvelopes(site_keys[0], 0, no_server)


TINY = {"clients": 4, "rounds": 1, "data": {"name": "synthetic", "synthetic_samples": 240},
        "train": {"epochs": 1, "batch_size": 16}}


def flip(pid: int, data: bytes) -> bytes:
    """What a relay does that the CRC would not catch if it also recomputed the CRC: rewrite."""
    if pid != 1:
        return data
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("direction", ["request", "reply"])
@pytest.mark.parametrize("protocol", ["plaintext", "ckks", "additive", "secagg"])
def test_a_relay_rewriting_one_sites_training_message_drops_that_site_and_the_round_goes_on(protocol, direction):
    cfg = ExperimentConfig.from_dict({**TINY, "protocol": protocol})
    fed = local_federation(cfg)
    net = Network()
    relay = Relay(LocalTransport(net, fed.parties), TRAIN_STAGE,
                  on_request=flip if direction == "request" else None,
                  on_reply=flip if direction == "reply" else None)
    transport = SignedTransport(relay, fed.envelopes)
    server = FederationServer(cfg)
    try:
        got = server.run(transport, net)
    finally:
        server.close()
        fed.close()
    assert "AuthenticationError" in transport.failures[1]
    assert got.rounds[0].dropped == [1] and got.rounds[0].accuracy > 0


def test_the_roster_holds_the_servers_key_and_refuses_to_be_built_without_it(tmp_path, capsys):
    from secfl.cli import build_parser
    from secfl.crypto.identity import IdentityKey, Roster
    from secfl.runtime.flower.certs import write_identity, write_roster

    for k in (0, 1):
        write_identity(tmp_path, k)
    with pytest.raises(ConfigError, match="server.identity.pub"):
        write_roster(tmp_path)
    args = build_parser().parse_args(["deploy", "identity", str(tmp_path), "--server"])
    assert args.func(args) == 0 and "server.identity" in capsys.readouterr().out
    roster = Roster.load(write_roster(tmp_path))
    assert set(roster.keys) == {0, 1, SERVER}
    assert roster.keys[SERVER] == IdentityKey.load(tmp_path / "server.identity").public
    with pytest.raises(SystemExit):  # a key is for a site or for the server, not both
        build_parser().parse_args(["deploy", "identity", str(tmp_path), "--server", "--site", "0"])
    with pytest.raises(ConfigError, match="already exist"):
        write_identity(tmp_path, None)
