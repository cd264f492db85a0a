"""The health of one model server, as a state machine driven by probes and real requests.

Invariants:

* Every transition is in ``TABLE``: one row per input, one column per state, one action per
  cell. A test checks that no cell is missing. The actions are small named steps below.
* Time and randomness are parameters: ``step`` takes ``now`` and a ``rand`` in ``[0, 1)``;
  nothing here reads a clock or a random source, so every decision is tested with asserts.
* Liveness is not readiness: a loading model is ``loading``, a full queue is ``busy``.
* Never down for what is not a server fault: 401/403 give ``unauthorized``; 429, Ollama's and
  Kobold.cpp's busy 503s, client cancellations, context-overflow 400s and other client errors never
  count towards ``degraded`` or ``offline``.
* Connection refused means ``offline`` at once. Timeouts and 5xx count in streaks: a probe
  streak (``probe_failures_to_trip``, default 3) or a request streak
  (``request_failures_to_trip``, default 5) opens the breaker (``degraded``); after
  ``cooldown`` one trial is admitted (half-open) and its success closes the breaker.
* ``changed`` is true exactly when the state differs, so the shell logs each change once,
  with its reason, and never logs a probe that changed nothing.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import msgspec

__all__ = [
    "HealthState",
    "HealthInput",
    "Admission",
    "HealthPolicy",
    "HealthEvent",
    "ServiceHealth",
    "Transition",
    "STATES",
    "INPUTS",
    "TABLE",
    "initial",
    "step",
    "admit",
    "probe_delay",
]

HealthState = Literal[
    "unknown", "online", "loading", "busy", "degraded", "offline", "unauthorized", "foreign"
]

HealthInput = Literal[
    # Active probes, after ``identify`` has judged the answers.
    "probe_ok",  # ready
    "probe_busy",  # ready, every slot working (llama.cpp /slots)
    "probe_loading",  # answering, still loading a model (llama.cpp 503 "Loading model")
    "probe_refused",  # connection refused / unreachable
    "probe_timeout",  # no answer within the probe timeout
    "probe_error",  # a recognised server answered its health path with a 5xx
    "probe_unauthorized",  # 401/403
    "probe_foreign",  # something that is no model server
    "probe_routerd",  # routerd itself (a loop)
    # Outcomes of real requests.
    "request_ok",
    "request_slow",  # succeeded, but slower than ``slow_request`` to the first token
    "request_5xx",
    "request_timeout",
    "request_refused",
    "request_busy",  # 429, or Ollama's 503 "server busy ... maximum pending requests"
    "request_loading",  # 503 "Loading model"
    "request_unauthorized",  # 401/403
    "request_cancelled",  # the client went away: not the server's fault
    "request_context_overflow",  # a 400 saying the prompt is too long
    "request_client_error",  # any other 4xx
    # Something suggests the server may be back (a config reload, a file event, ...).
    "hint",
]

Admission = Literal["admit", "trial", "refuse"]

STATES: Final[tuple[HealthState, ...]] = get_args(HealthState)
INPUTS: Final[tuple[HealthInput, ...]] = get_args(HealthInput)

_Action = Literal[
    "ONLINE",
    "BUSY",
    "LOADING",
    "OFFLINE",
    "UNAUTH",
    "FOREIGN",
    "PTIMEOUT",
    "PERROR",
    "DEGRADE",
    "RSTRIKE",
    "REOPEN",
    "HEAL",
    "CLOSE",
    "OK",
    "HINT",
    "IGNORE",
]

# What each action does (``_apply`` is the code):
#   ONLINE / BUSY / LOADING / UNAUTH / FOREIGN   go to that state
#   OFFLINE    go offline at once (already offline: back off further)
#   PTIMEOUT   probe strike; the streak's end is ``offline``
#   PERROR     probe strike; the streak's end is ``degraded`` (breaker opened by probes)
#   DEGRADE    ``degraded`` at once (an answer, but a failing one, from a server thought gone)
#   RSTRIKE    request strike; the streak's end is ``degraded`` (breaker opened by requests)
#   REOPEN     still degraded: the cool-down starts again and the trial is spent
#   HEAL       probe success while degraded: closes a probe-opened breaker after cool-down
#   CLOSE      request success while degraded: closes the breaker after cool-down
#   OK         request success while online: ends the request strike streak
#   HINT       probe again now, from the first backoff step
#   IGNORE     nothing changes
_TABLE_TEXT: Final = """
                          unknown  online   loading  busy     degraded offline  unauthorized foreign
