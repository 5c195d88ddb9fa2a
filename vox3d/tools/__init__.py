"""The user's commands outside the workflow: the ``vox3d`` command line, run comparison,
generated markdown blocks, ``image2mesh`` and ``voice2mesh``. (docs/architecture.md: the
tools room.)"""
