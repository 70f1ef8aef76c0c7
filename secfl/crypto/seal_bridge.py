"""numpy <-> Microsoft SEAL: the saved byte format of SEAL objects, parsed and written with numpy.

TenSEAL's low-level bindings (``tenseal.sealapi``) expose SEAL's objects but no bulk access to
their coefficients: objects ``save()`` to and ``load()`` from a file path only. This module is
the bridge: it reads and writes SEAL 4.x's serialization format directly, so that polynomial
data moves between SEAL and numpy arrays without per-coefficient Python calls.

Format (SEAL 4.x, little-endian), checked field by field on parse:

* every saved object: a 16-byte header -- magic ``0xA15E`` (u16), header size 16 (u8),
  version major / minor (u8, u8), compression mode (u8: 0 none, 1 zlib, 2 zstd), reserved
  (u16, zero), total size including the header (u64) -- then the body, compressed as the mode says;
* Ciphertext / PublicKey body: parms_id (4 x u64), NTT-form flag (u8), size (u64),
  poly_modulus_degree N (u64), coeff_modulus_size L (u64), scale (f64), correction factor (u64),
  then a coefficient array;
* Plaintext / SecretKey body: parms_id (4 x u64), coefficient count (u64), scale (f64), then a
  coefficient array;
* coefficient array: its own 16-byte header (always uncompressed), a count (u64), and
  count x u64, laid out ``[size][L][N]`` (ciphertexts) or ``[L][N]`` (plaintexts).

Everything written here is uncompressed (mode 0), which SEAL loads. SEAL itself writes zstd;
reading that uses the zstd library bundled inside TenSEAL's binary (through ``ctypes``), or the
system's ``libzstd`` if the bundled one is missing.

Parsing is strict: any inconsistency raises :class:`~secfl.errors.MalformedMessageError`; when
the caller passes the moduli, every coefficient must be below its prime (the check SEAL's own
``load`` performs). Secret keys never appear in ``repr``; writing one to SEAL goes through a
private temporary directory (mode 0700, on ``/dev/shm`` when present) and the file is removed
immediately. Objects without secrets (ciphertexts, public keys) take a faster path,
:class:`SealScratch`: one reused scratch file per process and thread in that directory, and
SEAL's zstd output decompressed straight into a caller's numpy buffer.

This module only knows SEAL's formats and objects; CKKS itself lives in
:mod:`secfl.crypto.ckks`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from secfl.errors import ConfigError, MalformedMessageError

__all__ = [
    "SEAL_MAGIC",
    "SealHeader",
    "SealCiphertext",
    "SealPlaintext",
    "SealPublicKey",
    "SealSecretKey",
    "ParmsId",
    "parms_id_of",
    "seal_primes",
    "seal_context",
    "save_seal_object",
    "load_seal_object",
    "seal_ntt",
    "SealScratch",
    "seal_scratch",
]

SEAL_MAGIC = 0xA15E
SEAL_VERSION_MAJOR = 4
#: the minor version this SEAL build writes into the headers of the objects it saves
SEAL_VERSION_MINOR = 3
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, total size
HEADER_BYTES = _HEADER.size  # 16
_CT_META = struct.Struct("<4QBQQQdQ")  # parms_id, ntt flag, size, N, L, scale, correction factor
_PT_META = struct.Struct("<4QQd")  # parms_id, coeff count, scale
_U64 = struct.Struct("<Q")
MAX_POLY_DEGREE = 1 << 17
MAX_MODULI = 64
MAX_OBJECT_BYTES = 1 << 32  # 4 GiB: far above any object secfl handles

ParmsId = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------
# header and compression


@dataclass(frozen=True)
class SealHeader:
    """The 16-byte header in front of every saved SEAL object."""

    version_major: int
    version_minor: int
    compr_mode: int
    size: int  # total bytes including this header

    def to_bytes(self) -> bytes:
        return _HEADER.pack(SEAL_MAGIC, HEADER_BYTES, self.version_major, self.version_minor, self.compr_mode, 0,
                            self.size)

    @classmethod
    def parse(cls, data: bytes, what: str) -> SealHeader:
        if len(data) < HEADER_BYTES:
            raise MalformedMessageError(f"{what}: {len(data)} bytes, too short for a SEAL header")
        magic, hsize, major, minor, mode, reserved, size = _HEADER.unpack_from(data, 0)
        if magic != SEAL_MAGIC or hsize != HEADER_BYTES:
            raise MalformedMessageError(f"{what}: not a SEAL object (magic {magic:#x}, header size {hsize})")
        if major != SEAL_VERSION_MAJOR:
            raise MalformedMessageError(f"{what}: SEAL format version {major}.{minor}, expected {SEAL_VERSION_MAJOR}.x")
        if mode not in (0, 1, 2):
            raise MalformedMessageError(f"{what}: unknown SEAL compression mode {mode}")
        if reserved != 0:
            raise MalformedMessageError(f"{what}: reserved header field is {reserved}, must be 0")
        return cls(major, minor, mode, size)


class _Zstd:
    """``ZSTD_decompress`` through ctypes: TenSEAL's bundled copy, else the system library."""

    def __init__(self) -> None:
        self.lib: Any = None
        candidates: list[str] = []
        with contextlib.suppress(ImportError):
            import _sealapi_cpp  # the extension module behind tenseal.sealapi (bundles SEAL's zstd)

            candidates.append(_sealapi_cpp.__file__ or "")
        found = ctypes.util.find_library("zstd")
        if found:
            candidates.append(found)
        for path in candidates:
            try:
                lib = ctypes.CDLL(path)
                fn = lib.ZSTD_decompress
                size_fn = lib.ZSTD_findDecompressedSize
                err_fn = lib.ZSTD_isError
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_size_t
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
            size_fn.restype = ctypes.c_ulonglong
            size_fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
            err_fn.restype = ctypes.c_uint
            err_fn.argtypes = [ctypes.c_size_t]
            self.lib = lib
            break

    def decompress(self, body: bytes, limit: int, what: str) -> bytes:
        if self.lib is None:
            raise MalformedMessageError(f"{what}: zstd-compressed SEAL data and no zstd library is available")
        n = int(self.lib.ZSTD_findDecompressedSize(body, len(body)))
        if n >= (1 << 64) - 2 or n > limit:  # ZSTD_CONTENTSIZE_UNKNOWN / _ERROR, or too large
            raise MalformedMessageError(f"{what}: zstd frame of unknown or excessive size")
        out = ctypes.create_string_buffer(max(n, 1))
        got = int(self.lib.ZSTD_decompress(out, n, body, len(body)))
        if self.lib.ZSTD_isError(got) or got != n:
            raise MalformedMessageError(f"{what}: corrupt zstd data")
        return out.raw[:n]

    def decompress_into(self, body: bytes, out: np.ndarray, what: str) -> int:
        """Decompress ``body`` straight into ``out`` (a C-contiguous uint8 array); returns the
        number of bytes written. Raises when the frame does not fit exactly."""
        if self.lib is None:
            raise MalformedMessageError(f"{what}: zstd-compressed SEAL data and no zstd library is available")
        if out.dtype != np.uint8 or out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
            raise ConfigError("decompress_into needs a writeable, C-contiguous 1-D uint8 array")
        n = int(self.lib.ZSTD_findDecompressedSize(body, len(body)))
        if n >= (1 << 64) - 2 or n > out.size:
            raise MalformedMessageError(f"{what}: zstd frame of unknown size or larger than {out.size} bytes")
        got = int(self.lib.ZSTD_decompress(out.ctypes.data, n, body, len(body)))
        if self.lib.ZSTD_isError(got) or got != n:
            raise MalformedMessageError(f"{what}: corrupt zstd data")
        return n


