"""Moved to `iteacnet.metrics` (scoring primitives sit below training and evaluation both);
re-exported here for existing imports."""

from iteacnet.metrics import *  # noqa: F403