probe_ok                  ONLINE   ONLINE   ONLINE   ONLINE   HEAL     ONLINE   ONLINE   ONLINE
probe_busy                BUSY     BUSY     BUSY     BUSY     HEAL     BUSY     BUSY     BUSY
probe_loading             LOADING  LOADING  LOADING  LOADING  LOADING  LOADING  LOADING  LOADING
probe_refused             OFFLINE  OFFLINE  OFFLINE  OFFLINE  OFFLINE  OFFLINE  OFFLINE  OFFLINE
probe_timeout             PTIMEOUT PTIMEOUT PTIMEOUT PTIMEOUT PTIMEOUT OFFLINE  PTIMEOUT PTIMEOUT
probe_error               PERROR   PERROR   PERROR   PERROR   REOPEN   DEGRADE  PERROR   DEGRADE
probe_unauthorized        UNAUTH   UNAUTH   UNAUTH   UNAUTH   UNAUTH   UNAUTH   UNAUTH   UNAUTH
probe_foreign             FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN
probe_routerd             FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN  FOREIGN
request_ok                ONLINE   OK       ONLINE   ONLINE   CLOSE    HINT     HINT     IGNORE
request_slow              RSTRIKE  RSTRIKE  RSTRIKE  RSTRIKE  REOPEN   HINT     HINT     IGNORE
request_5xx               RSTRIKE  RSTRIKE  RSTRIKE  RSTRIKE  REOPEN   HINT     IGNORE   IGNORE
request_timeout           RSTRIKE  RSTRIKE  RSTRIKE  RSTRIKE  REOPEN   IGNORE   IGNORE   IGNORE
request_refused           OFFLINE  OFFLINE  OFFLINE  OFFLINE  OFFLINE  IGNORE   OFFLINE  OFFLINE
request_busy              BUSY     BUSY     IGNORE   IGNORE   IGNORE   HINT     IGNORE   IGNORE
request_loading           LOADING  LOADING  IGNORE   LOADING  LOADING  LOADING  IGNORE   IGNORE
request_unauthorized      UNAUTH   UNAUTH   UNAUTH   UNAUTH   UNAUTH   UNAUTH   IGNORE   IGNORE
request_cancelled         IGNORE   IGNORE   IGNORE   IGNORE   IGNORE   IGNORE   IGNORE   IGNORE
request_context_overflow  IGNORE   IGNORE   IGNORE   IGNORE   IGNORE   HINT     IGNORE   IGNORE
request_client_error      IGNORE   IGNORE   IGNORE   IGNORE   IGNORE   HINT     IGNORE   IGNORE
hint                      HINT     IGNORE   IGNORE   IGNORE   IGNORE   HINT     HINT     HINT
"""


def _parse_table(text: str) -> dict[tuple[HealthState, HealthInput], _Action]:
    lines = [line.split() for line in text.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    if tuple(header) != STATES:
        raise AssertionError(f"table columns {header} are not {STATES}")
    actions = set(get_args(_Action))
    table: dict[tuple[HealthState, HealthInput], _Action] = {}
    for row in rows:
        name, cells = row[0], row[1:]
        if name not in INPUTS or len(cells) != len(STATES) or not set(cells) <= actions:
            raise AssertionError(f"bad table row: {row}")
        for state, cell in zip(STATES, cells, strict=True):
            table[(state, name)] = cell  # type: ignore[assignment]
    if len(table) != len(STATES) * len(INPUTS):
        raise AssertionError("the health table is missing cells")
    return table


#: (state, input) -> action, for every state and every input.
TABLE: Final = _parse_table(_TABLE_TEXT)

_REASONS: Final[dict[HealthInput, str]] = {
    "probe_ok": "ready",
    "probe_busy": "ready, every slot busy",
    "probe_loading": "loading a model",
    "probe_refused": "connection refused",
    "probe_timeout": "probes time out",
    "probe_error": "health checks fail with server errors",
    "probe_unauthorized": "an API key is needed (401/403)",
    "probe_foreign": "something that is not a model server answers here",
    "probe_routerd": "routerd itself answers here: loop refused",
    "request_ok": "a request succeeded",
    "request_slow": "requests are slow",
    "request_5xx": "requests fail with server errors",
    "request_timeout": "requests time out",
    "request_refused": "a request was refused a connection",
    "request_busy": "busy (queue full or rate-limited)",
    "request_loading": "loading a model",
    "request_unauthorized": "an API key is needed (401/403)",
    "request_cancelled": "a client cancelled",
    "request_context_overflow": "a prompt was too long for the model",
    "request_client_error": "a request was refused as invalid",
    "hint": "asked to look again",
}

#: States in which probes back off exponentially instead of running every interval.
_BACKOFF_STATES: Final = frozenset({"offline", "unauthorized", "foreign"})


class HealthPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Timing and thresholds, all in seconds or counts. Defaults follow what other routers
    converged on: ~3 failed probes or ~5 failed requests open the breaker."""

    interval: float = 5.0
    probe_timeout: float = 3.0
    backoff_cap: float = 60.0
    jitter: float = 0.2
    probe_failures_to_trip: int = 3
    request_failures_to_trip: int = 5
    cooldown: float = 30.0
    slow_request: float | None = 120.0


