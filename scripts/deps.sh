#!/usr/bin/env bash
# Installs what gwrap's demo and tests run against, from Debian's packages: Gunicorn 20.1 and the
# Python modules the test apps use (Flask, gevent, Uvicorn), shellcheck for the shell scripts,
# Chromium to render the HTML reports, and the util-linux/procps/iproute2 tools the tests call.
#
# It also unpacks newer real Gunicorn releases for the live test matrix, without touching the
# machine's apt configuration or installed packages: Debian's python3-gunicorn from the suites in
# GWRAP_GUNICORN_SUITES (default trixie = 23.0.x and sid = 26.x) is pure Python (Architecture:
# all), so `apt-get download` (with a private sources list, derived from this machine's own Debian
# sources with only the suite changed, and a private apt state and cache) and `dpkg-deb -x` into
# $GWRAP_GUNICORN_CACHE/gunicorn-<version>/ are enough; the tests run it with bookworm's python3
# and PYTHONPATH=<dir>/usr/lib/python3/dist-packages (internal/testkit finds them). Their Depends
# (python3-packaging) are bookworm packages installed above. Needs root; quick when done.
set -euo pipefail
# prometheus provides promtool (the metrics tests check the exposition with it); tini and
# supervisor are the side-by-side references of scripts/bench.sh, wrk its load generator for the
# request-recording figures; python3-fuse (with fuse's
# fusermount) runs internal/testkit/slowfs.py, the report dir whose every write stalls.
pkgs=(gunicorn python3-flask python3-gevent python3-uvicorn python3-packaging
	shellcheck chromium util-linux procps iproute2 ca-certificates prometheus tini supervisor wrk python3-fuse)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cache="${GWRAP_GUNICORN_CACHE:-/var/cache/gwrap-test}"
suites="${GWRAP_GUNICORN_SUITES:-trixie sid}"

# shellcheck source=scripts/debian-source.sh
. "$(dirname "$0")/debian-source.sh"

for suite in $suites; do
	stamp="$cache/.suite-$suite"
	if [ -f "$stamp" ] && [ -d "$(cat "$stamp")" ]; then
		continue
	fi
	work="$cache/apt-$suite"
	mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial" "$work/etc" "$work/debs"
	: >"$work/state/status"
	if ! debian_sources_line "$suite" >"$work/etc/sources.list"; then
		echo "deps.sh: no Debian source for this release in /etc/apt; cannot fetch newer Gunicorn" >&2
		exit 1
	fi
	apt_private=(-o "Dir::Etc::SourceList=$work/etc/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
		-o "Dir::State=$work/state" -o "Dir::State::status=$work/state/status" -o "Dir::Cache=$work/cache"
		-o "APT::Architectures=amd64" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
	echo "fetching python3-gunicorn from $suite" >&2
	apt-get "${apt_private[@]}" update -qq
	rm -f "$work/debs"/*.deb
	(cd "$work/debs" && apt-get "${apt_private[@]}" download -qq python3-gunicorn)
	deb=$(ls "$work/debs"/python3-gunicorn_*.deb)
	version=$(dpkg-deb -f "$deb" Version)
	upstream=${version#*:}
	upstream=${upstream%%-*}
	upstream=${upstream%%+*}
	dest="$cache/gunicorn-$upstream"
	rm -rf "$dest.tmp"
	dpkg-deb -x "$deb" "$dest.tmp"
	dpkg-deb -f "$deb" Depends >"$dest.tmp/DEBIAN-Depends"
	echo "$version" >"$dest.tmp/DEBIAN-Version"
	rm -rf "$dest"
	mv "$dest.tmp" "$dest"
	echo "$dest" >"$stamp"
	echo "unpacked python3-gunicorn $version ($suite) into $dest; it depends on: $(cat "$dest/DEBIAN-Depends")" >&2
done
