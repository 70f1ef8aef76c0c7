"""Tests for the mutants that survived the suite (issue 15, item 2; ``tools/mutants.toml``).

Each test fails on the mutant named in its docstring and passes on the code as it is: a check
that nothing exercised, a boundary only tested far from the edge, or a constant nothing pinned.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from relay_support import rewrite_active_set

from secfl.crypto.keys import PrivateKey, PublicKey, agree, seal
from secfl.crypto.prg import fresh_seed
from secfl.crypto.ring import Ring
from secfl.crypto.sharing import field_to_bytes, share_bytes
from secfl.errors import (
    ConfigError,
    DecryptionRefusedError,
    InsecureParametersError,
    MalformedMessageError,
    ProtocolAbort,
)
from secfl.protocols import RoundSpec, make_protocol
from secfl.protocols.network import Network, member_id, server_id

# ------------------------------------------------------------------------------------------ crypto


def test_a_reconstructed_chunk_beyond_30_bits_is_refused_anywhere():
    """crypto-sharing-chunk-range: a chunk with bit 30 set overlaps the next chunk; only a
    top-chunk overflow was tested (the final length check catches that one anyway)."""
    elems = np.zeros(9, dtype=np.uint64)
    elems[0] = 1 << 30
    with pytest.raises(MalformedMessageError, match="30 bits"):
        field_to_bytes(elems, 32)


def test_the_encoder_refuses_a_sum_that_reaches_the_modulus_exactly():
    """crypto-encoding-overflow-off-by-one: 256 clients x (2**1 - 1) = 2**8 wraps to 0."""
    from secfl.crypto.encoding import WeightedEncoder

    WeightedEncoder(1.0, 1, 8, 1.0, 255)
    with pytest.raises(InsecureParametersError):
        WeightedEncoder(1.0, 1, 8, 1.0, 256)


def test_the_encoder_refuses_to_decode_more_encodings_than_it_was_sized_for():
    """crypto-encoding-decode-count: one encoding more than the overflow check covered."""
    from secfl.crypto.encoding import WeightedEncoder

    enc = WeightedEncoder(8.0, 22, 32, 10.0, 4)
    total = enc.ring.zeros(4)
    total[-1] = enc.levels
    with pytest.raises(ProtocolAbort, match="covered only 4"):
        enc.decode(total, 5)


@pytest.fixture(scope="module")
def thr_params():
    from secfl.crypto.threshold import ThresholdParams

    return ThresholdParams.from_preset("standard")


def test_a_dealers_share_equal_to_the_prime_is_refused(thr_params):
    """crypto-threshold-share-outside-field: q itself is no residue modulo q."""
    from secfl.crypto.threshold import KeyShare

    p = thr_params
    share = np.zeros((len(p.data_primes), p.poly_degree), dtype=np.int64)
    KeyShare.from_shares(p, 1, [share])
    share[1, 7] = p.data_primes[1]
    with pytest.raises(MalformedMessageError, match="unreduced"):
        KeyShare.from_shares(p, 1, [share])


def test_no_member_secret_is_dealt_or_held_at_point_zero(thr_params):
    """crypto-threshold-point-zero: the share at x = 0 is the member's secret itself."""
    from secfl.crypto.threshold import KeyShare, MemberSecret

    p = thr_params
    secret = MemberSecret(p, np.zeros((len(p.primes), p.poly_degree), dtype=np.int64))
    with pytest.raises(ConfigError, match="Shamir points"):
        secret.deal([0, 1, 2], 2)
    with pytest.raises(ConfigError, match="Shamir points"):
        KeyShare(p, 0, np.zeros((len(p.data_primes), p.poly_degree), dtype=np.int64))