class HealthEvent(msgspec.Struct, frozen=True):
    """One input with an optional detail (for the reason) and, for requests, the time to
    the first byte (``request_ok`` slower than ``slow_request`` counts as ``request_slow``)."""

    input: HealthInput
    detail: str = ""
    latency: float | None = None


class ServiceHealth(msgspec.Struct, frozen=True):
    """Everything the machine remembers about one service."""

    state: HealthState = "unknown"
    since: float = 0.0
    reason: str = "not probed yet"
    probe_strikes: int = 0
    request_strikes: int = 0
    backoff_step: int = 0
    degraded_by: Literal["probe", "request"] | None = None
    breaker_until: float | None = None
    trial_started: float | None = None
    next_probe_at: float = 0.0
    last_ok: float | None = None


class Transition(msgspec.Struct, frozen=True):
    """The result of one ``step``.

    ``changed``: the state differs from ``previous`` (log ``reason`` once). ``quiet``: the
    change is only between ``online`` and ``busy`` (worth a debug line, not an info line).
    ``probe_now``: probe at once (``health.next_probe_at`` is ``now``).
    """

    health: ServiceHealth
    previous: HealthState
    changed: bool
    reason: str
    quiet: bool = False
    probe_now: bool = False


def initial(now: float) -> ServiceHealth:
    """A service never probed: ``unknown``, to be probed at once."""
    return ServiceHealth(since=now, next_probe_at=now)


def probe_delay(state: HealthState, backoff_step: int, policy: HealthPolicy, rand: float) -> float:
    """Seconds until the next probe.

    Offline, unauthorized and foreign services back off: ``interval * 2**step``, capped at
    ``backoff_cap``, minus up to ``jitter`` of itself (``rand`` in ``[0, 1)``), so the delay
    is within ``[base * (1 - jitter), base]`` and never above the cap. Others: ``interval``.
    """
    if state not in _BACKOFF_STATES:
        return policy.interval
    base = min(policy.backoff_cap, policy.interval * 2.0 ** min(backoff_step, 62))
    r = min(max(rand, 0.0), 1.0)
    return base * (1.0 - policy.jitter * r)


def _goto(h: ServiceHealth, state: HealthState, now: float, reason: str) -> ServiceHealth:
    """Enter ``state`` (or stay in it), clearing the breaker and the strike streaks."""
    return msgspec.structs.replace(
        h,
        state=state,
        since=now if state != h.state else h.since,
        reason=reason,
        probe_strikes=0,
        request_strikes=0,
        degraded_by=None,
        breaker_until=None,
        trial_started=None,
        last_ok=now if state in ("online", "busy") else h.last_ok,
    )


def _degrade(
    h: ServiceHealth, now: float, by: Literal["probe", "request"], reason: str, p: HealthPolicy
) -> ServiceHealth:
    return msgspec.structs.replace(
        _goto(h, "degraded", now, reason),
        degraded_by=by,
        breaker_until=now + p.cooldown,
    )


