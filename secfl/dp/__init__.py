"""Differential privacy: clipping, noise mechanisms, secure samplers, accounting, calibration.

Typical use (see ``protocols/dp.md``)::

    cfg = DPConfig(clip=1.0, epsilon=4.0, mechanism=MechanismKind.SKELLAM, min_honest=5)
    plan = plan_privacy(cfg, rounds=50, sampling_rate=1.0, dim=d, n_clients=20, modulus_bits=32)
    mech = plan.mechanism                      # calibrated
    q = mech.encode(clip_l2(update, cfg.clip)[0], prg) + mech.client_share(d, prg)   # client
    real_sum = mech.decode(from_modular(ring_sum, 32))                              # server
    acc = plan.new_accountant(); acc.step(); acc.get_epsilon(plan.delta)            # per round

This package imports only :mod:`secfl.crypto`, :mod:`secfl.errors`, numpy and dp-accounting;
every noise sample comes from :class:`secfl.crypto.prg.Prg`.
"""

from secfl.dp.accounting import (
    ACCOUNTANTS,
    Accountant,
    PldAccountant,
    RdpAccountant,
    calibrate_noise_multiplier,
    epsilon_after,
    make_accountant,
    rdp_to_epsilon,
    subsampled_rdp,
)
from secfl.dp.clipping import clip_l2
from secfl.dp.config import DPConfig, DPMode, MechanismKind
from secfl.dp.mechanisms import (
    DiscreteGaussianMechanism,
    GaussianMechanism,
    IntegerMechanism,
    NoiseMechanism,
    SkellamMechanism,
    from_modular,
    gaussian_tail,
    make_mechanism,
    skellam_tail,
    to_modular,
)
from secfl.dp.plan import DPPlan, max_levels, plan_privacy

__all__ = [
    "clip_l2",
    "DPConfig",
    "DPMode",
    "MechanismKind",
    "NoiseMechanism",
    "GaussianMechanism",
    "IntegerMechanism",
    "DiscreteGaussianMechanism",
    "SkellamMechanism",
    "make_mechanism",
    "gaussian_tail",
    "skellam_tail",
    "to_modular",
    "from_modular",
    "Accountant",
    "RdpAccountant",
    "PldAccountant",
    "ACCOUNTANTS",
    "make_accountant",
    "subsampled_rdp",
    "rdp_to_epsilon",
    "epsilon_after",
    "calibrate_noise_multiplier",
    "DPPlan",
    "plan_privacy",
    "max_levels",
]
