#!/usr/bin/env bash
# Debian packages hwflow needs: g++ (hls4ml's C simulation), the Fashion-MNIST data set, tcl (tclsh
# runs the generated Vivado scripts against the tests' recording fake) and chromium (headless, for
# the HTML report's layout test).
# Installs what is missing when it can (root or sudo); otherwise says what to install and goes on:
# the tests that need a missing package then fail, naming it.
set -u
need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v tclsh >/dev/null 2>&1 || need+=(tcl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the HTML report's layout test (headless)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "hwflow: please install these Debian packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || true
if ! $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; then
  echo "hwflow: could not install ${need[*]}; tests that need them will fail" >&2
fi
exit 0
