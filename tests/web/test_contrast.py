"""Issue #14: text on the console and the enrolment page passes WCAG 2.x AA contrast. In the
real Chromium, every visible element that holds text of its own is measured: its colour against
the background actually behind it (ancestors' backgrounds composited, white underneath), at
4.5:1 for normal text and 3:1 for large text (24px, or 18.66px bold). Disabled controls and the
labels Leaflet draws over map shapes (inside its panes) are left out."""

from playwright.sync_api import expect

from tests.advisories.builders import approve
from tests.web.test_register_page import expect_refusals, open_form

# Returns the failures on the page as it stands: [{selector, text, color, background, ratio,
# needed, size, weight}].
CONTRAST = """() => {
  const parse = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const parts = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour[3] > 0) layers.push(colour);
      if (colour[3] >= 1) break;
    }
    let result = [255, 255, 255, 1];
    for (const layer of layers.reverse()) result = over(layer, result);
    return result;
  };
  const luminance = (rgb) => {
    const [r, g, b] = rgb.slice(0, 3).map((v) => {
      const c = v / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const selector = (el) => {
    const path = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      let part = node.tagName.toLowerCase();
      if (node.id) {
        path.unshift(part + "#" + node.id);
        break;
      }
      if (node.classList.length) part += "." + [...node.classList].join(".");
      path.unshift(part);
    }
    return path.join(" > ");
  };
  const failures = [];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes]
      .filter((n) => n.nodeType === 3)
      .map((n) => n.textContent)
      .join("")
      .replace(/\\s+/g, " ")
      .trim();
    if (!own) continue;
    const skipped = ["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "OPTION", "DATALIST"];
    if (skipped.includes(el.tagName)) continue;
    if (el.closest(".leaflet-pane")) continue;
    if (el.matches(":disabled") || el.closest(":disabled")) continue;
    const style = getComputedStyle(el);
    if (style.visibility !== "visible" || el.getClientRects().length === 0) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) continue;
    let faded = false;
    for (let node = el; node; node = node.parentElement) {
      if (Number(getComputedStyle(node).opacity) === 0) faded = true;
    }
    if (faded) continue;
    const back = background(el);
    const fore = over(parse(style.color), back);
    const [light, dark] = [luminance(fore), luminance(back)].sort((a, b) => b - a);
    const ratio = (light + 0.05) / (dark + 0.05);
    const size = parseFloat(style.fontSize);
    const weight = Number(style.fontWeight) || (style.fontWeight === "bold" ? 700 : 400);
    const large = size >= 24 || (size >= 18.66 && weight >= 700);
    const needed = large ? 3 : 4.5;
    if (ratio < needed) {
      failures.push({
        selector: selector(el),
        text: own.slice(0, 60),
        color: style.color,
        background: "rgb(" + back.slice(0, 3).map(Math.round).join(", ") + ")",
        ratio: Math.round(ratio * 100) / 100,
        needed,
        size,
        weight,
      });
    }
  }
  return failures;
}"""


def assert_contrast(page, screen: str) -> None:
    failures = page.tab.evaluate(CONTRAST)
    listed = "\n".join(
        f"  {f['selector']} {f['text']!r}: {f['color']} on {f['background']} = {f['ratio']}:1"
        f" (needs {f['needed']}:1, {f['size']}px weight {f['weight']})"
        for f in failures
    )
    assert failures == [], f"{screen}: text below WCAG AA contrast:\n{listed}"


def _the_measure_catches_faint_text(page) -> None:
    """The measure itself: grey on white and white on a translucent grey over white fail; bold
    24px grey passes as large text; the same text disabled is left out."""
    page.tab.evaluate(
        """() => document.body.insertAdjacentHTML("beforeend",
          '<div id="probe" style="background:#fff">'
          + '<p id="faint" style="color:#999">faint</p>'
          + '<div style="background:rgba(0,0,0,.2)">'
          + '<span id="washed" style="color:#fff">w</span></div>'
          + '<p style="color:#888;font-size:24px;font-weight:700">large</p>'
          + '<button disabled style="color:#ccc">off</button></div>')"""
    )
    found = {f["selector"]: f for f in page.tab.evaluate(CONTRAST)}
    page.tab.evaluate("() => document.getElementById('probe').remove()")
    assert set(found) == {"p#faint", "span#washed"}, found
    assert found["p#faint"]["ratio"] == 2.85, found


