#!/bin/sh
# docker/buildah-check.sh BUNDLE MODEL: build Dockerfile for real without a Docker daemon or Docker Hub, then serve
# BUNDLE (calibrated) with MODEL from the image and check it (docs/service.md, "Docker"). Needs root, Debian's
# debootstrap and buildah packages, and network to Debian and PyPI; about 5 minutes; not part of `make test`.
# The base image python:3.11-slim is stood in for by Debian bookworm (its Python is 3.11) made with debootstrap,
# carrying the host's CA bundle for networks that intercept TLS.
set -eu
bundle=$(realpath "$1")
model=$(realpath "$2")
repo=$(cd "$(dirname "$0")/.." && pwd)
port=${PORT:-18731}
work=$(mktemp -d /tmp/artlens-buildah.XXXXXX)
b="buildah --storage-driver vfs"

debootstrap --variant=minbase --include=python3.11 bookworm "$work/base" http://deb.debian.org/debian >"$work/debootstrap.log"
cp /etc/resolv.conf "$work/base/etc/resolv.conf"
chroot "$work/base" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-venv \
  >/dev/null && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb'
cp /etc/ssl/certs/ca-certificates.crt "$work/base/etc/ssl/certs/host-ca.crt"
ctr=$($b from scratch)
cp -a "$work/base/." "$($b mount "$ctr")/"
$b umount "$ctr" >/dev/null
$b config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env PIP_CERT=/etc/ssl/certs/host-ca.crt --env SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt "$ctr"
$b commit -q "$ctr" localhost/python:3.11-slim >/dev/null
$b rm "$ctr" >/dev/null

(cd "$repo" && $b bud -q --format docker --pull=never --isolation chroot -f Dockerfile -t localhost/artlens:check .) >"$work/bud.log"

# buildah's chroot isolation mishandles two -v mounts at once: one folder holds both volumes.
mkdir -p "$work/vol/bundles" "$work/vol/models"
cp -r "$bundle" "$work/vol/bundles/b"
cp -r "$model" "$work/vol/models/model"
chmod -R a+rwX "$work/vol"
ctr=$($b from -q --pull=never localhost/artlens:check)
$b config --env ARTLENS_PORT="$port" --env ARTLENS_INDEX=/vol/bundles/b --env ARTLENS_MODEL=/vol/models/model "$ctr"
$b run --isolation chroot -v "$work/vol:/vol" "$ctr" -- artlens serve >"$work/serve.log" 2>&1 &
runner=$!
status=0
python3 - "$port" "$work/vol/bundles/b/artworks.json" <<'PY' || status=1
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
first = json.load(open(sys.argv[2]))[0]["object_id"]
for _ in range(180):
    try:
        ready = json.load(urllib.request.urlopen(f"{base}/ready", timeout=5))
        break
    except OSError:
        time.sleep(1)
else:
    sys.exit("the image's service never became ready")
with urllib.request.urlopen(f"{base}/v1/artworks/{first}/image", timeout=30) as resp:
    body = resp.read()
    assert resp.status == 200 and body[:3] == b"\xff\xd8\xff", resp.status
print(f"ready: {ready['artworks']} artworks on {ready['execution_provider']}; {first} image: {len(body)} bytes")
PY
$b run --isolation chroot "$ctr" -- python /opt/artlens/healthcheck.py || status=1
if $b run --isolation chroot "$ctr" -- python -c "import torch" 2>/dev/null; then echo "torch is in the image"; status=1; fi
kill "$runner" 2>/dev/null || true
wait "$runner" 2>/dev/null || true
$b rm "$ctr" >/dev/null
echo "buildah-check: $( [ $status = 0 ] && echo passed || echo FAILED ) (logs in $work)"
exit $status
