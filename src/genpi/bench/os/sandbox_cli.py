"""``genpi sandbox``: build the OS sandbox's root filesystem, or check that sandboxes work here.

Run as: genpi sandbox build    (once, as root; cached under $GENPI_HOME/sandbox)
Run as: genpi sandbox check
"""

from __future__ import annotations

import argparse
import json
import time

from genpi.errors import GenpiError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("build", "check"), help="build the rootfs, or check")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument(
        "--for-user",
        default=None,
        help="build for rootless use by USER (owned by USER's /etc/subuid range; set GENPI_HOME "
        "to that user's cache)",
    )


def main(args: argparse.Namespace) -> int:
    from genpi.bench.os import rootfs
    from genpi.bench.os.sandbox import NamespaceSandbox, docker_available, namespace_problems

    if args.action == "build":
        spec = rootfs.default_spec()
        start = time.monotonic()
        base = rootfs.subordinate_range(args.for_user) if args.for_user else rootfs.UID_BASE
        cached = rootfs.find_rootfs(spec, uid_base=base) is not None and not args.force
        path = rootfs.build_rootfs(spec, force=args.force, for_user=args.for_user)
        took = time.monotonic() - start
        print(json.dumps({"rootfs": str(path), "cached": cached, "seconds": round(took, 1),
                          "suite": spec.suite, "mirror": spec.mirror}))  # fmt: skip
        return 0
    report: dict = {"docker": docker_available(), "namespace_problems": namespace_problems()}
    path = rootfs.find_rootfs()
    report["rootfs"] = str(path) if path else None
    report["build_problems"] = rootfs.build_problems() if path is None else []
    if path is not None and not report["namespace_problems"]:
        with NamespaceSandbox(path) as box:
            result = box.run("echo ok; id -u; hostname")
            report["startup_seconds"] = round(box.startup_seconds, 3)
            report["shell"] = result.output.split()
    print(json.dumps(report, indent=2))
    if path is None:
        raise GenpiError("the sandbox root filesystem is not built: run `genpi sandbox build`")
    if report["namespace_problems"] and not report["docker"]:
        raise GenpiError("no sandbox can run here: " + "; ".join(report["namespace_problems"]))
    return 0
