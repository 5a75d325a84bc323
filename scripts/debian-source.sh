# shellcheck shell=bash
# The machine's own Debian mirror, for scripts that fetch Debian packages without touching the
# machine's apt configuration (deps.sh: newer Gunicorn releases; container.sh: the base image).
# No host name is written into the repo: it is read from /etc/apt. Source this file.

# debian_source prints "URI|COMPONENTS|SIGNED-BY" of the machine's main Debian source: the entry
# whose suite is this release's codename (not -updates or -security), from deb822 .sources files
# or one-line sources.list entries.
debian_source() {
	local codename f
	codename=$(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v cn="$codename" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " cn " ") && uri != "") {
					print uri "|" comps "|" key; found = 1; exit
				}
				types = ""; suites = ""; uri = ""; comps = ""; key = ""
			}
			/^[ \t]*$/ { flush(); next }
			/^[ \t]*#/ { next }
			/^Types:/ { sub(/^Types:[ \t]*/, ""); types = $0 }
			/^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, " "); uri = u[1] }
			/^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
			/^Components:/ { sub(/^Components:[ \t]*/, ""); comps = $0 }
			/^Signed-By:/ { sub(/^Signed-By:[ \t]*/, ""); key = $0 }
			END { if (!found) flush() }
		' "$f" | head -n1
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		# deb [options] URI SUITE COMPONENTS...
		sed -E 's/\[[^]]*\]//' "$f" | awk -v cn="$codename" '
			$1 == "deb" && $3 == cn { c = $4; for (i = 5; i <= NF; i++) c = c " " $i; print $2 "|" c "|"; exit }'
	done
}

# debian_sources_line SUITE prints a one-line sources.list entry for SUITE from the machine's main
# Debian source (its URI, components and key; amd64), or fails when there is none.
debian_sources_line() {
	local src uri rest comps key opts
	src=$(debian_source | head -n1)
	[ -n "$src" ] || return 1
	uri=${src%%|*}
	rest=${src#*|}
	comps=${rest%%|*}
	key=${rest#*|}
	opts="arch=amd64"
	[ -z "$key" ] || opts="$opts signed-by=$key"
	echo "deb [$opts] $uri $1 $comps"
}
