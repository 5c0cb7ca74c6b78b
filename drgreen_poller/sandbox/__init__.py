"""The Dr Green sandbox: a faithful local simulator of the Dr Green DAPP API (design.md §8).

``SandboxState`` is the in-memory world (drive it in-process), ``create_app`` serves it over
HTTP (the Dr Green API under ``/api/v1``, the control API under ``/_sandbox``), ``seed_demo``
fills it with a ready holder and ``run_sandbox`` runs it on a port. Nothing here is imported by
the poller itself.
"""

from drgreen_poller.sandbox.app import API_PREFIX, create_app
from drgreen_poller.sandbox.appkey import STATE_KEY
from drgreen_poller.sandbox.control import CONTROL_PREFIX
from drgreen_poller.sandbox.harness import LocalSandbox, RawAnswer, SignedCaller
from drgreen_poller.sandbox.model import (
    HolderInfo,
    InvalidInput,
    SandboxError,
    ServiceRefusal,
    StateConflict,
    UnknownEntity,
)
from drgreen_poller.sandbox.seed import seed_demo
from drgreen_poller.sandbox.server import run_sandbox
from drgreen_poller.sandbox.settings import SandboxSettings
from drgreen_poller.sandbox.state import SandboxState
from drgreen_poller.sandbox.story import run_story, story_step

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
