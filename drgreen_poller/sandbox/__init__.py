"""The Dr Green sandbox: a faithful local simulator of the Dr Green DAPP API (design.md §8).

``SandboxState`` is the in-memory world (drive it in-process through its parts), ``create_app``
serves it over HTTP (the Dr Green API under ``/api/v1``, the control API under ``/_sandbox``),
``seed_demo`` fills it with a ready holder and ``run_sandbox`` runs it on a port. Nothing here is
imported by the poller itself.

Three layers, imports pointing one way: ``world/`` (state and rules, pure: the parts composed
over shared tables) ← ``dapp/`` (the simulated Dr Green API) ← ``control/`` (the ``/_sandbox``
API). The modules here join them: ``state`` (the world plus the API's traffic), ``app`` (both
APIs on one aiohttp app), ``harness``, ``server``, ``seed`` and ``story``.
"""

from drgreen_poller.sandbox.app import API_PREFIX, STATE_KEY, create_app
from drgreen_poller.sandbox.control import CONTROL_PREFIX
from drgreen_poller.sandbox.harness import LocalSandbox, RawAnswer, SignedCaller
from drgreen_poller.sandbox.seed import seed_demo
from drgreen_poller.sandbox.server import run_sandbox
from drgreen_poller.sandbox.state import SandboxState
from drgreen_poller.sandbox.story import run_story, story_step
from drgreen_poller.sandbox.world.model import (
    HolderInfo,
    InvalidInput,
    SandboxError,
    ServiceRefusal,
    StateConflict,
    UnknownEntity,
)
from drgreen_poller.sandbox.world.settings import SandboxSettings

__all__ = [
    "API_PREFIX",
    "CONTROL_PREFIX",
    "STATE_KEY",
    "HolderInfo",
    "InvalidInput",
    "LocalSandbox",
    "RawAnswer",
    "SandboxError",
    "SandboxSettings",
    "SandboxState",
    "ServiceRefusal",
    "SignedCaller",
    "StateConflict",
    "UnknownEntity",
    "create_app",
    "run_sandbox",
    "run_story",
    "seed_demo",
    "story_step",
]
