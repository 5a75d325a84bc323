#!/usr/bin/env bash
# gwrap in a real container engine, as its users run it: Debian's podman as root, with runc and the
# cgroupfs manager (these machines run no systemd, and crun refuses their hybrid cgroup layout),
# overlay storage and the file events logger. No image registry is needed: the base image is made
# from Debian's packages (mmdebstrap, the machine's own mirror) and the Go image from the machine's
# own Go toolchain.
#
#   scripts/container.sh setup          install and configure podman (idempotent)
#   scripts/container.sh base           the base image: Debian bookworm minbase with Gunicorn, Flask,
#                                       curl, procps (cached in $GWRAP_CONTAINER_CACHE, keyed by its
#                                       package list; prints its name)
#   scripts/container.sh image          setup, base, the Dockerfile's gwrap-build stage built for real
#                                       (podman build --target gwrap-build), then the test image: the
#                                       base plus gwrap added as README tells users (prints its name)
#   scripts/container.sh save FILE      the test image as an archive for `podman load`
#   scripts/container.sh guest-config DIR   podman's config and storage under DIR, for the cgroup v2
#                                       guest (scripts/v2vm.sh): crun, the same settings as here;
#                                       prints the CONTAINERS_* variables to export
#
# The Go image is tagged docker.io/library/golang:<Go's major.minor>-bookworm so that the
# Dockerfile's FROM resolves without a pull (builds use --pull=never): on a machine that also
# pulls the real golang image, the tag is replaced. It holds this machine's Go tree and this
# machine's CA bundle, so that `go mod download` inside the build reaches the module proxy through
# whatever TLS-inspecting egress the machine trusts.
#
# Each step says on stderr how long it took. Needs root.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=scripts/debian-source.sh
. scripts/debian-source.sh

