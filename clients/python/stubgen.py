"""Generates orrery/_proto/orrery/v1/*_pb2*.py from the repository's proto/.

Used by setup.py (at build time, when ../../proto and grpcio-tools are both
there) and by scripts/check-python-stubs.sh (which regenerates into a
temporary directory and compares with the committed stubs).

    python stubgen.py [--proto DIR] [--out DIR]
"""

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
DEFAULT_OUT = os.path.join(HERE, "orrery", "_proto")
PACKAGE = "orrery._proto"


def protos(proto_dir):
    d = os.path.join(proto_dir, "orrery", "v1")
    return sorted(os.path.join("orrery", "v1", f) for f in os.listdir(d) if f.endswith(".proto"))


def generate(proto_dir=DEFAULT_PROTO, out_dir=DEFAULT_OUT):
    """Runs protoc (grpcio-tools) and makes the stubs import each other
    inside the package (protoc writes `from orrery.v1 import ...`, which
    would look for a top-level `orrery.v1`)."""
    from grpc_tools import protoc  # only needed when generating

    v1 = os.path.join(out_dir, "orrery", "v1")
    os.makedirs(v1, exist_ok=True)
    for d in (out_dir, os.path.join(out_dir, "orrery"), v1):
        init = os.path.join(d, "__init__.py")
        if not os.path.exists(init):
            with open(init, "w") as f:
                f.write('"""Generated gRPC stubs (see stubgen.py)."""\n' if d == out_dir else "")
    files = protos(proto_dir)
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    for name in sorted(os.listdir(v1)):
        if not name.endswith((".py", ".pyi")) or name == "__init__.py":
            continue
        path = os.path.join(v1, name)
        with open(path) as f:
            text = f.read()
        fixed = re.sub(r"^from orrery\.v1 import", f"from {PACKAGE}.orrery.v1 import", text, flags=re.M)
        if fixed != text:
            with open(path, "w") as f:
                f.write(fixed)
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proto", default=DEFAULT_PROTO)
    ap.add_argument("--out", default=DEFAULT_OUT)
    a = ap.parse_args()
    for f in generate(a.proto, a.out):
        print("generated", f)


if __name__ == "__main__":
    sys.exit(main())
