"""Generated gRPC stubs (see stubgen.py)."""
