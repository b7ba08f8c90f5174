# Sourced by the install, test and demo scripts: one line per stage on the terminal, the
# stage's own output in a log file (shown only when the stage fails).
#   source scripts/stage.sh; stage "what it does" command args...
STAGE_LOG=${STAGE_LOG:-$PWD/.cache/install.log}
mkdir -p "$(dirname "$STAGE_LOG")"

stage() {
  local what=$1 started status
  shift
  started=$(date +%s)
  printf '%s ... ' "$what"
  echo "=== $(date -Is) $what: $*" >>"$STAGE_LOG"
  set +e
  "$@" >>"$STAGE_LOG" 2>&1
  status=$?
  set -e
  if [ "$status" -ne 0 ]; then
    echo "failed (exit $status); the last lines of $STAGE_LOG:"
    tail -n 30 "$STAGE_LOG" | sed 's/^/  | /'
    exit "$status"
  fi
  echo "done ($(($(date +%s) - started)) s)"
}
