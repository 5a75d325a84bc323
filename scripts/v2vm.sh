#!/usr/bin/env bash
# Runs a command as root in a small Linux guest whose cgroups are v2 with the memory controller —
# what current Kubernetes nodes, Docker hosts and PaaS run, and what a cgroup v1 machine cannot
# show. The guest is Debian's own packaged kernel (the unsigned linux-image of what
# linux-image-amd64 names) booted by qemu with software emulation; its root file system is this
# machine's `/`, read-only over 9p (so python3, gunicorn and binaries built here are all there),
# entered with switch_root; /tmp, /run and /dev/shm are fresh tmpfs; cgroup2 is mounted at
# /sys/fs/cgroup with +memory +cpu +pids delegated to children; the overlay module is loaded (a
# container engine's storage on a tmpfs); the loopback is up. $V2VM_XCHG (a directory here,
# default a new temp dir) is mounted read-write at /tmp/xchg in the guest ($XCHG there) to bring
# files in and out.
#
#   scripts/v2vm.sh --build                    # only build the guest (kernel + initramfs), cached
#   V2VM_XCHG=/tmp/x scripts/v2vm.sh 'cat /sys/fs/cgroup/cgroup.controllers > $XCHG/out'
#
# Prints the guest's console; exits with the command's exit status (124 on timeout). Code runs
# several times slower than here: judge memory, OOM and cgroup behaviour in it, never CPU speed.
# Needs root. Installs qemu-system-x86 and busybox-static and downloads the kernel package on
# first use; the guest is cached in $V2VM_CACHE (default /var/cache/gwrap-v2vm) and rebuilt only
# when the kernel package or this script's init changes. Knobs: V2VM_MEM (MiB, 1024),
# V2VM_CPUS (2), V2VM_TIMEOUT (seconds, 600).
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,21p' "$0"; exit 2; }
cache=${V2VM_CACHE:-/var/cache/gwrap-v2vm}
mem=${V2VM_MEM:-1024} cpus=${V2VM_CPUS:-2} limit=${V2VM_TIMEOUT:-600}

# The tools: qemu, and a static busybox for the initramfs (Debian's /bin/busybox may be dynamic).
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
	echo "v2vm: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The init the guest runs: modules, mounts, cgroup2 with the controllers delegated, the command.
# @MODS@ is filled in with the module load order; the command comes base64-encoded on the kernel
# command line (v2cmd=), and the time from power-on to the command is printed ("v2vm: ready").
read -r -d '' init <<'INIT' || true
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in @MODS@; do insmod /mod/$m.ko || { echo "v2vm: insmod $m failed"; poweroff -f; }; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /newroot || { echo "v2vm: 9p mount failed"; poweroff -f; }
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys; mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/shm /newroot/dev/pts; mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmp /newroot/tmp; mount -t tmpfs run /newroot/run; mount -t tmpfs shm /newroot/dev/shm
mkdir -p /newroot/tmp/xchg; mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 xchg /newroot/tmp/xchg
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
echo "+memory +cpu +pids" > /newroot/sys/fs/cgroup/cgroup.subtree_control
ip link set lo up
cmd=$(sed -n 's/.* v2cmd=\([^ ]*\).*/\1/p' /proc/cmdline | base64 -d)
echo "v2vm: kernel $(uname -r), cgroup2 controllers: $(cat /newroot/sys/fs/cgroup/cgroup.controllers)"
echo "v2vm: ready $(cut -d' ' -f1 /proc/uptime)s after boot"
# switch_root, not chroot: the command's root is the real root of the mount namespace, so that
# entering a container's namespaces (podman exec, nsenter) lands in the container. The command's
# shell is PID 1 then: it reports the status and powers off with the host's static busybox.
exec switch_root /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp XCHG=/tmp/xchg \
	/bin/sh -c '/bin/sh -c "$0"; echo "v2vm: exit $?"; /bin/busybox poweroff -f' "$cmd"
INIT

