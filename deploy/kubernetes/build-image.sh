#!/usr/bin/env bash
# Build the DaemonSet's image (deploy/kubernetes/Dockerfile) and print its reference on stdout.
# Run from anywhere, as root:
#
#   deploy/kubernetes/build-image.sh [--online] [--name NAME] [--force]
#
#   offline (default)  No registry: the base is a Debian 12 root filesystem made by mmdebstrap
#                      (--variant=minbase) from Debian's packages with the Dockerfile's PACKAGES
#                      in it, imported with `podman import`; the Dockerfile's RUN steps then need
#                      no network (podman build --network=none).
#   --online           The same Dockerfile from debian:bookworm-slim on a registry (podman, or
#                      docker with OVS_MESH_ENGINE=docker; OVS_MESH_IMAGE_ONLINE_BASE names another
#                      Debian 12 base); its RUN installs PACKAGES with apt.
#
# Either way ovs-mesh comes from the wheelhouse (`./run wheels`): the pinned, hashed
# requirements/agent.txt and python-ovs compiled with its C JSON parser.  The image is tagged
# NAME:KEY (and NAME:latest), KEY being the SHA-256 of its inputs: this script, the Dockerfile,
# the pins and ovs-mesh's sources (and, offline, the base's key).  An image with the key already
# in the engine's store is not built again (--force: build anyway); the base likewise, as
# localhost/ovs-mesh-base:BASEKEY (keyed by this script and the package list: the Debian versions
# are those of the day it was made, as for the VM box).  Older NAME:KEY tags are removed.
#
# The build needs no container runtime (buildah's chroot isolation).  Debian's packages for it:
# podman, mmdebstrap (offline), and what `./run wheels` needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
NAME=localhost/ovs-mesh
ENGINE=${OVS_MESH_ENGINE:-podman}
SUITE=bookworm
MIRROR=${OVS_MESH_IMAGE_MIRROR:-http://deb.debian.org/debian}
SECURITY=${OVS_MESH_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ONLINE_BASE=${OVS_MESH_IMAGE_ONLINE_BASE:-docker.io/library/debian:bookworm-slim}

log() { echo "image build: $*" >&2; }
die() { echo "image build: error: $*" >&2; exit 1; }
usage() { echo "usage: $0 [--online] [--name NAME] [--force]" >&2; exit 2; }

online=false force=false
while (($#)); do
  case $1 in
    --online) online=true ;;
    --force) force=true ;;
    --name) [[ $# -ge 2 ]] || usage; NAME=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage ;;
  esac
  shift
done
[[ $NAME =~ ^[a-z0-9][a-z0-9._/:-]*$ && $NAME != *:*:* ]] || die "--name $NAME: not an image name (lower case, no tag)"
[[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap and the image store)"
command -v "$ENGINE" >/dev/null || die "$ENGINE: not found (apt-get install podman)"
$online || [[ $ENGINE == podman ]] || die "the offline build imports its base with podman (OVS_MESH_ENGINE=podman)"
$online || command -v mmdebstrap >/dev/null || die "mmdebstrap: not found (apt-get install mmdebstrap)"

# The Dockerfile's package list is the one list: the offline base includes exactly it.
packages=$(sed -n 's/^ARG PACKAGES="\(.*\)"$/\1/p' "$here/Dockerfile")
[[ -n $packages ]] || die "$here/Dockerfile: no ARG PACKAGES=\"...\" line"

key16() { sha256sum | cut -c1-16; }
exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

base_key=$( { echo "$SUITE $packages"; sed -n '/^make_base()/,/^}/p' "$0"; } | key16)
BASE_IMAGE=localhost/ovs-mesh-base:$base_key

make_base() {
  local work=$1 tar=$1/base.tar
  log "mmdebstrap $SUITE --variant=minbase with: $packages"
  # Documentation, manuals and translations are left out (copyright files stay); apt's lists
  # and archives are removed by mmdebstrap's cleanup.  The merged-usr hook merges /usr with
  # usr-is-merged: without it apt picks usrmerge for init-system-helpers, and with it Perl
  # (47 MB).  SOURCE_DATE_EPOCH: the same packages give the same tar.
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0} mmdebstrap --quiet --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="${packages// /,}" --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$SUITE" "$tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main" \
    >"$work/mmdebstrap.log" 2>&1 || { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tar" "$BASE_IMAGE" >/dev/null
  rm -f "$tar"
}

# What ovs-mesh's wheel is built from: the packages' sources and the install metadata.
sources_hash() {
  (cd "$repo" && find ovs_mesh topology ovsdb_client setup.cfg pyproject.toml requirements/agent.txt \
     requirements/pins.sh -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null \
   | sort -z | xargs -0 sha256sum) | key16
}

if $online; then base=$ONLINE_BASE; else base=$BASE_IMAGE; fi
key=$( { echo "$base"; cat "$0" "$here/Dockerfile"; sources_hash; } | key16)
image=$NAME:$key

if ! $force && exists "$image"; then
  log "$image is up to date (cached)"
  echo "$image"
  exit 0
fi

# With --force the tags move to new images: the ones they named go at the end.
replaced=()
for ref in "$image" "$BASE_IMAGE"; do
  id=$("$ENGINE" image inspect --format '{{.Id}}' "$ref" 2>/dev/null) && replaced+=("$id")
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ovs-mesh-image.XXXXXX")
trap 'rm -rf --one-file-system "$work"' EXIT
trap 'exit 1' INT TERM
start=$SECONDS

if ! $online && { $force || ! exists "$BASE_IMAGE"; }; then
  make_base "$work"
  log "base $BASE_IMAGE made in $((SECONDS - start)) s"
fi

log "wheelhouse (./run wheels)"
"$repo/run" wheels "$work/context/wheels" >"$work/wheels.log" 2>&1 || { cat "$work/wheels.log" >&2; die "./run wheels failed"; }

# --layers=false: the key above is the cache; intermediate layers would only pile up in the store.
build=("$ENGINE" build --layers=false --file "$here/Dockerfile" --tag "$image" --build-arg "BASE=$base"
       --label "org.ovs-mesh.build-key=$key")
if $online; then
  [[ $ENGINE == podman ]] && build+=(--isolation=chroot)
else
  build+=(--isolation=chroot --pull=never)
fi
log "${build[*]} (from $base)"
"${build[@]}" "$work/context" >&2
"$ENGINE" tag "$image" "$NAME:latest"

# Earlier builds of NAME (other keys) go, and earlier bases; this key's base stays.
prune() {   # REPOSITORY KEEP...: remove the repository's other tags
  local repo=$1; shift
  local keep=(); for k in "$@"; do keep+=(-e "$k"); done
  "$ENGINE" images --format '{{.Repository}}:{{.Tag}}' "$repo" 2>/dev/null \
    | { grep -v -x "${keep[@]}" || true; } | while read -r old; do
      "$ENGINE" rmi "$old" >/dev/null 2>&1 || true
    done
}
prune "$NAME" "$image" "$NAME:latest"
$online || prune localhost/ovs-mesh-base "$BASE_IMAGE"

for id in "${replaced[@]}"; do
  [[ $("$ENGINE" image inspect --format '{{.Id}}' "$image") == "$id" ]] && continue
  [[ $("$ENGINE" image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) == "$id" ]] && continue
  "$ENGINE" rmi "$id" >/dev/null 2>&1 || true
done

size=$("$ENGINE" image inspect --format '{{.Size}}' "$image")
log "$image built in $((SECONDS - start)) s, $((size / 1000000)) MB"
echo "$image"
