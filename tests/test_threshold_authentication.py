"""``ckks-threshold`` against an active relay (issue 12, item 2): members sign their key
advertisements with long-term identity keys listed in the federation roster; every member checks
every other member's signature before dealing; clients encrypt only under a collective key that
carries at least t member signatures.

Attacks, each with the relay in the position the review used (the server, or anyone on the path):

- roster swap: the relay puts its own X25519 key in place of every other member's in each
  ``THR_ROSTER`` (and re-signs with its own identity key, or keeps the old signatures) to open
  every sealed Shamir share. Before: the round completed and the relay held the collective secret.
  Now: every member refuses the roster (``AuthenticationError``) and key generation aborts with
  ``InsufficientQuorumError``.
- forged collective key: the server hands clients a key of its own. Now refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from relay_support import Relay, rewrite_active_set

from secfl.crypto.identity import IdentityKey, new_identities, signed_bytes
from secfl.crypto.keys import PrivateKey
from secfl.crypto.threshold import CollectivePublicKey, MemberSecret, collective_public_key, crp_seed, expand_crp
from secfl.errors import AuthenticationError, ConfigError, InsufficientQuorumError
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.ckks_threshold import ThrRoster
from secfl.protocols.ckks_threshold.messages import ThrCollectiveKey, hello_signed
from secfl.protocols.network import Network, member_id, server_id
from secfl.protocols.parties import LocalTransport

DIM, CLIENTS, N = 64, (0, 1, 2, 3), 3


def _federation(proto):
    keys, roster = new_identities((*CLIENTS, *(member_id(j) for j in range(N))))
    parties = {pid: proto.party(pid, identity=keys.get(pid), roster=roster)
               for pid in (*CLIENTS, *(member_id(j) for j in range(N)))}
    return parties, roster


def _inputs(parties, rnd):
    rng = np.random.default_rng(rnd)
    for c in CLIENTS:
        parties[c].set_input(rnd, rng.uniform(-1, 1, DIM), 100.0)


def _swap_roster(resign: bool):
    """Every THR_ROSTER: each other member's X25519 key becomes the relay's own."""
    evil, evil_identity = PrivateKey.generate(), IdentityKey.generate()  # the identity is not in the roster

    def swap(pid: int, data: bytes) -> bytes:
        msg = ThrRoster.from_bytes(data)
        me = pid - member_id(0)
        keys, sigs = bytearray(msg.public_keys), bytearray(msg.signatures)
        for i, j in enumerate(msg.members):
            if j == me:
                continue
            keys[32 * i : 32 * (i + 1)] = evil.public_key.raw
            if resign:
                nonce = msg.nonces[32 * i : 32 * (i + 1)]
                sigs[64 * i : 64 * (i + 1)] = evil_identity.sign(
                    hello_signed(msg.epoch, j, msg.params, evil.public_key.raw, nonce))
        return ThrRoster(msg.round, msg.sender, msg.epoch, msg.threshold, msg.params, msg.members, bytes(keys),
                         msg.nonces, bytes(sigs)).to_bytes()  # a fresh, valid frame (CRC recomputed)

    return swap


@pytest.mark.parametrize("resign", [False, True])
def test_a_relay_swapping_the_roster_keys_is_detected_and_the_round_aborts(resign):
    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    coord = proto.coordinator()
    parties, _ = _federation(proto)
    _inputs(parties, 0)
    relay = Relay(LocalTransport(Network(), parties), "thr.deal", on_request=_swap_roster(resign))
    with pytest.raises(InsufficientQuorumError):
        coord.run_round(RoundSpec(0, CLIENTS, DIM), relay)
    assert relay.rewritten == N
    for j in range(N):  # every member refused the rewritten roster, naming the signature
        why = relay.failures[member_id(j)]
        assert "AuthenticationError" in why or "signature" in why, why
        assert parties[member_id(j)].key_id is None  # no member holds a share of anything


def test_the_honest_round_passes_with_signatures():
    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    coord = proto.coordinator()
    parties, _ = _federation(proto)
    _inputs(parties, 0)
    out = coord.run_round(RoundSpec(0, CLIENTS, DIM), LocalTransport(Network(), parties))
    assert out.included == CLIENTS


def _forged_key_message(proto, rnd: int, signatures=()) -> tuple[bytes, CollectivePublicKey]:
    """A collective key the server made alone (it knows the secret), as THR_COLLECTIVE_KEY."""
    p = proto.params
    seed = crp_seed([bytes(32)], b"server-made")
    from secfl.crypto.prg import Prg

    secret = MemberSecret.generate(p)
    share = secret.public_share(expand_crp(p, seed), Prg())
    key = CollectivePublicKey(p, seed, collective_public_key([share], p))
    msg = ThrCollectiveKey(rnd, server_id(0), 1, (0, 1), key.to_bytes(), tuple(signatures))
    return msg.to_bytes(), key


def test_a_client_refuses_a_collective_key_without_t_member_signatures():
    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    keys, roster = new_identities(member_id(j) for j in range(N))
    client = proto.party(0, roster=roster)
    data, _ = _forged_key_message(proto, 0)
    with pytest.raises(AuthenticationError, match="0 valid member signature"):
        client.accept_key(data, 0)
    # one real member signature (member 0 was fooled or colludes) is still fewer than t = 2
    _, key = _forged_key_message(proto, 0)
    from secfl.protocols.ckks_threshold.messages import key_signed

    one = keys[member_id(0)].sign(key_signed(1, key.key_id, proto.params.to_bytes()))
    forged_sig = IdentityKey.generate().sign(key_signed(1, key.key_id, proto.params.to_bytes()))
    msg = ThrCollectiveKey(0, server_id(0), 1, (0, 1), key.to_bytes(), ((0, one), (1, forged_sig)))
    with pytest.raises(AuthenticationError, match="1 valid member signature"):
        client.accept_key(msg.to_bytes(), 0)
    assert client.key is None


def test_signatures_are_domain_separated_and_a_site_needs_its_identity():
    k = IdentityKey.generate()
    sig = k.sign(signed_bytes("secfl/ckks-threshold/hello", 1, 2))
    with pytest.raises(AuthenticationError):
        k.public.verify(signed_bytes("secfl/ckks-threshold/collective-key", 1, 2), sig, "test")
    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    member = proto.party(member_id(0))  # no identity, no roster
    with pytest.raises(ConfigError, match="identity key"):
        member.hello(0, 1)  # it cannot sign its key advertisement


def test_a_site_whose_identity_is_not_the_rosters_is_refused():
    from secfl.runtime.config import ExperimentConfig
    from secfl.runtime.federation import Site

    cfg = ExperimentConfig.from_dict({"protocol": "ckks-threshold", "clients": 3, "rounds": 1,
                                      "protocol_options": {"quorum": [2, 3]},
                                      "data": {"name": "synthetic", "synthetic_samples": 120}})
    keys, roster = new_identities(range(3))
    with pytest.raises(ConfigError, match="not the one the roster lists"):
        Site(cfg, 1, identity=keys[2], roster=roster)
    with pytest.raises(ConfigError, match="identity key and the federation roster"):
        Site(cfg, 1)
    assert Site(cfg, 1, identity=keys[1], roster=roster).parties


# -- item 3: members decrypt only real aggregates ---------------------------------------------------

def _with_c1(msg, c1_polys, params):
    from dataclasses import replace

    from secfl.crypto.threshold import ciphertext_digests, pack_polys
    from secfl.protocols.ckks_threshold.messages import aggregate_digest

    digest = aggregate_digest(ciphertext_digests(c1_polys, msg.key_id))  # consistent with the new c1
    return replace(msg, c1=pack_polys(c1_polys, params.data_primes), digest=digest)


def _crafted_round(craft):
    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    coord = proto.coordinator()
    parties, _ = _federation(proto)
    _inputs(parties, 0)
    relay = Relay(LocalTransport(Network(), parties), "thr.partial",
                  on_request=rewrite_active_set(lambda msg: craft(msg, proto.params)))
    with pytest.raises(InsufficientQuorumError):
        coord.run_round(RoundSpec(0, CLIENTS, DIM), relay)
    return [relay.failures[member_id(j)] for j in range(N) if member_id(j) in relay.failures]


def _constant(msg, params):
    """The review's attack: c1 = the constant 2^40 (every coefficient, NTT form)."""
    from secfl.crypto.threshold import unpack_polys

    real = unpack_polys(msg.c1, (msg.count,), params.data_primes, params.poly_degree)
    return _with_c1(msg, np.full_like(real, 1 << 40) % np.array(params.data_primes)[:, None], params)