# The kernel package: the unsigned variant of what linux-image-amd64 depends on (9p and virtio
# are modules there). Its name, the modules and this script's init key the cache.
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9.]*-[0-9]*-amd64\)$/\1/p' | head -1; }
kernel=$(kpkg)
[ -n "$kernel" ] || { apt-get update -qq; kernel=$(kpkg); }
[ -n "$kernel" ] || { echo "v2vm: apt knows no linux-image-amd64" >&2; exit 1; }
# virtio-pci and 9p for the root file system; overlay for a container engine's storage on a tmpfs.
modules="virtio_pci 9pnet_virtio 9p overlay"
key=$(printf '%s\n%s\n%s\n' "$kernel" "$modules" "$init" | sha256sum | cut -c1-16)

if [ "$(cat "$cache/key" 2>/dev/null)" != "$key" ] || [ ! -f "$cache/vmlinuz" ] || [ ! -f "$cache/initrd.gz" ]; then
	echo "v2vm: building the guest from $kernel-unsigned into $cache" >&2
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	mkdir -p "$work/k" "$work/ird"/{bin,mod,newroot,proc,sys,dev}
	(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root "$kernel-unsigned")
	dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
	cp /bin/busybox "$work/ird/bin/busybox"
	# The modules with their dependencies, in load order (each module's depends= field).
	mods=""
	add() {
		case " $mods " in *" $1 "*) return ;; esac
		local f d
		f=$(find "$work/k/lib/modules" \( -name "$1.ko" -o -name "$1.ko.xz" \) | head -1)
		[ -n "$f" ] || { echo "v2vm: module $1 missing from $kernel" >&2; exit 1; }
		case "$f" in *.xz) xz -dc "$f" >"$work/ird/mod/$1.ko" ;; *) cp "$f" "$work/ird/mod/$1.ko" ;; esac
		for d in $(grep -a -o 'depends=[a-z0-9_,-]*' "$work/ird/mod/$1.ko" | head -1 | sed 's/^depends=//' | tr ',' ' '); do add "$d"; done
		mods="$mods $1"
	}
	for m in $modules; do add "$m"; done
	printf '%s\n' "${init//@MODS@/${mods# }}" >"$work/ird/init"
	chmod +x "$work/ird/init"
	(cd "$work/ird" && find . | ./bin/busybox cpio -o -H newc 2>/dev/null | gzip >"$work/initrd.gz")
	mkdir -p "$cache"
	cp "$work"/k/boot/vmlinuz-* "$cache/vmlinuz.new" && mv "$cache/vmlinuz.new" "$cache/vmlinuz"
	cp "$work/initrd.gz" "$cache/initrd.gz.new" && mv "$cache/initrd.gz.new" "$cache/initrd.gz"
	echo "$key" >"$cache/key"
fi
[ "$1" = --build ] && exit 0

xchg=${V2VM_XCHG:-$(mktemp -d "${TMPDIR:-/tmp}/v2vm-xchg.XXXXXX")}
mkdir -p "$xchg"
echo "v2vm: /tmp/xchg in the guest is $xchg here" >&2
cmd=$(printf '%s' "$*" | base64 -w0)
log=$(mktemp)
set +e
timeout "$limit" qemu-system-x86_64 -accel tcg -cpu max -m "$mem" -smp "$cpus" -nographic -no-reboot \
	-kernel "$cache/vmlinuz" -initrd "$cache/initrd.gz" -append "console=ttyS0 quiet panic=-1 v2cmd=$cmd" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs local,path="$xchg",mount_tag=xchg,security_model=none,multidevs=remap </dev/null 2>&1 |
	tee "$log" | tr -d '\r' | grep -av 'SeaBIOS\|iPXE\|Booting from ROM\|Press Ctrl-B\|\[?7l\|^$'
rc=${PIPESTATUS[0]}
set -e
code=$(tr -d '\r' <"$log" | sed -n 's/^v2vm: exit \([0-9]*\)$/\1/p' | tail -1)
rm -f "$log"
[ "$rc" = 124 ] && { echo "v2vm: timed out after ${limit}s" >&2; exit 124; }
exit "${code:-1}"
