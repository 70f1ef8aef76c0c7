"""``ckks-threshold`` — CKKS under a collective key; t of n quorum members decrypt the aggregate.

Parties, one module each: clients ``0..K-1`` (:mod:`.client`), the server ``server_id(0)``
(relay, aggregator and combiner; public material only: :mod:`.server`), and quorum members
``member_id(0..n-1)`` (:mod:`.member`). No party ever holds the decryption key. Messages:
:mod:`.messages`; options: :mod:`.options`; the server's stage sequence across sites:
:mod:`.stages`; the protocol object and the in-process round: :mod:`.protocol`.

Rounds (spec: ``protocols/ckks_threshold.md``; ``RoundSpec.dropouts`` stage names in brackets —
the *member indices* listed there go silent before that stage; clients drop out for free):

  0. *Key generation* (first round, and whenever the key's decryption budget τ runs out), in
     ``setup``: [``member_keygen``] each member sends ``THR_MEMBER_HELLO`` (a fresh X25519 key and
     a 32-byte nonce); the server returns the roster (``THR_ROSTER``) to every member that did;
     the CRP seed is the hash of the roster's nonces. [``member_shares``] Each member derives
     ``a``, draws ``s_i`` (SEAL's KeyGenerator), sends ``b_i = −a·s_i + e_i``
     (``THR_PUBKEY_SHARE``) and its Shamir shares of ``s_i`` (t-of-n, every ciphertext prime),
     each sealed with AES-256-GCM under ``HKDF(X25519)`` for its recipient (``THR_SHAMIR_SHARES``).
     The server keeps the dealers D that sent both, forwards each member the shares addressed to
     it, and sends everyone the collective key ``(Σ_D b_i, a)`` (``THR_COLLECTIVE_KEY``). Each
     member sums what it received into its key share σ_j and says whether it holds one
     (``THR_KEY_ACK``).
  1. *Protect* (client k): encode ``(a_k x_k, a_k)`` with SEAL's CKKSEncoder (complex packing,
     ``a_k = n_k / max_weight``) and encrypt with SEAL's Encryptor under the collective key
     (``THR_UPDATE``).
  2. *Aggregate* (server): strict parse, add into one running sum.
  3. *Reveal*: [``member_decrypt``] the server announces the aggregate (``THR_DECRYPT_REQUEST``:
     included clients, one digest per ciphertext); members that can and will take part answer
     ``THR_READY``. The server fixes an active set A of t ready members and sends each the
     aggregate's c_1 with A (``THR_ACTIVE_SET``). [``member_partial``] Member j checks it never
     decrypted any of these ciphertexts, records them, and returns ``c_1·λ_j^A·σ_j + E_j`` with
     fresh flooding noise E_j (``THR_PARTIAL_DECRYPTION``). The server adds ``c_0`` and the t
     shares and decodes with SEAL's CKKSEncoder. A partial that fails to parse, or is for another
     ciphertext or active set, counts its member as absent; the server then tries a disjoint active
     set among the remaining ready members, and raises
     :class:`~secfl.errors.InsufficientQuorumError` when fewer than t remain (nothing is decoded).

Security (semi-honest parties; details in the spec): the server relays sealed Shamir shares it
cannot read and sees only ciphertexts, partial decryptions (each an RLWE sample with flooding
noise) and, as the combiner, the aggregate. Any t − 1 members (with the server) learn nothing
about an individual update; t colluding members recover the key. A member never answers twice
for the same ciphertext (:class:`~secfl.errors.DecryptionRefusedError`) and stops after τ
ciphertexts under one key. Malicious clients are not covered: one can submit garbage, and one
colluding with the combiner can submit a crafted ciphertext whose decryption exposes the key.
"""

from secfl.protocols.ckks_encoding import InputKind
from secfl.protocols.ckks_threshold.client import ThresholdClient
from secfl.protocols.ckks_threshold.member import QuorumMember
from secfl.protocols.ckks_threshold.messages import (
    ThrActiveSet,
    ThrCollectiveKey,
    ThrDealing,
    ThrDecryptRequest,
    ThrKeyAck,
    ThrKeyDelivery,
    ThrKeygenRequest,
    ThrMemberHello,
    ThrPartialDecryption,
    ThrPartialRequest,
    ThrPubkeyShare,
    ThrReady,
    ThrRoster,
    ThrShamirShares,
    ThrUpdate,
    ThrUploadRequest,
)
from secfl.protocols.ckks_threshold.messages import aggregate_digest as _aggregate_digest  # noqa: F401
from secfl.protocols.ckks_threshold.messages import share_ad as _share_ad  # noqa: F401
from secfl.protocols.ckks_threshold.options import CkksThresholdOptions, round_codec
from secfl.protocols.ckks_threshold.protocol import STAGES, CkksThreshold
from secfl.protocols.ckks_threshold.server import ThresholdServer
from secfl.protocols.ckks_threshold.stages import SITE_STAGES, ThresholdCoordinator

__all__ = [
    "InputKind",
    "STAGES",
    "CkksThresholdOptions",
    "ThrMemberHello",
    "ThrRoster",
    "ThrPubkeyShare",
    "ThrShamirShares",
    "ThrCollectiveKey",
    "ThrUpdate",
    "ThrDecryptRequest",
    "ThrReady",
    "ThrActiveSet",
    "ThrPartialDecryption",
    "QuorumMember",
    "CkksThreshold",
    # across sites (issue 11)
    "ThrKeygenRequest",
    "ThrDealing",
    "ThrKeyDelivery",
    "ThrKeyAck",
    "ThrUploadRequest",
    "ThrPartialRequest",
    "ThresholdClient",
    "ThresholdServer",
    "ThresholdCoordinator",
    "SITE_STAGES",
    "round_codec",
]
