"""Regenerates src/pyhexz/hexz_pb2.py (and .pyi) from proto/hexz.proto.

Uses the protoc bundled with grpcio-tools, pinned in pyproject.toml's [dev] extra (and so in
requirements.lock), so that every developer generates the same code. The generated code must
not be newer than the protobuf runtime we depend on (see the protobuf pin in pyproject.toml);
tests/test_proto.py checks both that
the module matches the .proto and that pin.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    args = [
        "protoc",
        f"-I{ROOT / 'proto'}",
        f"--python_out={ROOT / 'src' / 'pyhexz'}",
        f"--pyi_out={ROOT / 'src' / 'pyhexz'}",
        str(ROOT / "proto" / "hexz.proto"),
    ]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
