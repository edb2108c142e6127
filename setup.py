"""Build of the codec's compiled core; everything else is declared in pyproject.toml.

The extension is optional: without a C compiler the install still succeeds and
the collector decodes with its numpy path (``voipflow.collectors.codec.core``
says which one runs; the results are the same).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "voipflow.collectors.codec._walk",
            ["collectors/codec/_walk.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
