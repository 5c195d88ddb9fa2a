"""The fit stage, from frames to per-identity shapes: detection, crop and regression per frame,
the one-pass stream stage, the fit shard, quality filters, per-identity aggregation and
refinement, and the ICT regressor's training. (docs/architecture.md: the fitting room.)"""