def _negated(msg, params):
    from secfl.crypto.threshold import unpack_polys

    real = unpack_polys(msg.c1, (msg.count,), params.data_primes, params.poly_degree)
    return _with_c1(msg, (-real) % np.array(params.data_primes)[:, None], params)


def _one_client(msg, params):
    """Only client 0's own (validly signed) upload: its update alone would be decrypted."""
    from dataclasses import replace

    from secfl.crypto.threshold import unpack_polys

    size = len(msg.c1)
    own = msg.client_c1[:size]
    crafted = _with_c1(msg, unpack_polys(own, (msg.count,), params.data_primes, params.poly_degree), params)
    return replace(crafted, included=msg.included[:1], signatures=msg.signatures[:64], client_c1=own)


@pytest.mark.parametrize("craft, why", [(_constant, "not the sum"), (_negated, "not the sum"),
                                        (_one_client, "at least 2")])
def test_members_refuse_to_decrypt_a_crafted_aggregate(craft, why):
    failures = _crafted_round(craft)
    assert len(failures) >= 2 and all(why in f for f in failures), failures


def test_members_refuse_a_forged_client_signature():
    def forged(msg, params):
        from dataclasses import replace

        return replace(msg, signatures=bytes(64) + msg.signatures[64:])

    failures = _crafted_round(forged)
    assert failures and all("AuthenticationError" in f and "client 0" in f for f in failures), failures
