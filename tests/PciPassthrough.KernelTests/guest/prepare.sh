#!/usr/bin/env bash
# Prepares everything the real-kernel guest needs and prints where it is:
#   PCIPT_GUEST_KERNEL=<path to the kernel: the uncompressed PVH vmlinux, else the bzImage>
#   PCIPT_GUEST_INITRAMFS=<path to the initramfs>
# (one per line on stdout; progress goes to stderr so callers can parse stdout).
#
# Idempotent and cheap when cached: packages are installed only when missing, the kernel .deb is
# downloaded and unpacked once per kernel version, and the initramfs is rebuilt only when its key
# (kernel version + this script + the guest init + busybox version) changes.
#
# Environment:
#   PCIPT_KERNEL_PACKAGE  Debian kernel package to use (e.g. linux-image-6.1.0-47-amd64-unsigned).
#                         Default: the newest linux-image-6.1.0-N-amd64-unsigned apt offers, so
#                         the harness keeps working when Debian bumps the kernel ABI and drops
#                         the old package from the mirror.
#   PCIPT_CACHE_DIR       Cache folder. Default: tests/PciPassthrough.KernelTests/.cache
set -euo pipefail

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE_DIR=$(dirname "$GUEST_DIR")
CACHE_DIR=${PCIPT_CACHE_DIR:-$SUITE_DIR/.cache}
INIT_SCRIPT=$GUEST_DIR/init

# Modules the guest loads. Their dependencies are added by modprobe --show-depends below.
#   virtio_pci, 9pnet_virtio, 9p  the two 9p shares (host root, results folder)
#   overlay                       a writable layer (tmpfs) over the read-only host root
#   vfio, vfio_iommu_type1, vfio-pci   the subject under test
#   e1000e, e1000, bochs          the host drivers the test devices start on (no udev in the
#                                 guest loads them, and a device needs a driver to restore to)
MODULES=(virtio_pci 9pnet_virtio 9p overlay vfio vfio_iommu_type1 vfio-pci e1000e e1000 bochs)

# Packages the host needs. kmod gives depmod/modprobe for the unpacked kernel tree, cpio packs
# the initramfs, xz-utils/zstd unpack compressed modules (busybox insmod in the guest is then
# independent of the compression Debian picked).
PACKAGES=(qemu-system-x86 busybox-static kmod cpio xz-utils zstd)

log() { printf 'prepare.sh: %s\n' "$*" >&2; }
die() { printf 'prepare.sh: ERROR: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
# Returns non-zero when the update fails: callers decide whether they can do without it (an
# offline machine with a warm cache can).
apt_update_once() {
  if [[ $APT_UPDATED == 0 ]]; then
    APT_UPDATED=1
    log "apt-get update"
    apt-get update -qq >&2 || { log "warning: apt-get update failed"; return 1; }
  fi
}

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    # dpkg-query is the cheap check (no lock, ~10 ms); "install ok installed" is the only
    # state in which the package's files are really there.
    if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]} and not root to install them"
    apt_update_once || true
    log "installing ${missing[*]}"
    # --no-install-recommends: qemu-system-x86 would otherwise pull a GUI stack we never use.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
}

# Prints the newest linux-image-6.1.0-N-amd64-unsigned package name apt knows about.
# apt-cache takes about a second, paid on every guest boot since run-guest.sh calls this script:
# the answer is remembered until apt's package lists change (an apt-get update that brings a
# new ABI changes them).
newest_kernel_package() {
  local memo=$CACHE_DIR/kernel-choice lists_key pkg
  lists_key=$( { stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null || true; } | md5sum)
  if [[ -f $memo && $(head -n 1 "$memo") == "$lists_key" ]]; then
    tail -n +2 "$memo"
    return
  fi
  pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null \
    | awk '{print $1}' | sort -V | tail -n 1)
  [[ -n $pkg ]] && printf '%s\n%s\n' "$lists_key" "$pkg" >"$memo"
  echo "$pkg"
}

