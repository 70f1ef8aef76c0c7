"""Typed errors. Every failure secfl reports on purpose is a :class:`SecFLError`.

The hierarchy is small on purpose (house style §7): callers catch the class that says what
went wrong, never a bare ``Exception``, and validation never uses ``assert``.
"""

from __future__ import annotations

import warnings

__all__ = [
    "SecFLError",
    "ConfigError",
    "MalformedMessageError",
    "ReplayError",
    "AuthenticationError",
    "DuplicateSenderError",
    "InvalidUpdateError",
    "ProtocolAbort",
    "InsufficientQuorumError",
    "InsecureParametersError",
    "DecryptionRefusedError",
    "DroppedOutError",
    "WorkerLostError",
    "SecurityWarning",
]


class SecFLError(Exception):
    """Root of every error secfl raises on purpose."""


class ConfigError(SecFLError, ValueError):
    """A configuration value is missing, of the wrong type, or outside its allowed values.

    The message names the field and what is allowed.
    """


class MalformedMessageError(SecFLError, ValueError):
    """Bytes that claim to be a secfl message do not parse: truncated, altered, wrong type,
    wrong version, or a payload that fails validation. Costs the sender its participation."""


class ReplayError(MalformedMessageError):
    """A well-formed message for another round, or one already accepted, arrived again."""


class AuthenticationError(MalformedMessageError):
    """A signature or MAC does not verify, or the signer is not in the federation roster: the
    message was forged or altered on the way. Costs the sender (or relay) its participation."""


class DuplicateSenderError(ReplayError):
    """A second message of the same type from a sender that already contributed this round."""


class InvalidUpdateError(SecFLError, ValueError):
    """A client update has the wrong length, non-finite values, or values out of range."""


class ProtocolAbort(SecFLError, RuntimeError):
    """The round cannot finish under the protocol's rules (e.g. too many dropouts)."""


class DroppedOutError(SecFLError):
    """A party is no longer part of this round (it went silent or was excluded at an earlier
    stage), so it cannot take this step."""


class WorkerLostError(SecFLError, RuntimeError):
    """A worker process this process depends on died (killed by a signal, e.g. the
    out-of-memory killer, or crashed in native code): its state is lost and the run stops.
    The message names the process and how it ended."""


class InsufficientQuorumError(ProtocolAbort):
    """Fewer than the threshold number of shares or members are available."""


class InsecureParametersError(ConfigError):
    """Cryptographic parameters fail a security or overflow bound; the message names it."""


class DecryptionRefusedError(SecFLError, PermissionError):
    """A key holder refuses a request that would leak its key (e.g. a second partial
    decryption of the same ciphertext, or both shares of one peer in SecAgg)."""


class SecurityWarning(UserWarning):
    """An explicitly chosen insecure-but-allowed mode is in use (e.g. ``ckks`` with
    ``input='unsafe-float'``). Shown every time it is raised, never once per location."""


warnings.filterwarnings("always", category=SecurityWarning)
