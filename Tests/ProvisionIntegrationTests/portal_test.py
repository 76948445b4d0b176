#!/usr/bin/env python3
"""Drives the portal in headless Chromium (Selenium, Debian's chromium and chromedriver)
against a running server, asserting on the DOM; a screenshot of each step goes to SHOTS.

    portal_test.py URL ADMIN_TOKEN EDITOR_TOKEN OTHER_TEAM_TOKEN SHOTS

The server holds the orders dataset with orders already in it. Expected values are
computed here from the records this script produces, not read from the server.
"""
import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

url, admin, editor, other, shots = sys.argv[1:6]


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                     "--disable-gpu", "--no-first-run", "--disable-extensions"]:
        options.add_argument(argument)
    # The driver is Debian's: Selenium Manager is never asked to fetch one.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def produce(records):
    body = "\n".join(json.dumps(record) for record in records).encode()
    request = urllib.request.Request(f"{url}/v1/topics/orders/records", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200, answer.status


def order(index, amount, region):
    return {"order_id": f"p-{index}", "customer_id": f"c-{index % 7}", "amount": amount, "region": region,
            "status": "placed", "note": "portal", "placed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


step_number = 0


def shot(driver, name):
    global step_number
    step_number += 1
    driver.save_screenshot(f"{shots}/{step_number:02d}-{name}.png")


def wait(driver, condition, what, seconds=30):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.1).until(condition)
    except TimeoutException:
        shot(driver, "failed")
        raise AssertionError(f"timed out waiting for {what}; page: {driver.find_element(By.TAG_NAME, 'main').text[:2000]}")


def text_of(driver, selector):
    # Read in the page: parts of it are rebuilt every poll, so a held element can go stale.
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector)


def sign_in(driver, token):
    driver.get(url + "/#/signin")
    box = wait(driver, ready.element_to_be_clickable((By.ID, "token")), "the sign-in form")
    box.clear()
    box.send_keys(token + Keys.ENTER)


