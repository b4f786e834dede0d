"""Moved to `iteacnet.data.splits` (a split is a property of the data, below training and
evaluation both); re-exported here for existing imports."""

from iteacnet.data.splits import *  # noqa: F403
