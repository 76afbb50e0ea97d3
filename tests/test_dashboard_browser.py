"""The dashboard end to end in headless Chromium (Debian's chromium and chromedriver, Selenium).

`umstieg dashboard` runs as its own process on a loopback port over a department migrated for
real (tests/servers/browser.py). A viewer logs in, walks overview → department → document (both
thumbnails load), exports a CSV and cannot rerun; an operator, by keyboard alone, reruns the
failed item after its cause is fixed and sees it finish. axe-core (npm, .cache/npm) checks every
page (WCAG 2.1 A/AA and best practices): no violation of any impact, at 1280 px and at 390 px (a phone),
where no page may be wider than the screen. Screenshots go to
test-artifacts/dashboard/.
"""

from __future__ import annotations

import time

import pytest

from servers.browser import (DashboardServer, axe_violations, chromium, chromium_missing, clean_artifacts,
                             migrate_small_department, users_file)

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))

VIEWER, OPERATOR = ("vera", "lesen-nur-2026"), ("otto", "darf-alles-2026")


@pytest.fixture(scope="module")
def artifacts():
    return clean_artifacts()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    try:
        yield migrate_small_department(tmp_path_factory.mktemp("browser"))
    finally:
        from flows import runtime
        runtime.close_all()


@pytest.fixture(scope="module")
def server(migrated, tmp_path_factory, artifacts):
    users = users_file(tmp_path_factory.mktemp("users") / "users.yaml",
                       {VIEWER[0]: ("viewer", VIEWER[1]), OPERATOR[0]: ("operator", OPERATOR[1])})
    srv = DashboardServer(migrated.dept_file, users, artifacts / "dashboard.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    driver = chromium(downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


class Visit:
    """Every page the tests open is checked by axe and photographed."""

    def __init__(self, driver, artifacts) -> None:
        self.driver, self.artifacts, self.n = driver, artifacts, 0
        self.violations: dict[str, list] = {}

    def check(self, name: str) -> None:
        self.n += 1
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, min(6000, height + 120))          # the whole page in the picture
        self.driver.save_screenshot(str(self.artifacts / f"{self.n:02d}-{name}.png"))
        self.driver.set_window_size(1280, 1000)
        found = axe_violations(self.driver)
        # a phone (390 px): nothing wider than the screen, and axe again (reflow changes contrast and targets)
        self.driver.set_window_size(390, 844)
        overflow = self.driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        self.driver.save_screenshot(str(self.artifacts / f"{self.n:02d}-{name}-390.png"))
        found += [dict(v, id=v["id"] + " (390 px)") for v in axe_violations(self.driver)]
        self.driver.set_window_size(1280, 1000)
        if found:
            self.violations[name] = found
        assert not found, f"{name}: {found}"
        assert overflow[0] <= overflow[1], f"{name}: {overflow[0]} px wide on a 390 px screen ({overflow[1]} px)"


@pytest.fixture(scope="module")
def visit(browser, artifacts):
    v = Visit(browser, artifacts)
    yield v
    print(f"\nscreenshots: {artifacts}")


