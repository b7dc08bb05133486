"""The optional C++ extension (everything else is in pyproject.toml): vtc_deploy._resample, libvtc's preprocessing
rule (runtimes/cpp/src/rules/resize.cpp) for the Python runtime. ``optional=True``: where it cannot be compiled (no
C++ compiler or Python headers) the install goes on and vtc_deploy.preprocess uses Pillow, with the same bytes."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "vtc_deploy._resample",
            sources=["vtc_deploy/_resample.cpp", "runtimes/cpp/src/rules/resize.cpp"],
            include_dirs=["runtimes/cpp/src"],
            extra_compile_args=["-std=c++17", "-O3", "-ffp-contract=off", "-fvisibility=hidden"],
            language="c++",
            optional=True,
        )
    ]
)
