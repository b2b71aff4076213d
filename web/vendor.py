"""Copy the pinned npm libraries the web app uses into the Python package's static folder.

The app loads plain ES modules with no build step, so its libraries are vendored as files:
`web/package.json` + `package-lock.json` pin them, `npm ci` fetches them into
`web/node_modules`, and this script copies the browser files into `api/web/static/vendor/`.
`python web/vendor.py --check` exits 1 when a vendored copy differs from the pinned package's
file (tests/test_web_app.py runs it), so the copies can never drift from the lockfile.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

WEB = Path(__file__).resolve().parent
MODULES = WEB / "node_modules"
VENDOR = WEB.parent / "api" / "web" / "static" / "vendor"

# package file -> vendored name. htm's standalone build is Preact + hooks + htm in one ES
# module with no bare imports, so the page needs no import map (and no inline script).
FILES = {
    "htm/preact/standalone.module.js": "preact-htm.js",
    "htm/LICENSE": "htm.LICENSE.txt",
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str]) -> int:
    check = "--check" in argv
    if not MODULES.is_dir():
        print("web/node_modules is missing: run `npm ci` in web/ first", file=sys.stderr)
        return 2
    stale = []
    for source, name in FILES.items():
        src, dst = MODULES / source, VENDOR / name
        if check:
            if not dst.exists() or digest(src) != digest(dst):
                stale.append(f"{dst} differs from node_modules/{source}")
        else:
            VENDOR.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            print(f"{source} -> {dst.relative_to(WEB.parent)}")
    for line in stale:
        print(line, file=sys.stderr)
    if stale:
        print("run `python web/vendor.py` to refresh the vendored files", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
