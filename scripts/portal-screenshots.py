#!/usr/bin/env python3
"""Walks the README's portal tour in headless Chromium against `provisionctl serve --demo`
and saves a screenshot of each step: find the orders dataset, provision "EU orders over
1000 with the customer's name" into a file from the form, watch it fill.

    scripts/portal-screenshots.py URL OUTDIR      # e.g. http://127.0.0.1:8470 docs/portal
"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

url, out = sys.argv[1], sys.argv[2]
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800", "--hide-scrollbars"]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(condition, seconds=60):
    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(condition)


try:
    driver.get(url + "/#/catalog")
    search = wait(ready.element_to_be_clickable((By.ID, "catalog-search")))
    search.send_keys("orders" + Keys.ENTER)
    wait(ready.presence_of_element_located((By.CSS_SELECTOR, "#catalog-table tr[data-dataset='orders']")))
    driver.save_screenshot(f"{out}/1-catalog.png")

    driver.find_element(By.LINK_TEXT, "orders").click()
    wait(ready.presence_of_element_located((By.ID, "sample-table")))
    driver.save_screenshot(f"{out}/2-dataset.png")

    driver.find_element(By.ID, "create-from-dataset").click()
    wait(ready.element_to_be_clickable((By.ID, "product-name"))).send_keys("eu-orders-named")
    driver.find_element(By.ID, "product-where").send_keys('amount > 1000 and region == "EU"')
    Select(driver.find_element(By.ID, "product-join")).select_by_value("customers")
    Select(driver.find_element(By.ID, "product-join-on")).select_by_value("customer_id")
    as_field = driver.find_element(By.ID, "product-join-as")
    as_field.clear()
    as_field.send_keys("customer")
    keep = {"order_id", "amount", "placed_at", "customer.name"}
    for box in driver.find_elements(By.CSS_SELECTOR, "#product-fields input"):
        if (box.get_attribute("value") in keep) != box.is_selected():
            box.click()
    Select(driver.find_element(By.ID, "product-key")).select_by_value("order_id")
    driver.find_element(By.ID, "preview-button").click()
    wait(ready.presence_of_element_located((By.ID, "preview-rows")))
    driver.execute_script("document.getElementById('preview').scrollIntoView()")
    driver.save_screenshot(f"{out}/3-preview.png")

    driver.find_element(By.ID, "apply").click()
    wait(lambda d: d.execute_script("return document.getElementById('product-phase')?.innerText") == "Live")
    time.sleep(3)  # a few live records arrive from the demo's trickle
    driver.save_screenshot(f"{out}/4-product.png")

    driver.get(url + "/#/products")
    wait(ready.presence_of_element_located((By.CSS_SELECTOR, "#products-table tr[data-product='eu-orders-named']")))
    time.sleep(4)  # two polls: the rates are measured
    driver.save_screenshot(f"{out}/5-products.png")
    print(f"screenshots in {out}")
finally:
    driver.quit()