# Prints the kernel version of the newest kernel already unpacked in the cache, if any.
newest_cached_kernel() {
  local d
  for d in "$CACHE_DIR"/kernel/*/.unpacked; do
    [[ -e $d ]] && basename "$(dirname "$d")"
  done | sort -V | tail -n 1
}

pick_kernel() {
  local pkg=${PCIPT_KERNEL_PACKAGE:-}
  if [[ -z $pkg ]]; then
    pkg=$(newest_kernel_package)
    if [[ -z $pkg ]]; then
      # Fresh machine with empty or stale package lists: look again after an update.
      apt_update_once || true
      pkg=$(newest_kernel_package)
    fi
  fi
  if [[ -z $pkg ]]; then
    # No mirror reachable: an already unpacked kernel still lets the suite run offline.
    KVER=$(newest_cached_kernel)
    [[ -n $KVER ]] || die "apt offers no linux-image-6.1.0-N-amd64-unsigned and nothing is cached"
    log "apt offers no kernel package; using cached kernel $KVER"
    return
  fi
  # linux-image-6.1.0-56-amd64-unsigned -> 6.1.0-56-amd64 (the name under /lib/modules).
  KVER=${pkg#linux-image-}
  KVER=${KVER%-unsigned}
  [[ $KVER =~ ^[0-9]+\.[0-9]+\.[0-9]+-[0-9]+-[a-z0-9]+$ ]] \
    || die "cannot derive a kernel version from package name '$pkg'"
  KPKG=$pkg
}

unpack_kernel() {
  KROOT=$CACHE_DIR/kernel/$KVER
  if [[ -e $KROOT/.unpacked ]]; then
    # A cache unpacked before the PVH kernel existed gets it now, once.
    [[ -e $KROOT/.vmlinux-checked ]] || { extract_vmlinux; touch "$KROOT/.vmlinux-checked"; }
    return
  fi
  [[ -n ${KPKG:-} ]] || die "kernel $KVER is not cached and no package name is known"
  local dl=$CACHE_DIR/download
  rm -rf "$dl" "$KROOT"
  mkdir -p "$dl" "$KROOT"
  log "downloading $KPKG (about 70 MB, once per kernel version)"
  # APT::Sandbox::User=root: as root, apt would otherwise warn that its _apt user cannot write
  # into the cache folder. Retry once after an update: the lists may predate the package.
  if ! (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download "$KPKG" >&2); then
    apt_update_once || true
    (cd "$dl" && apt-get -qq -o APT::Sandbox::User=root download "$KPKG" >&2) \
      || die "apt-get download $KPKG failed"
  fi
  local deb
  deb=$(find "$dl" -maxdepth 1 -name '*.deb' | head -n 1)
  [[ -n $deb ]] || die "apt-get download produced no .deb"
  log "unpacking $(basename "$deb")"
  dpkg -x "$deb" "$KROOT"
  [[ -f $KROOT/boot/vmlinuz-$KVER ]] || die "$deb has no boot/vmlinuz-$KVER"
  # The .deb ships no modules.dep (the postinst runs depmod on a real install).
  depmod -b "$KROOT" "$KVER"
  extract_vmlinux
  touch "$KROOT/.vmlinux-checked"
  # Only the kernel and the modules are needed later: drop the 70 MB .deb.
  rm -rf "$dl"
  touch "$KROOT/.unpacked"
  # One kernel at a time in the cache: an ABI bump would otherwise pile up 400 MB trees.
  local other
  for other in "$CACHE_DIR"/kernel/*; do
    [[ $other == "$KROOT" ]] || rm -rf "$other"
  done
}

# Writes $KROOT/boot/vmlinux-$KVER: the uncompressed ELF kernel inside the bzImage. QEMU boots
# it directly through its PVH entry point (CONFIG_PVH=y in Debian's config), which skips both
# SeaBIOS's real-mode Linux loader and the kernel's own xz decompression; under emulation that
# decompression alone takes about 2.5 s of every boot. Where it cannot be done (no PVH, unknown
# compression) nothing is written and run-guest.sh boots the bzImage as it is.
extract_vmlinux() {
  local bz=$KROOT/boot/vmlinuz-$KVER out=$KROOT/boot/vmlinux-$KVER
  rm -f "$out"
  grep -q '^CONFIG_PVH=y' "$KROOT/boot/config-$KVER" 2>/dev/null || return 0
  # x86 boot protocol: setup_sects at 0x1f1 (0 means 4); payload_offset and payload_length
  # (u32 each) at 0x248, counted from the protected-mode code after the setup sectors.
  local setup_sects payload_off payload_len base magic
  setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
  ((setup_sects)) || setup_sects=4
  read -r payload_off payload_len < <(od -An -tu4 -j $((0x248)) -N8 "$bz")
  base=$(((setup_sects + 1) * 512 + payload_off))
  magic=$(od -An -tx1 -j "$base" -N4 "$bz" | tr -d ' ')
  local unpack
  case $magic in
    fd377a58) unpack=(xz -dc --single-stream) ;;
    28b52ffd) unpack=(zstd -qdc) ;;
    1f8b*) unpack=(gzip -dc) ;;
    *) log "kernel payload compression '$magic' not handled: booting the bzImage"; return 0 ;;
  esac
  # The payload ends with the decompressed size (u32), which some decompressors call trailing
  # garbage and fail on: their status means little, so the result is checked against that size
  # and the ELF magic instead.
  local want
  want=$(od -An -tu4 -j $((base + payload_len - 4)) -N4 "$bz" | tr -d ' ')
  tail -c +$((base + 1)) "$bz" | head -c "$payload_len" | "${unpack[@]}" >"$out.tmp" 2>/dev/null || true
  if [[ $(od -An -tx1 -N4 "$out.tmp" 2>/dev/null | tr -d ' ') == 7f454c46 \
    && $(stat -c %s "$out.tmp") == "$want" ]]; then
    mv "$out.tmp" "$out"
  else
    rm -f "$out.tmp"
    log "could not extract an ELF kernel: booting the bzImage"
  fi
}

# Prints the kernel QEMU should boot: the PVH-capable ELF when there is one.
boot_kernel() {
  if [[ -f $KROOT/boot/vmlinux-$KVER ]]; then
    echo "$KROOT/boot/vmlinux-$KVER"
  else
    echo "$KROOT/boot/vmlinuz-$KVER"
  fi
}

# Copies $1 (a module path inside $KROOT) into the staging tree, decompressed.
stage_module() {
  local src=$1 stage=$2 rel dst
  rel=${src#"$KROOT"/}
  dst=$stage/$rel
  mkdir -p "$(dirname "$dst")"
  case $src in
    *.ko.xz) xz -dc "$src" >"${dst%.xz}" ;;
    *.ko.zst) zstd -qdc "$src" >"${dst%.zst}" ;;
    *.ko.gz) gzip -dc "$src" >"${dst%.gz}" ;;
    *) cp "$src" "$dst" ;;
  esac
}

build_initramfs() {
  local busybox_version key
  busybox_version=$(dpkg-query -W -f='${Version}' busybox-static)
  # The key covers everything that ends up in the image: an edited init or module list (both
  # live in files hashed here) rebuilds it, an unchanged one is reused.
  key=$( { echo "$KVER" "$busybox_version"; cat "${BASH_SOURCE[0]}" "$INIT_SCRIPT"; } \
    | sha256sum | cut -c1-16)
  INITRAMFS=$CACHE_DIR/initramfs-$KVER-$key.cpio.gz
  [[ -s $INITRAMFS ]] && return

  log "building initramfs (key $key)"
  local stage mods m line
  stage=$(mktemp -d "$CACHE_DIR/initramfs-stage.XXXXXX")
  # shellcheck disable=SC2064 # expand now: the trap must remove this very folder.
  trap "rm -rf '$stage'" EXIT

  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,mnt}
  cp /bin/busybox "$stage/bin/busybox"
  # Applet links made here, not with `busybox --install` at boot: one less step per boot.
  while read -r line; do
    [[ $line == bin/busybox ]] && continue
    ln -sf /bin/busybox "$stage/$line"
  done < <("$stage/bin/busybox" --list-full)

  # --show-depends prints the insmod lines in load order, dependencies first, and "builtin X"
  # for parts compiled into the kernel. Softdeps are not followed (the init loads
  # vfio_iommu_type1 itself for that reason), so it is listed explicitly above.
  mods=$(for m in "${MODULES[@]}"; do
    modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" || die "module $m not found in $KVER"
  done)
  while read -r line; do
    case $line in
      insmod\ *) line=${line#insmod }; stage_module "${line%% *}" "$stage" ;;
    esac
  done <<<"$mods"
  local f
  for f in modules.builtin modules.builtin.modinfo modules.order; do
    [[ -f $KROOT/lib/modules/$KVER/$f ]] && cp "$KROOT/lib/modules/$KVER/$f" "$stage/lib/modules/$KVER/"
  done
  # busybox modprobe reads the text modules.dep that depmod writes.
  depmod -b "$stage" "$KVER"

  install -m 0755 "$INIT_SCRIPT" "$stage/init"

  # newc is the only cpio format the kernel unpacks; gzip -1 because the kernel decompresses it
  # under emulation on every boot (fast to inflate, and the image is small anyway).
  local tmp=$INITRAMFS.tmp.$$
  (cd "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z \
    | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -1 >"$tmp"
  mv "$tmp" "$INITRAMFS"
  rm -rf "$stage"
  trap - EXIT
  # Older images of other keys are dead weight.
  find "$CACHE_DIR" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -path "$INITRAMFS" -delete
  log "initramfs: $(du -h "$INITRAMFS" | cut -f1)"
}

main() {
  [[ -f $INIT_SCRIPT ]] || die "missing $INIT_SCRIPT"
  mkdir -p "$CACHE_DIR"
  # Several test processes may prepare at once: one builds, the others wait and reuse.
  exec 9>"$CACHE_DIR/.lock"
  flock 9
  ensure_packages
  pick_kernel
  unpack_kernel
  build_initramfs
  echo "PCIPT_GUEST_KERNEL=$(boot_kernel)"
  echo "PCIPT_GUEST_INITRAMFS=$INITRAMFS"
}

main "$@"
