"""``ckks`` — CKKS homomorphic encryption: the server adds ciphertexts and holds no secret key.

The common HE-FL setup (as in NVIDIA FLARE's HE mode): one CKKS key pair shared by the client
side, the server holding only public material. Parties, one module each: the clients
(:mod:`.client`), the server (:mod:`.server`) and the key holder ``member_id(0)``
(:mod:`.key_holder`), a client-side party that generates the keys and decrypts the aggregate (it
stands for "any client": every client holds the same key). Messages: :mod:`.messages`; the
server's stage sequence across sites: :mod:`.stages`; the in-process round: :mod:`.protocol`.

Rounds (spec: ``protocols/ckks.md``):
  0. (once per key) the key holder generates the keys (SEAL's ``KeyGenerator``), sends the public
     context (parameters + public key, no secret key) to the server, and the secret context to
     every client the first time it takes part (provisioning over a confidential channel: direct
     in the simulator, sealed end to end through the server across sites).
  1. Each client k computes a_k = n_k / max_weight (or n_k for quantized input), rounds
     (a_k x_k, a_k) onto the round's public grid (default ``grid`` input), encrypts that vector
     with the shared secret key (SEAL's encoder and symmetric ``Encryptor``) and sends
     ``CKKS_UPDATE`` to the server.
  2. The server parses each upload strictly and adds it into one running aggregate; no upload is
     kept after it is folded in.
  3. The server sends ``CKKS_AGGREGATE`` to the key holder, who decrypts (S_x, S_w), rounds them
     back onto the grid (exact: the grid step exceeds twice the noise bound) and reveals S_x / S_w.

Security: the server sees only ciphertexts under a key it does not have (IND-CPA under RLWE at
the preset's security level). Every client and the key holder can decrypt every ciphertext: a
single client (or the key holder) colluding with the server reads every individual update. The
server is assumed honest-but-curious: a malicious server could hand the key holder one client's
ciphertext as "the aggregate". Whoever holds both a ciphertext and its noisy decryption can
recover the key (Li-Micciancio); the revealed mean reaches the server, so by default (``grid``,
and ``quantized``) it is a noise-free function of the inputs. ``input='unsafe-float'`` reveals
the noisy decryption and warns every round.
"""

from secfl.protocols.ckks.client import KEY_HOLDER, CkksClient
from secfl.protocols.ckks.key_holder import CkksKeyHolder
from secfl.protocols.ckks.messages import (
    CkksAggregate,
    CkksContextMessage,
    CkksHello,
    CkksKeyRequest,
    CkksKeys,
    CkksReveal,
    CkksRevealRequest,
    CkksSecretContextMessage,
    CkksUpdate,
    CkksUploadRequest,
)
from secfl.protocols.ckks.options import CkksOptions, UploadForm, round_codec
from secfl.protocols.ckks.protocol import Ckks
from secfl.protocols.ckks.server import CkksServer
from secfl.protocols.ckks.stages import STAGES, CkksCoordinator
from secfl.protocols.ckks_encoding import InputKind

__all__ = [
    "InputKind", "UploadForm", "CkksOptions", "round_codec",
    "CkksContextMessage", "CkksSecretContextMessage", "CkksUpdate", "CkksAggregate", "CkksHello",
    "CkksKeyRequest", "CkksKeys", "CkksUploadRequest", "CkksReveal", "CkksRevealRequest",
    "Ckks", "CkksClient", "CkksKeyHolder", "CkksServer", "CkksCoordinator", "STAGES", "KEY_HOLDER",
]
