"""kdserve's torch-free core: errors, the bundle format and reader, the data layer, metrics.

Every stage (train, export, serve, bench) and the CLI import this layer; it imports none of
them (tests/test_layers.py holds the line). Nothing here imports torch or transformers.
"""
