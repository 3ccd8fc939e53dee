"""Vendor the FSRS scheduler of the Practice page: npm's ``ts-fsrs``, its browser (UMD) build.

``python tools/vendor_fsrs.py`` fetches the pinned release with ``npm pack`` (npm's own client),
checks the tarball against the registry's published sha512 integrity, and copies
``dist/index.umd.js`` and ``LICENSE`` (MIT) into ``book/_static/vendor/``. The two files are
committed, so ``make book`` needs no network; ``make book`` runs this only when they are
missing. ``tests/test_practice.py`` checks the committed copy against ``UMD_SHA256``.
To upgrade: change ``VERSION``, ``INTEGRITY`` (``npm view ts-fsrs@<v> dist.integrity``) and
``UMD_SHA256``, run this, and check the Practice page (``make site-test``).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "book" / "_static" / "vendor"
VERSION = "5.4.2"
INTEGRITY = (
    "sha512-z4qop4pzTcyTzuJ566d9EaX/4bZZzhYfeaPImfVr+xcYT65c5oBgFDijUhCE/D+C78eaolHIhKRZ04/"
    "RwF+v2g=="
)
UMD = VENDOR / "ts-fsrs.umd.js"
LICENSE = VENDOR / "ts-fsrs.LICENSE"
UMD_SHA256 = "59b7444121d0aae5bb969097ed95df38eff4a4f878e459703c63720f6b6a176b"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    npm = shutil.which("npm")
    if npm is None:
        print("vendor_fsrs: npm is needed to fetch ts-fsrs (apt-get install npm)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [npm, "pack", f"ts-fsrs@{VERSION}", "--pack-destination", tmp, "--silent"],
            check=True,
            cwd=tmp,
        )
        (tarball,) = Path(tmp).glob("ts-fsrs-*.tgz")
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != INTEGRITY:
            print(f"vendor_fsrs: {tarball.name} does not match {INTEGRITY}", file=sys.stderr)
            return 1
        with tarfile.open(tarball) as tar:
            umd = tar.extractfile("package/dist/index.umd.js").read()
            license_text = tar.extractfile("package/LICENSE").read()
    VENDOR.mkdir(parents=True, exist_ok=True)
    UMD.write_bytes(umd)
    LICENSE.write_bytes(license_text)
    if sha256(UMD) != UMD_SHA256:
        print(f"vendor_fsrs: {UMD.name} has sha256 {sha256(UMD)}, expected {UMD_SHA256}")
        return 1
    print(f"vendor_fsrs: ts-fsrs {VERSION} -> {UMD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