def test_t_minus_1_dealt_shares_do_not_interpolate_to_the_secret(thr_params):
    """crypto-threshold-deal-degree: each of t - 1 shares alone was checked to be uniform, but
    not that together they miss the secret (a degree t - 2 polynomial passes the first test)."""
    from secfl.crypto.threshold import MemberSecret, lagrange_coefficients

    p = thr_params
    secret = MemberSecret.generate(p)
    dealt = secret.deal([1, 2, 3], 3)
    assert dealt.shape == (3, len(p.data_primes), p.poly_degree)
    q = p.data_primes[0]
    lam = lagrange_coefficients([1, 2], q)
    s0 = secret.data_residues()[0, :64].tolist()
    guess = [(lam[0] * int(a) + lam[1] * int(b)) % q for a, b in zip(dealt[0, 0, :64], dealt[1, 0, :64], strict=True)]
    assert guess != s0
    lam3 = lagrange_coefficients([1, 2, 3], q)  # positive control: all t shares do
    full = [sum(lam3[j] * int(dealt[j, 0, i]) for j in range(3)) % q for i in range(64)]
    assert full == s0


# ------------------------------------------------------------------------------------------ protocols


def test_a_wire_count_one_above_its_cap_is_refused():
    """protocols-wire-count-limit: the cap was only tested far above it."""
    from secfl.protocols.wire import Reader

    r = Reader(bytes(100), "payload")
    assert r.count(4, 1, "items", most=4) == 4
    with pytest.raises(MalformedMessageError, match="at most 4"):
        r.count(5, 1, "items", most=4)