def main():
    driver = browser()
    try:
        # A wrong token is refused, saying so; the editor's is accepted.
        sign_in(driver, "pvn_not-a-token")
        wait(driver, lambda d: "unknown, expired or revoked" in text_of(d, "#signin-error"), "the wrong-token message")
        shot(driver, "sign-in-refused")
        sign_in(driver, editor)
        wait(driver, ready.presence_of_element_located((By.ID, "catalog-table")), "the catalog")
        assert "team risk" in text_of(driver, "#who"), text_of(driver, "#who")
        shot(driver, "catalog")

        # Search, then open the dataset.
        search = driver.find_element(By.ID, "catalog-search")
        search.send_keys("placed" + Keys.ENTER)  # a field name of orders only
        wait(driver, lambda d: [row.get_attribute("data-dataset") for row in d.find_elements(By.CSS_SELECTOR, "#catalog-table tbody tr")] == ["orders"],
             "the search to find orders alone")
        driver.find_element(By.LINK_TEXT, "orders").click()
        wait(driver, ready.presence_of_element_located((By.ID, "sample-table")), "the dataset page")
        fields = [row.get_attribute("data-field") for row in driver.find_elements(By.CSS_SELECTOR, "#schema-table tbody tr")]
        assert fields == ["order_id", "customer_id", "amount", "region", "status", "note", "placed_at"], fields
        shot(driver, "dataset")

        # Build a product in the form; the YAML follows it; preview, then apply.
        driver.find_element(By.ID, "create-from-dataset").click()
        name = wait(driver, ready.element_to_be_clickable((By.ID, "product-name")), "the form")
        name.send_keys("eu-big-orders")
        driver.find_element(By.ID, "product-where").send_keys('amount > 1000 and region == "EU"')
        for box in driver.find_elements(By.CSS_SELECTOR, "#product-fields input"):
            if box.get_attribute("value") not in ("order_id", "amount", "region") and box.is_selected():
                box.click()
        Select(driver.find_element(By.ID, "product-key")).select_by_value("order_id")
        Select(driver.find_element(By.ID, "product-policy")).select_by_value("Delete")
        yaml = driver.find_element(By.ID, "product-yaml").get_attribute("value")
        assert 'where: "amount > 1000 and region == \\"EU\\""' in yaml and "deletionPolicy: Delete" in yaml, yaml
        # A mistake is shown next to its field.
        where = driver.find_element(By.ID, "product-where")
        where.send_keys(" and amout > 0")
        driver.find_element(By.ID, "preview-button").click()
        wait(driver, lambda d: "unknown field 'amout'" in text_of(d, "#product-where-error"), "the error beside the filter")
        shot(driver, "form-error")
        for _ in range(len(" and amout > 0")):
            where.send_keys(Keys.BACKSPACE)
        driver.find_element(By.ID, "preview-button").click()
        wait(driver, ready.presence_of_element_located((By.ID, "preview-rows")), "the preview rows")
        rows = driver.find_elements(By.CSS_SELECTOR, "#preview-rows tbody tr")
        expected = [o for o in seeded if o["amount"] > 1000 and o["region"] == "EU"]
        assert len(rows) == min(20, len(expected)), (len(rows), len(expected))
        assert f"{len(expected)} of {len(seeded)} sampled records passed" in text_of(driver, "#preview-counts"), text_of(driver, "#preview-counts")
        assert f"Backfill: {len(seeded)} records" in text_of(driver, "#preview-backfill"), text_of(driver, "#preview-backfill")
        assert "Plan: create" in text_of(driver, "#preview-plan")
        shot(driver, "preview")
        driver.find_element(By.ID, "apply").click()

        # It goes Live, and its counts move as records arrive.
        wait(driver, lambda d: text_of(d, "#product-phase") == "Live", "the product to go Live", 90)
        assert text_of(driver, "#product-manager") == "api:risk", text_of(driver, "#product-manager")
        shot(driver, "product-live")
        driver.get(url + "/#/products")
        row = "#products-table tr[data-product='eu-big-orders']"
        wait(driver, lambda d: text_of(d, row + " .written") == str(len(expected)), "the written count")
        more = [order(1000 + index, 1500 + index, "EU") for index in range(25)]
        produce(more)
        wait(driver, lambda d: text_of(d, row + " .written") == str(len(expected) + 25), "the count to move live")
        shot(driver, "products-live")

        # A record the product cannot read goes to its dead letters, with the reason.
        produce([{**order(5000, 2000, "EU"), "amount": "lots"}])
        driver.find_element(By.LINK_TEXT, "eu-big-orders").click()
        wait(driver, ready.presence_of_element_located((By.CSS_SELECTOR, "#dead-letter-table .reason")), "the dead letter", 60)
        reason = text_of(driver, "#dead-letter-table .reason")
        assert "amount" in reason, reason
        driver.find_element(By.CSS_SELECTOR, "#dead-letter-table summary").click()
        assert "lots" in text_of(driver, "#dead-letter-table pre")
        shot(driver, "dead-letter")

        # A phone-sized window still shows the product and its actions.
        driver.set_window_size(390, 844)
        assert driver.find_element(By.ID, "delete").is_displayed()
        shot(driver, "phone")
        driver.set_window_size(1280, 800)

        # Delete, after a confirmation that says what the deletion policy does.
        driver.find_element(By.ID, "delete").click()
        confirm = wait(driver, ready.presence_of_element_located((By.ID, "confirm-text")), "the confirmation").text
        assert "will be removed" in confirm and "eu-big-orders" in confirm, confirm
        shot(driver, "confirm-delete")
        driver.find_element(By.ID, "confirm-delete").click()
        wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, row), "the product to leave the list", 60)
        shot(driver, "deleted")

        # Another team sees none of this team's products.
        driver.find_element(By.ID, "sign-out").click()
        sign_in(driver, other)
        wait(driver, ready.presence_of_element_located((By.ID, "catalog-table")), "the other team's catalog")
        driver.get(url + "/#/products")
        wait(driver, lambda d: d.find_element(By.ID, "products-empty").is_displayed(), "an empty product list")
        assert "risk-kept" not in text_of(driver, "main")
        driver.get(url + "/#/products/risk-kept")
        wait(driver, ready.presence_of_element_located((By.ID, "product-missing")), "another team's product not found")
        shot(driver, "other-team")
        print(f"portal: {step_number} steps passed")
    finally:
        driver.quit()


seeded = json.loads(sys.stdin.read())
main()
