"""The admin page, clicked through as a user would, in Debian's chromium driven by Playwright.

Run by scripts/browser-test, which starts a server (with EVENTVAULT_TOKEN as ADMIN_TOKEN, a
folder repository and fast log shipping) and seeds EVENTVAULT_EVENT: "Spring gala" with 31
registrations (30 "Guest NN" and "Ada Lovelace"), 2 payments and a note of hostile markup.
Every assertion is on what the page shows; the API is called directly only to change data behind the page's back (as
another client would) and to check what a restore left in the store. Screenshots go to
SHOTS_DIR; their paths are printed.
"""

import datetime
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

URL = os.environ["EVENTVAULT_URL"]
TOKEN = os.environ["EVENTVAULT_TOKEN"]
EVENT = os.environ["EVENTVAULT_EVENT"]
SHOTS = os.environ["SHOTS_DIR"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The note scripts/browser-test seeds.
HOSTILE_NOTE = "<img src=x onerror=\"document.title='owned'\">"
# India has no daylight saving time: a fixed +05:30 checks the picker's conversion to UTC
# without a time-zone database on the Python side.
ZONE, OFFSET = "Asia/Kolkata", datetime.timedelta(hours=5, minutes=30)

# Long operations (a backup, a restore) answer within seconds here; this is only how long a
# wait may last before the test gives up, never an assertion on speed.
expect.set_options(timeout=60_000)
shots = []


def call(method, path, body=None):
    """The API directly, with the admin token: (status, JSON answer)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + TOKEN)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def event_names():
    status, page = call("GET", "/api/events?limit=1000")
    assert status == 200, page
    return sorted(e["name"] for e in page["items"])


def wait_until_shipped():
    """Until the repository holds every write (health's ship section), so a point-in-time
    restore can reach the newest one."""
    for _ in range(300):
        _, health = call("GET", "/api/health")
        ship = health.get("ship") or {}
        if ship.get("lastShippedSeq") == ship.get("lastSeq") == health["store"]["lastSeq"]:
            return
        time.sleep(0.1)
    raise AssertionError("the log was not shipped: %s" % json.dumps(health.get("ship")))


def wait_until_idle():
    """Until no backup operation runs and no pre-restore backup is being written (health's
    backup section): a restore answers before its pre-restore backup is written, and the next
    operation would be refused as busy meanwhile, as it would for a user who clicked then."""
    for _ in range(600):
        _, health = call("GET", "/api/health")
        backup = health["backup"]
        if backup.get("running") is None and not backup.get("undoPending"):
            return
        time.sleep(0.1)
    raise AssertionError("the server stayed busy: %s" % json.dumps(health["backup"]))


def shot(page, name):
    path = os.path.join(SHOTS, name)
    page.screenshot(path=path, full_page=name != "admin-page.png")
    shots.append(path)


def watch(page, problems):
    """Script errors and Content-Security-Policy violations fail the test."""
    page.on("pageerror", lambda e: problems.append("page error: %s" % e))
    page.on(
        "console",
        lambda m: problems.append("console: " + m.text)
        if m.type == "error" and "Failed to load resource" not in m.text
        else None,
    )


def no_sideways_scroll(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert width <= viewport, "the page scrolls sideways: %d px wide in %d" % (width, viewport)


def sign_in(page):
    """First visit: the page asks for the token; a wrong one shows the API's answer."""
    page.goto(URL + "/")
    card = page.locator("#token-card")
    expect(card).to_be_visible()
    expect(page.locator("#token-reason")).to_have_text("send Authorization: Bearer <token>")
    page.fill("#token-input", "not-the-token")
    page.click("#token-submit")
    expect(page.locator("#token-reason")).to_have_text("the bearer token is not valid")
    expect(card).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.click("#token-submit")
    expect(card).to_be_hidden()
    expect(page.locator("#token-state")).to_have_text("token set for this tab")
    expect(page.locator("#health-status")).to_have_text("ok")


def backup_rows(page, label):
    return page.locator("#backups-table tbody tr").filter(has_text=label)


def desktop(browser, problems):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=ZONE)
    page = context.new_page()
    watch(page, problems)
    sign_in(page)

    status = page.locator("#status-list")
    expect(status).to_contain_text("Store1 event, ")
    expect(status).to_contain_text("Ship lag")
    expect(status).to_contain_text("no drill yet")
    expect(status).to_contain_text("file://")
    expect(page.locator("#backups-empty")).to_be_visible()

    # Back up now, with a label: the result, then the list, local and in the repository.
    page.fill("#backup-label", "ui-first")
    page.click("#backup-button")
    expect(page.locator("#backup-result")).to_contain_text(re.compile(r"Backup backup_\S+_ui-first\.tar\.gz written"))
    rows = backup_rows(page, "ui-first")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="local")).to_contain_text("manual")
    expect(rows.filter(has_text="repository")).to_contain_text("1 event, 34 records")
    backup_id = rows.first.get_attribute("data-id")
    expect(status).to_contain_text(backup_id)
    no_sideways_scroll(page)
    shot(page, "admin-page.png")

    # Browse: a collection, paging, search.
    rows.filter(has_text="local").get_by_role("button", name="Browse").click()
    expect(page.locator("#browse-id")).to_have_text(backup_id)
    page.get_by_role("button", name="registrations (31)").click()
    summary = page.locator("#browse-summary")
    expect(summary).to_have_text("31 matching documents in registrations, showing 1–20")
    page.select_option("#browse-limit", "5")
    expect(summary).to_have_text("31 matching documents in registrations, showing 1–5")
    docs = page.locator("#browse-docs li")
    expect(docs).to_have_count(5)
    expect(docs.first).to_contain_text("Guest 01")
    page.click("#browse-next")
    expect(summary).to_have_text("31 matching documents in registrations, showing 6–10")
    expect(docs.first).to_contain_text("Guest 06")
    expect(page.locator("#browse-page")).to_have_text("page 2")
    page.click("#browse-prev")
    expect(summary).to_have_text("31 matching documents in registrations, showing 1–5")
    page.fill("#browse-q", "LOVELACE")
    page.click("#browse-search")
    expect(summary).to_have_text("1 matching document in registrations, showing 1–1")
    expect(docs).to_have_count(1)
    expect(docs.first).to_contain_text('"name": "Ada Lovelace"')
    expect(page.locator("#browse-pager")).to_be_hidden()
    shot(page, "browse-1280.png")
    # A document written to attack the page shows as the text it is.
    page.get_by_role("button", name="notes (1)").click()
    expect(summary).to_have_text("1 matching document in notes, showing 1–1")
    expect(docs.first).to_contain_text('"text": ' + json.dumps(HOSTILE_NOTE))
    expect(page.locator("#browse-docs img")).to_have_count(0)
    assert page.title() == "eventvault admin"
    page.get_by_role("button", name="registrations (31)").click()
    page.select_option("#browse-limit", "5")
    page.fill("#browse-q", "")
    page.click("#browse-search")
    expect(summary).to_have_text("31 matching documents in registrations, showing 1–5")

    # Writes after the backup, one before and one after a moment picked in the page.
    assert call("POST", "/api/events", {"name": "Kept"})[0] == 201
    time.sleep(1.2)
    moment = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time.sleep(1.2)
    assert call("POST", "/api/events", {"name": "Mistake"})[0] == 201
    wait_until_shipped()
    assert event_names() == ["Kept", "Mistake", "Spring gala"]

    # Point in time: the picker's local time goes out in UTC; dry run, then confirm.
    local = (moment + OFFSET).strftime("%Y-%m-%dT%H:%M:%S")
    page.fill("#pitr-at", local)
    expect(page.locator("#pitr-utc")).to_have_text("UTC: " + moment.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    page.click("#pitr-dry")
    report = page.locator("#pitr-report")
    expect(page.locator("#pitr-preview")).to_be_visible()
    expect(report).to_contain_text("Starts from backup" + backup_id)
    expect(report).to_contain_text("Replays1 writes")
    assert event_names() == ["Kept", "Mistake", "Spring gala"], "a dry run changed the store"
    shot(page, "pitr-dry-run-1280.png")
    page.click("#pitr-confirm")
    expect(page.locator("#pitr-result")).to_contain_text("Restored to " + moment.strftime("%Y-%m-%dT%H:%M:%S"))
    expect(page.locator("#pitr-result")).to_contain_text("new timeline")
    assert event_names() == ["Kept", "Spring gala"]
    expect(status).to_contain_text("Store2 events, ")

    # Restore the backup: the dry run's preview, then the explicit confirmation.
    rows.filter(has_text="local").get_by_role("button", name="Restore…").click()
    expect(page.locator("#restore-id")).to_have_text(backup_id)
    page.click("#restore-dry")
    preview = page.locator("#restore-preview")
    expect(preview).to_be_visible()
    expect(page.locator("#restore-report")).to_contain_text("swap: the whole store is replaced")
    expect(page.locator("#restore-report")).to_contain_text("Live data becomes1 event, 34 records")
    expect(page.locator("#restore-confirm-text")).to_contain_text("replaces all live data with " + backup_id)
    assert event_names() == ["Kept", "Spring gala"], "a dry run changed the store"
    shot(page, "restore-dry-run-1280.png")
    wait_until_idle()
    page.click("#restore-confirm")
    # The swap pauses 1.5 s after staging (scripts/browser-test arms restore.after_staging):
    # meanwhile the page counts the seconds, and the rest of it answers, here a browse page.
    expect(page.locator("#restore-progress")).to_have_text(re.compile(r"working… \d+ s"))
    page.click("#browse-next")
    expect(page.locator("#browse-page")).to_have_text("page 2")
    result = page.locator("#restore-result")
    expect(result).to_contain_text("Restore of " + backup_id + " complete: the store now holds 1 event, 34 records")
    expect(page.locator("#restore-progress")).to_have_text("")
    expect(result).to_contain_text("pre-restore")
    assert event_names() == ["Spring gala"]
    expect(status).to_contain_text("Store1 event, ")

    # A selective restore whose options the API refuses: the page shows the API's message.
    rows.filter(has_text="local").get_by_role("button", name="Restore…").click()
    page.fill("#restore-new-id", "gala-copy")
    page.click("#restore-dry")
    code, answer = call("POST", "/api/backups/%s/restore" % backup_id, {"newEventId": "gala-copy", "dryRun": True})
    assert code == 400, answer
    expect(result).to_have_text("Error: " + answer["error"]["message"])
    expect(page.locator("#notice-text")).to_have_text(answer["error"]["message"])
    page.click("#notice-close")

    # A selective restore: one collection of the event, merged; every record is there already.
    page.fill("#restore-new-id", "")
    page.fill("#restore-collections", "registrations")
    page.fill("#restore-events", EVENT)
    page.click("#restore-dry")
    expect(page.locator("#restore-report")).to_contain_text("merge: records are merged into the live store")
    expect(page.locator("#restore-report")).to_contain_text("Records0 created, 0 overwritten, 31 skipped")
    merged = page.locator("#restore-events-table tbody tr")
    expect(merged).to_have_count(1)
    expect(merged).to_contain_text("registrations")
    wait_until_idle()
    page.click("#restore-confirm")
    expect(result).to_contain_text("Restore of " + backup_id + " complete: 0 created, 0 overwritten, 31 skipped")

    # A dry run whose answer comes after the options changed arms nothing: the confirm button
    # only ever restores what the preview on screen shows.
    held = []
    page.route("**/restore", lambda route: held.append(route))
    page.click("#restore-dry")
    while not held:
        page.wait_for_timeout(50)
    page.fill("#restore-collections", "payments")
    held[0].continue_()
    page.unroute("**/restore")
    expect(page.locator("#restore-progress")).to_have_text("")
    expect(page.locator("#restore-preview")).to_be_hidden()
    page.fill("#restore-collections", "")
    page.fill("#restore-events", "")

    # Backup, then purge: the confirmation names what goes; the result says how much went.
    page.click("#purge summary")
    page.fill("#purge-collections", "payments")
    page.fill("#purge-events", EVENT)
    page.fill("#purge-label", "before-purge")
    wait_until_idle()
    page.click("#purge-button")
    dialog = page.locator("#purge-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#purge-what")).to_have_text("every record of collection “payments” in event " + EVENT)
    shot(page, "purge-confirm-1280.png")
    page.click("#purge-confirm")
    expect(dialog).to_be_hidden()
    expect(page.locator("#purge-result")).to_contain_text("written and verified; 2 records deleted (payments of " + EVENT + ": 2)")
    expect(backup_rows(page, "before-purge")).to_have_count(2)
    assert call("GET", "/api/events/%s/payments" % EVENT)[1]["items"] == []

    # The audit history shows what was done, from the page, as the admin.
    audit = page.locator("#audit-table tbody")
    page.click("#refresh-audit")
    expect(audit.locator("tr").filter(has_text="point in time").filter(has_text="success")).to_have_count(2)
    # The swap and the merge, each with its dry run, the dry run whose answer was dropped; and
    # the two refused clones.
    expect(audit.locator("tr").filter(has_text="restore").filter(has_text=backup_id).filter(has_text="success")).to_have_count(5)
    expect(audit.locator("tr.status-failed").filter(has_text="needs exactly one event")).to_have_count(2)
    expect(audit.locator("tr").filter(has_text="create").filter(has_text="before-purge").first).to_contain_text("admin")
    shot(page, "audit-1280.png")
    no_sideways_scroll(page)

    # Forgetting the token asks for it again.
    page.click("#forget-token")
    expect(page.locator("#token-card")).to_be_visible()
    expect(page.locator("#token-state")).to_have_text("")
    context.close()


def phone(browser, problems):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    watch(page, problems)
    sign_in(page)
    expect(page.locator("#status-list")).to_contain_text("Store1 event, ")
    wait_until_idle()
    page.fill("#backup-label", "from-phone")
    page.click("#backup-button")
    expect(page.locator("#backup-result")).to_contain_text("_from-phone.tar.gz written")
    rows = backup_rows(page, "from-phone")
    expect(rows).to_have_count(2)
    no_sideways_scroll(page)
    shot(page, "status-390.png")
    rows.filter(has_text="local").get_by_role("button", name="Browse").click()
    page.get_by_role("button", name="_events (1)").click()
    expect(page.locator("#browse-summary")).to_have_text("1 matching document in _events, showing 1–1")
    expect(page.locator("#browse-docs li")).to_contain_text('"name": "Spring gala"')
    no_sideways_scroll(page)
    shot(page, "browse-390.png")
    context.close()


def main():
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            desktop(browser, problems)
            phone(browser, problems)
        finally:
            browser.close()
            for path in shots:
                print("screenshot: " + path)
    assert not problems, "\n".join(problems)
    print("admin page: every check passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print("admin page test failed: %s" % e, file=sys.stderr)
        raise
