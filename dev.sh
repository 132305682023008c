#!/usr/bin/env bash
# Set-up and entry point for a fresh Debian/Ubuntu machine.
#   ./dev.sh run    install what is missing, then run the kiosk (simulated devices, demo site;
#                   without a display: a scripted customer and screenshots)
#   ./dev.sh test   install what is missing, then run the whole test suite
#   ./dev.sh package  build the Debian packages into dist/ (prepaid-kiosk, prepaid-headoffice)
#                   and check them with lintian
# Extra arguments go to the kiosk command or to pytest.
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the project needs: a venv-capable Python with headers and a compiler
# (pyscard is built from source on Linux), the PC/SC headers it builds against, and the PC/SC
# daemon with vsmartcard's virtual reader, into which the virtual chip key is inserted, and
# the PostgreSQL server the head-office tests start a throwaway cluster of, and for the
# touch screen: an X server without a display (Xvfb), and the GL and input libraries Kivy needs;
# for head office's staff console, a real headless browser and its driver.
APT_PACKAGES=(python3 python3-venv python3-dev gcc libpcsclite-dev pcscd vsmartcard-vpcd postgresql espeak-ng
    xvfb libmtdev1 libgl1-mesa-dri libegl1 libegl-mesa0 chromium chromium-driver)

say() { printf '[dev.sh] %s\n' "$*" >&2; }

install_system_packages() {
    command -v dpkg-query >/dev/null || { say "not a Debian/Ubuntu system: install ${APT_PACKAGES[*]} by hand"; return 0; }
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
        else say "missing system packages: ${missing[*]}"; say "run as root: apt-get install ${missing[*]}"; exit 1
        fi
    fi
    say "installing system packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_env() {
    local py=${PYTHON:-python3}
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { say "Python 3.11 or newer is needed (found $("$py" --version 2>&1))"; exit 1; }
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv"
        "$py" -m venv .venv
    fi
    local stamp; stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
        say "installing the project into .venv"
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e '.[kiosk,headoffice,test]'
        echo "$stamp" > .venv/.installed
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    run)
        install_system_packages; install_python_env
        exec .venv/bin/kiosk run "$@" ;;
    test)
        install_system_packages; install_python_env
        # two workers, one a core, each with its own vpcd reader (tests/conftest.py)
        exec .venv/bin/python -m pytest -n 2 --dist worksteal "$@" ;;
    package)
        # what building takes: Debian's own Python (the packages run on it), a compiler and
        # the PC/SC headers (pyscard is built from source), dpkg's tools, lintian, and
        # mmdebstrap for the install test (PACKAGE_INSTALL_TEST=1 ./dev.sh test tests/test_package.py)
        APT_PACKAGES=(python3 python3-venv python3-dev gcc libpcsclite-dev dpkg-dev lintian mmdebstrap)
        install_system_packages
        rm -rf dist
        /usr/bin/python3 config/debian/build.py --out dist "$@"
        say "lintian:"
        lintian --fail-on error dist/*.deb \
            || { say "lintian found errors"; exit 1; }
        ls -l dist/*.deb ;;
    *)
        echo "usage: ./dev.sh run|test|package [args...]" >&2; exit 2 ;;
esac
