"""``closeloop sandbox up|down|status|seed``: the local systems a developer or the demo runs.

``up`` starts a real Tryton (initialised once, restored from a pristine copy after that), the
Salesforce sandbox (HTTPS with a locally made certificate), the Harvest and the Xero
sandboxes, and writes the connection
details to ``<home>/sandbox.json``; ``down`` stops what ``up`` started, by PID; ``status``
says what runs; ``seed`` loads records into a running sandbox.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from closeloop.connectors.catalog import SandboxWiring, plugins
from closeloop.connectors.http import sandbox_verify
from closeloop.connectors.tryton.sandbox import cache_dir, init_tryton, start_tryton
from closeloop.domain.operations import Role
from closeloop.sandboxes.tryton.server import free_port, stop_pid

__all__ = ["cache_dir", "init_tryton", "start_tryton"]  # used by tests and benchmarks


def wirings() -> dict[str, SandboxWiring]:
    """The sandboxes the connector table knows, by name (their ``sandbox.json`` key)."""
    return {p.sandbox.state_key: p.sandbox for p in plugins().values() if p.sandbox}


def read_state(home: Path) -> dict[str, Any]:
    """``home/sandbox.json`` (empty when absent)."""
    path = home / "sandbox.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return data


def write_state(home: Path, state: dict[str, Any]) -> None:
    """Write ``home/sandbox.json`` and a ``home/closeloop.yaml`` that connects a hub to the
    running sandboxes (both readable by the owner only: they hold the sandboxes' secrets)."""
    home.mkdir(parents=True, exist_ok=True)
    for name, text in (
        ("sandbox.json", json.dumps(state, indent=2) + "\n"),
        ("closeloop.yaml", hub_config(home, state)),
    ):
        tmp = home / f"{name}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)  # 0600 from creation
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)  # a leftover .tmp of another mode
            out.write(text)
        tmp.replace(home / name)