@functools.lru_cache(maxsize=1)
def _zstd() -> _Zstd:
    return _Zstd()


def _body(data: bytes, what: str, limit: int = MAX_OBJECT_BYTES) -> tuple[SealHeader, bytes]:
    """Check the header and return the (decompressed) body."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"{what}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    head = SealHeader.parse(data, what)
    if head.size != len(data):
        raise MalformedMessageError(f"{what}: header says {head.size} bytes, got {len(data)}")
    body = data[HEADER_BYTES:]
    if head.compr_mode == 1:
        try:
            d = zlib.decompressobj()
            body = d.decompress(body, limit)
            if d.unconsumed_tail or not d.eof:
                raise MalformedMessageError(f"{what}: zlib data truncated or too large")
        except zlib.error:
            raise MalformedMessageError(f"{what}: corrupt zlib data") from None
    elif head.compr_mode == 2:
        body = _zstd().decompress(body, limit, what)
    return head, body


def _wrap(body: bytes) -> bytes:
    head = SealHeader(SEAL_VERSION_MAJOR, 3, 0, HEADER_BYTES + len(body))
    return head.to_bytes() + body


def _read_array(body: bytes, offset: int, count: int, what: str) -> np.ndarray:
    """The coefficient array at ``body[offset:]``: nested header, count, ``count`` u64 values."""
    nested = body[offset:]
    head = SealHeader.parse(nested, what + " coefficient array")
    if head.compr_mode != 0:
        raise MalformedMessageError(f"{what}: nested coefficient array must be uncompressed")
    want = HEADER_BYTES + 8 + 8 * count
    if head.size != want or len(nested) != want:
        raise MalformedMessageError(f"{what}: coefficient array holds {len(nested)} bytes (header says {head.size}),"
                                    f" expected {want} for {count} coefficients")
    (n,) = _U64.unpack_from(nested, HEADER_BYTES)
    if n != count:
        raise MalformedMessageError(f"{what}: coefficient array count {n}, expected {count}")
    return np.frombuffer(nested, dtype="<u8", count=count, offset=HEADER_BYTES + 8).astype(np.uint64)


def _write_array(values: np.ndarray) -> bytes:
    flat = np.ascontiguousarray(values, dtype="<u8").reshape(-1)
    head = SealHeader(SEAL_VERSION_MAJOR, 3, 0, HEADER_BYTES + 8 + 8 * flat.size)
    return head.to_bytes() + _U64.pack(flat.size) + flat.tobytes()


def _check_moduli(data: np.ndarray, moduli: Sequence[int] | None, what: str) -> None:
    """``data[..., i, :]`` must be below ``moduli[i]`` (the check SEAL performs on load)."""
    if moduli is None:
        return
    if len(moduli) != data.shape[-2]:
        raise MalformedMessageError(f"{what}: {data.shape[-2]} RNS components, expected {len(moduli)}")
    bound = np.asarray([int(q) for q in moduli], dtype=np.uint64)[:, None]
    if not bool(np.all(data < bound)):
        raise MalformedMessageError(f"{what}: a coefficient is not reduced modulo its prime")


def parms_id_of(value: Sequence[int]) -> ParmsId:
    """A SEAL parms_id (e.g. ``context.first_parms_id()``) as a tuple of four ints."""
    return _check_parms_id(value, "parms_id")


def _check_parms_id(parms_id: Sequence[int], what: str) -> ParmsId:
    if len(parms_id) != 4 or not all(isinstance(v, int) and 0 <= v < 1 << 64 for v in parms_id):
        raise ConfigError(f"{what}: parms_id must be four u64 integers")
    return (int(parms_id[0]), int(parms_id[1]), int(parms_id[2]), int(parms_id[3]))


# --------------------------------------------------------------------------------------------
# objects


@dataclass(frozen=True, eq=False)
class SealCiphertext:
    """A SEAL ``Ciphertext``: ``data[k, i, n]`` is coefficient ``n`` of polynomial ``k`` modulo
    prime ``i`` (NTT form when ``is_ntt_form``)."""

    parms_id: ParmsId
    is_ntt_form: bool
    scale: float
    data: np.ndarray  # (size, L, N) uint64
    correction_factor: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "parms_id", _check_parms_id(self.parms_id, type(self).__name__))
        arr = np.asarray(self.data)
        if arr.ndim != 3 or arr.dtype != np.uint64:
            raise ConfigError(f"{type(self).__name__}: data must be a 3-D uint64 array (size, L, N), got"
                              f" {arr.dtype} {arr.shape}")
        _check_shape(arr.shape[2], arr.shape[1], type(self).__name__, ConfigError)

    def to_bytes(self) -> bytes:
        """SEAL's saved form, uncompressed."""
        size, L, N = self.data.shape
        meta = _CT_META.pack(*self.parms_id, int(self.is_ntt_form), size, N, L, float(self.scale),
                             int(self.correction_factor))
        return _wrap(meta + _write_array(self.data))

    @classmethod
    def from_bytes(cls, data: bytes, *, moduli: Sequence[int] | None = None, what: str = "SEAL ciphertext",
                   min_size: int = 2) -> SealCiphertext:
        """Parse strictly; ``moduli`` (the primes of the object's level) enables the range check."""
        _, body = _body(data, what)
        if len(body) < _CT_META.size:
            raise MalformedMessageError(f"{what}: body truncated ({len(body)} bytes)")
        *pid, ntt, size, N, L, scale, corr = _CT_META.unpack_from(body, 0)
        if ntt not in (0, 1):
            raise MalformedMessageError(f"{what}: NTT flag is {ntt}")
        _check_shape(N, L, what, MalformedMessageError)
        if not min_size <= size <= 16:
            raise MalformedMessageError(f"{what}: size {size} outside [{min_size}, 16]")
        if not (np.isfinite(scale) and scale >= 0.0):
            raise MalformedMessageError(f"{what}: scale {scale} is not a finite non-negative number")
        arr = _read_array(body, _CT_META.size, size * L * N, what).reshape(size, L, N)
        _check_moduli(arr, moduli, what)
        return cls((pid[0], pid[1], pid[2], pid[3]), bool(ntt), float(scale), arr, int(corr))