def _issue(live, key: str, title: str, level: int) -> str:
    body = {
        "title": {"ko": title, "en": title},
        "message": {"ko": "시위 지역을 피하십시오.", "en": "Avoid the protests."},
        "level": level,
        "category": "security",
        "area": {"countries": ["TH"]},
    }
    issued = live.http.post(
        f"{live.base}/v1/advisories",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert issued.status_code == 201, issued.text
    return issued.json()


def test_the_enrolment_page_has_aa_contrast_in_english_and_korean(live, new_page):
    for language in ("en", "ko"):
        page = open_form(live, new_page)
        tab = page.tab
        if language == "ko":
            tab.get_by_role("button", name="한국어").click()
            expect(tab.get_by_role("heading", name="해외 체류 등록")).to_be_visible()
        if language == "en":
            _the_measure_catches_faint_text(page)
        assert_contrast(page, f"/register ({language})")
        tab.locator("#submit").click()
        expect(tab.locator("#register-form .error:not(:empty)").first).to_be_visible()
        assert_contrast(page, f"/register ({language}, with errors)")
        page.errors[:] = [e for e in page.errors if "status of 422" not in e]


def test_the_console_has_aa_contrast_on_every_screen(live, new_page):
    proposer, approver = live.staff_key("consul", "kim"), live.staff_key("consul", "lee")
    for level in (1, 2, 3, 4):
        active = _issue(live, proposer, f"경보 {level}", level)
        if active["status"] != "pending_approval":
            continue
        approved = approve(
            live.http, active["id"], {"Authorization": f"Bearer {approver}"}, base=live.base
        )
        assert approved.status_code == 200, approved.text
    _issue(live, proposer, "승인 대기 경보", 3)

    page = new_page()
    tab = page.tab
    tab.goto(live.base + "/console/")
    expect(tab.locator("#key")).to_be_focused()
    assert_contrast(page, "console login")
    tab.fill("#key", "ajs_not_a_key")
    tab.press("#key", "Enter")
    expect(tab.locator("#flash")).to_be_visible()
    assert_contrast(page, "console login (wrong key)")
    expect_refusals(page, 401, 1)

    tab.fill("#key", live.staff_key("admin", "han"))
    tab.press("#key", "Enter")
    expect(tab.locator("#who")).to_be_visible()
    for language in ("ko", "en"):
        if language == "en":
            tab.click("#lang")
            expect(tab.locator("#who")).to_contain_text("admin")
        tab.goto(f"{live.base}/console/#/map")
        expect(tab.locator("#active-list .card")).to_have_count(4)
        assert_contrast(page, f"console map ({language})")
        tab.goto(f"{live.base}/console/#/issue")
        expect(tab.locator("#issue-map .leaflet-interactive").first).to_be_attached()
        tab.fill("#f-countries", "TH")
        tab.dispatch_event("#f-countries", "input")
        expect(tab.locator("#preview").get_by_test_id("preview-citizens")).to_be_visible()
        assert_contrast(page, f"console issue ({language})")
        tab.goto(f"{live.base}/console/#/queue")
        expect(tab.locator("#queue-list .card")).to_have_count(1)
        assert_contrast(page, f"console queue ({language})")
        tab.goto(f"{live.base}/console/#/feeds")
        expect(tab.locator("#view-feeds")).to_be_visible()
        tab.wait_for_load_state("networkidle")
        assert_contrast(page, f"console feeds ({language})")
        tab.goto(f"{live.base}/console/#/audit")
        expect(tab.locator("#audit tr").first).to_be_visible()
        assert_contrast(page, f"console audit ({language})")
