#!/usr/bin/env bash
# Fetch the real development chest CT lung1 (pyradiomics 3.0.1 source archive, BSD-3-Clause) into
# .cache/realct/lung1_image.nrrd. Never committed: .cache/ is ignored. Only lung1 is used from the archive.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=.cache/realct
[ -f "$out/lung1_image.nrrd" ] && { echo "$out/lung1_image.nrrd"; exit 0; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The sdist's metadata step imports numpy and needs wheel: the project's venv has both.
.venv/bin/python -m pip download -q --no-deps --no-build-isolation --no-binary :all: pyradiomics==3.0.1 -d "$tmp"
tar -xzf "$tmp/pyradiomics-3.0.1.tar.gz" -C "$tmp" pyradiomics-3.0.1/data/lung1_image.nrrd
# The scan the project's real-CT figures were measured on, byte for byte.
echo "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed  $tmp/pyradiomics-3.0.1/data/lung1_image.nrrd" | sha256sum --check --quiet - \
  || { echo "fetch_realct: lung1_image.nrrd differs from the expected file; not installed" >&2; exit 1; }
mv "$tmp/pyradiomics-3.0.1/data/lung1_image.nrrd" "$out/"
echo "$out/lung1_image.nrrd"
