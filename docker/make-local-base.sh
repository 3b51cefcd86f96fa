#!/usr/bin/env bash
# Make a local stand-in for the image's default base (python:3.11-slim-bookworm) where no image
# registry can be reached: a minimal Debian bookworm root (mmdebstrap, from the Debian mirror apt
# uses) with Debian's Python 3.11 and venv, committed into buildah's storage as IMAGE.  The CA
# certificates this host added (/usr/local/share/ca-certificates: a site's TLS proxy) are trusted
# there too, and pip is pointed at the system bundle, so the build reaches the index as the host does.
#   bash docker/make-local-base.sh [IMAGE]     (root; default localhost/sparkml-scale-base:bookworm-py311)
# Then: buildah bud --storage-driver vfs --isolation chroot --build-arg BASE_IMAGE=IMAGE \
#         --ignorefile docker/Dockerfile.dockerignore -f docker/Dockerfile -t sparkml-scale .
set -euo pipefail
image=${1:-localhost/sparkml-scale-base:bookworm-py311}
storage=(--storage-driver "${STORAGE_DRIVER:-vfs}")
if buildah "${storage[@]}" inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image exists"; exit 0
fi
command -v mmdebstrap >/dev/null || { echo "make-local-base: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
work=$(mktemp -d)
ctr=
cleanup() { [ -n "$ctr" ] && buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
hooks=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  # shellcheck disable=SC2016  # "$1" is the root folder mmdebstrap passes to the hook
  hooks=(--customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share'
         --customize-hook='chroot "$1" update-ca-certificates')
fi
mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' "${hooks[@]}" bookworm "$work/rootfs.tar"
ctr=$(buildah "${storage[@]}" from scratch)
buildah "${storage[@]}" add "$ctr" "$work/rootfs.tar" /
buildah "${storage[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python3 "$ctr"
buildah "${storage[@]}" commit --rm "$ctr" "$image"
ctr=
echo "made $image"