@dataclass(frozen=True, eq=False)
class SealPlaintext:
    """A SEAL ``Plaintext``; for CKKS (NTT form) ``data[i, n]`` is the value modulo prime ``i``."""

    parms_id: ParmsId
    scale: float
    data: np.ndarray  # (L, N) uint64

    def __post_init__(self) -> None:
        object.__setattr__(self, "parms_id", _check_parms_id(self.parms_id, type(self).__name__))
        arr = np.asarray(self.data)
        if arr.ndim != 2 or arr.dtype != np.uint64:
            raise ConfigError(f"{type(self).__name__}: data must be a 2-D uint64 array (L, N)")
        _check_shape(arr.shape[1], arr.shape[0], type(self).__name__, ConfigError)

    def to_bytes(self) -> bytes:
        meta = _PT_META.pack(*self.parms_id, self.data.size, float(self.scale))
        return _wrap(meta + _write_array(self.data))

    @classmethod
    def from_bytes(cls, data: bytes, *, poly_degree: int, moduli: Sequence[int] | None = None,
                   what: str = "SEAL plaintext") -> SealPlaintext:
        """Parse strictly; the coefficient count must be a multiple of ``poly_degree``."""
        _, body = _body(data, what)
        if len(body) < _PT_META.size:
            raise MalformedMessageError(f"{what}: body truncated ({len(body)} bytes)")
        *pid, count, scale = _PT_META.unpack_from(body, 0)
        if poly_degree < 1 or count % poly_degree or not 1 <= count // poly_degree <= MAX_MODULI:
            raise MalformedMessageError(f"{what}: {count} coefficients is not a whole number of degree-"
                                        f"{poly_degree} polynomials")
        if not (np.isfinite(scale) and scale >= 0.0):
            raise MalformedMessageError(f"{what}: scale {scale} is not a finite non-negative number")
        arr = _read_array(body, _PT_META.size, count, what).reshape(count // poly_degree, poly_degree)
        _check_moduli(arr, moduli, what)
        return cls((pid[0], pid[1], pid[2], pid[3]), float(scale), arr)


@dataclass(frozen=True, eq=False)
class SealPublicKey:
    """A SEAL ``PublicKey``: saved exactly like a size-2 ciphertext at the key level, NTT form."""

    parms_id: ParmsId
    data: np.ndarray  # (2, L, N) uint64, NTT form

    def __post_init__(self) -> None:
        object.__setattr__(self, "parms_id", _check_parms_id(self.parms_id, type(self).__name__))
        arr = np.asarray(self.data)
        if arr.ndim != 3 or arr.shape[0] != 2 or arr.dtype != np.uint64:
            raise ConfigError("SealPublicKey: data must be a (2, L, N) uint64 array")

    def to_bytes(self) -> bytes:
        return SealCiphertext(self.parms_id, True, 1.0, self.data).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, moduli: Sequence[int] | None = None) -> SealPublicKey:
        ct = SealCiphertext.from_bytes(data, moduli=moduli, what="SEAL public key")
        if ct.data.shape[0] != 2 or not ct.is_ntt_form:
            raise MalformedMessageError("SEAL public key: expected two polynomials in NTT form")
        return cls(ct.parms_id, ct.data)


