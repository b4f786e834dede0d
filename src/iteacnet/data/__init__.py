"""Corpora: the in-memory Corpus, the GCNet-layout loader, the synthetic corpus, batching."""
