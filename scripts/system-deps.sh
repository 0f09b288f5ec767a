#!/usr/bin/env bash
# Debian packages the harness needs: installs the missing ones (as root), or says which are
# missing (otherwise). Safe to repeat: installs nothing when everything is present.
#   --fuzz   also clang and its libFuzzer/sanitizer runtimes (firmware/fuzz; CI passes it)
#   --bench  also what benchmarks/ compares against: the Mosquitto MQTT broker
#            (benchmarks/bench_mosquitto.py and benchmarks/table.py skip its rows without it)
#   --platform  also mmdebstrap, which benchmarks/on_platform.py builds another Debian
#            release's root filesystem with (its Python and OpenSSL; benchmarks/README.md)
set -euo pipefail
need=()
for arg in "$@"; do
  case "$arg" in
    --fuzz)
      command -v clang-14 >/dev/null 2>&1 || need+=(clang-14)
      compgen -G '/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a' >/dev/null \
        || need+=(libclang-rt-14-dev)
      ;;
    --bench)
      command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
      ;;
    --platform)
      command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
      ;;
    *)
      echo "usage: $0 [--fuzz] [--bench] [--platform]" >&2
      exit 2
      ;;
  esac
done
command -v make >/dev/null 2>&1 || need+=(make)
if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  need+=(python3 python3-venv python3-pip)
fi
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi binutils-arm-none-eabi)
[ -f /usr/lib/picolibc/arm-none-eabi/picolibc.specs ] || need+=(picolibc-arm-none-eabi)
# --hil-gdb's attach command and its test (tests/test_gdb.py skips without it)
command -v gdb-multiarch >/dev/null 2>&1 || need+=(gdb-multiarch)
# the board backend's stand-in lab shared through a labgrid exporter (docs/boards.md)
command -v ser2net >/dev/null 2>&1 || [ -x /usr/sbin/ser2net ] || need+=(ser2net)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
