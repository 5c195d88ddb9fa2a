"""The voice -> shape models: the CMP network, its supervised training, the unsupervised
(distillation) variant, the identity targets, and the evaluation with its baselines and
predictions. (docs/architecture.md: the voice room.)"""
