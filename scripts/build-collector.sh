#!/usr/bin/env bash
# Build the otel-audit OpenTelemetry Collector (otelcol-audit) from the Go module proxy with
# the OpenTelemetry Collector Builder (ocb), and print the path of the binary on stdout.
#
#   scripts/build-collector.sh [--force] [--print-cache-dir]
#
# The binary is cached outside the repository under
#   ${OTEL_AUDIT_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/otel-audit}/collector/<key>/otelcol-audit
# where <key> hashes the builder manifest, the builder version, this script's build
# settings and the Go version, so editing the manifest or changing Go rebuilds and anything
# else reuses the cached binary. The builder itself, the Go module cache and the Go build
# cache also live in that directory, so a rebuild after a small manifest change is fast and
# the user's own Go caches are never touched. Progress goes to stderr.
#
# Environment:
#   OTEL_AUDIT_CACHE_DIR        cache root (default ~/.cache/otel-audit)
#   OTEL_AUDIT_COLLECTOR_MANIFEST  builder manifest (default collector-config/builder-config.yaml)
#   GOPROXY, GOFLAGS, GOTOOLCHAIN  honoured as set (GOTOOLCHAIN defaults to local so a module
#                               that needs a newer Go fails loudly instead of downloading one)
set -euo pipefail

# Bump when the way the binary is built changes, so old cache entries are not reused.
readonly BUILD_RECIPE=1

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="${OTEL_AUDIT_COLLECTOR_MANIFEST:-$repo_root/collector-config/builder-config.yaml}"
cache_root="${OTEL_AUDIT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-audit}/collector"
force=0

log() { printf '[build-collector %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-collector: error: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    --print-cache-dir) echo "$cache_root"; exit 0 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (expected --force, --print-cache-dir or --help)" ;;
  esac
done

command -v go >/dev/null 2>&1 \
  || die "the 'go' command is not on PATH; install Go 1.26 or newer (https://go.dev/dl is not needed: a distribution package works)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is not on PATH"
[[ -f "$manifest" ]] || die "builder manifest not found: $manifest"

# The builder must come from the same release as the components, and the otlpreceiver line
# is the one core module every manifest of ours has.
ocb_version="$(sed -n 's#^[[:space:]]*- gomod:[[:space:]]*go\.opentelemetry\.io/collector/receiver/otlpreceiver[[:space:]]\{1,\}\(v[0-9][0-9.]*\)[[:space:]]*$#\1#p' "$manifest" | head -n 1)"
[[ -n "$ocb_version" ]] \
  || die "cannot tell the Collector release from $manifest: it needs a line '- gomod: go.opentelemetry.io/collector/receiver/otlpreceiver vX.Y.Z'"

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
go_version="$(go env GOVERSION)" || die "'go env GOVERSION' failed"
dist_name="$(sed -n 's/^[[:space:]]*name:[[:space:]]*\([A-Za-z0-9._-]\{1,\}\)[[:space:]]*$/\1/p' "$manifest" | head -n 1)"
dist_name="${dist_name:-otelcol-audit}"

key="$( { cat "$manifest"; echo "recipe=$BUILD_RECIPE ocb=$ocb_version go=$go_version"; } \
        | sha256sum | cut -c1-16)"
build_dir="$cache_root/$key"
binary="$build_dir/$dist_name"

if [[ $force -eq 0 && -x "$binary" ]]; then
  log "cached binary for manifest key $key ($go_version, ocb $ocb_version)"
  echo "$binary"
  exit 0
fi

mkdir -p "$cache_root"
# Two callers at once (parallel test runs, make + pytest) must not build twice or see a
# half-written binary: hold a lock, then look at the cache again.
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/.lock; waiting for it"
  flock 9
fi
if [[ $force -eq 0 && -x "$binary" ]]; then
  log "cached binary for manifest key $key appeared while waiting"
  echo "$binary"
  exit 0
fi

export GOMODCACHE="$cache_root/gomodcache"
# Writable module files, so the cache can be removed with a plain rm -rf.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
export GOCACHE="$cache_root/gocache"
export GOBIN="$cache_root/tools/builder-$ocb_version"
ocb="$GOBIN/builder"
started=$SECONDS

if [[ ! -x "$ocb" ]]; then
  log "installing the Collector Builder go.opentelemetry.io/collector/cmd/builder@$ocb_version"
  go install "go.opentelemetry.io/collector/cmd/builder@$ocb_version" \
    || die "could not install go.opentelemetry.io/collector/cmd/builder@$ocb_version from GOPROXY=$(go env GOPROXY); is the Go module proxy reachable and is that release published?"
fi

work="$(mktemp -d "$cache_root/work.$key.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp "$manifest" "$work/builder-config.yaml"
build_log="$cache_root/last-build.log"

log "building $dist_name (Collector release $ocb_version, $go_version) into $build_dir"
if [[ ! -d "$GOCACHE" || -z "$(ls -A "$GOCACHE" 2>/dev/null)" ]]; then
  log "first build: downloads and compiles ~300 Go modules (2.5-5 minutes on 2 cores, ~1.5 GB of cache)"
fi
# The builder prints a line per stage but is silent while compiling: a heartbeat shows the
# build is alive.
# Its sleep must not hold stderr (a reader waits for EOF) nor the lock (fd 9) once we exit.
( while sleep 20 >/dev/null 2>&1 9>&-; do log "still building ($(( SECONDS - started )) s)"; done ) &
heartbeat=$!
trap 'rm -rf "$work"; kill "$heartbeat" 2>/dev/null || true' EXIT
# Success is judged by the binary below, not by the pipeline's status.
(cd "$work" && "$ocb" --config=builder-config.yaml) 2>&1 | tee "$build_log" \
  | sed -u 's/^/  [ocb] /' >&2 || true
kill "$heartbeat" 2>/dev/null || true
built="$work/otelcol-audit-build/$dist_name"
if [[ ! -x "$built" ]]; then
  die "the Collector Builder failed (full log: $build_log); a module version that is not published, a mix of Collector releases in $manifest, or an unreachable GOPROXY are the usual causes"
fi

mkdir -p "$build_dir"
cp "$manifest" "$build_dir/builder-config.yaml"
# Rename within one directory so a reader never sees a partial binary.
mv -f "$built" "$binary.tmp.$$"
mv -f "$binary.tmp.$$" "$binary"
log "built $binary in $(( SECONDS - started )) s ($("$binary" --version 2>/dev/null || echo 'version unknown'))"

# Keep the three newest builds; older manifests' binaries are only dead weight (43 MB each).
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9a-f]\{16\}' -printf '%T@ %p\n' \
  | sort -rn | tail -n +4 | cut -d' ' -f2- | while read -r old; do
      log "removing old build $old"
      rm -rf "$old"
    done
echo "$binary"
