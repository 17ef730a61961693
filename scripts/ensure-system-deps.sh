#!/usr/bin/env bash
# Installs the system packages the integration tests run for real: Prometheus (a real server the
# telemetry tests start) and Chromium (the headless browser that renders the HTML reports for the
# screenshot test, tests/integration/report/test_html_screenshots.py). Both from Debian's packages.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" = 0 ]; then exit 0; fi
echo "installing Debian packages ${missing[*]} (integration tests start a real Prometheus and a headless Chromium)" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
case " ${missing[*]} " in
  *" prometheus "*)
    # the package starts a system service; the tests start their own instance on a free port
    ($SUDO systemctl stop prometheus 2>/dev/null || $SUDO service prometheus stop 2>/dev/null || true) >/dev/null 2>&1
    ;;
esac
if [ ! -x /usr/bin/chromium ]; then
  echo "ensure-system-deps: /usr/bin/chromium is missing after installing Debian's chromium" >&2
  exit 1
fi
/usr/bin/chromium --version >&2
