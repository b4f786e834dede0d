"""training: the engine (fit, predict, score), the methods' frameworks, checkpoints.
Uses models, data, masking, metrics and config; never the CLI or the evaluation protocols,
which call it. The one exception is `training.distributed`, a torchrun entry point that,
like the CLI, runs whole protocols (it sits above evaluation)."""
