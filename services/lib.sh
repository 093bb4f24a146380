# Shared by the services' setup scripts (sourced, not run).
#
# Each `services/<name>/setup [--fresh|--stop]` installs its service once per
# machine, starts it on 127.0.0.1 if nothing answers there yet, and keeps its
# data and logs under `.run/<name>/` of this checkout. `--fresh` restarts it
# empty; `--stop` stops it.

# The checkout this script belongs to.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$REPO_ROOT/.run"

log() { printf 'setup: %s\n' "$*" >&2; }

# Seconds since `mark` was called with the same name.
declare -A _setup_marks=()
mark() { _setup_marks[$1]=$SECONDS; }
since() { echo $((SECONDS - ${_setup_marks[$1]})); }

# wait_until SECONDS CHECK...: runs CHECK every half second until it
# succeeds; fails once SECONDS have passed.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_closed() { ! port_open "$1"; }

# stop_matching PATTERN PORT: stops the processes whose command line matches
# PATTERN and waits until nothing listens on PORT.
stop_matching() {
  local pattern=$1 port=$2
  pkill -f -- "$pattern" 2>/dev/null || true
  if ! wait_until 60 port_closed "$port"; then
    pkill -9 -f -- "$pattern" 2>/dev/null || true
    wait_until 10 port_closed "$port" || { log "could not stop $pattern on port $port"; return 1; }
  fi
}

# fail_with_log NAME FILE: says NAME did not come up and shows FILE's tail.
fail_with_log() {
  log "$1 did not come up; the end of $2:"
  tail -n 40 "$2" >&2 2>/dev/null || true
  exit 1
}

# apt_install PACKAGE...: installs the Debian packages that are missing.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  local missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian's packages"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -print -quit 2>/dev/null)" ] ||
    ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Java services are installed once per machine, outside any checkout, from
# the artifacts their pom.xml names.
SERVICES_HOME="${ESHOP_SERVICES_HOME:-/opt/eshop-services}"
