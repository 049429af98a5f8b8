"""Build the scoring image into the local registry: `python -m local_stack.scoring_image`.

What `docker build -f include/scoring/Dockerfile` does for Azure, done for the
local Batch service (which has no container engine): run the same start-task
recipe (``include/scoring/node_setup.sh``) with the pinned
``include/scoring/requirements.txt`` into ``<registry>/images/<name>/venv``, and
record the image (its ``PATH`` and ``WORKDIR``) with a registry login in
``<registry>/registry.json``. Built once per machine and reused, as a registry
caches an image; ``make runtime`` rebuilds it when the requirements or the
recipe change.

The packages come from a cached layer instead of a download: a folder of links
to exactly the distributions the requirements resolve to in this project's
venv (so the image holds the scoring runtime and nothing else of the venv,
Airflow included). pip still checks every pin against it; what the layer lacks
it downloads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from local_stack.batch_service.registry import MANIFEST, normalise, password_hash

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCORING_DIR = PROJECT_ROOT / "include" / "scoring"
REQUIREMENTS = SCORING_DIR / "requirements.txt"
RECIPE = SCORING_DIR / "node_setup.sh"
DEFAULT_REGISTRY = PROJECT_ROOT / ".local" / "registry"
SERVER = "localregistry.local"
IMAGE = f"{SERVER}/yolo-scoring:1"
USERNAME = "scoring"
#: A user-assigned identity the local registry lets pull (as an AcrPull role assignment would); only
#: a pool holding it could use it, and the data-plane Pool_Add cannot give a pool an identity.
IDENTITY = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/scoring-pull")
#: The system PATH of an Ubuntu image (its /etc/environment without games/snap).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def pinned_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def _closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions the requirements need, transitively (markers evaluated, no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # pip downloads it
        seen[key] = dist
        todo.extend(Requirement(r) for r in dist.requires or [])
    return list(seen.values())


def build_layer(requirements: list[str], layer: Path) -> int:
    """Links to the top-level files of every distribution of the closure; returns how many distributions."""
    if layer.exists():
        shutil.rmtree(layer)
    layer.mkdir(parents=True)
    dists = _closure(requirements)
    for dist in dists:
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source, target = base / top, layer / top
            if source.exists() and not target.exists():
                target.symlink_to(source)
    return len(dists)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(registry: Path = DEFAULT_REGISTRY, requirements_file: Path = REQUIREMENTS, force: bool = False) -> dict:
    """Build (or keep) the scoring image; returns the registry login (server, username, password, image)."""
    registry = registry.resolve()
    image_dir = registry / "images" / "yolo-scoring-1"
    venv = image_dir / "venv"
    digest = _digest(requirements_file, RECIPE)
    credentials_file = registry / "credentials.json"
    credentials = json.loads(credentials_file.read_text()) if credentials_file.is_file() else {
        "server": SERVER, "username": USERNAME, "password": secrets.token_urlsafe(24),
        "image": IMAGE}
    stamp = image_dir / "digest"
    if force or not stamp.is_file() or stamp.read_text() != digest or not (venv / "bin" / "python").exists():
        requirements = pinned_requirements(requirements_file)
        layer = image_dir / "layer"
        count = build_layer(requirements, layer)
        print(f"scoring image: {count} distributions from the cached layer, recipe {RECIPE.name}", flush=True)
        env = {"PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}", "HOME": str(image_dir),
               "SCORING_PYTHON": getattr(sys, "_base_executable", sys.executable), "SCORING_BASE_SITE": str(layer),
               "PIP_CONSTRAINT": str(PROJECT_ROOT / "constraints.txt")}
        subprocess.run(["bash", str(RECIPE), str(venv), *requirements], env=env, check=True)
        stamp.write_text(digest)
    (image_dir / "workdir").mkdir(exist_ok=True)
    workdir = image_dir / "workdir"  # the image's COPY of score.py and the yolo_scoring package
    shutil.copy2(SCORING_DIR / "score.py", workdir / "score.py")
    shutil.rmtree(workdir / "yolo_scoring", ignore_errors=True)
    shutil.copytree(SCORING_DIR / "yolo_scoring", workdir / "yolo_scoring",
                    ignore=shutil.ignore_patterns("__pycache__"))
    stamp.touch()
    _, reference = normalise(IMAGE)
    manifest = {
        "servers": {SERVER: {"users": {credentials["username"]: {"sha256": password_hash(credentials["password"])}},
                             "identities": [IDENTITY]}},
        "images": {reference: {
            "env": {"PATH": f"{venv / 'bin'}:{SYSTEM_PATH}", "YOLO_CONFIG_DIR": str(image_dir / "yolo-config")},
            "workdir": str(image_dir / "workdir"),
        }},
    }
    registry.mkdir(parents=True, exist_ok=True)
    (registry / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    credentials_file.write_text(json.dumps(credentials, indent=2) + "\n")
    os.chmod(credentials_file, 0o600)
    return credentials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_stack.scoring_image", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=Path(os.environ.get("LOCAL_BATCH_REGISTRY_DIR") or DEFAULT_REGISTRY))
    parser.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    args = parser.parse_args(argv)
    credentials = build(args.registry, force=args.force)
    print(f"scoring image {credentials['image']} in {args.registry.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