def _apply(
    action: _Action, h: ServiceHealth, now: float, p: HealthPolicy, reason: str
) -> ServiceHealth:
    replace = msgspec.structs.replace
    if action in ("ONLINE", "BUSY", "LOADING", "UNAUTH", "FOREIGN", "OFFLINE"):
        target: HealthState = {
            "ONLINE": "online",
            "BUSY": "busy",
            "LOADING": "loading",
            "UNAUTH": "unauthorized",
            "FOREIGN": "foreign",
            "OFFLINE": "offline",
        }[action]  # type: ignore[assignment]
        if target in ("online", "busy") and h.state in ("online", "busy"):
            # A probe (or a busy answer) says nothing about generation: it must not end a
            # request streak.
            return replace(
                h,
                state=target,
                since=h.since if h.state == target else now,
                reason=reason,
                probe_strikes=0,
                last_ok=now,
            )
        return _goto(h, target, now, reason)
    if action == "OK":
        return replace(h, request_strikes=0, last_ok=now)
    if action in ("PTIMEOUT", "PERROR"):
        strikes = h.probe_strikes + 1
        if strikes < p.probe_failures_to_trip:
            return replace(h, probe_strikes=strikes)
        summary = f"{strikes} probes in a row: {reason}"
        if action == "PTIMEOUT":
            return _goto(h, "offline", now, summary)
        return _degrade(h, now, "probe", summary, p)
    if action == "DEGRADE":
        return _degrade(h, now, "probe", reason, p)
    if action == "RSTRIKE":
        strikes = h.request_strikes + 1
        if strikes < p.request_failures_to_trip:
            return replace(h, request_strikes=strikes)
        return _degrade(h, now, "request", f"{strikes} requests in a row: {reason}", p)
    if action == "REOPEN":
        return replace(h, breaker_until=now + p.cooldown, trial_started=None, reason=reason)
    cooled = h.breaker_until is None or now >= h.breaker_until
    if action == "HEAL":
        if h.degraded_by == "probe" and cooled:
            return _goto(h, "online", now, reason)
        return h
    if action == "CLOSE":
        return _goto(h, "online", now, reason) if cooled else h
    if action == "HINT":
        return replace(h, backoff_step=0, next_probe_at=now)
    return h  # IGNORE


def step(
    health: ServiceHealth,
    event: HealthEvent,
    *,
    now: float,
    policy: HealthPolicy,
    rand: float,
) -> Transition:
    """Feed one input to the machine.

    ``now`` is the caller's clock in seconds; ``rand`` is a random value in ``[0, 1)`` used
    only for probe jitter. Probe inputs reschedule the next probe (``next_probe_at``);
    ``hint`` asks for one at once; request inputs leave the schedule alone.
    """
    ev = event
    if (
        ev.input == "request_ok"
        and ev.latency is not None
        and policy.slow_request is not None
        and ev.latency >= policy.slow_request
    ):
        ev = HealthEvent(
            "request_slow", ev.detail or f"first byte after {ev.latency:.1f}s", ev.latency
        )
    action = TABLE[(health.state, ev.input)]
    reason = ev.detail or _REASONS[ev.input]
    new = _apply(action, health, now, policy, reason)
    if ev.input.startswith("probe_"):
        stuck = new.state == health.state and new.state in _BACKOFF_STATES
        steps = health.backoff_step + 1 if stuck else 0
        new = msgspec.structs.replace(
            new,
            backoff_step=steps,
            next_probe_at=now + probe_delay(new.state, steps, policy, rand),
        )
    changed = new.state != health.state
    return Transition(
        health=new,
        previous=health.state,
        changed=changed,
        reason=new.reason if changed else reason,
        quiet=changed and {health.state, new.state} <= {"online", "busy"},
        probe_now=action == "HINT",
    )


def admit(
    health: ServiceHealth, now: float, policy: HealthPolicy
) -> tuple[Admission, ServiceHealth]:
    """May a request be sent to this service now?

    ``admit`` for online and busy services. A degraded service admits one ``trial`` once its
    cool-down is over (the returned health records the trial, so a second caller is refused
    until the trial reports or another cool-down passes). Everything else is ``refuse``.
    """
    if health.state in ("online", "busy"):
        return "admit", health
    if health.state != "degraded":
        return "refuse", health
    cooled = health.breaker_until is None or now >= health.breaker_until
    trial_free = health.trial_started is None or now - health.trial_started >= policy.cooldown
    if cooled and trial_free:
        return "trial", msgspec.structs.replace(health, trial_started=now)
    return "refuse", health
