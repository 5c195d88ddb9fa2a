"""Build script for the compiled rasterizer (Sim3DR/, Cython + C++).

Everything else about the package lives in pyproject.toml; this file only declares the
extension so that `pip install -e .` (run by `make run` / `make test`) compiles it.
"""

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "Sim3DR._sim3dr",
        sources=["Sim3DR/_sim3dr.pyx", "Sim3DR/rasterize.cpp"],
        include_dirs=[np.get_include(), "Sim3DR"],
        depends=["Sim3DR/rasterize.h"],
        language="c++",
        extra_compile_args=[
            "-O3",
            "-std=c++17",
            "-fno-math-errno",
            "-ffp-contract=off",
            "-pthread",
        ],
        extra_link_args=["-pthread"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(ext_modules=cythonize(extensions, language_level=3, quiet=True))