def log_in(driver, server, user, password, visit=None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.delete_all_cookies()
    driver.get(server.url + "/")
    assert "/login" in driver.current_url
    if visit:
        visit.check("login")
    driver.find_element(By.ID, "username").send_keys(user)
    field = driver.find_element(By.ID, "password")
    field.send_keys(password)
    field.send_keys(Keys.ENTER)
    wait_for(lambda: "/login" not in driver.current_url)


def wait_for(condition, timeout: float = 20, message: str = ""):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(0.2)
    return result


def test_a_viewer_walks_overview_department_document_and_exports_csv(browser, server, visit, migrated):
    from selenium.webdriver.common.by import By
    log_in(browser, server, *VIEWER, visit=visit)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Programme overview"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    visit.check("overview")
    browser.find_element(By.LINK_TEXT, "testamt").click()
    wait_for(lambda: browser.current_url.endswith("/departments/testamt"))
    failures = browser.find_element(By.ID, "h-failures").find_element(By.XPATH, "..")
    assert "could not be written to the target" in failures.text
    assert not browser.find_elements(By.ID, "rerun-button")              # a viewer gets no rerun form
    visit.check("department")
    browser.find_element(By.CSS_SELECTOR, f'a[href="/departments/testamt/items/{migrated.docx_id}"]').click()
    wait_for(lambda: f"/items/{migrated.docx_id}" in browser.current_url)
    for side in ("source", "output"):
        img = browser.find_element(By.ID, f"thumb-{side}")
        assert img.is_displayed()
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 50, side
    visit.check("document")
    browser.back()
    wait_for(lambda: browser.current_url.endswith("/departments/testamt"))
    browser.find_element(By.CSS_SELECTOR, 'a[href^="/departments/testamt/tables/items.csv"]').click()
    csv = wait_for(lambda: [p for p in browser.downloads.glob("*.csv") if p.stat().st_size], timeout=30,
                   message="the CSV was not downloaded")[0]
    lines = csv.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("Item,User,Kind,Path,State") and len(lines) == 6
    browser.get(server.url + "/departments/testamt/attention")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Needs a person")
    visit.check("needs-a-person")
    browser.get(server.url + "/departments/testamt?sort=size&dir=desc#h-items")
    sizes = [int(td.get_attribute("data-bytes") or 0)
             for td in browser.find_elements(By.CSS_SELECTOR, "td[data-bytes]")]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 5
    browser.get(server.url + "/departments/testamt")
    browser.find_element(By.LINK_TEXT, "Risk scan").click()
    wait_for(lambda: "/assessment" in browser.current_url)
    visit.check("assessment")
    browser.find_element(By.LINK_TEXT, "Deutsch").click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "de")
    assert "Risikoprüfung" in browser.find_element(By.TAG_NAME, "h1").text
    visit.check("assessment-de")
    browser.find_element(By.LINK_TEXT, "English").click()


def test_a_viewer_cannot_rerun(browser, server, migrated):
    from reports.dashboard import document
    from core.department import load_department
    from core.ledger import Ledger
    log_in(browser, server, *VIEWER)
    browser.get(server.url + "/departments/testamt")
    # the viewer forges the operator's form with their own session's CSRF token (from the logout form)
    status = browser.execute_script(
        "const t = document.querySelector('input[name=csrf]').value;"
        "const body = new URLSearchParams({csrf: t, error_class: 'load_error'});"
        "return fetch('/departments/testamt/rerun', {method: 'POST', body, redirect: 'manual'}).then(r => r.status);")
    assert status == 403
    ledger = Ledger(load_department(migrated.dept_file).ledger_url)
    try:
        assert document(ledger, "testamt", migrated.failed_id)["item"]["state"] == "failed"
        from reports.dashboard import rerun_runs
        assert rerun_runs(ledger, "testamt") == []                # nothing was started
    finally:
        ledger.close()


def test_an_operator_reruns_failed_items_by_keyboard_and_sees_them_finish(browser, server, visit, migrated):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.action_chains import ActionChains
    migrated.fix_failure()                     # the cause is fixed; now the operator reruns
    log_in(browser, server, *OPERATOR)
    browser.get(server.url + "/departments/testamt")
    visit.check("department-operator")
    # keyboard only: from the top of the page, Tab to the rerun button and press Enter
    browser.find_element(By.TAG_NAME, "body").click()
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    for _ in range(300):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script("return document.activeElement.id") == "rerun-button":
            break
    else:
        pytest.fail("the rerun button cannot be reached with the Tab key")
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused button shows no focus outline"
    browser.save_screenshot(str(visit.artifacts / "focus-on-rerun.png"))
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: "/reruns/" in browser.current_url)
    visit.check("rerun-running")
    deadline = time.monotonic() + 300
    while not browser.find_elements(By.ID, "rerun-finished"):
        assert time.monotonic() < deadline, browser.find_element(By.TAG_NAME, "main").text
        time.sleep(1)
        browser.refresh()
    status = browser.find_element(By.ID, "rerun-status").text
    assert "1 verified, 0 failed" in status, status
    visit.check("rerun-finished")
    browser.get(server.url + "/departments/testamt")
    assert not browser.find_elements(By.ID, "rerun-button")     # nothing failed any more
    # the operator annotates the document by keyboard as well
    browser.get(server.url + f"/departments/testamt/items/{migrated.docx_id}")
    browser.find_element(By.ID, "v-accepted").send_keys(Keys.SPACE)
    browser.find_element(By.ID, "comment").send_keys("Layout geprüft")
    browser.find_element(By.ID, "comment").submit()
    wait_for(lambda: "saved=1" in browser.current_url)
    assert "Layout geprüft" in browser.find_element(By.ID, "annotation-now").text
    visit.check("document-annotated")


