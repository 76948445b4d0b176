# Makes sure headless Chromium, its driver (Debian's chromium and chromium-driver) and
# Selenium (pip, pinned) are there for the portal test, which drives the portal in the
# browser against its own server. Sourced by scripts/test; exports PROVISION_TEST_BROWSER=1.
# Selenium is pointed at /usr/bin/chromedriver, so it never tries to download a driver.

SELENIUM_VERSION=4.38.0

ensure_test_browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing Chromium and its driver (Debian's packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  fi
  if ! pip show selenium 2>/dev/null | grep "^Version: $SELENIUM_VERSION$" >/dev/null; then
    echo "installing selenium $SELENIUM_VERSION (pip)" >&2
    pip install -q "selenium==$SELENIUM_VERSION" >&2
  fi
  PROVISION_TEST_BROWSER=1
  export PROVISION_TEST_BROWSER
}
