"""Baselines of the paper's comparison, each registered in `iteacnet.models.base.METHODS`.

ae (Duan et al. 2014, MMIN's AE variant), cra (Tran et al. 2017), mmin (Zhao, Li, Jin 2021),
cpmnet (Zhang et al. 2019; `cpmnet-enc` its amortised redesign) and gcnet (Lian et al. 2023); shared pieces live in `common`.
"""

from iteacnet.models.baselines import ae, cpmnet, cpmnet_enc, cra, gcnet, mmin

__all__ = ["ae", "cpmnet", "cpmnet_enc", "cra", "gcnet", "mmin"]
