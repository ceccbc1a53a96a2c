"""Bulk classification (``kdserve classify``): backfills over files, resumable shard by shard, on local
worker processes or Ray Data; the same engines label ``kdserve distill``'s transfer set (``label``).
Torch-free: it runs bundles through ``kdserve.core.bundle``."""
