"""The input corpus as files: probing and decoding videos, the extract stage and its shard
format, the manifest, the VoxCeleb-style metadata and the identity split.
(docs/architecture.md: the media room.)"""
