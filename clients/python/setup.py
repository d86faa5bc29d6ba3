"""Build hook: regenerate the gRPC stubs from ../../proto when building
inside the Orrery repository (and grpcio-tools is importable); elsewhere
(an sdist, a copy of this directory) the committed stubs are used."""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithStubs(build_py):
    def run(self):
        sys.path.insert(0, HERE)
        try:
            import stubgen

            if os.path.isdir(os.path.join(stubgen.DEFAULT_PROTO, "orrery", "v1")):
                try:
                    import grpc_tools  # noqa: F401
                except ImportError:
                    self.announce("grpcio-tools not installed: using the committed stubs", 2)
                else:
                    stubgen.generate()
        finally:
            sys.path.remove(HERE)
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