class SealSecretKey:
    """A SEAL ``SecretKey``: saved like a plaintext at the key level, NTT form.

    Holds key material: never printed, never pickled; :meth:`to_bytes` is the only way out.
    """

    __slots__ = ("parms_id", "_data")

    def __init__(self, parms_id: Sequence[int], data: np.ndarray) -> None:
        self.parms_id = _check_parms_id(parms_id, "SealSecretKey")
        arr = np.array(data, dtype=np.uint64, copy=True)
        if arr.ndim != 2:
            raise ConfigError("SealSecretKey: data must be an (L, N) uint64 array")
        arr.flags.writeable = False
        self._data = arr

    def __repr__(self) -> str:
        return f"SealSecretKey(<secret>, L={self._data.shape[0]}, N={self._data.shape[1]})"

    def __reduce__(self) -> Any:
        raise TypeError("refusing to pickle a secret key")

    @property
    def data(self) -> np.ndarray:
        """(L, N) uint64 NTT-form residues of the secret (read-only)."""
        return self._data

    def to_bytes(self) -> bytes:
        return SealPlaintext(self.parms_id, 1.0, self._data).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, poly_degree: int, moduli: Sequence[int] | None = None) -> SealSecretKey:
        pt = SealPlaintext.from_bytes(data, poly_degree=poly_degree, moduli=moduli, what="SEAL secret key")
        return cls(pt.parms_id, pt.data)


