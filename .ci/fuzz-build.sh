#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ (a standalone workspace, excluded from the main one).
#
# With a nightly toolchain: installs cargo-fuzz if it is missing, then `cargo +nightly fuzz
# build` (sanitizer-instrumented, output in fuzz/target). Without nightly: says so and only
# type-checks the fuzz crate on the default toolchain, which still catches API drift between
# partisan-core and the fuzz targets.
#
# To fuzz locally afterwards, e.g. for 60 seconds with the committed seeds:
#   cd fuzz && cargo +nightly fuzz run handshake_decoder corpus/handshake_decoder \
#       seeds/handshake_decoder -- -max_total_time=60
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if cargo +nightly --version >/dev/null 2>&1; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz-build: cargo-fuzz not found, installing it"
        cargo install cargo-fuzz --locked
    fi
    echo "fuzz-build: $(cargo +nightly --version), $(cargo fuzz --version)"
    # Leave CARGO_TARGET_DIR at its default (fuzz/target) so the build stays separate from the
    # main workspace's target directory and its stable artefacts.
    (cd fuzz && env -u CARGO_TARGET_DIR cargo +nightly fuzz build)
    echo "fuzz-build: fuzz targets built"
else
    echo "fuzz-build: no nightly toolchain found (cargo +nightly fails); cargo-fuzz needs" \
        "nightly, so the fuzz targets are only type-checked on the default toolchain."
    cargo check --manifest-path fuzz/Cargo.toml
    echo "fuzz-build: fuzz crate checks on stable (targets not built)"
fi
