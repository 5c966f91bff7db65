"""The committed admin API stubs are what grpcio-tools generates from protos/ today: an edit to admin.proto
without regenerating fails here (the command is in protos/README.md)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[3]
PROTO = "extauth/admin/v1/admin.proto"
GENERATED = ("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py")


def generate(into: Path) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'protos'}", f"--python_out={into}",
                    f"--pyi_out={into}", f"--grpc_python_out={into}", str(REPO / "protos" / PROTO)], check=True)


def test_committed_admin_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    """Each generated file under extauth/admin/v1 is byte for byte what protoc writes from admin.proto now."""
    generate(tmp_path)
    stale = [name for name in GENERATED
             if (tmp_path / "extauth/admin/v1" / name).read_bytes() != (REPO / "extauth/admin/v1" / name).read_bytes()]
    assert stale == [], f"regenerate: see protos/README.md ({', '.join(stale)} differ)"


def test_the_staleness_check_notices_an_edited_proto(tmp_path: Path) -> None:
    """The comparison above can fail: a proto with one more field generates different code."""
    protos = tmp_path / "protos"
    (protos / "extauth/admin/v1").mkdir(parents=True)
    source = (REPO / "protos" / PROTO).read_text()
    (protos / PROTO).write_text(source.replace("message StatusRequest {}", "message StatusRequest { bool x = 1; }"))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{protos}", f"--python_out={out}",
                    str(protos / PROTO)], check=True)
    assert (out / "extauth/admin/v1/admin_pb2.py").read_bytes() != (REPO / "extauth/admin/v1/admin_pb2.py").read_bytes()
