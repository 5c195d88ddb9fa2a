"""The embedded default corpus: its build, the face rig, the talking-face renderer, the source-
filter voices, the face -> voice mapping and the ground truth. (docs/architecture.md: the
synthetic room.)"""
