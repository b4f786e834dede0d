"""Models: ECCE, token mixers, the ITEAC encoder, ITEACNet, and the baselines.

Importing this package registers every baseline in `METHODS`.
"""

from iteacnet.models import baselines as baselines  # noqa: F401  (registers baselines)
from iteacnet.models.base import METHODS, LossOutput, ModelInput, ModelSpec

__all__ = ["METHODS", "LossOutput", "ModelInput", "ModelSpec"]
