#!/bin/sh
# The compose `setup` job, run once before the receiver starts (and again on every
# `docker compose up`, doing only what is missing):
#   1. the index templates, before the first event creates an index;
#   2. the integrity signing key pair, generated once;
#   3. a reader token for the query API and console, generated once: the token itself in
#      $STATE_DIR/reader-token (read it with `docker compose exec receiver cat
#      /var/lib/otel-audit/reader-token`), only its SHA-256 in the receiver's config;
#   4. the receiver's config: $BASE_CONFIG (docker/receiver.yaml) plus that token entry.
set -eu
STATE_DIR="${STATE_DIR:-/var/lib/otel-audit}"
BASE_CONFIG="${BASE_CONFIG:-/etc/otel-audit/receiver.yaml}"

otel-audit templates install
if [ ! -f "$STATE_DIR/keys/signing-key.pem" ]; then
  otel-audit keys generate --out "$STATE_DIR/keys"
fi
if [ ! -f "$STATE_DIR/reader-token" ]; then
  umask 077
  otel-audit tokens generate --subject auditor --role reader \
    > "$STATE_DIR/reader-token.entry" 2> "$STATE_DIR/reader-token.out"
  sed -n 's/^token .*: //p' "$STATE_DIR/reader-token.out" > "$STATE_DIR/reader-token"
  rm -f "$STATE_DIR/reader-token.out"
fi
{
  cat "$BASE_CONFIG"
  printf '\n# Written by docker/setup.sh: the reader token (its SHA-256 only).\nquery:\n  tokens:\n'
  sed -n 's/^- /    - /p' "$STATE_DIR/reader-token.entry"
} > "$STATE_DIR/receiver.yaml.tmp"
mv "$STATE_DIR/receiver.yaml.tmp" "$STATE_DIR/receiver.yaml"
echo "setup: reader token for the query API and console in $STATE_DIR/reader-token"
