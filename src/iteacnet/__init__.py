"""iteacnet: ITEACNet and its baselines for emotion recognition in conversations with missing modalities.

Dependencies point one way: cli -> benchmark -> evaluation (protocols, reports) -> training
-> models, data (corpora, splits), masking, metrics -> presets, config, errors, registry, files.
Models never know files, corpora, training or the command line; data knows no model.
"""

__version__ = "0.1.0"
