"""The agent page as people use it: a real Daphne and Celery worker, two
agents logged in through the page in headless Chromium (Debian's chromium
and chromedriver, driven by Selenium), and a synthetic call streamed through
the Twilio protocol for one of them. The spoken sentences must appear as
final text on her page, through a network drop, and never on his."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from asr_core.metrics import wer
from callcenter.calls import services
from callcenter.calls.models import Agent, Call, Segment
from callcenter.tools.client import stream_twilio
from callcenter.tools.demo import synthetic_call
from tests.fixtures.calls import wait_recognized

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (scripts/bootstrap.sh installs them)",
    ),
]

MAX_WER = 0.3  # as the live-call tests (tests/callcenter/streaming/test_live_calls.py)
CALLER = "+15550109999"
PASSWORD = "a-long-test-password-9"
OFFLINE_S = 8.0  # about two sentences: at least one final is stored while the page is offline


@pytest.fixture(scope="module")
def call_audio():
    return synthetic_call(seed=23, sentences=4)


@pytest.fixture
def browsers(web_server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start():
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,860",
                     "--disable-gpu", "--no-first-run"]:  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def no_login_throttle():
    """The login rate limit counts attempts per address in Redis; earlier
    tests in this Redis database may have used up 127.0.0.1's allowance."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("login:*"):
        client.delete(key)


def log_in(driver, base_url: str, username: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/agent/")
    assert "/accounts/login/" in driver.current_url, "the page asks for a login first"
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 20).until(ec.url_to_be(f"{base_url}/agent/"))
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "open")


def wait(driver, condition, timeout: float, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message)


def finals(driver) -> list[dict]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#transcript li[data-state=final]')].map(li => ({"
        "segment: Number(li.dataset.segment), time: li.querySelector('time').textContent,"
        "text: li.querySelector('.text').textContent}))"
    )


def listed_calls(driver) -> set[int]:
    script = "return [...document.querySelectorAll('#calls li')].map(li => Number(li.dataset.call))"
    return set(driver.execute_script(script))


def set_offline(driver, offline: bool) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )


def test_an_agent_follows_her_call_live_and_another_agent_does_not_see_it(
    web_server, celery_worker, browsers, call_audio, django_user_model, no_login_throttle, tmp_path
):
    from selenium.webdriver.common.by import By

    agents = {
        name: Agent.objects.create(user=django_user_model.objects.create_user(name, password=PASSWORD),
                                   display_name=name)
        for name in ("alice", "bob")
    }  # fmt: skip
    token = services.line_create(name="e2e-agents")[1]
    # The caller called alice before: her page shows that call in the caller's history (an agent's
    # history lists the calls she may open: her own, and the queue's while they are in it).
    customer = services.customer_create(phone=CALLER, name="Grace Caller")
    earlier = services.call_start(protocol="twilio", external_id="MZ-before", customer_id=customer.pk,
                                  started_at=timezone.now() - dt.timedelta(days=3))  # fmt: skip
    services.call_assign_agent(call_id=earlier.pk, agent_id=agents["alice"].pk)
    said = services.segment_create(call_id=earlier.pk, index=0, start_ms=800, end_ms=2900, sample_rate=8000)
    Segment.objects.filter(pk=said.pk).update(status="recognized", text="i want to change my delivery address")
    services.call_end(call_id=earlier.pk, ended_at=earlier.started_at + dt.timedelta(seconds=95))

    alice, bob = browsers(), browsers()
    log_in(alice, web_server.http_url, "alice")
    log_in(bob, web_server.http_url, "bob")

    result: dict = {}

    def place_call() -> None:
        try:
            result["run"] = async_to_sync(stream_twilio)(
                f"{web_server.ws_url}/ws/media/twilio/{token}", call_audio.audio, caller=CALLER,
                extra_parameters={"agent": "alice"},
            )  # fmt: skip
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    caller = threading.Thread(target=place_call, daemon=True)
    caller.start()

    # Alice sees the call come in, assigned to her, and opens it.
    wait(alice, lambda d: d.find_elements(By.CSS_SELECTOR, "#calls li[data-status=live] button"), 30,
         "the call did not appear in alice's list")  # fmt: skip
    call = Call.objects.exclude(pk=earlier.pk).get()
    assert call.agent.user.username == "alice"
    alice.find_element(By.CSS_SELECTOR, f"#calls li[data-call='{call.pk}'] button").click()
    wait(alice, lambda d: d.find_element(By.ID, "call-heading").text == "Grace Caller", 10, "the call did not open")
    wait(alice, lambda d: "change my delivery address" in d.find_element(By.ID, "history").text, 10,
         "the caller's earlier call is not in the history")  # fmt: skip
    assert "No profile" in alice.find_element(By.ID, "history").text

    wait(alice, lambda d: finals(d), 60, "no final text on alice's page")
    assert call.pk not in listed_calls(bob), "bob sees alice's live call"

    # A network drop: the socket goes, and nothing reaches the page for a while.
    set_offline(alice, True)
    alice.execute_script("agentPage.socket.close()")
    dropped_at = time.time()
    wait(alice, lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "closed", 10,
         "the page did not notice the drop")  # fmt: skip
    time.sleep(OFFLINE_S)
    set_offline(alice, False)
    wait(alice, lambda d: d.execute_script("return agentPage.reconnects") >= 1, 30, "the page did not reconnect")
    back_at = time.time()

    wait(alice, lambda d: len(finals(d)) >= 2, 60, "no second final")
    # The screenshot: a few finals, and the next sentence in grey while it is spoken (when there is one).
    _try_wait(alice, lambda d: d.find_elements(By.CSS_SELECTOR, "#transcript li[data-state=partial]"), 8)
    alice.save_screenshot(str(tmp_path / "agent-page.png"))

    caller.join(timeout=120)
    assert "error" not in result and result["run"].close_code == 1000, result
    segments = wait_recognized(call)
    wait(alice, lambda d: len(finals(d)) == len(segments), 60, "alice's page is missing final segments")
    wait(alice, lambda d: d.find_element(By.CSS_SELECTOR, f"#calls li[data-call='{call.pk}']").get_attribute(
        "data-status") == "ended", 20, "the call is not shown as ended")  # fmt: skip

    # What alice read is what was stored, segment by segment, and it is what the caller said.
    shown = finals(alice)
    assert [(f["segment"], " ".join(f["text"].split())) for f in shown] == [(s.pk, s.text) for s in segments]
    assert len(segments) == len(call_audio.sentences)
    assert wer(list(zip(call_audio.sentences, [f["text"] for f in shown], strict=True))) <= MAX_WER, shown
    assert all(f["time"].count(":") == 1 for f in shown), "each segment shows its time in the call"
    # Some of it was recognized while alice's page was offline: fetched after the reconnect.
    missed = [s for s in segments if dropped_at <= s.updated.timestamp() <= back_at]
    assert missed, "no final fell into the offline window: the drop tested nothing"
    assert alice.execute_script("return agentPage.resyncs") >= 1
    # Bob never saw the call, and cannot open it by its address either.
    assert call.pk not in listed_calls(bob)
    bob.get(f"{web_server.http_url}/agent/#call-{call.pk}")
    wait(bob, lambda d: d.find_element(By.ID, "call-notice").is_displayed(), 10, "bob got no refusal")
    assert "another agent" in bob.find_element(By.ID, "call-notice").text
    assert not finals(bob)


