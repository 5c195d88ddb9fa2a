"""What people read: the report's figures, the dataset card and the exported Voxceleb-3D.
(docs/architecture.md: the report room.)"""
