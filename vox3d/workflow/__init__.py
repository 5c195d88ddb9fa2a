"""The numbers rules need and plans beyond one machine: job sizes, cluster placement and the
VoxCeleb2 projection. (docs/architecture.md: the workflow room.)"""