def _check_shape(N: int, L: int, what: str, err: type[Exception]) -> None:
    if not (N >= 2 and N & (N - 1) == 0 and N <= MAX_POLY_DEGREE):
        raise err(f"{what}: poly_modulus_degree {N} is not a power of two in [2, {MAX_POLY_DEGREE}]")
    if not 1 <= L <= MAX_MODULI:
        raise err(f"{what}: coeff_modulus_size {L} outside [1, {MAX_MODULI}]")


# --------------------------------------------------------------------------------------------
# SEAL objects (tenseal.sealapi)


def _sealapi() -> Any:
    import tenseal.sealapi as sealapi

    return sealapi


@functools.lru_cache(maxsize=64)
def seal_primes(poly_degree: int, coeff_bits: tuple[int, ...]) -> tuple[int, ...]:
    """SEAL's ``CoeffModulus.Create(N, bits)``: distinct primes ≡ 1 (mod 2N) of the given sizes."""
    s = _sealapi()
    try:
        mods = s.CoeffModulus.Create(int(poly_degree), [int(b) for b in coeff_bits])
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"SEAL cannot create primes of {list(coeff_bits)} bits for N={poly_degree}: {exc}") from None
    return tuple(int(m.value()) for m in mods)


@functools.lru_cache(maxsize=16)
def seal_context(poly_degree: int, primes: tuple[int, ...], enforce_128: bool = True) -> Any:
    """A CKKS ``SEALContext`` over exactly ``primes`` (SEAL's convention: with more than one prime
    the last is the special prime and ciphertexts live modulo the others).

    ``enforce_128`` makes SEAL check the HE-standard 128-bit bound itself; the unchecked form is
    only for auxiliary contexts that never encrypt (:func:`seal_ntt`).
    """
    s = _sealapi()
    parms = s.EncryptionParameters(s.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(int(poly_degree))
    parms.set_coeff_modulus([s.Modulus(int(q)) for q in primes])
    level = s.SEC_LEVEL_TYPE.TC128 if enforce_128 else s.SEC_LEVEL_TYPE.NONE
    ctx = s.SEALContext(parms, True, level)
    if not ctx.parameters_set():
        raise ConfigError(f"SEAL refuses N={poly_degree}, primes {list(primes)}: {ctx.parameters_error_message()}")
    return ctx


_TMPDIR: str | None = None


@contextlib.contextmanager
def _tmpfile() -> Iterator[str]:
    """A fresh path in a private directory (0700), on tmpfs when available; removed afterwards."""
    global _TMPDIR
    if _TMPDIR is None or not os.path.isdir(_TMPDIR):
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        _TMPDIR = tempfile.mkdtemp(prefix="secfl-seal-", dir=base)
        import atexit

        atexit.register(shutil.rmtree, _TMPDIR, True)
    fd, path = tempfile.mkstemp(dir=_TMPDIR)
    os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def save_seal_object(obj: Any) -> bytes:
    """The bytes SEAL's ``obj.save()`` writes (SEAL compresses them with zstd)."""
    with _tmpfile() as path:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def load_seal_object(obj: Any, context: Any, data: bytes) -> Any:
    """``obj.load(context, ...)`` from bytes; SEAL validates them against ``context``.

    Raises :class:`MalformedMessageError` when SEAL refuses the data.
    """
    with _tmpfile() as path:
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            obj.load(context, path)
        except (ValueError, RuntimeError, OSError) as exc:
            raise MalformedMessageError(f"SEAL refused to load {type(obj).__name__}: {exc}") from None
    return obj


class SealScratch:
    """Fast path for SEAL's path-only ``save`` / ``load`` of objects that hold **no secret**
    (ciphertexts, public keys): one scratch file per process and thread, reused and overwritten
    (on ``/dev/shm`` when present, inside the private 0700 directory). Keys and anything secret
    go through :func:`save_seal_object` / :func:`load_seal_object`, whose files are removed at once.

    Get the instance for the calling process and thread with :func:`seal_scratch`.
    """

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def save_body_into(self, obj: Any, out: np.ndarray, what: str = "SEAL object") -> int:
        """``obj.save()`` (SEAL compresses with zstd), header checked, body decompressed straight
        into ``out`` (C-contiguous uint8, at least the body's size); returns the body's size."""
        obj.save(self.path)
        raw = self._read()
        head = SealHeader.parse(raw, what)
        if head.size != len(raw):
            raise MalformedMessageError(f"{what}: header says {head.size} bytes, got {len(raw)}")
        if head.compr_mode == 2:
            return _zstd().decompress_into(raw[HEADER_BYTES:], out, what)
        _, body = _body(raw, what)
        if len(body) > out.size:
            raise MalformedMessageError(f"{what}: body of {len(body)} bytes, room for {out.size}")
        out[: len(body)] = np.frombuffer(body, dtype=np.uint8)
        return len(body)

    def save(self, obj: Any) -> bytes:
        """The bytes ``obj.save()`` writes."""
        obj.save(self.path)
        return self._read()

    def _read(self) -> bytes:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size > MAX_OBJECT_BYTES:
                raise MalformedMessageError(f"SEAL object of {size} bytes")
            parts = [os.read(fd, size)]
            while True:  # a regular file returns everything at once; be exact anyway
                more = os.read(fd, 1 << 20)
                if not more:
                    break
                parts.append(more)
        finally:
            os.close(fd)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def load(self, obj: Any, context: Any, data: bytes) -> Any:
        """``obj.load(context, ...)`` from bytes; SEAL validates them. Raises
        :class:`MalformedMessageError` when SEAL refuses the data."""
        with open(self.path, "wb") as fh:
            fh.write(data)
        try:
            obj.load(context, self.path)
        except (ValueError, RuntimeError, OSError) as exc:
            raise MalformedMessageError(f"SEAL refused to load {type(obj).__name__}: {exc}") from None
        return obj


_SCRATCH = threading.local()


def seal_scratch() -> SealScratch:
    """The calling process's and thread's :class:`SealScratch` (created on first use)."""
    pid = os.getpid()
    scratch = getattr(_SCRATCH, "scratch", None)
    if scratch is None or _SCRATCH.pid != pid or not os.path.isdir(os.path.dirname(scratch.path)):
        with _tmpfile() as probe:  # makes sure the private directory exists
            directory = os.path.dirname(probe)
        scratch = SealScratch(os.path.join(directory, f"scratch-{pid}-{threading.get_ident()}"))
        _SCRATCH.scratch, _SCRATCH.pid = scratch, pid
    return scratch


@functools.lru_cache(maxsize=16)
def _ntt_context(poly_degree: int, primes: tuple[int, ...]) -> tuple[Any, ParmsId]:
    """An auxiliary context whose first data level is exactly ``primes`` (one extra special
    prime on top), used only to run SEAL's NTT; plus that level's parms_id."""
    extra = next(q for q in seal_primes(poly_degree, (60,) * (len(primes) + 1)) if q not in primes)
    ctx = seal_context(poly_degree, (*primes, extra), enforce_128=False)
    return ctx, parms_id_of(ctx.first_parms_id())


def seal_ntt(polys: np.ndarray, primes: Sequence[int], *, inverse: bool = False) -> np.ndarray:
    """SEAL's negacyclic NTT (or its inverse) of every polynomial in ``polys`` (``(..., L, N)``
    uint64, residues modulo ``primes``), through ``Evaluator.transform_to/from_ntt``.

    The result is in exactly the layout SEAL uses for keys, ciphertexts and CKKS plaintexts.
    Cost: one file round trip per pair of polynomials -- meant for keys and tests, not hot paths.
    """
    arr = np.asarray(polys, dtype=np.uint64)
    if arr.ndim < 2 or arr.shape[-2] != len(primes):
        raise ConfigError(f"seal_ntt: expected (..., {len(primes)}, N) polynomials, got shape {arr.shape}")
    N = arr.shape[-1]
    _check_moduli(arr.reshape(-1, len(primes), N), primes, "seal_ntt input")
    ctx, pid = _ntt_context(int(N), tuple(int(q) for q in primes))
    s = _sealapi()
    ev = s.Evaluator(ctx)
    flat = arr.reshape(-1, len(primes), N)
    out = np.empty_like(flat)
    for start in range(0, flat.shape[0], 2):
        pair = np.zeros((2, len(primes), N), dtype=np.uint64)
        chunk = flat[start : start + 2]
        pair[: chunk.shape[0]] = chunk
        if not pair[1].any():  # SEAL refuses "transparent" ciphertexts (second polynomial zero)
            pair[1, :, 0] = 1  # a filler whose transform is discarded
        ct = load_seal_object(s.Ciphertext(), ctx, SealCiphertext(pid, inverse, 1.0, pair).to_bytes())
        if inverse:
            ev.transform_from_ntt_inplace(ct)
        else:
            ev.transform_to_ntt_inplace(ct)
        done = SealCiphertext.from_bytes(save_seal_object(ct), moduli=primes)
        out[start : start + chunk.shape[0]] = done.data[: chunk.shape[0]]
    return out.reshape(arr.shape)