def test_known_answer_share_channel_keys():
    """protocols-secagg-share-key-label: pins the share-channel key derivation (RFC 7748 §6.1
    keys, round 7, pair (3, 9)); a changed label or split silently breaks interoperability."""
    from secfl.protocols.secagg.masks import share_channel_keys

    h = bytes.fromhex
    a = PrivateKey.from_secret(h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
    b = PrivateKey.from_secret(h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
    out, back = share_channel_keys(a, b.public_key, 7, 3, 9)
    assert out.hex() == "2ac82728064c9b59d1ef226366d8a874525261aaabc45812468303f8d3b2cd7b"
    assert back.hex() == "aef4cca640da8666176381fc86ca4b56b013ee6edb06b82e2c2cd1257cdd2849"
    assert share_channel_keys(b, a.public_key, 7, 9, 3) == (back, out)


def _secagg_server(length: int = 4):
    from secfl.protocols.secagg.server import SecAggServer

    srv = SecAggServer(0, 2, 2, Ring(32), length)
    srv.graph = {0: frozenset({1, 2}), 1: frozenset({0, 2}), 2: frozenset({0, 1})}
    srv.active = {0, 1, 2}
    return srv


def test_the_secagg_server_refuses_a_masked_input_from_a_pruned_client():
    """protocols-secagg-masked-input-not-active: the in-process round hands every participant's
    upload to the server; only this check keeps a pruned client (no share holders) out of U3,
    where it would abort the whole round at unmasking."""
    from secfl.protocols.secagg.messages import SaMaskedInput

    srv = _secagg_server()
    srv.active = {0, 1}
    data = SaMaskedInput(0, 2, 32, 4, bytes(16)).to_bytes()
    with pytest.raises(MalformedMessageError, match="not in the active set"):
        srv.on_masked_input(2, data)
    assert srv.masked == set() and not srv.sum.any()


def test_the_secagg_server_refuses_a_mask_key_that_is_not_the_advertised_one():
    """protocols-secagg-mask-key-not-checked: a dropped client's mask key reconstructed from
    consistent shares of *another* key (its neighbours, or a tampered forward) is refused."""
    srv = _secagg_server()
    keys = {u: PrivateKey.generate() for u in range(3)}
    srv.s_pk = {u: k.public_key.raw for u, k in keys.items()}
    srv.masked = {0, 1}  # client 2 dropped after the active set was fixed
    for u in (0, 1):
        xs = [v + 1 for v in sorted(srv.graph[u])]
        srv.b_shares[u] = list(zip(xs, share_bytes(fresh_seed(), xs, 2), strict=True))
    other = PrivateKey.generate()  # not client 2's advertised key
    srv.s_shares[2] = list(zip([1, 2], share_bytes(other.export_secret(), [1, 2], 2), strict=True))
    with pytest.raises(ProtocolAbort, match="does not match its advertised public key"):
        srv.unmask()
    srv.s_shares[2] = list(zip([1, 2], share_bytes(keys[2].export_secret(), [1, 2], 2), strict=True))
    assert srv.unmask().shape == (4,)  # positive control: the advertised key passes


def _additive_server(index: int):
    from secfl.protocols.additive.aggregator import AdditiveAggregator
    from secfl.protocols.additive.messages import AddServerKey
    from secfl.protocols.additive.options import AdditiveOptions

    srv = AdditiveAggregator(index, AdditiveOptions(servers=2))
    srv.open_round(0, frozenset({5}), 4)
    return srv, PublicKey(AddServerKey.from_bytes(srv.advertise()).public_key)


def test_an_additive_server_refuses_a_share_addressed_to_another_server():
    """protocols-additive-recipient: a share sealed to server 0 under a context naming server 1
    opens at server 0; only the recipient check refuses it."""
    from secfl.protocols.additive.messages import AddShare, ShareKind, share_ad
    from secfl.protocols.additive.options import KDF_LABEL

    srv, pk = _additive_server(0)
    eph = PrivateKey.generate()
    key = agree(eph, pk, KDF_LABEL, 0, 5, server_id(0))
    sealed = seal(key, fresh_seed(), share_ad(0, 5, server_id(1), ShareKind.SEED, 0))
    data = AddShare(0, 5, server_id(1), eph.public_key.raw, ShareKind.SEED, 0, sealed).to_bytes()
    with pytest.raises(MalformedMessageError, match="addressed to party"):
        srv.open_share(5, data, ShareKind.SEED)
    sealed = seal(key, fresh_seed(), share_ad(0, 5, server_id(0), ShareKind.SEED, 0))  # positive control
    ok = AddShare(0, 5, server_id(0), eph.public_key.raw, ShareKind.SEED, 0, sealed).to_bytes()
    assert srv.open_share(5, ok, ShareKind.SEED)[0] is ShareKind.SEED


def test_an_additive_server_refuses_a_vector_share_of_another_length():
    """protocols-additive-vector-length: the sealed size matches this round, the stated (and
    authenticated) length does not."""
    from secfl.protocols.additive.messages import AddShare, ShareKind, share_ad
    from secfl.protocols.additive.options import KDF_LABEL

    srv, pk = _additive_server(1)  # client 5 mod 2 servers: server 1 holds its vector share
    eph = PrivateKey.generate()
    key = agree(eph, pk, KDF_LABEL, 0, 5, server_id(1))
    plain = bytes(srv.ring.nbytes * srv.length)
    sealed = seal(key, plain, share_ad(0, 5, server_id(1), ShareKind.VECTOR, srv.length + 1))
    data = AddShare(0, 5, server_id(1), eph.public_key.raw, ShareKind.VECTOR, srv.length + 1, sealed).to_bytes()
    with pytest.raises(MalformedMessageError, match="this round has"):
        srv.open_share(5, data, ShareKind.VECTOR)


def test_the_threshold_server_refuses_dealers_with_different_crp_seeds():
    """protocols-threshold-server-crp-seeds: a server that equivocated on the roster (members
    then derive different CRP seeds) must not form a collective key from their shares."""
    from secfl.crypto.threshold import pack_polys
    from secfl.protocols.ckks_threshold.messages import ThrMemberHello, ThrPubkeyShare, ThrShamirShares
    from secfl.protocols.ckks_threshold.server import ThresholdServer

    proto = make_protocol("ckks-threshold", quorum=(2, 3))
    p = proto.params
    srv = ThresholdServer(proto.options, p)
    srv.begin_keygen(0)
    for j in range(3):
        hello = ThrMemberHello(0, member_id(j), 1, PrivateKey.generate().public_key.raw, fresh_seed(), bytes(64))
        srv.accept_hello(j, hello.to_bytes())
    roster, _ = srv.roster_message()
    zero = pack_polys(np.zeros((len(p.primes), p.poly_degree), dtype=np.int64), p.primes)
    for j in roster:
        seed = bytes([1 if j == 0 else 2]) * 32
        pk = ThrPubkeyShare(0, member_id(j), 1, seed, zero).to_bytes()
        sh = ThrShamirShares(0, member_id(j), 1, tuple((j, r, b"sealed") for r in roster if r != j)).to_bytes()
        srv.accept_dealing(j, pk, sh)
    with pytest.raises(ProtocolAbort, match="different CRP seeds"):
        srv.dealing_done()


def _threshold_round(on_request=None):
    """An honest ckks-threshold round (test_threshold_authentication's federation), with an
    optional rewrite of the members' THR_PARTIAL_REQUESTs; returns (proto, parties, relay, error)."""
    from relay_support import Relay
    from test_threshold_authentication import CLIENTS, DIM, N, _federation, _inputs

    from secfl.protocols.parties import LocalTransport

    proto = make_protocol("ckks-threshold", quorum=(2, N), max_weight=100.0)
    parties, _ = _federation(proto)
    _inputs(parties, 0)
    relay = Relay(LocalTransport(Network(), parties), "thr.partial", on_request=on_request)
    try:
        proto.coordinator().run_round(RoundSpec(0, CLIENTS, DIM), relay)
        error = None
    except ProtocolAbort as exc:  # InsufficientQuorumError included
        error = exc
    failures = [relay.failures[member_id(j)] for j in range(N) if member_id(j) in relay.failures]
    return proto, parties, failures, error


def _unpacked(blob: bytes, count: int, p) -> np.ndarray:
    from secfl.crypto.threshold import unpack_polys

    return unpack_polys(blob, (count,), p.data_primes, p.poly_degree)


def test_a_member_refuses_a_request_repeating_one_ciphertext():
    """protocols-threshold-member-duplicate-ciphertexts: the aggregate's ciphertext twice in one
    request (with evidence doubled to match) would give two noisy decryptions of one c1."""
    from test_threshold_authentication import _with_c1

    from secfl.crypto.threshold import pack_polys

    params = make_protocol("ckks-threshold").params

    def twice(msg):
        size = len(msg.c1)
        doubled = np.concatenate([_unpacked(msg.c1, msg.count, params)] * 2)
        own = b"".join(pack_polys(np.concatenate([_unpacked(msg.client_c1[size * i: size * (i + 1)], msg.count,
                                                              params)] * 2), params.data_primes)
                       for i in range(len(msg.included)))
        return replace(_with_c1(replace(msg, count=2 * msg.count), doubled, params), client_c1=own)

    _, _, failures, error = _threshold_round(rewrite_active_set(twice))
    assert error is not None
    assert failures and all("second partial decryption" in f for f in failures), failures


def test_a_member_refuses_an_active_set_larger_than_the_threshold():
    """protocols-threshold-member-active-size: every key holder in the active set (t + 1 here)
    is not the set of t the server must fix."""
    _, _, failures, error = _threshold_round(rewrite_active_set(lambda msg: replace(msg, active=(0, 1, 2))))
    assert error is not None
    assert failures and all("key holders including this member" in f for f in failures), failures


def test_a_member_answers_one_decryption_per_round():
    """protocols-threshold-member-one-answer-per-round: after its partial decryption of a round,
    a member refuses a second, valid aggregate of the same round (a subset of the same uploads:
    the difference would single out a client)."""
    from test_threshold_authentication import _with_c1

    from secfl.crypto.threshold import add_into
    from secfl.protocols.ckks_threshold.messages import ThrActiveSet, ThrPartialRequest

    asked: dict[int, bytes] = {}

    def keep(pid: int, data: bytes) -> bytes:
        asked[pid] = data
        return data

    proto, parties, failures, error = _threshold_round(keep)
    assert error is None and not failures and len(asked) == 2
    p = proto.params
    pid, data = sorted(asked.items())[0]
    req = ThrPartialRequest.from_bytes(data)
    msg = ThrActiveSet.from_bytes(req.active_set)
    size = len(msg.c1)
    total = np.zeros_like(_unpacked(msg.c1, msg.count, p))
    for i in range(3):  # the first three clients' own, signed uploads
        add_into(total, _unpacked(msg.client_c1[size * i: size * (i + 1)], msg.count, p), p.data_primes)
    subset = replace(_with_c1(msg, total, p), included=msg.included[:3], signatures=msg.signatures[:64 * 3],
                     client_c1=msg.client_c1[:size * 3])
    again = ThrPartialRequest(req.round, req.sender, req.clients, subset.to_bytes()).to_bytes()
    with pytest.raises(DecryptionRefusedError, match="already answered a decryption in round 0"):
        parties[pid].handle("thr.partial", again)


def test_a_ckks_mean_beyond_the_clipping_range_is_refused():
    """protocols-encoding-clip-check: a crafted aggregate decoding to a mean beyond clip_range."""
    from secfl.protocols.ckks_encoding import InputKind, SlotCodec

    codec = SlotCodec(InputKind.FLOAT, 2, 1.0, 10.0)
    mean, _, _ = codec.decode(np.array([0.05, -0.05, 0.1]), 1e-9, 0)
    assert np.allclose(mean, [0.5, -0.5])
    with pytest.raises(ProtocolAbort, match="beyond the clipping range"):
        codec.decode(np.array([0.5, 0.0, 0.1]), 1e-9, 0)


def test_dp_decoding_refuses_a_count_other_than_the_clients_summed():
    """protocols-dp-encoding-count: the count element is each client's 1; a sum that says 3
    for 4 clients (or 5) is not what was summed."""
    from secfl.dp import DiscreteGaussianMechanism, DPMode, to_modular
    from secfl.protocols.dp_encoding import DPEncoder

    mech = DiscreteGaussianMechanism(noise_multiplier=1.0, clip=1.0, mode=DPMode.DISTRIBUTED, min_honest=1,
                                     levels=100, dim=3)
    enc = DPEncoder(mech, 40, 4)
    mean, count, _ = enc.decode(to_modular(np.array([40, 0, -40, 4]), 40), 4)
    assert count == 4.0 and np.allclose(mean, [0.1, 0.0, -0.1])
    for m in (3, 5):
        with pytest.raises(ProtocolAbort, match=f"revealed count {m} does not match"):
            enc.decode(to_modular(np.array([40, 0, -40, m]), 40), 4)


# ------------------------------------------------------------------------------------------ dp


def test_discrete_gaussian_shares_below_one_half_are_refused_at_the_edge():
    """dp-tiny-share-threshold: s^2 = 0.2 (s = 0.447 < 1/2) was accepted by a bound at 0.125."""
    from secfl.dp import DiscreteGaussianMechanism, DPMode

    def mech(z: float):
        return DiscreteGaussianMechanism(noise_multiplier=z, clip=1.0, mode=DPMode.DISTRIBUTED, min_honest=1,
                                         levels=1, dim=4)

    assert mech(0.5).share_variance >= 0.25  # s = 1/2 exactly: accepted
    with pytest.raises(InsecureParametersError, match="1/2"):
        mech(math.sqrt(0.2))


def test_zhu_wang_subsampled_rdp_by_hand():
    """dp-zhu-wang-factor-3: the general upper bound (Zhu & Wang 2019) evaluated by hand, with
    its factor 3 on the terms l >= 3, for eps(a) = a/2 (Gaussian, z = 1) at q = 0.1."""
    from secfl.dp.accounting import subsampled_rdp

    def eps(a):
        return np.asarray(a, dtype=np.float64) / 2.0

    q = 0.1
    got = subsampled_rdp(eps, q, np.array([2, 3, 4, 6]))
    for a, value in zip((2, 3, 4, 6), got, strict=True):
        inner = (1 - q) ** (a - 1) * (a * q - q + 1) + math.comb(a, 2) * q**2 * (1 - q) ** (a - 2) * math.exp(1.0)
        inner += 3 * sum(math.comb(a, k) * q**k * (1 - q) ** (a - k) * math.exp((k - 1) * k / 2.0)
                         for k in range(3, a + 1))
        assert value == pytest.approx(min(math.log(inner) / (a - 1), a / 2.0), rel=1e-12)
