"""Noise samplers on cryptographic randomness: exact integer samplers and a float Gaussian.

Every sampler takes a :class:`~secfl.crypto.prg.Prg` (AES-256-CTR) and draws nothing else.

* :func:`discrete_gaussian` — N_Z(0, σ²), P(x) ∝ exp(-x²/(2σ²)) on the integers: rejection
  sampling as in Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential Privacy"
  (NeurIPS 2020, Algorithm 3), but from a step-shaped proposal P(d) ∝ exp(-⌊|d|/t⌋) with
  t = ⌈√2·σ⌉ (d = ±(U + tV), U uniform below t, V geometric from Bernoulli(e⁻¹) runs — CKS's
  Algorithm 2 without its first rejection), accepted with probability
  exp(-(d²/(2σ²) - ⌊|d|/t⌋)) ≤ 1. One Bernoulli per proposal, ≈ 0.56 accepted.
* :func:`poisson` — Poisson(λ) by rejection from the same step-shaped proposal centred at the
  mode m = ⌊λ⌋, t = ⌊1.5√λ⌋ + 1, accepted with probability r(d)·exp(⌊|d|/t⌋)/M, where
  r(d) = p(m+d)/p(m) = λ^d m!/(m+d)! and M ≥ max_d r(d)·exp(⌊|d|/t⌋) (found exactly on the
  concave sequence of per-step maxima, then raised by a margin). Any M ≥ the maximum gives
  exactly Poisson(λ); a larger one only costs speed.
* :func:`skellam` — symmetric Skellam with variance μ: Poisson(μ/2) − Poisson(μ/2)
  (Agarwal, Kairouz & Liu, NeurIPS 2021).
* :func:`gaussian` — float N(0, std²) by Box–Muller on 53-bit CSPRNG uniforms
  (:meth:`Prg.normal`), for noise that is encrypted under CKKS afterwards.

**Exactness.** Every accept/reject decision is a Bernoulli(exp(-X)) with X ≥ 0 an exact rational
(or, for Poisson, an exact combination of logarithms of rationals; the parameters σ², λ are
floats, i.e. exact binary fractions). It is decided as ``U < exp(-X)`` for a uniform U whose
first 32 bits (16 in the geometric trials) come from the PRG. A vectorised float test settles it
whenever U is farther from exp(-X) than a guard band (relative 2⁻³⁵·(1 + X), over 2⁶ times the
float error of computing X and exp); an undecided U reads further PRG bits, and the rare U that
falls inside the band (probability ≲ 2⁻³⁴ per decision) is settled by :func:`_exact_below_exp`
in ``decimal`` arithmetic with rigorous error bounds, reading more bits until the comparison is
certain. So the output laws are the exact distributions, not float approximations: there is no
floating-point leak of the kind Mironov (CCS 2012) showed for textbook Laplace noise, since the
outputs are integers and every probability used is exact. The tests force the exact path, and
check the float error bounds the fast path relies on.

**Float Gaussian.** Box–Muller with u₁ ∈ [2⁻⁵³, 1] truncates |Z| at √(106 ln 2) ≈ 8.57: the
truncated mass per coordinate is P(|Z| > 8.57) < 1.1·10⁻¹⁷, which adds at most that times the
dimension to δ per round (≈ 10⁻¹¹ for 10⁶ coordinates) and is stated in ``protocols/dp.md``.
The float output's low-order bits are destroyed by CKKS encoding (rounding to the scale 2⁴⁰),
which is why a float sampler is acceptable there and not for integer protocols.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache

import numpy as np

from secfl.crypto.prg import Prg
from secfl.errors import ConfigError

__all__ = ["gaussian", "discrete_gaussian", "poisson", "skellam"]

_TWO32 = float(1 << 32)
_TWO16 = float(1 << 16)
_GUARD = 2.0 ** -36  # relative guard band of the fast Bernoulli(exp(-x)) test
_MARGIN_LOG_M = 2.0 ** -20  # added to log M in the Poisson envelope (covers float error)
_MAX_INT = 1 << 62  # largest parameter the int64 arithmetic below accepts safely
# Largest parameters: samples and intermediate values stay well inside int64.
MAX_DISCRETE_GAUSSIAN_VARIANCE = 2.0 ** 100
MAX_POISSON_RATE = 2.0 ** 62
MAX_SKELLAM_VARIANCE = 2.0 ** 63

# Test hook: a larger guard band sends more decisions through the exact path (tests only).
_guard_override: float | None = None


def _check_count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"sample count must be an integer >= 0, got {n!r}")
    return int(n)


# --------------------------------------------------------------------------- Bernoulli(exp(-x))
def _exact_below_exp(prg: Prg, k: int, bits: int, x_float: float, neg_log: Callable[[int], Decimal]) -> bool:
    """Decide ``U < exp(-X)`` exactly, where U ∈ [k/2^bits, (k+1)/2^bits) is uniform.

    ``x_float`` approximates X within the guard band; ``neg_log(prec)`` returns X as a Decimal
    with absolute error ≤ 10^-prec (under the caller's decimal context). More bits of U are read
    from ``prg`` while the interval of ln U still overlaps the band around -X; once it lies
    inside the band (probability ~2⁻³⁴ per decision), the comparison is done in decimal, reading
    further bits until it is certain. Terminates with probability 1 (exp(-X) is irrational for
    rational X > 0, and for X = 0 the answer is decided at once).
    """
    guard = _GUARD if _guard_override is None else _guard_override
    margin = 2.0 * guard * (1.0 + x_float)  # ≫ float error of x_float and of the logs below
    ln2 = math.log(2.0)
    while True:  # float screening: log of a big int is accurate; errors ≪ margin
        ln_hi = math.log(k + 1) - bits * ln2
        ln_lo = math.log(k) - bits * ln2 if k else -math.inf
        if ln_hi < -x_float - margin:
            return True
        if ln_lo > -x_float + margin:
            return False
        if ln_hi - ln_lo < margin:
            break
        k, bits = (k << 64) | int(prg.uint64(1)[0]), bits + 64
    prec = 30
    while True:
        with localcontext() as ctx:
            ctx.prec = prec + 30  # significant digits; the values below are < 10^20
            x = neg_log(prec)
            tol = Decimal(10) ** (-prec + 2)
            dln2 = Decimal(2).ln()
            # -ln U ∈ (bits·ln2 - ln(k+1), bits·ln2 - ln k]
            low = bits * dln2 - Decimal(k + 1).ln()
            if low > x + tol:
                return True  # -ln U > X  ⇔  U < exp(-X)
            if k > 0:
                high = bits * dln2 - Decimal(k).ln()
                if high < x - tol:
                    return False
        k, bits = (k << 64) | int(prg.uint64(1)[0]), bits + 64
        prec += 20


def _bernoulli_exp_neg(
    prg: Prg, x: np.ndarray, exact_x: Callable[[int], Callable[[int], Decimal]]
) -> np.ndarray:
    """Vectorised Bernoulli(exp(-x_i)), exact.

    ``x`` holds float approximations of exact values X_i ≥ 0 with absolute error at most
    2⁻⁴²(1 + x_i); ``exact_x(i)`` returns the ``neg_log`` callable of :func:`_exact_below_exp`
    for X_i. With p̂ = fl(exp(-x)) (relative error < 2⁻⁵⁰), exp(-X) lies within a factor
    1 ± 2·guard·(1 + x) of p̂, so the fast decisions below are certain; the rest go exact.
    """
    n = x.size
    if n == 0:
        return np.zeros(0, dtype=bool)
    guard = _GUARD if _guard_override is None else _guard_override
    u = prg.uint32(n).astype(np.float64)  # the first 32 bits of U
    with np.errstate(under="ignore"):
        p = np.exp(-x)
    p *= _TWO32
    band = x + 1.0
    band *= p
    band *= 2.0 * guard
    # accept ⇔ u + 1 ≤ lo (then U < (u+1)/2^32 ≤ exp(-X)); lo - 1 is exact for lo < 2^53.
    accept = u <= (p - band) - 1.0
    p += band  # hi: u ≥ hi means U ≥ u/2^32 ≥ exp(-X), a certain reject
    amb = np.flatnonzero(~accept & (u < p))
    for i in amb:
        accept[i] = _exact_below_exp(prg, int(u[i]), 32, float(x[i]), exact_x(int(i)))
    return accept


def _bernoulli_exp_neg_const(prg: Prg, n: int, value: Fraction) -> np.ndarray:
    """``n`` draws of Bernoulli(exp(-value)) for one exact rational ``value`` ≥ 0.

    Reads 16 bits per draw: only the one 16-bit prefix that straddles exp(-value) (probability
    2⁻¹⁶ when the guard band is narrow) needs the exact comparison.
    """
    x = float(value)
    guard = _GUARD if _guard_override is None else _guard_override
    p = math.exp(-x) * _TWO16
    band = p * (2.0 * guard) * (1.0 + x)
    u = np.frombuffer(prg.bytes(2 * n), dtype="<u2").astype(np.float64)
    accept = u <= (p - band) - 1.0
    amb = np.flatnonzero(~accept & (u < p + band))
    if amb.size:
        neg_log = _neg_log_rational(value)
        for i in amb:
            accept[i] = _exact_below_exp(prg, int(u[i]), 16, x, neg_log)
    return accept


def _neg_log_rational(value: Fraction) -> Callable[[int], Decimal]:
    def neg_log(prec: int) -> Decimal:  # division rounded to the context: rel. error 10^(1-p)
        return Decimal(value.numerator) / Decimal(value.denominator)

    return neg_log


# --------------------------------------------------------------------------- the shared proposal
def _geometric_e1(prg: Prg, n: int) -> np.ndarray:
    """Number of successes before the first failure of Bernoulli(exp(-1)) trials (int64)."""
    out = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    while alive.size:
        alive = alive[_bernoulli_exp_neg_const(prg, alive.size, Fraction(1))]
        out[alive] += 1
    return out


def _uniform_below(prg: Prg, n: int, bound: int) -> np.ndarray:
    """``n`` integers uniform in [0, bound) as int64, by rejection (no modulo bias).

    Like :meth:`Prg.uniform_below`, but reads 16-bit words when they suffice (half the
    keystream for the small bounds the samplers use).
    """
    if bound > 1 << 16:
        return prg.uniform_below(n, bound).astype(np.int64)
    bits = max(1, (bound - 1).bit_length())
    mask = np.uint16((1 << bits) - 1)
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        need = n - filled
        words = np.frombuffer(prg.bytes(2 * (need + need // 2 + 16)), dtype="<u2") & mask
        cand = words[words < bound][:need]
        out[filled:filled + cand.size] = cand
        filled += cand.size
    return out


def _staircase(prg: Prg, n: int, t: int) -> np.ndarray:
    """Up to ``n`` integers with P(d) ∝ exp(-⌊|d|/t⌋): the shared proposal of both samplers.

    d = ±(U + tV) with U uniform in [0, t), V ~ Geometric: P(V = v) = (1 - e⁻¹)e⁻ᵛ, and a
    random sign; "-0" is rejected so that 0 has the same mass as every other point of its step.
    """
    u = _uniform_below(prg, n, t)
    v = _geometric_e1(prg, n)
    sign = np.unpackbits(np.frombuffer(prg.bytes((n + 7) // 8), dtype=np.uint8))[:n].astype(bool)
    keep = ~(sign & (u == 0) & (v == 0))
    mag = u + t * v
    return np.where(sign, -mag, mag)[keep]


_CHUNK = 1 << 15  # proposals per batch: keeps the working set in cache


def _fill(n: int, batch: Callable[[int], np.ndarray], ratio: float) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        need = n - filled
        got = batch(min(int(need * ratio) + 32, _CHUNK))[:need]
        out[filled:filled + got.size] = got
        filled += got.size
    return out


# --------------------------------------------------------------------------- discrete Gaussian
def discrete_gaussian(prg: Prg, n: int, sigma2: float) -> np.ndarray:
    """``n`` samples of N_Z(0, σ²): P(x) ∝ exp(-x²/(2σ²)), x ∈ Z (int64). σ² = ``sigma2`` > 0.

    Rejection sampling in the manner of Canonne–Kamath–Steinke 2020 (Algorithm 3), with a
    step-shaped proposal P(d) ∝ exp(-⌊|d|/t⌋), t = ⌈√2·σ⌉, and acceptance probability
    exp(-(d²/(2σ²) - ⌊|d|/t⌋)) ≤ 1 (t² ≥ 2σ² makes -k²t²/(2σ²) + k ≤ 0 on every step k).
    One exact Bernoulli per proposal, about 0.56 accepted. The variance of N_Z(0, σ²) is
    slightly below σ² (by less than 10⁻⁸·σ² for σ ≥ 1).
    """
    n = _check_count(n)
    s2 = float(sigma2)
    if not (math.isfinite(s2) and 0.0 < s2 <= MAX_DISCRETE_GAUSSIAN_VARIANCE):
        raise ConfigError(f"discrete Gaussian sigma2 must be a finite number in (0, 2**100], got {sigma2!r}")
    s2_exact = Fraction(s2)
    t = max(1, math.isqrt(math.ceil(2 * s2_exact)))
    while t * t < 2 * s2_exact:
        t += 1
    if t > _MAX_INT >> 8:
        raise ConfigError(f"discrete Gaussian sigma2 too large for int64 samples: {sigma2!r}")
    inv = 1.0 / (2.0 * s2)

    def batch(size: int) -> np.ndarray:
        d = _staircase(prg, size, t)
        a = np.abs(d)
        x = (a.astype(np.float64) ** 2) * inv - (a // t)

        def exact(i: int) -> Callable[[int], Decimal]:
            ai = int(a[i])
            return _neg_log_rational(Fraction(ai * ai) / (2 * s2_exact) - ai // t)

        return d[_bernoulli_exp_neg(prg, np.maximum(x, 0.0), exact)]

    return _fill(n, batch, 1.9)


# --------------------------------------------------------------------------- Poisson
_STIRLING = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156)


def _stirling_tail(z: np.ndarray) -> np.ndarray:
    """lgamma(z) - [(z-1/2)ln z - z + ln(2π)/2] for z ≥ 16, absolute error < 10⁻¹⁸.

    The asymptotic series is cut after the first term below 10⁻¹⁹ at min(z) (its truncation
    error is below the first omitted term).
    """
    zmin = float(np.min(z)) if z.size else 16.0
    terms = [c for k, c in enumerate(_STIRLING) if k == 0 or abs(_STIRLING[k - 1]) / zmin ** (2 * k - 1) > 1e-19]
    r = 1.0 / z
    r2 = r * r
    acc = np.full_like(r, terms[-1])
    for c in reversed(terms[:-1]):
        acc *= r2
        acc += c
    acc *= r
    return acc


_PHI_SERIES = tuple(((-1.0) ** k) / (k * (k - 1)) for k in range(2, 14))


def _phi(t: np.ndarray) -> np.ndarray:
    """(1+t)·ln(1+t) - t for t > -1/2, relative error < 2⁻⁴⁷.

    |t| < 0.05: the series Σ_{k≥2} (-1)^k t^k / (k(k-1)) to k = 13 (truncation < 2⁻⁵³
    relative); otherwise the direct formula, whose cancellation costs at most 2/|t| ≤ 40 ulps.
    """
    small = np.abs(t) < 0.05
    if small.all():
        ts = t
    else:
        ts = t[small]
    acc = np.full_like(ts, _PHI_SERIES[-1])
    for c in reversed(_PHI_SERIES[:-1]):
        acc *= ts
        acc += c
    acc *= ts
    acc *= ts
    if small.all():
        return acc
    out = np.empty_like(t)
    out[small] = acc
    tb = t[~small]
    out[~small] = (1.0 + tb) * np.log1p(tb) - tb
    return out


def _lgamma_int(values: np.ndarray) -> np.ndarray:
    uniq, inv = np.unique(values, return_inverse=True)
    table = np.array([math.lgamma(float(v)) for v in uniq], dtype=np.float64)
    return table[inv].reshape(values.shape)


@lru_cache(maxsize=1)
def _bernoulli_even(count: int) -> tuple[Fraction, ...]:
    """B_2, B_4, …, B_{2·count} (Akiyama–Tanigawa; exact fractions)."""
    a: list[Fraction] = []
    out = []
    for m in range(2 * count + 1):
        a.append(Fraction(1, m + 1))
        for j in range(m, 0, -1):
            a[j - 1] = j * (a[j - 1] - a[j])
        if m >= 2 and m % 2 == 0:
            out.append(a[0])
    return tuple(out)


def _decimal_pi() -> Decimal:
    """π to the current decimal precision (the recipe of the ``decimal`` documentation)."""
    with localcontext() as ctx:
        ctx.prec += 2
        three = Decimal(3)
        lasts: Decimal = Decimal(0)
        t, s, n, na, d, da = three, three, 1, 0, 0, 24
        while s != lasts:
            lasts = s
            n, na = n + na, na + 8
            d, da = d + da, da + 32
            t = (t * n) / d
            s += t
    return +s


_STIRLING_MIN = 1000  # below this, ln Γ(z) = ln((z-1)!) from the exact integer


def _ln_gamma_decimal(z: int, prec: int) -> Decimal:
    """ln Γ(z) for an integer z ≥ 1, absolute error ≤ 10^-(prec+4), under the current context.

    z < 1000: ln of the exact (z-1)!. Otherwise Stirling's series
    (z-½)ln z - z + ½ln(2π) + Σ_k B_{2k}/(2k(2k-1)z^{2k-1}), cut when the next term (which
    bounds the remainder for real z > 0) is below the tolerance; for z ≥ 1000 the terms keep
    decreasing far beyond any precision used here.
    """
    if z < _STIRLING_MIN:
        return Decimal(math.factorial(z - 1)).ln() if z > 2 else Decimal(0)
    zd = Decimal(z)
    out = (zd - Decimal("0.5")) * zd.ln() - zd + (2 * _decimal_pi()).ln() / 2
    tol = Decimal(10) ** (-(prec + 6))
    count = 8
    while True:
        bern = _bernoulli_even(count)
        for k, b in enumerate(bern, start=1):
            term = Decimal(b.numerator) / (Decimal(b.denominator) * (2 * k) * (2 * k - 1) * zd ** (2 * k - 1))
            if abs(term) < tol:
                return out
            out += term
        out = (zd - Decimal("0.5")) * zd.ln() - zd + (2 * _decimal_pi()).ln() / 2  # restart, more terms
        count *= 2


def _poisson_log_ratio(d: np.ndarray, m: int, lam: float) -> np.ndarray:
    """log(p(m+d)/p(m)) for Poisson(λ), d ≥ -m, in float; abs. error ≲ 2⁻⁴⁵(1 + |result|).

    Large arguments use the Stirling difference -xφ(d/x) + ½log1p(d/x) - d·ln(x/λ) - ΔS with
    x = m+1, which avoids the cancellation of lgamma(m+d+1) - lgamma(m+1) for large m.
    """
    y = (d.astype(np.int64) + (m + 1)).astype(np.float64)  # exact: m + d + 1 < 2^53 or integer
    d = d.astype(np.float64)
    x = float(m + 1)
    direct = (y < 16.0) | (m < 16)
    if not direct.any():
        return _log_ratio_stirling(d, y, m, lam)
    out = np.empty_like(d)
    dd = d[direct]
    out[direct] = dd * math.log(lam) + math.lgamma(x) - _lgamma_int(y[direct])
    big = ~direct
    if big.any():
        out[big] = _log_ratio_stirling(d[big], y[big], m, lam)
    return out


def _log_ratio_stirling(d: np.ndarray, y: np.ndarray, m: int, lam: float) -> np.ndarray:
    """-xφ(d/x) + ½log1p(d/x) - d·ln(x/λ) - (S(y) - S(x)), x = m + 1; see :func:`_poisson_log_ratio`."""
    x = float(m + 1)
    t = d / x
    gap = float(Fraction(m + 1) - Fraction(lam))  # m + 1 - λ ∈ (0, 1], exactly
    ln_x_over_lam = math.log1p(gap / lam)
    out = _phi(t)
    out *= -x
    out += 0.5 * np.log1p(t)
    out -= d * ln_x_over_lam
    out -= _stirling_tail(y)
    out += float(_stirling_tail(np.array([x]))[0])
    return out


class _PoissonEnvelope:
    """Proposal m + d, P(d) ∝ exp(-⌊|d|/t⌋), and its bound log M for Poisson(λ).

    With r(d) = p(m+d)/p(m), the acceptance probability is r(d)·exp(⌊|d|/t⌋)/M. log r is
    concave with its maximum at d = 0 (m = ⌊λ⌋ is a mode), so on each step k of the proposal
    it is largest at |d| = kt, and h(k) = log r(±kt) + k is concave in k: the scan below stops
    at the first decrease. M is then raised by a margin far above the float error.
    """

    def __init__(self, lam: float) -> None:
        self.lam = lam
        self.m = m = int(math.floor(lam))
        self.t = t = int(math.floor(1.5 * math.sqrt(lam))) + 1
        best = 0.0  # k = 0
        for side in (1, -1):
            prev = 0.0
            k = 1
            while side == 1 or k * t <= m:
                h = float(_poisson_log_ratio(np.array([side * k * t]), m, lam)[0]) + k
                best = max(best, h)
                if h < prev:
                    break
                prev, k = h, k + 1
        self.log_m = best + _MARGIN_LOG_M
        self._lam_exact = Fraction(lam)
        self._log_m_exact = Fraction(self.log_m)

    def neg_log_accept(self, d: int) -> Callable[[int], Decimal]:
        """Exact -ln a(d) = -ln r(d) - ⌊|d|/t⌋ + log M, evaluated in decimal.

        ln r(d) = d·ln λ - (ln Γ(m+d+1) - ln Γ(m+1)), λ and log M being exact binary fractions.
        """
        m, t = self.m, self.t

        def neg_log(prec: int) -> Decimal:
            lam = Decimal(self._lam_exact.numerator) / Decimal(self._lam_exact.denominator)
            log_m = Decimal(self._log_m_exact.numerator) / Decimal(self._log_m_exact.denominator)
            log_r = d * lam.ln() - (_ln_gamma_decimal(m + d + 1, prec) - _ln_gamma_decimal(m + 1, prec))
            return -log_r - (abs(d) // t) + log_m

        return neg_log

    def batch(self, prg: Prg, n: int) -> np.ndarray:
        d = _staircase(prg, n, self.t)
        d = d[d >= -self.m]
        x = -(_poisson_log_ratio(d, self.m, self.lam) + (np.abs(d) // self.t) - self.log_m)
        ok = _bernoulli_exp_neg(prg, np.maximum(x, 0.0), lambda i: self.neg_log_accept(int(d[i])))
        return self.m + d[ok]


def poisson(prg: Prg, n: int, lam: float) -> np.ndarray:
    """``n`` samples of Poisson(λ) (int64), exact; 0 < λ ≤ 2⁴⁰ (λ = 0 gives zeros)."""
    n = _check_count(n)
    lam = float(lam)
    if not (math.isfinite(lam) and 0.0 <= lam <= MAX_POISSON_RATE):
        raise ConfigError(f"Poisson rate must be a finite number in [0, 2**62], got {lam!r}")
    if lam == 0.0:
        return np.zeros(n, dtype=np.int64)
    env = _PoissonEnvelope(lam)
    return _fill(n, lambda size: env.batch(prg, size), 2.1)


def skellam(prg: Prg, n: int, mu: float) -> np.ndarray:
    """``n`` samples of the symmetric Skellam law with variance μ: Pois(μ/2) − Pois(μ/2)."""
    mu = float(mu)
    if not (math.isfinite(mu) and 0.0 < mu <= MAX_SKELLAM_VARIANCE):
        raise ConfigError(f"Skellam variance must be a finite number in (0, 2**63], got {mu!r}")
    n = _check_count(n)
    return poisson(prg, n, mu / 2.0) - poisson(prg, n, mu / 2.0)


# --------------------------------------------------------------------------- float Gaussian
def gaussian(prg: Prg, n: int, std: float) -> np.ndarray:
    """``n`` samples of N(0, std²) (float64): Box–Muller on CSPRNG uniforms."""
    n = _check_count(n)
    std = float(std)
    if not (math.isfinite(std) and std >= 0.0):
        raise ConfigError(f"Gaussian std must be a finite number >= 0, got {std!r}")
    return prg.normal(n) * std