def hub_config(home: Path, state: dict[str, Any]) -> str:
    """A ``closeloop.yaml`` for the sandboxes of ``state`` (``closeloop run -c`` it), with the
    state's ``config`` laid over it (its ``systems`` added to the sandboxes', its other keys
    replacing the generated ones). Sandboxes sharing a role (``sandbox up xero`` beside
    Tryton) are listed under ``roles:`` with the first as the default: add ``rules`` to
    route deals to the others."""
    import yaml

    from closeloop.connectors.catalog import plugins

    systems: dict[str, Any] = {}
    for kind, connector in plugins().items():
        wiring = connector.sandbox
        if wiring is not None and wiring.state_key in state:
            systems[kind] = wiring.settings(state[wiring.state_key])
    config: dict[str, Any] = {
        "database_url": f"sqlite:///{home.resolve() / 'hub.db'}",
        "systems": systems,
    }
    if "hub" in state:
        config["http"] = {"host": "127.0.0.1", "port": state["hub"]["port"]}
    roles = {plugins()[kind].role for kind in systems}
    for role in (Role.PSA, Role.ERP):  # two sandboxes of one role (Tryton and Xero): the
        # first of the table's order serves every deal until routing rules are added
        shared = [kind for kind in systems if plugins()[kind].role is role]
        if len(shared) > 1:
            config.setdefault("roles", {})[role.value] = {"systems": shared, "default": shared[0]}
    if {Role.CRM, Role.PSA, Role.ERP} <= roles:
        config["flows"] = {
            "mobilize": {},
            "bill_time": {},
            "bill_expense": {},
            "invoice": {},
            "status_back": {},
        }
    overlay = dict(state.get("config") or {})  # e.g. the demo firm's entities and routing
    config["systems"] = {**systems, **overlay.pop("systems", {})}
    config.update(overlay)
    header = (
        "# Written by `closeloop sandbox up` for the local sandboxes; run the hub on them\n"
        f"# with: closeloop run -c {home.resolve() / 'closeloop.yaml'}\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (an exited process not yet collected, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" not in status


SYSTEMS = ("tryton", "salesforce", "harvest", "xero")
"""What ``up`` starts by default: one system of each role, and Xero, an acquired unit's ERP
beside Tryton (:func:`hub_config` makes Tryton the default ERP); any other sandbox of the
connector table on request."""


def up(home: Path, systems: tuple[str, ...] = SYSTEMS) -> dict[str, Any]:
    """Start those of ``systems`` that are not running yet, each by its connector's sandbox
    wiring; returns the sandbox state. Raises ``SandboxError`` or ``SandboxStartError`` when
    one does not come up, ``ValueError`` for a name no connector has a sandbox for. Paths in
    the state and in ``closeloop.yaml`` are absolute: the files work from any folder."""
    home = home.resolve()
    known = wirings()
    unknown = [name for name in systems if name not in known]
    if unknown:
        raise ValueError(f"no sandbox called {unknown} (known: {', '.join(sorted(known))})")
    state = read_state(home)
    state.setdefault("hub", {"port": free_port()})  # where `closeloop run` will listen
    for name in systems:
        entry = state.get(name)
        if entry and alive(int(entry["pid"])):
            continue
        state[name] = known[name].start(home)
        write_state(home, state)
    return state


def set_faults(home: Path, system: str, plan: dict[str, Any]) -> dict[str, Any]:
    """Set the fault plan of the running sandbox ``system`` (see
    :class:`~closeloop.sandboxes.faults.FaultPlan`); an empty plan clears it. Raises
    ``LookupError`` when it does not run."""
    response = _admin(home, system, "PUT", "faults", plan, timeout_s=10)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _admin(
    home: Path, system: str, method: str, path: str, body: Any, timeout_s: float
) -> httpx.Response:
    """One call to the running sandbox's ``/__sandbox/<path>``; raises ``LookupError`` when
    it does not run."""
    entry = _running(home, system)
    url = f"{entry['url']}/__sandbox/{path}"
    return httpx.request(method, url, json=body, verify=sandbox_verify(entry), timeout=timeout_s)


def _running(home: Path, system: str) -> dict[str, Any]:
    entry: dict[str, Any] | None = read_state(home).get(system)
    offered = sorted(name for name, wiring in wirings().items() if wiring.admin)
    if system not in offered:
        raise LookupError(f"offered for: {', '.join(offered)} (not {system})")
    if not entry or not alive(int(entry["pid"])):
        raise LookupError(f"the {system} sandbox is not running: closeloop sandbox up")
    return entry


def harvest_approve(home: Path, body: dict[str, Any]) -> int:
    """Approve Harvest time as a manager would (``{"ids": [...]}`` or ``{"user_id", "from",
    "to"}``); returns how many entries were approved. Raises ``LookupError`` when Harvest
    does not run."""
    response = _admin(home, "harvest", "POST", "approve", body, timeout_s=60)
    response.raise_for_status()
    return int(response.json()["approved"])


def harvest_withdraw_approval(home: Path, entry_ids: list[int]) -> int:
    """Withdraw the approval of Harvest time entries as a manager would before correcting
    them (invoiced ones stay approved); returns how many changed. Raises ``LookupError``
    when Harvest does not run."""
    response = _admin(home, "harvest", "POST", "withdraw-approval", {"ids": entry_ids}, 30)
    response.raise_for_status()
    return int(response.json()["withdrawn"])


def record_process(home: Path, name: str, pid: int, **details: Any) -> None:
    """Add a process the sandboxes' owner started (e.g. the demo's hub) to ``sandbox.json``,
    so that :func:`down` stops it."""
    state = read_state(home)
    state[name] = {**state.get(name, {}), "pid": pid, **details}
    write_state(home, state)


def seed(home: Path, system: str, data: dict[str, Any]) -> dict[str, Any]:
    """Load ``data`` into the running sandbox ``system``; returns what it loaded.
    Raises ``LookupError`` when it does not run and ``ValueError`` with the sandbox's
    answer when it refuses the data (then nothing was loaded)."""
    response = _admin(home, system, "POST", "seed", data, timeout_s=300)
    if response.status_code != 200:
        raise ValueError(f"{system} refused the seed: {response.text[:2000]}")
    loaded: dict[str, Any] = response.json()["loaded"]
    return loaded


def down(home: Path) -> list[str]:
    """Stop everything ``up`` started; returns what was stopped."""
    state = read_state(home)
    stopped = []
    for name, entry in state.items():
        if isinstance(entry, dict) and "pid" in entry and alive(int(entry["pid"])):
            stop_pid(int(entry["pid"]))
            stopped.append(name)
    (home / "sandbox.json").unlink(missing_ok=True)
    (home / "closeloop.yaml").unlink(missing_ok=True)
    return stopped


def status(home: Path) -> dict[str, str]:
    """``{system: "running at URL" | "stopped"}``."""
    report = {}
    known = wirings()
    for name, entry in read_state(home).items():
        if not isinstance(entry, dict) or "pid" not in entry:
            continue
        if not alive(int(entry["pid"])):
            report[name] = f"stopped (pid {entry['pid']} is gone)"
            continue
        try:
            if name == "hub":
                httpx.get(f"http://127.0.0.1:{entry['port']}/healthz", timeout=2)
                entry = {**entry, "url": f"http://127.0.0.1:{entry['port']}"}
            elif name in known:
                known[name].check(entry)
            report[name] = f"running at {entry.get('url', '-')} (pid {entry['pid']})"
        except httpx.HTTPError:
            report[name] = f"pid {entry['pid']} alive but {entry.get('url', '-')} does not answer"
    return report
