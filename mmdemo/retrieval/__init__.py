"""The retrieval layer: models, the embedding cache, search, label candidates, the binding probe,
metrics and the base-vs-finetuned comparison. Reads the data layer, never writes training state.
"""
