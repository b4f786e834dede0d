"""Baselines of the paper's comparison, each registered in `iteacnet.models.base.METHODS`."""
