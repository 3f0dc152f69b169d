"""The bottom layer: the SQLAlchemy declarative base and engine, the metrics registry, the shared vocabulary.

Nothing here imports anything of ours; every other package may import it.
"""