def tab_to(driver, element_id: str, presses: int = 300) -> None:
    """Press Tab from the top of the page until the element has the focus (fails if it never does)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.find_element(By.TAG_NAME, "body").click()
    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.execute_script("return document.activeElement.id") == element_id:
            return
    pytest.fail(f"#{element_id} cannot be reached with the Tab key")


def test_the_page_viewer_by_keyboard_side_by_side_and_on_a_phone(browser, server, visit, migrated):
    """The document's two page pictures enlarged side by side, zoomed and stepped through by keyboard;
    stacked on a 390 px phone, where each picture scrolls in its own region."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    log_in(browser, server, *VIEWER)
    browser.get(server.url + f"/departments/testamt/items/{migrated.docx_id}")
    tab_to(browser, "open-viewer")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: browser.current_url.endswith(f"/items/{migrated.docx_id}/pages"))
    visit.check("viewer")

    def boxes():
        return browser.execute_script(
            "return ['source', 'output'].map(s => { const i = document.getElementById('page-' + s);"
            " const r = i.getBoundingClientRect();"
            " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width,"
            " natural: i.naturalWidth, complete: i.complete}; });")
    wait_for(lambda: all(b["complete"] and b["natural"] > 50 for b in boxes()), message="the pictures did not load")
    source, output = boxes()
    assert abs(source["top"] - output["top"]) < 2 and output["left"] >= source["right"]          # side by side
    from reports.visual import THUMB_WIDTH, VIEW_WIDTH
    for box in (source, output):
        # the large pictures, enlarged far beyond the thumbnails yet drawn from at least as many pixels
        assert box["natural"] == VIEW_WIDTH and 2 * THUMB_WIDTH < box["width"] <= box["natural"], box
    browser.set_window_size(390, 844)
    source, output = boxes()
    assert output["top"] >= source["bottom"] and source["right"] <= 390 and output["right"] <= 390   # stacked
    browser.set_window_size(1280, 1000)
    # three quarters of the large pictures' size, chosen by keyboard: the page stays within a
    # phone's width, each picture scrolls in its own region, also by keyboard
    tab_to(browser, "zoom-3")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: "zoom=3" in browser.current_url)
    wait_for(lambda: all(b["complete"] for b in boxes()))
    assert all(abs(b["width"] - 3 * b["natural"] / 4) < 1 for b in boxes())
    visit.check("viewer-zoom-3")
    browser.set_window_size(390, 844)
    tab_to(browser, "wrap-source")
    region = browser.find_element(By.ID, "wrap-source")
    assert browser.execute_script("return document.activeElement.getAttribute('role')") == "region"
    for _ in range(10):
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    assert browser.execute_script("return arguments[0].scrollLeft", region) > 0
    browser.set_window_size(1280, 1000)
    # on to the next measured document, keeping the zoom
    tab_to(browser, "viewer-next")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: f"/items/{migrated.docx_id}/" not in browser.current_url and "zoom=3" in browser.current_url)
    assert browser.find_element(By.ID, "viewer-previous").get_attribute("href").endswith(
        f"/items/{migrated.docx_id}/pages?zoom=3")


def test_the_identity_map_page_is_accessible_and_checks_on_request(browser, server, visit):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    log_in(browser, server, *VIEWER)
    browser.get(server.url + "/departments/testamt/identities")
    assert "by the assessment" in browser.find_element(By.ID, "identity-summary").text
    visit.check("identities")
    tab_to(browser, "check-identities")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(lambda: "check=1" in browser.current_url)
    assert "here, on request" in browser.find_element(By.ID, "identity-summary").text
    assert not browser.find_elements(By.ID, "identity-problem")
    visit.check("identities-checked")
