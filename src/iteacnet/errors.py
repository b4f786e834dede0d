"""The one base class of the errors a user can cause (bad data, config, checkpoint, input).

`iteacnet.cli.main` turns a `UserError` (or an OSError of a path the user named: not found, a
directory, no permission) into one line on stderr and exit status 2; any other exception is a
bug (exit 1). Every module that rejects input raises a subclass of it, with a
message naming the file, line or config field and what would be accepted.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input the user can fix; the message says where and what is accepted."""


class ConfigError(UserError):
    """A config file, preset or `--set` override that is not a valid ExperimentConfig."""


class CheckpointError(UserError):
    """A checkpoint folder that is missing, truncated, foreign, altered or does not fit."""


class DeviceError(UserError):
    """A `train.device` this machine does not have (CUDA asked for on a CPU-only torch)."""


class ResultsError(UserError):
    """A results file that cannot be used as asked (locked by another run, a changed grid)."""


class IncompleteResults(RuntimeError):
    """A run ended without every result it should have (a lost write, a full disk): not the
    user's doing and not a bug; a rerun completes it. Exit status 1, the message alone."""
