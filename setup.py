"""Builds pyhexz and its Cython extensions.

`pip install -e .` or, as in the original pyhexz, `python3 setup.py build_ext --build-lib=src`
(which puts the compiled modules next to their sources in src/pyhexz/game and src/pyhexz/search).
HEXZ_BUILD_CFLAGS replaces the optimisation flags (default -O3; the deployment test builds with
-O0, checking that the build works, not how fast the result is).
"""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        f"pyhexz.{name}",
        [f"src/pyhexz/{name.replace('.', '/')}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=os.environ.get("HEXZ_BUILD_CFLAGS", "-O3").split(),
    )
    for name in ("game.board", "search.evalcache", "search.solver", "search.mcts")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        include_path=["src"],
    ),
)
