"""Build of the codec's compiled core; everything else is declared in pyproject.toml.

The extensions are optional: without a C compiler the install still succeeds,
the collector decodes with its numpy path (``voipflow.collectors.codec.core``
says which one runs; the results are the same) and reads datagrams in Python.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        # the codec's walk and gather (voipflow.collectors.codec.core)
        Extension(
            "voipflow.collectors.codec._walk",
            ["collectors/codec/_walk.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
        # the receiver's burst read (voipflow.collectors.receiver)
        Extension(
            "voipflow.collectors._recv",
            ["collectors/_recv.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
    ]
)
