#!/bin/sh
# gwrap's container entrypoint: builds the Gunicorn command and execs gwrap as PID 1.
#
#   entrypoint.sh                      gunicorn $APP_MODULE (default app:app) with container defaults
#   entrypoint.sh app:app --workers 3  gunicorn with these arguments, plus the defaults they do not set
#   entrypoint.sh gunicorn ARGS…       the same (an explicit "gunicorn" first word is accepted)
#   entrypoint.sh CMD ARGS…            any other command runs under gwrap unchanged
#
# Defaults added unless the arguments or GUNICORN_CMD_ARGS already set them (GWRAP_DEFAULTS=0 adds
# none; a gunicorn.conf.py value loses to a default added here, so set it in the arguments instead):
#   --bind 0.0.0.0:${PORT:-8000}   --access-logfile -   --error-logfile -
#   --timeout ${GUNICORN_TIMEOUT:-600}   above App Service's 240 s front-end idle limit, so that the
#                                        platform, not Gunicorn, decides when a request is too long
#   --graceful-timeout 7                 fits gwrap's 8 s stop budget (docker stop waits 10 s)
#   --worker-tmp-dir /dev/shm            heartbeats on tmpfs, never blocked by a slow disk
#   --workers ${WEB_CONCURRENCY}         only when WEB_CONCURRENCY is set (else Gunicorn's own rule)
# gwrap reads its own settings from GWRAP_* variables (see `gwrap -h`).
set -euf # no globbing: arguments are split on spaces to look for options, never expanded

gwrap=${GWRAP_BIN:-gwrap}
gunicorn=${GUNICORN_BIN:-gunicorn}

if [ "$#" -eq 0 ]; then
	set -- "${APP_MODULE:-app:app}"
fi

case "$1" in
gunicorn | */gunicorn)
	gunicorn=$1
	shift
	;;
-*) ;;
*:* | *.py) ;;
*)
	# Not Gunicorn: supervise it as it is.
	exec "$gwrap" -- "$@"
	;;
esac

# has OPTION...: true when the arguments or GUNICORN_CMD_ARGS mention one of the options.
has() {
	for opt in "$@"; do
		for arg in $args_seen; do
			case "$arg" in
			"$opt" | "$opt"=*) return 0 ;;
			esac
			# short options may carry their value: -t600, -w4, -b:8000
			case "$opt" in
			-?) case "$arg" in "$opt"?*) return 0 ;; esac ;;
			esac
		done
	done
	return 1
}

args_seen="$* ${GUNICORN_CMD_ARGS:-}"

if [ "${GWRAP_DEFAULTS:-1}" != 0 ]; then
	has --bind -b || set -- "$@" --bind "0.0.0.0:${PORT:-8000}"
	has --access-logfile || set -- "$@" --access-logfile -
	has --error-logfile --log-file || set -- "$@" --error-logfile -
	has --timeout -t || set -- "$@" --timeout "${GUNICORN_TIMEOUT:-600}"
	has --graceful-timeout || set -- "$@" --graceful-timeout 7
	if ! has --worker-tmp-dir && [ -d /dev/shm ] && [ -w /dev/shm ]; then
		set -- "$@" --worker-tmp-dir /dev/shm
	fi
	if ! has --workers -w && [ -n "${WEB_CONCURRENCY:-}" ]; then
		set -- "$@" --workers "$WEB_CONCURRENCY"
	fi
fi

exec "$gwrap" -- "$gunicorn" "$@"
