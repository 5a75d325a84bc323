#!/usr/bin/env bash
# Installs what gwrap's demo and tests run against, from Debian's packages: Gunicorn 20.1 and the
# Python modules the test apps use, shellcheck for the shell scripts, Chromium to render the HTML
# reports, and the util-linux/procps/iproute2 tools the tests call. Needs root; quick when done.
set -euo pipefail
pkgs=(gunicorn python3-flask python3-gevent python3-uvicorn shellcheck chromium util-linux procps iproute2 ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "installing: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
