"""iteacnet: ITEACNet and its baselines for emotion recognition in conversations with missing modalities."""

__version__ = "0.1.0"