cache=${GWRAP_CONTAINER_CACHE:-/var/cache/gwrap-container}
suite=bookworm
# What the test apps need (Debian's Gunicorn 20.1 and Flask, as the demo app), curl for checks
# from inside, procps for ps/top when looking at a container by hand.
base_pkgs=gunicorn,python3-gunicorn,python3-flask,curl,procps
# Smaller images: no manuals, translations or docs (copyrights kept); /usr merged by mmdebstrap's
# hook rather than by the usrmerge package, which would pull Perl in.
mmdebstrap_opts=(--variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
	--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright')
test_image=localhost/gwrap-test:latest
build_image=localhost/gwrap-build:latest

say() { echo "container.sh: $*" >&2; }

# timed NAME CMD...: runs CMD and says how long it took.
timed() {
	local name=$1 start=$SECONDS
	shift
	"$@"
	say "$name: $((SECONDS - start)) s"
}

# engine_conf RUNTIME prints podman's settings for gwrap's tests: no systemd (cgroupfs manager, a
# file for events), ulimits these machines allow (podman's defaults are above them; nproc must stay
# ≤ 32768), the k8s-file log driver (podman logs reads it back without journald).
engine_conf() {
	cat <<EOF
# Written by gwrap's scripts/container.sh.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
[engine]
runtime = "$1"
cgroup_manager = "cgroupfs"
events_logger = "file"
network_backend = "netavark"
EOF
}

# write_if_changed FILE: stdin into FILE unless it already holds exactly that.
write_if_changed() {
	local tmp
	tmp=$(mktemp)
	cat >"$tmp"
	if cmp -s "$tmp" "$1"; then
		rm -f "$tmp"
		return
	fi
	mkdir -p "$(dirname "$1")"
	mv "$tmp" "$1"
	chmod 644 "$1"
	say "wrote $1"
}

setup() {
	# runc here; crun for the cgroup v2 guest, which runs this machine's binaries. netavark and
	# iptables publish ports (-p); containers-common would pick the older CNI plugins otherwise.
	local pkgs=(podman runc crun conmon netavark aardvark-dns iptables mmdebstrap) missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		say "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get -o DPkg::Lock::Timeout=600 update -qq
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	engine_conf runc | write_if_changed /etc/containers/containers.conf.d/50-gwrap.conf
}

# base_name prints the base image's name: its tag is a hash of what goes into it.
base_name() {
	local key
	key=$(printf '%s\n' "$suite" "$base_pkgs" "${mmdebstrap_opts[@]}" | sha256sum | cut -c1-12)
	echo "localhost/gwrap-base:$key"
}

base() {
	local name tar line
	name=$(base_name)
	if podman image exists "$name"; then
		echo "$name"
		return
	fi
	tar="$cache/base-${name##*:}.tar"
	if [ ! -f "$tar" ]; then
		line=$(debian_sources_line "$suite") || { say "no Debian source for $suite in /etc/apt"; exit 1; }
		mkdir -p "$cache"
		rm -f "$cache"/base-*.tar "$cache"/base-*.tar.tmp
		say "building the base image with mmdebstrap ($base_pkgs)"
		if ! mmdebstrap --format=tar "${mmdebstrap_opts[@]}" --include="$base_pkgs" "$suite" "$tar.tmp" "$line" >"$cache/mmdebstrap.log" 2>&1; then
			tail -n 30 "$cache/mmdebstrap.log" >&2
			say "mmdebstrap failed (its whole log: $cache/mmdebstrap.log)"
			exit 1
		fi
		mv "$tar.tmp" "$tar"
	fi
	podman import --quiet --change 'CMD ["/bin/bash"]' "$tar" "$name" >/dev/null
	echo "$name"
}

# go_image BASE: the Go image the Dockerfile's build stage starts FROM, made from this machine's Go
# tree (/usr/local/go or wherever `go env GOROOT` is) on the base image; rebuilt when Go changes.
# Prints the Go version (major.minor) it is tagged with.
go_image() {
	local goroot version minor name ctx
	goroot=$(go env GOROOT)
	version=$(go env GOVERSION)
	minor=$(echo "${version#go}" | cut -d. -f1,2)
	name="docker.io/library/golang:$minor-bookworm"
	if [ "$(podman image inspect --format '{{index .Labels "gwrap.go"}}' "$name" 2>/dev/null)" = "$version $1" ]; then
		echo "$minor"
		return
	fi
	ctx=$(mktemp -d)
	# Hard links when the Go tree is on the same file system (no copy), else a copy.
	cp -al "$goroot" "$ctx/go" 2>/dev/null || cp -a "$goroot" "$ctx/go"
	cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
	cat >"$ctx/Containerfile" <<EOF
FROM $1
COPY go /usr/local/go
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GOLANG_VERSION=${version#go} GOPATH=/go GOTOOLCHAIN=local \
	PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /go
LABEL gwrap.go="$version $1"
EOF
	say "making $name from this machine's $version"
	podman build --quiet --pull=never -t "$name" "$ctx" >/dev/null
	rm -rf "$ctx"
	echo "$minor"
}

image() {
	local b minor
	timed setup setup
	b=$(timed "base image" base)
	minor=$(timed "Go image" go_image "$b")
	# The Dockerfile's first stage, exactly as it is; only the Go version follows this machine's.
	timed "Dockerfile --target gwrap-build" podman build --quiet --pull=never --target gwrap-build \
		--build-arg GO_VERSION="$minor" --build-arg GWRAP_VERSION="$(git describe --always --dirty 2>/dev/null || echo dev)" \
		-t "$build_image" . >/dev/null
	timed "test image" podman build --quiet --pull=never --build-arg BASE="$b" --build-arg GWRAP_BUILD="$build_image" \
		-f scripts/container/Containerfile -t "$test_image" . >/dev/null
	# The images these builds replaced (each commit changes the build stage's COPY . .): the
	# build cache (the layers up to go mod download) stays, as the tagged images hold it.
	podman image prune --force >/dev/null
	say "$test_image: $(podman image inspect --format '{{.Size}}' "$test_image") bytes"
	echo "$test_image"
}

# guest_config DIR: podman's configuration for the cgroup v2 guest, whose root file system is
# read-only: storage, run state and temp files under DIR (a tmpfs there). CONTAINERS_CONF replaces
# the host's configuration, so the settings are repeated, with crun (pure cgroup v2).
guest_config() {
	mkdir -p "$1/storage" "$1/run" "$1/tmp" "$1/networks"
	engine_conf crun >"$1/containers.conf"
	cat >>"$1/containers.conf" <<EOF
tmp_dir = "$1/run/libpod"
volume_path = "$1/storage/volumes"
image_copy_tmp_dir = "$1/tmp"
[network]
network_config_dir = "$1/networks"
EOF
	cat >"$1/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$1/storage"
runroot = "$1/run"
EOF
	echo "export CONTAINERS_CONF=$1/containers.conf CONTAINERS_STORAGE_CONF=$1/storage.conf TMPDIR=$1/tmp"
}

case "${1:-image}" in
setup) setup ;;
base) setup && base ;;
image) image ;;
save)
	[ $# -eq 2 ] || { echo "usage: $0 save FILE" >&2; exit 2; }
	rm -f "$2" # podman save refuses to replace an archive
	timed "podman save" podman save --quiet -o "$2" "$test_image"
	;;
guest-config)
	[ $# -eq 2 ] || { echo "usage: $0 guest-config DIR" >&2; exit 2; }
	guest_config "$2"
	;;
*) sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