def _try_wait(driver, condition, timeout: float) -> None:
    from selenium.common.exceptions import TimeoutException

    try:
        wait(driver, condition, timeout, "")
    except TimeoutException:
        pass



def _publish(call_id: int, message: dict) -> None:
    from channels.layers import get_channel_layer

    from callcenter.live import messages

    async def send() -> None:
        layer = get_channel_layer()
        for group in messages.groups_for_call(call_id):
            await layer.group_send(group, messages.layer_event(message))

    async_to_sync(send)()


def _contrast(rgb: str, background: tuple[int, int, int] = (255, 255, 255)) -> float:
    """WCAG contrast ratio of a CSS rgb()/rgba() colour against a background."""

    def luminance(channels) -> float:
        def linear(c: float) -> float:
            c /= 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (linear(float(c)) for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    channels = rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]
    lighter, darker = sorted([luminance(channels) + 0.05, luminance(background) + 0.05], reverse=True)
    return lighter / darker


def test_the_transcript_by_keyboard_partials_low_confidence_and_scrolling(web_server, browsers, django_user_model,
                                                                          no_login_throttle):  # fmt: skip
    """Live messages as the worker publishes them, into a call with a long
    transcript, on a laptop-sized window, used with the keyboard."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from callcenter.live import messages

    agent = Agent.objects.create(user=django_user_model.objects.create_user("carol", password=PASSWORD))
    customer = services.customer_create(phone="+15550104444", name="Long Talker")
    call = services.call_start(protocol="twilio", external_id="MZ-long", customer_id=customer.pk)
    for i in range(30):
        s = services.segment_create(call_id=call.pk, index=i, start_ms=3000 * i, end_ms=3000 * i + 2000,
                                    sample_rate=8000)  # fmt: skip
        Segment.objects.filter(pk=s.pk).update(status="recognized", text=f"sentence number {i}", confidence=0.9,
                                               words=[{"w": w, "start": 0.1, "end": 0.2, "conf": 0.9}
                                                      for w in f"sentence number {i}".split()])  # fmt: skip
    browser = browsers()
    browser.set_window_size(1280, 720)
    log_in(browser, web_server.http_url, "carol")
    wait(browser, lambda d: call.pk in listed_calls(d), 10, "the queued call is not listed")

    # Keyboard only: Tab to the call, Enter opens it.
    body = browser.find_element(By.TAG_NAME, "body")
    for _ in range(12):
        body.send_keys(Keys.TAB)
        if browser.execute_script("return document.activeElement.closest('#calls') !== null"):
            break
    # A live update re-draws the list: the focus stays on the call.
    _publish(call.pk, messages.call_message(call_id=call.pk, status="live", protocol="twilio",
                                            customer_id=customer.pk, caller=customer.phone))  # fmt: skip
    time.sleep(0.5)
    focused = "const li = document.activeElement.closest('#calls li'); return li ? Number(li.dataset.call) : null"
    assert browser.execute_script(focused) == call.pk
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(browser, lambda d: len(finals(d)) == 30, 10, "the call's transcript did not load")

    def at_bottom() -> bool:
        return browser.execute_script("const b = document.getElementById('transcript-scroll');"
                                      "return b.scrollHeight - b.scrollTop - b.clientHeight < 5")  # fmt: skip

    overflows = "const b = document.getElementById('transcript-scroll'); return b.scrollHeight > b.clientHeight"
    assert browser.execute_script(overflows), "the transcript should overflow"
    assert at_bottom()
    no_sideways = "const e = document.documentElement; return e.scrollWidth <= e.clientWidth"
    assert browser.execute_script(no_sideways), "the page scrolls sideways at 1280 x 720"
    # The three columns and the transcript are all on a laptop screen at once.
    boxes = browser.execute_script(
        "return ['calls', 'transcript-scroll', 'history'].map(id => document.getElementById(id).getBoundingClientRect())"
        ".map(r => [r.left, r.right, r.top, r.bottom])"
    )
    assert all(0 <= left < right <= 1280 and 0 <= top < 720 for left, right, top, _ in boxes), boxes

    # A partial in grey, then the same segment's final, with its low-confidence word marked.
    segment = services.segment_create(call_id=call.pk, index=30, start_ms=95_000, end_ms=95_000, sample_rate=8000)
    _publish(call.pk, messages.partial_message(call_id=call.pk, segment_id=segment.pk, index=30,
                                               text="my account number", words=[], audio_at=0.0,
                                               start_ms=95_000))  # fmt: skip
    row = f"#transcript li[data-segment='{segment.pk}']"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row}[data-state=partial]"), 10, "no partial")
    partial_text = browser.find_element(By.CSS_SELECTOR, f"{row} .text")
    assert partial_text.text == "my account number" and at_bottom()
    assert browser.find_element(By.CSS_SELECTOR, f"{row} time").text == "1:35"
    grey = partial_text.value_of_css_property("color")
    final_text = browser.find_elements(By.CSS_SELECTOR, "#transcript li[data-state=final] .text")[0]
    assert grey != final_text.value_of_css_property("color")
    assert _contrast(grey) >= 4.5, grey
    words = [{"w": w, "start": 0.3 * i, "end": 0.3 * i + 0.25, "conf": 0.3 if w == "account" else 0.9}
             for i, w in enumerate("my account number changed".split())]
    _publish(call.pk, messages.final_message(call_id=call.pk, segment_id=segment.pk, index=30,
                                             text="my account number changed", words=words, confidence=0.7,
                                             status="recognized", start_ms=95_000, end_ms=97_000))  # fmt: skip
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row}[data-state=final]"), 10, "no final")
    assert browser.find_element(By.CSS_SELECTOR, f"{row} .text").text == "my account number changed"
    assert [m.text for m in browser.find_elements(By.CSS_SELECTOR, f"{row} mark.low")] == ["account"]
    assert browser.find_element(By.CSS_SELECTOR, f"{row} time").text == "1:35"
    assert len(browser.find_elements(By.CSS_SELECTOR, row)) == 1, "the final replaced the partial"

    # Scrolled up to read: new text does not pull the transcript down; a button offers the latest.
    browser.execute_script("document.getElementById('transcript-scroll').scrollTop = 0")
    wait(browser, lambda d: not d.execute_script("return agentPage.follow"), 5, "scrolling up was not noticed")
    later = services.segment_create(call_id=call.pk, index=31, start_ms=99_000, end_ms=99_000, sample_rate=8000)
    _publish(call.pk, messages.partial_message(call_id=call.pk, segment_id=later.pk, index=31, text="and also",
                                               words=[], audio_at=0.0))  # fmt: skip
    jump = browser.find_element(By.ID, "jump")
    wait(browser, lambda d: jump.is_displayed(), 10, "no jump-to-latest button")
    assert browser.execute_script("return document.getElementById('transcript-scroll').scrollTop") == 0
    jump.send_keys(Keys.ENTER)
    wait(browser, lambda d: at_bottom(), 5, "the button did not jump to the latest text")

    browser.set_window_size(1000, 720)
    assert browser.execute_script(no_sideways), "the page scrolls sideways in a narrow window"

    # The call is unassigned: the agent takes it with the keyboard.
    take = browser.find_element(By.ID, "take")
    assert take.is_displayed() and take.text == "Take this call"
    take.send_keys(Keys.ENTER)
    wait(browser, lambda d: "your call" in d.find_element(By.ID, "call-meta").text, 10, "the call was not taken")
    assert Call.objects.get(pk=call.pk).agent == agent and not take.is_displayed()
