# Shared by scripts/run and scripts/test: installs what Switchboard needs on a
# Debian machine that has only Rust, and caches it outside the clone.
#
# Everything downloaded or built lives under $SWITCHBOARD_CACHE (default
# ~/.cache/switchboard) so that a fresh clone reuses it, but nothing assumes
# the cache exists: a missing piece is installed again.

SWITCHBOARD_CACHE="${SWITCHBOARD_CACHE:-$HOME/.cache/switchboard}"
export SWITCHBOARD_CACHE
mkdir -p "$SWITCHBOARD_CACHE"

# Cargo's build output goes to the cache too, unless the caller chose a place.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SWITCHBOARD_CACHE/target}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '==> %s\n' "$*" >&2; }

# Runs "$@" and reports how long it took.
timed() {
  local label="$1"; shift
  local start=$SECONDS
  "$@"
  log "$label took $((SECONDS - start)) s"
}

# Runs "$@" as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    log "need root for: $* (run as root or install sudo)"
    return 1
  fi
}

apt_updated=0
# Installs the Debian packages among "$@" that are not installed yet,
# refreshing the package lists once per run and only when needed.
apt_install() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# What building the workspace needs besides Rust: a C toolchain for the
# bundled librdkafka, SQLite and LAME, CMake for the bundled libopus
# (decision 0028), pkg-config and certificates for downloads.
ensure_build_tools() {
  apt_install ca-certificates gcc g++ make cmake pkg-config
}
