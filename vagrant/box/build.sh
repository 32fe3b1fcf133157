#!/usr/bin/env bash
# Build the Debian 12 box `ovs-mesh/bookworm` for vagrant-libvirt from Debian packages only,
# and add it to Vagrant. Run as root:   vagrant/box/build.sh [--force]
#
#   1. mmdebstrap: a bookworm root filesystem with the cloud kernel, systemd, openssh-server,
#      sudo, rsync, Open vSwitch, the reference CNI plugins, python3-venv, iproute2, nftables,
#      ping, iperf3, tcpdump, WireGuard's tools, Open vSwitch's IPsec monitor with strongSwan
#      (the list is in packages.txt), a `vagrant` user with Vagrant's insecure
#      public key (shipped in Debian's vagrant package), systemd-networkd with DHCP on eth0.
#   2. A bootable disk, made without mounting anything: an MBR with SYSLINUX's boot code,
#      partition 1 FAT (SYSLINUX, kernel, initrd), partition 2 ext4 (the root, mkfs.ext4 -d),
#      converted to qcow2. It boots by itself under any BIOS hypervisor.
#   3. box.img + metadata.json + Vagrantfile in a tar: the libvirt box format; then
#      `vagrant box add --name ovs-mesh/bookworm`.
#
# The result is cached in $OVS_MESH_BOX_CACHE (default /var/cache/ovs-mesh/box), keyed by the
# SHA-256 of the recipe (this directory's files): it is rebuilt only when the recipe changes,
# and re-added only when the added box comes from another recipe. A fresh clone reuses it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
NAME=ovs-mesh/bookworm
CACHE=${OVS_MESH_BOX_CACHE:-/var/cache/ovs-mesh/box}
SUITE=bookworm
MIRROR=${OVS_MESH_BOX_MIRROR:-http://deb.debian.org/debian}
SECURITY=${OVS_MESH_BOX_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ROOT_SIZE=4G        # virtual size of the root partition (qcow2: only what is used takes space)
BOOT_MIB=64
VAGRANT_PUB=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1)

log() { echo "box build: $*" >&2; }
die() { echo "box build: error: $*" >&2; exit 1; }
force=false
case ${1:-} in --force) force=true ;; "") ;; *) echo "usage: $0 [--force]" >&2; exit 2 ;; esac
[[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap makes a root filesystem owned by root)"
[[ -n $VAGRANT_PUB ]] || die "Vagrant's insecure key not found: install Debian's vagrant package"
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy syslinux sfdisk qemu-img vagrant; do
  command -v "$tool" >/dev/null || die "$tool: not found (the apt-get line in vagrant/README.md installs what the build needs)"
done

recipe=$(cd "$here" && cat build.sh customize.sh packages.txt | sha256sum | cut -c1-16)
out=$CACHE/$recipe
box=$out/ovs-mesh-bookworm.box

build() {
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf --one-file-system "$work"' EXIT
  trap 'exit 1' INT TERM
  local root=$work/root
  local packages; packages=$(grep -v '^#' "$here/packages.txt" | xargs | tr ' ' ,)
  log "mmdebstrap $SUITE ($packages)"
  # Each hook runs on the host with the root directory as $1.
  mmdebstrap --variant=minbase --include="$packages" \
    --aptopt='Acquire::Retries "3"' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="cp '$VAGRANT_PUB' \"\$1/tmp/vagrant.pub\"" \
    --customize-hook="cp '$here/customize.sh' \"\$1/tmp/customize.sh\" && chroot \"\$1\" sh /tmp/customize.sh && rm \"\$1/tmp/customize.sh\" \"\$1/tmp/vagrant.pub\"" \
    "$SUITE" "$root" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY $SUITE-security main"

  log "disk: MBR + FAT (SYSLINUX, kernel, initrd) + ext4 root"
  local kernel initrd
  kernel=$(ls "$root"/boot/vmlinuz-* 2>/dev/null | tail -n1)
  initrd=$(ls "$root"/boot/initrd.img-* 2>/dev/null | tail -n1)
  [[ -f $kernel && -f $initrd ]] || die "no kernel or initrd in $root/boot"
  local fat=$work/boot.fat ext=$work/root.ext4 raw=$work/disk.raw
  mkfs.vfat -C -n OVSBOOT -h 2048 "$fat" $((BOOT_MIB * 1024)) >/dev/null
  syslinux --install "$fat"
  # no_timer_check: under software emulation on a busy host the kernel's IO-APIC timer check fails
  # ("IO-APIC + timer doesn't work!", a panic at 0.07 s; seen here), as cloud images know.
  cat >"$work/syslinux.cfg" <<CFG
DEFAULT debian
TIMEOUT 1
PROMPT 0
LABEL debian
  KERNEL /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=ovs-root ro net.ifnames=0 no_timer_check console=tty0 console=ttyS0,115200
CFG
  mcopy -o -i "$fat" "$kernel" ::/vmlinuz
  mcopy -o -i "$fat" "$initrd" ::/initrd.img
  mcopy -o -i "$fat" "$work/syslinux.cfg" ::/syslinux.cfg
  mkfs.ext4 -q -L ovs-root -d "$root" "$ext" "$ROOT_SIZE"
  rm -rf "$root"
  local boot_start=2048 boot_sectors=$((BOOT_MIB * 2048))
  local root_start=$((boot_start + boot_sectors))
  truncate -s $(( (root_start * 512) + $(stat -c %s "$ext") )) "$raw"
  printf 'label: dos\nstart=%d, size=%d, type=6, bootable\nstart=%d, type=83\n' \
    "$boot_start" "$boot_sectors" "$root_start" | sfdisk -q "$raw"
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
  dd if="$fat" of="$raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$ext" of="$raw" bs=1M seek=$((1 + BOOT_MIB)) conv=notrunc,sparse status=none
  rm -f "$fat" "$ext"

  log "box: qcow2 + metadata.json + Vagrantfile"
  local boxdir=$work/box
  mkdir -p "$boxdir"
  qemu-img convert -O qcow2 "$raw" "$boxdir/box.img"
  rm -f "$raw"
  local gib; gib=$(( ($(qemu-img info --output=json "$boxdir/box.img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') + (1 << 30) - 1) >> 30 ))
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$gib" >"$boxdir/metadata.json"
  cat >"$boxdir/Vagrantfile" <<'VF'
# ovs-mesh/bookworm: Debian 12 built by ovs-mesh's vagrant/box/build.sh from Debian packages.
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
  end
end
VF
  echo "$recipe" >"$boxdir/recipe"
  mkdir -p "$out"
  tar -C "$boxdir" -cf "$box.tmp" metadata.json Vagrantfile recipe box.img
  mv "$box.tmp" "$box"
  # Older recipes' boxes are of no further use.
  find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$recipe" ! -name 'build.*' -exec rm -rf {} +
}

mkdir -p "$CACHE"
if $force || [[ ! -f $box ]]; then
  start=$SECONDS
  build
  log "built $box in $((SECONDS - start)) s"
else
  log "cached: $box (recipe $recipe)"
fi

# Add it unless the added box is this very recipe.
boxes_dir=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${NAME//\//-VAGRANTSLASH-}
added=$(cat "$boxes_dir"/0/libvirt/recipe 2>/dev/null || true)
if [[ $added != "$recipe" ]]; then
  log "vagrant box add $NAME (recipe $recipe)"
  vagrant box add --force --name "$NAME" --provider libvirt "$box" >/dev/null
  # vagrant-libvirt names its upload into the storage pool after the box's add time: a re-added
  # box gets a fresh volume, and running VMs keep the old one as their backing file.
fi
echo "$NAME $recipe $box"
